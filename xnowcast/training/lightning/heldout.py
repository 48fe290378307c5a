"""Held-out scores of a trained model, with :mod:`xnowcast.metrics`, against its baselines.

* downscaling: MSE (mm/h squared) and the FC-ZSM paper's SSIM of the model and of
  the trilinear baseline over the cells the loss counts, and the MSE reduction;
* nowcasting: CRPS (MAE for one member), MAE and MSE of the ensemble mean and
  CSI >= 1 mm/h of the ensemble mean, for the model, persistence and (when the
  model has one) its extrapolation (the zero-residual base of a Lagrangian nowcaster);
* self-supervised encoders: lag-class accuracy (and within one class) on fixed
  held-out lag pairs, and the mean learned distance of the pairs of each lag, as
  the encoder's own trainer stores them (:mod:`xnowcast.training.atmodist`).

Scores are computed on fixed held-out windows
(:meth:`~xnowcast.training.lightning.datamodule.RadarDataModule.heldout_batch`)
and stored in the weights' ``scores`` and in their ``training`` record.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from xnowcast import metrics
from xnowcast.training.data import CropBatch

__all__ = ["downscale_scores", "nowcast_scores", "representation_scores", "score_heldout"]

_FIELD = ("window", "lead", "y", "x")


def _field(values: Any, mask: Any) -> xr.DataArray:
    arr = np.asarray(values, dtype=np.float64)
    return xr.DataArray(np.where(np.asarray(mask), arr, np.nan), dims=_FIELD)


@torch.no_grad()
def downscale_scores(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """MSE and SSIM of ``model`` and of trilinear interpolation on held-out windows."""
    from xnowcast.models.interpolation import build_trilinear

    coarse, fine, mask, static = (t.cpu() for t in batch)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    static_in = static.to(device) if int(getattr(model, "static_channels", 0)) else None
    pred = model(coarse.to(device), static_in).float().cpu()
    model.train(was_training)
    base = build_trilinear(factor=int(model.factor), time_factor=int(model.time_factor))(coarse)
    m = mask[:, :, 0].numpy()
    obs = _field(fine[:, :, 0].numpy(), m)
    data_range = float(np.nanmax(obs.values) - np.nanmin(obs.values)) if m.any() else 1.0
    out: dict[str, Any] = {"windows": int(coarse.shape[0]), "data_range": data_range}
    for name, values in (("model", pred), ("trilinear", base)):
        fc = _field(values[:, :, 0].numpy(), m)
        ssim = metrics.ssim(fc.values, obs.values, data_range=max(data_range, 1e-6))
        out[name] = {
            "mse": float(metrics.mse(fc, obs)),
            "ssim": float(np.nanmean(ssim)) if np.isfinite(ssim).any() else float("nan"),
        }
    base_mse = out["trilinear"]["mse"]
    out["mse_reduction_vs_trilinear"] = 1 - out["model"]["mse"] / base_mse if base_mse else None
    return out


def _nowcast_entry(members: xr.DataArray, obs: xr.DataArray) -> dict[str, float]:
    mean = members.mean("member")
    return {
        "crps": float(metrics.crps(members, obs)),
        "mae_of_mean": float(metrics.mae(mean, obs)),
        "mse_of_mean": float(metrics.mse(mean, obs)),
        "csi_1": float(metrics.csi(mean, obs, 1.0)),
    }


@torch.no_grad()
def nowcast_scores(
    model: nn.Module,
    batch: CropBatch,
    lead_steps: int,
    members: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """CRPS, MAE and MSE of the ensemble mean and CSI >= 1 mm/h on held-out windows.

    Parameters
    ----------
    model
        A nowcasting model (``model(frames, steps, generator=...)``, mm/h).
    batch
        Held-out windows.
    lead_steps, members, seed
        Lead times scored, ensemble members drawn, seed of their latents.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = batch.inputs.to(device)
    lead = min(int(lead_steps), int(batch.targets.shape[1]))
    rng = torch.Generator(device=device).manual_seed(seed)
    outs = [model(x, lead, generator=rng).float().cpu()[:, :, 0] for _ in range(members)]
    model.train(was_training)
    valid = batch.valid[:, :lead, 0].numpy()
    obs = _field(batch.targets[:, :lead, 0].numpy(), valid)

    def ensemble(values: list[torch.Tensor]) -> xr.DataArray:
        stacked = np.stack([np.where(valid, v.numpy(), np.nan) for v in values])
        return xr.DataArray(stacked, dims=("member", *_FIELD))

    out: dict[str, Any] = {"windows": int(x.shape[0]), "lead_steps": lead, "members": members}
    out["model"] = _nowcast_entry(ensemble(outs), obs)
    last = batch.inputs[:, -1:, 0].expand(-1, lead, -1, -1)
    out["persistence"] = _nowcast_entry(ensemble([last]), obs)
    extrapolated = None
    if hasattr(model, "extrapolate"):
        extrapolated = model.extrapolate(x, lead)
    elif getattr(model, "frame", None) == "lagrangian":  # convlstm, unet: their zero residual
        extrapolated = model.baseline(x, lead)[1]
    if extrapolated is not None:
        extrapolated = extrapolated.float().cpu()[:, :, 0]
        out["extrapolation"] = _nowcast_entry(ensemble([extrapolated]), obs)
    return out


@torch.no_grad()
def representation_scores(
    model: nn.Module, batch: tuple[torch.Tensor, ...], time_step_minutes: float | None = None
) -> dict[str, Any]:
    """Lag accuracy and mean distance by lag of a lag classifier on held-out pairs.

    Parameters
    ----------
    model
        A :class:`~xnowcast.models.atmodist.LagClassifier`.
    batch
        ``(first, second, label)`` held-out pairs.
    time_step_minutes
        The data's time step: the distances are also keyed by lag in minutes.
    """
    from xnowcast.training.atmodist import distance_by_lag, lag_accuracy

    was_training = model.training
    device = next(model.parameters()).device
    pairs = tuple(t.to(device) for t in batch)
    out: dict[str, Any] = {"pairs": int(pairs[2].shape[0])}
    out["lag_accuracy"] = lag_accuracy(model, pairs)
    by_lag = distance_by_lag(model, pairs)
    out["distance_by_lag_frames"] = {str(k): v for k, v in by_lag.items()}
    if time_step_minutes:
        step = float(time_step_minutes)
        out["distance_by_lag_minutes"] = {f"{k * step:g}": v for k, v in by_lag.items()}
    model.train(was_training)
    return out


def score_heldout(
    model: nn.Module,
    task: str,
    batch: Any,
    recipe: dict[str, Any],
    seed: int = 0,
    device: Any = "cpu",
    time_step_minutes: float | None = None,
) -> dict[str, Any]:
    """The held-out scores the Lightning path stores with weights ({} without held-out windows).

    Parameters
    ----------
    model
        The model as it ships (eval mode, on ``device``).
    task
        ``"downscale"``, ``"nowcast"`` or ``"representation"``.
    batch
        :meth:`~xnowcast.training.lightning.datamodule.RadarDataModule.heldout_batch`.
    recipe
        The family's recipe: ``lead_steps`` and ``val_members`` of a nowcaster.
    seed
        Seed of the ensemble members' latents.
    time_step_minutes
        Time step of the held-out data (an encoder's distances by lag in minutes).
    """
    if batch is None:
        return {}
    if task == "representation":
        return representation_scores(model, batch, time_step_minutes)
    if task == "downscale":
        return downscale_scores(model, batch)
    members = int(recipe.get("val_members", 1))
    return nowcast_scores(model, batch.to(device), int(recipe["lead_steps"]), members, seed)

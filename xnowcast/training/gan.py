"""Adversarial training of DGMR (Ravuri et al. 2021), written from the paper's pseudocode.

One training step:

1. ``disc_steps`` (2) discriminator steps: a generated forecast (no gradient to
   the generator) and the observed one, each prefixed with the 4 input frames,
   are scored by the spatial and temporal discriminators; hinge loss; Adam
   (lr 2e-4, betas 0 and 0.999).
2. one generator step: ``grid_samples`` (6) forecasts of the same inputs
   (each with its own latent), the hinge generator loss on their scores plus
   ``grid_weight`` (20) times the grid-cell regulariser (mean of the samples
   against the observation, weighted by ``clip(y, 0, 24)``); Adam (lr 5e-5,
   betas 0 and 0.999).

Data are importance-sampled crops (:class:`~xnowcast.training.data.SequenceCropSampler`);
missing target pixels are left out of the regulariser and zeroed in the
generated sequences the discriminators see, as they are in the observed ones.

Batch-norm statistics of the generator are recomputed on training batches
(BigGAN's "standing statistics") before every validation and before the
weights are written, so that ``generator.eval()`` forecasts use statistics of
the final weights.

Checkpoints are safetensors files (models, RNG states, history as JSON
metadata) with the Adam states in a second safetensors file; nothing is
pickled, and :func:`train_dgmr` resumes from them bit for bit.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from xnowcast.models.dgmr import (
    Discriminator,
    Generator,
    build_discriminator,
    build_generator,
    count_parameters,
    resolve_config,
)
from xnowcast.training.data import CropBatch, SequenceCropSampler
from xnowcast.training.losses import (
    grid_cell_regularizer,
    hinge_discriminator_loss,
    hinge_generator_loss,
)

__all__ = [
    "TrainResult",
    "forecast_scores",
    "gan_step",
    "load_checkpoint",
    "refresh_batchnorm",
    "save_generator_weights",
    "train_dgmr",
]

CHECKPOINT = "checkpoint.safetensors"
OPTIMISER = "optimiser.safetensors"


@dataclass
class TrainResult:
    """What :func:`train_dgmr` returns."""

    generator: Generator
    discriminator: Discriminator
    config: dict[str, Any]
    steps: int
    history: list[dict[str, Any]]
    scores: dict[str, Any]
    wall_time: float
    checkpoint: Path
    weights: Path
    sha256: str
    training: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- scores


def _crps_ensemble(members: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """CRPS of an ensemble ``(M, ...)`` against ``obs`` per point (the energy form)."""
    m = members.shape[0]
    skill = np.abs(members - obs[None]).mean(axis=0)
    srt = np.sort(members, axis=0)
    # E|X - X'| from sorted members: sum_i (2i - m - 1) x_(i) * 2 / m^2
    k = (2 * np.arange(1, m + 1) - m - 1).reshape((m,) + (1,) * (members.ndim - 1))
    spread = 2.0 * (k * srt).sum(axis=0) / (m * m)
    return skill - 0.5 * spread


def _csi(forecast: np.ndarray, obs: np.ndarray, valid: np.ndarray, threshold: float) -> float:
    f = (forecast >= threshold) & valid
    o = (obs >= threshold) & valid
    hits = np.sum(f & o)
    denom = hits + np.sum(f & ~o) + np.sum(~f & o)
    return float(hits / denom) if denom else float("nan")


def forecast_scores(
    members: np.ndarray,
    obs: np.ndarray,
    valid: np.ndarray,
    last_input: np.ndarray | None = None,
    thresholds: Sequence[float] = (1.0, 4.0, 8.0),
) -> dict[str, float]:
    """CSI (ensemble mean and mean over members), CRPS and persistence scores.

    ``members`` ``(M, B, T, H, W)``, ``obs`` and ``valid`` ``(B, T, H, W)``,
    ``last_input`` ``(B, H, W)`` for the persistence reference. Scores pool all
    lead times and crops.
    """
    out: dict[str, float] = {}
    mean = members.mean(axis=0)
    for thr in thresholds:
        key = f"{thr:g}"
        out[f"csi_mean_{key}"] = _csi(mean, obs, valid, thr)
        out[f"csi_member_{key}"] = float(np.nanmean([_csi(mb, obs, valid, thr) for mb in members]))
        if last_input is not None:
            pers = np.broadcast_to(last_input[:, None], obs.shape)
            out[f"csi_persistence_{key}"] = _csi(pers, obs, valid, thr)
    out["crps"] = float(_crps_ensemble(members, obs)[valid].mean())
    if last_input is not None:
        pers = np.broadcast_to(last_input[:, None], obs.shape)
        out["crps_persistence"] = float(np.abs(pers - obs)[valid].mean())
    out["mean_rate_forecast"] = float(mean[valid].mean())
    out["mean_rate_observed"] = float(obs[valid].mean())
    return out


@torch.no_grad()
def _validate(
    generator: Generator,
    batch: CropBatch,
    members: int,
    lead: int,
    seed: int,
    device: str | torch.device,
) -> dict[str, float]:
    was_training = generator.training
    generator.eval()
    rng = torch.Generator(device=device).manual_seed(seed)
    x = batch.inputs.to(device)
    outs = []
    with torch.inference_mode():
        for _ in range(members):
            outs.append(generator(x, lead, generator=rng).cpu().numpy()[:, :, 0])
    generator.train(was_training)
    obs = batch.targets[:, :lead, 0].numpy()
    valid = batch.valid[:, :lead, 0].numpy()
    return forecast_scores(np.stack(outs), obs, valid, batch.inputs[:, -1, 0].numpy())


@torch.no_grad()
def refresh_batchnorm(
    generator: Generator, batches: Sequence[Tensor], lead: int, seed: int = 0
) -> None:
    """Recompute the generator's batch-norm running statistics from ``batches`` of inputs.

    The statistics become the plain average over the batches of the current
    weights (BigGAN's standing statistics); the module is left in eval mode.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    generator.train()
    rng = torch.Generator(device=batches[0].device).manual_seed(seed)
    for x in batches:
        generator(x, lead, generator=rng)
    for m, mom in zip(norms, saved, strict=False):
        m.momentum = mom
    generator.eval()


# ------------------------------------------------------------------------ checkpoints


def _optimiser_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, Tensor]:
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            out[f"{prefix}.{idx}.{key}"] = t.detach().cpu().contiguous()
    return out


def _load_optimiser(opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], prefix: str) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        head, idx, key = name.split(".", 2)
        if head != prefix:
            continue
        state.setdefault(int(idx), {})[key] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


def _state_tensors(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _strip(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _save_checkpoint(
    out_dir: Path,
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    meta: dict[str, Any],
    rng: torch.Generator,
) -> Path:
    from safetensors.torch import save_file

    tensors = {
        **_state_tensors(generator, "generator"),
        **_state_tensors(discriminator, "discriminator"),
    }
    tensors["rng.torch"] = rng.get_state()
    path = out_dir / CHECKPOINT
    tmp = out_dir / (CHECKPOINT + ".tmp")
    save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in meta.items()})
    opt = {**_optimiser_tensors(opt_g, "generator"), **_optimiser_tensors(opt_d, "discriminator")}
    opt_tmp = out_dir / (OPTIMISER + ".tmp")
    save_file(opt, opt_tmp, metadata={"step": json.dumps(meta["step"])})
    os.replace(tmp, path)
    os.replace(opt_tmp, out_dir / OPTIMISER)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a training checkpoint (a file or its folder)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    tensors = load_file(p)
    with safe_open(p, framework="pt") as f:
        raw = f.metadata() or {}
    return tensors, {k: json.loads(v) for k, v in raw.items()}


def save_generator_weights(
    generator: Generator,
    path: str | os.PathLike[str],
    *,
    training: Mapping[str, Any],
    scores: Mapping[str, Any],
) -> str:
    """Write the generator's weights (safetensors, DGMR metadata); return the sha256."""
    import hashlib

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    meta = {
        "model": "dgmr",
        "config": json.dumps(generator.config, sort_keys=True),
        "training": json.dumps(dict(training), sort_keys=True),
        "scores": json.dumps(dict(scores), sort_keys=True),
        "format": "xnowcast-dgmr-generator-1",
    }
    save_file(tensors, path, metadata=meta)
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- training


def gan_step(
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    batch: CropBatch,
    *,
    lead_steps: int = 18,
    grid_samples: int = 6,
    grid_weight: float = 20.0,
    grid_weight_mode: str = "clip",
    disc_steps: int = 2,
    rng: torch.Generator | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """One DGMR training step: ``disc_steps`` discriminator updates, one generator update.

    The same batch serves every update.  The generator's ``grid_samples``
    samples run as one batched forward, and are scored by the discriminators
    in one call together with the observed sequence (the pseudocode scores
    each sample with the observation in its own call).  Returns the losses.
    """
    dev = batch.inputs.device
    x, y, valid = batch.inputs, batch.targets[:, :lead_steps], batch.valid[:, :lead_steps]
    vmask = valid.to(y.dtype)

    def autocast() -> Any:
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    discriminator.requires_grad_(True)
    d_loss = torch.zeros(())
    for _ in range(disc_steps):
        with torch.no_grad(), autocast():
            fake = generator(x, lead_steps, generator=rng).float() * vmask
        with autocast():
            scores = discriminator(torch.cat([x, x]), torch.cat([y, fake]), generator=rng)
        real_s, fake_s = scores.float().chunk(2)
        d_loss = hinge_discriminator_loss(real_s, fake_s)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

    discriminator.requires_grad_(False)
    xs = x.repeat(grid_samples, 1, 1, 1, 1)
    with autocast():
        samples = generator(xs, lead_steps, generator=rng).float()
    samples = samples.reshape(grid_samples, *y.shape)
    grid = grid_cell_regularizer(samples, y, valid, mode=grid_weight_mode)
    fakes = (samples * vmask).flatten(0, 1)
    with autocast():
        scores = discriminator(torch.cat([x, xs]), torch.cat([y, fakes]), generator=rng)
    g_hinge = hinge_generator_loss(scores.float()[x.shape[0] :])
    g_loss = g_hinge + grid_weight * grid
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    discriminator.requires_grad_(True)
    return {
        "d_loss": d_loss.item(),
        "g_hinge": g_hinge.item(),
        "grid": grid.item(),
        "g_loss": g_loss.item(),
    }


def _as_list(data: Any) -> Any:
    if data is None or isinstance(data, Mapping | xr.DataArray | xr.Dataset):
        return data
    return list(data)


def train_dgmr(
    data: xr.DataArray | xr.Dataset | Sequence[xr.DataArray] | Mapping[str, xr.DataArray],
    *,
    config: str | Mapping[str, Any] = "small",
    steps: int = 500_000,
    crop: int = 256,
    batch_size: int = 16,
    lead_steps: int = 18,
    grid_samples: int = 6,
    grid_weight: float = 20.0,
    grid_weight_mode: str = "clip",
    disc_steps: int = 2,
    lr_generator: float = 5e-5,
    lr_discriminator: float = 2e-4,
    betas: tuple[float, float] = (0.0, 0.999),
    seed: int = 0,
    val_data: xr.DataArray | Mapping[str, xr.DataArray] | None = None,
    val_every: int = 1000,
    val_crops: int = 4,
    val_crop: int = 256,
    val_members: int = 4,
    checkpoint_every: int = 500,
    bn_batches: int = 4,
    out_dir: str | os.PathLike[str] = "dgmr-training",
    weights_name: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    resume: str | os.PathLike[str] | None = None,
    time_budget: float | None = None,
    stride: int = 8,
    max_missing: float = 0.05,
    q_min: float = 2e-4,
    q_m: float = 0.1,
    metadata: Mapping[str, Any] | None = None,
    precision: str = "fp32",
) -> TrainResult:
    """Train DGMR on radar DataArrays; write checkpoints and the generator's weights.

    The defaults are the paper's settings (256 x 256 crops, batch 16, 18 lead
    times, 6 samples in the grid-cell term of weight 20, 2 discriminator steps
    per generator step, Adam 5e-5 / 2e-4 with betas (0, 0.999), 5e5 steps);
    smaller budgets change ``crop``, ``batch_size``, ``lead_steps``,
    ``grid_samples`` and ``steps``.

    Parameters
    ----------
    data
        Training radar: DataArrays/Datasets with dims time/y/x and rain (or
        reflectivity) units, or a mapping event name -> data.
    config
        Model config name or dict (:data:`xnowcast.models.dgmr.CONFIGS`).
    steps
        Generator steps to train (in total, counting resumed ones).
    crop, batch_size, lead_steps
        Training crop size (multiple of 32, at least 128), batch size and lead
        times per sequence.
    grid_samples, grid_weight, grid_weight_mode
        Samples and weight of the grid-cell regulariser; ``"clip"`` weights by
        ``clip(y, 0, 24)`` (pseudocode), ``"plus_one"`` by ``min(y + 1, 24)``.
    disc_steps, lr_generator, lr_discriminator, betas
        Optimisation as in the paper.
    seed
        Seeds weights, data sampling and latents: a seed reproduces a run.
    val_data
        Held-out radar for validation (CSI at 1/4/8 mm/h, CRPS), scored every
        ``val_every`` steps and at the end on ``val_crops`` deterministic
        rainy crops of ``val_crop`` pixels with ``val_members`` members.
    checkpoint_every
        Steps between checkpoints in ``out_dir``.
    bn_batches
        Training batches used to recompute batch-norm statistics.
    out_dir
        Folder for ``checkpoint.safetensors``, ``optimiser.safetensors``,
        ``history.json`` and the weights ``dgmr-<config>.safetensors``
        (or ``weights_name``).
    device
        Torch device.
    progress
        Show a tqdm bar with the losses.
    resume
        A checkpoint file or folder to continue from.
    time_budget
        Stop (with a checkpoint) after this many seconds of training.
    stride, max_missing, q_min, q_m
        Crop sampling (see :class:`SequenceCropSampler`).
    metadata
        Extra entries for the ``training`` metadata (events, commit, ...).
    precision
        ``"fp32"`` (default) or ``"bf16"``: bfloat16 autocast of the forward
        passes (losses and optimiser in float32), about 1.7x faster on CPUs
        with AMX/AVX512-BF16.

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    cfg = resolve_config(config)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    config_name = config if isinstance(config, str) else "custom"
    if crop % 32 or crop < 128:
        raise ValueError(f"crop must be a multiple of 32 and at least 128, got {crop}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)

    torch.manual_seed(seed)
    generator = build_generator(cfg).to(dev)
    discriminator = build_discriminator(cfg).to(dev)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_generator, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_discriminator, betas=betas)
    rng = torch.Generator().manual_seed(seed + 1)

    sampler = SequenceCropSampler(
        _as_list(data),
        input_frames=generator.input_frames,
        lead_frames=lead_steps,
        crop=crop,
        stride=stride,
        q_min=q_min,
        m=q_m,
        max_missing=max_missing,
        max_rate=float(cfg["max_rate"]),
        seed=seed,
    )
    val_batch = None
    if val_data is not None:
        val_sampler = SequenceCropSampler(
            _as_list(val_data),
            input_frames=generator.input_frames,
            lead_frames=18,
            crop=val_crop,
            stride=32,
            max_missing=max_missing,
            max_rate=float(cfg["max_rate"]),
        )
        val_batch = val_sampler.rainiest(val_crops)

    args = {
        "config_name": config_name,
        "crop": crop,
        "batch_size": batch_size,
        "lead_steps": lead_steps,
        "grid_samples": grid_samples,
        "grid_weight": grid_weight,
        "grid_weight_mode": grid_weight_mode,
        "disc_steps": disc_steps,
        "lr_generator": lr_generator,
        "lr_discriminator": lr_discriminator,
        "betas": list(betas),
        "seed": seed,
        "stride": stride,
        "max_missing": max_missing,
        "q_min": q_min,
        "q_m": q_m,
        "candidate_crops": len(sampler),
        "events": sorted(set(sampler.names)),
        "generator_parameters": count_parameters(generator),
        "discriminator_parameters": count_parameters(discriminator),
        **dict(metadata or {}),
    }
    history: list[dict[str, Any]] = []
    step = 0
    wall = 0.0
    if resume is not None:
        tensors, meta = load_checkpoint(resume)
        generator.load_state_dict(_strip(tensors, "generator"))
        discriminator.load_state_dict(_strip(tensors, "discriminator"))
        rng.set_state(tensors["rng.torch"])
        opt_path = (Path(resume) if Path(resume).is_dir() else Path(resume).parent) / OPTIMISER
        from safetensors.torch import load_file

        opt_tensors = load_file(opt_path)
        _load_optimiser(opt_g, opt_tensors, "generator")
        _load_optimiser(opt_d, opt_tensors, "discriminator")
        sampler.rng.bit_generator.state = meta["sampler_rng"]
        step = int(meta["step"])
        history = list(meta.get("history", []))
        wall = float(meta.get("wall_time", 0.0))

    def checkpoint() -> Path:
        meta = {
            "step": step,
            "config": cfg,
            "args": args,
            "history": history,
            "wall_time": wall,
            "sampler_rng": sampler.rng.bit_generator.state,
        }
        path = _save_checkpoint(out, generator, discriminator, opt_g, opt_d, meta, rng)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        return path

    def bn_inputs() -> list[Tensor]:
        state = sampler.rng.bit_generator.state
        sampler.rng = np.random.default_rng(seed + 12345)
        xs = [sampler.sample(batch_size).inputs.to(dev) for _ in range(bn_batches)]
        sampler.rng.bit_generator.state = state
        return xs

    def inference_copy() -> Generator:
        # a copy with standing batch-norm statistics; the training state stays untouched
        # (the forward passes would also move the spectral-norm vectors)
        ev = copy.deepcopy(generator)
        refresh_batchnorm(ev, bn_inputs(), lead_steps, seed)
        return ev

    def validate(ev: Generator) -> dict[str, float]:
        assert val_batch is not None
        return _validate(ev, val_batch, val_members, 18, seed, dev)

    generator.train()
    discriminator.train()
    bar = tqdm(total=steps, initial=step, disable=not progress, desc="dgmr", dynamic_ncols=True)
    start = time.perf_counter()
    stopped_by_budget = False
    last: dict[str, float] = {}
    while step < steps:
        batch = sampler.sample(batch_size).to(dev)
        last = gan_step(
            generator,
            discriminator,
            opt_g,
            opt_d,
            batch,
            lead_steps=lead_steps,
            grid_samples=grid_samples,
            grid_weight=grid_weight,
            grid_weight_mode=grid_weight_mode,
            disc_steps=disc_steps,
            rng=rng,
            precision=precision,
        )
        step += 1
        now = time.perf_counter()
        wall += now - start
        start = now
        if not all(math.isfinite(v) for v in last.values()):
            checkpoint()
            raise FloatingPointError(f"non-finite loss at step {step}: {last}")
        history.append({"step": step, "wall_time": round(wall, 2), **last})
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in last.items()})
        if val_batch is not None and step % val_every == 0:
            scores_now = validate(inference_copy())
            history[-1]["val"] = scores_now
            bar.write(
                f"step {step}: " + json.dumps({k: round(v, 4) for k, v in scores_now.items()})
            )
        if step % checkpoint_every == 0:
            checkpoint()
        if time_budget is not None and wall >= time_budget:
            stopped_by_budget = True
            break
    bar.close()

    final = inference_copy()
    final_scores: dict[str, Any] = {}
    if val_batch is not None:
        final_scores = validate(final)
        history.append({"step": step, "wall_time": round(wall, 2), "val": final_scores})
    ckpt = checkpoint()
    training = {
        **args,
        "steps": step,
        "wall_time_s": round(wall, 1),
        "stopped_by_time_budget": stopped_by_budget,
        "torch": torch.__version__,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "precision": precision,
    }
    weights = out / (weights_name or f"dgmr-{config_name}.safetensors")
    sha = save_generator_weights(final, weights, training=training, scores=final_scores)
    return TrainResult(
        generator=final,
        discriminator=discriminator,
        config=cfg,
        steps=step,
        history=history,
        scores=final_scores,
        wall_time=wall,
        checkpoint=ckpt,
        weights=weights,
        sha256=sha,
        training=training,
    )


# -------------------------------------------------------------------------------- CLI

#: The real events of the shared archive (paths under its ``radar/`` folder).
EVENTS = {
    "mch-20150515": "radar/mch/20150515",
    "mch-20160711": "radar/mch/20160711",
    "fmi-20160928": "radar/fmi/pgm/20160928",
    "knmi-20100826": "radar/KNMI/2010/08",
    "rmi-20210704": "radar/rmi/radqpe/20210704",
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xnowcast.training.gan --data-root DIR --out DIR ...``: train on the real events."""
    import argparse
    import subprocess

    from xnowcast.io import open_radar

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data-root", required=True, help="folder holding radar/ (the shared data)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, weights)")
    p.add_argument("--train", nargs="+", default=[e for e in EVENTS if e != "rmi-20210704"])
    p.add_argument("--val", default="rmi-20210704")
    p.add_argument("--config", default="small")
    p.add_argument("--steps", type=int, default=500_000)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lead-steps", type=int, default=18)
    p.add_argument("--grid-samples", type=int, default=6)
    p.add_argument("--grid-weight-mode", default="clip", choices=["clip", "plus_one"])
    p.add_argument("--lr-generator", type=float, default=5e-5)
    p.add_argument("--lr-discriminator", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--time-budget", type=float, default=None, help="seconds")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--resume", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    root = Path(a.data_root)
    train = {name: open_radar(root / EVENTS[name]) for name in a.train}
    val = {a.val: open_radar(root / EVENTS[a.val])} if a.val else None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    result = train_dgmr(
        train,
        config=a.config,
        steps=a.steps,
        crop=a.crop,
        batch_size=a.batch_size,
        lead_steps=a.lead_steps,
        grid_samples=a.grid_samples,
        grid_weight_mode=a.grid_weight_mode,
        lr_generator=a.lr_generator,
        lr_discriminator=a.lr_discriminator,
        seed=a.seed,
        val_data=val,
        val_every=a.val_every,
        checkpoint_every=a.checkpoint_every,
        out_dir=a.out,
        time_budget=a.time_budget,
        resume=a.resume,
        precision=a.precision,
        metadata={"held_out": a.val, "commit": commit, "data": "pysteps-data eaa59fb"},
    )
    print(
        json.dumps(
            {
                "weights": str(result.weights),
                "sha256": result.sha256,
                "steps": result.steps,
                "wall_time": result.wall_time,
                "scores": result.scores,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Losses of DGMR's adversarial training (Ravuri et al. 2021, Methods and pseudocode).

* discriminator: hinge loss ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``;
* generator: ``-mean(D(fake))`` plus ``grid_weight`` (20) times the grid-cell
  regulariser: the mean absolute difference between the mean of several
  generated samples and the observation, weighted per pixel by
  ``clip(observation, 0, 24)`` (the pseudocode's weight; the text's
  ``max(y + 1, 24)`` is read as a typo for it).

Missing pixels are left out through a validity mask.  :func:`volume_regularizer`
(not in the paper) ties the rain volume of the samples' mean to the observed one;
:func:`ensemble_crps_loss` (not in the paper) scores the samples as an ensemble.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ensemble_crps_loss",
    "grid_cell_regularizer",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "precipitation_weight",
    "volume_regularizer",
]


def hinge_discriminator_loss(score_real: Tensor, score_fake: Tensor) -> Tensor:
    """``mean(relu(1 - real)) + mean(relu(1 + fake))``."""
    return F.relu(1.0 - score_real).mean() + F.relu(1.0 + score_fake).mean()


def hinge_generator_loss(score_fake: Tensor) -> Tensor:
    """``-mean(fake)``."""
    return -score_fake.mean()


def precipitation_weight(target: Tensor, cap: float = 24.0, mode: str = "clip") -> Tensor:
    """Per-pixel weight of the grid-cell loss.

    ``mode="clip"``: ``clip(y, 0, cap)`` (DGMR pseudocode, the default);
    ``mode="none"``: 1 everywhere (a plain L1 of the sample mean, whose optimum is
    the median: a weight growing with ``y`` moves the optimum towards rain, forecasting
    rain wherever its chance exceeds ``1 / (1 + w(rain))``, a wet bias);
    ``mode="plus_one"``: ``min(y + 1, cap)`` (the paper's text with min for max),
    which also penalises rain generated over dry pixels.
    """
    if mode == "clip":
        return target.clamp(0.0, cap)
    if mode == "none":
        return target.new_ones(target.shape)
    if mode == "plus_one":
        return (target.clamp(min=0.0) + 1.0).clamp(max=cap)
    raise ValueError(f"unknown weight mode {mode!r}: use 'clip', 'plus_one' or 'none'")


def grid_cell_regularizer(
    samples: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    cap: float = 24.0,
    mode: str = "clip",
) -> Tensor:
    """DGMR's grid-cell regulariser.

    Parameters
    ----------
    samples
        ``(S, B, T, 1, H, W)`` generated samples for the same inputs.
    target
        ``(B, T, 1, H, W)`` observations.
    valid
        Optional boolean mask like ``target``; missing pixels are excluded.
    cap, mode
        See :func:`precipitation_weight`.

    Returns
    -------
    Tensor
        Scalar: mean over valid pixels of ``|mean_s(samples) - target| * w(target)``.
    """
    err = (samples.mean(dim=0) - target).abs() * precipitation_weight(target, cap, mode)
    if valid is None:
        return err.mean()
    v = valid.to(err.dtype)
    return (err * v).sum() / v.sum().clamp(min=1.0)


def volume_regularizer(
    samples: Tensor, target: Tensor, valid: Tensor | None = None, *, floor: float = 0.1
) -> Tensor:
    """Rain-volume term (not in the paper): ``|log((f + floor) / (y + floor))|``, averaged.

    ``f`` is the mean rate of the mean of the samples and ``y`` the observed
    mean rate, both over the valid pixels of each sequence and lead time; the
    result is averaged over sequences and lead times.  The grid-cell term's
    optimum is a per-pixel (weighted) median, which for skewed rain is below
    the mean (plain L1: too little rain) or above it (weights growing with the
    rain: too much); this term ties the forecast's volume to the observed one
    at every lead time and leaves the pattern to the other terms.

    Parameters
    ----------
    samples
        ``(S, B, T, 1, H, W)`` generated samples for the same inputs.
    target
        ``(B, T, 1, H, W)`` observations.
    valid
        Optional boolean mask like ``target``; missing pixels are excluded.
    floor
        mm/h added to both mean rates (dry sequences weigh little).
    """
    mean = samples.mean(dim=0)
    v = target.new_ones(target.shape) if valid is None else valid.to(target.dtype)
    n = v.sum(dim=(2, 3, 4)).clamp(min=1.0)
    f = (mean * v).sum(dim=(2, 3, 4)) / n
    y = (target * v).sum(dim=(2, 3, 4)) / n
    return (torch.log(f + floor) - torch.log(y + floor)).abs().mean()


def _fair_crps(samples: Tensor, target: Tensor, v: Tensor) -> Tensor:
    s = samples.shape[0]
    skill = (samples - target).abs().mean(dim=0)
    pairs = torch.zeros_like(skill)
    for i in range(s):
        for j in range(i + 1, s):
            pairs = pairs + (samples[i] - samples[j]).abs()
    crps = skill - pairs / (s * (s - 1))
    return (crps * v).sum() / v.sum().clamp(min=1.0)


def ensemble_crps_loss(
    samples: Tensor, target: Tensor, valid: Tensor | None = None, *, pool: int = 4
) -> Tensor:
    """Fair CRPS of the samples as an ensemble (not in the paper), pixel and pooled, averaged.

    ``mean_i |X_i - y| - sum_{i<j} |X_i - X_j| / (S (S - 1))`` per pixel (the
    unbiased "fair" estimator of Ferro 2014), averaged over the valid pixels,
    at full resolution and on ``pool`` x ``pool`` means (a block counts where
    all of its pixels are valid); the result is the mean of the two.  The
    second term rewards members that differ: the grid-cell term scores only
    the samples' mean and the hinge term sees one sample at a time, so
    neither stops the generator from ignoring its latent (the latent
    collapsed after about 1,450 steps of the earlier recipe: median member
    std at 60 min fell from 0.1 to 0.003 mm/h).  CRPS is the proper score the
    ensemble is judged by.

    Parameters
    ----------
    samples
        ``(S, B, T, 1, H, W)`` generated samples for the same inputs, ``S >= 2``.
    target
        ``(B, T, 1, H, W)`` observations.
    valid
        Optional boolean mask like ``target``; missing pixels are excluded.
    pool
        Side in pixels of the pooled scale (1 or less: pixel scale only).
    """
    if samples.shape[0] < 2:
        raise ValueError("the ensemble CRPS needs at least 2 samples (grid_samples >= 2)")
    v = target.new_ones(target.shape) if valid is None else valid.to(target.dtype)
    pixel = _fair_crps(samples, target, v)
    if pool <= 1:
        return pixel
    h, w = target.shape[-2:]

    def coarse(t: Tensor) -> Tensor:
        flat = t.reshape(-1, 1, h, w)
        out = F.avg_pool2d(flat, pool)
        return out.reshape(*t.shape[:-2], *out.shape[-2:])

    pooled = _fair_crps(coarse(samples * v), coarse(target * v), (coarse(v) > 0.999).to(v.dtype))
    return 0.5 * (pixel + pooled)

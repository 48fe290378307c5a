"""Losses of DGMR's adversarial training (Ravuri et al. 2021, Methods and pseudocode).

* discriminator: hinge loss ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``;
* generator: ``-mean(D(fake))`` plus ``grid_weight`` (20) times the grid-cell
  regulariser: the mean absolute difference between the mean of several
  generated samples and the observation, weighted per pixel by
  ``clip(observation, 0, 24)`` (the pseudocode's weight; the text's
  ``max(y + 1, 24)`` is read as a typo for it).

Missing pixels are left out through a validity mask.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "grid_cell_regularizer",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "precipitation_weight",
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

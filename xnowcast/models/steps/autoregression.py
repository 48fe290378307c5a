"""AR(2) models of cascade levels: estimation from lagged correlations, iteration.

Each cascade level ``c`` of STEPS evolves (in the Lagrangian frame) as a
second-order autoregressive process with unit variance (Bowler, Pierce and Seed
2006, Eq. 6; Seed et al. 2013):

``c(t + 1) = phi1 c(t) + phi2 c(t - 1) + phi0 e(t + 1)``

with ``e`` unit-variance noise. The parameters follow from the lag-1 and lag-2
correlations ``g1``, ``g2`` of the observed level by the Yule-Walker equations;
``g2`` is first moved into the region where the AR(2) process is stationary and
its correlation function decays without oscillating.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "adjust_lag2",
    "ar2_autocorrelation",
    "ar2_parameters",
    "ar2_step",
]

# Only keeps ``1 - g1**2`` away from zero: the largest cascade levels of a steady rain
# field have lag-1 correlations of 0.999 and more, and clamping them harder while
# keeping their lag-2 correlation changes the fitted AR(2) a lot (its innovation
# scale several times). The parameters are computed in float64 for the same reason.
_MAX_CORRELATION = 1.0 - 1e-6


def adjust_lag2(gamma1: Tensor, gamma2: Tensor) -> Tensor:
    """Lag-2 correlation moved where an AR(2) with these correlations is well behaved.

    Two lower bounds: ``2 g1**2 - 1`` (stationarity of the AR(2) fitted by
    Yule-Walker, i.e. ``phi2 > -1 + ...``) and
    ``(3 g1**2 - 2 + 2 (1 - g1**2) ** 1.5) / g1**2`` (a correlation function that
    stays positive and decays monotonically, as radar cascade levels do).

    Parameters
    ----------
    gamma1, gamma2
        Lag-1 and lag-2 correlation coefficients (any matching shapes).

    Returns
    -------
    Tensor
        The adjusted lag-2 correlation, below 1.
    """
    dtype = gamma2.dtype
    g1 = gamma1.double().clamp(-_MAX_CORRELATION, _MAX_CORRELATION)
    g2 = torch.maximum(gamma2.double(), 2.0 * g1.square() - 1.0)
    g1_sq = g1.square().clamp_min(1e-6)
    smooth = (3.0 * g1_sq - 2.0 + 2.0 * (1.0 - g1_sq).clamp_min(0.0) ** 1.5) / g1_sq
    g2 = torch.where(g1.abs() > 1e-3, torch.maximum(g2, smooth), g2)
    return g2.clamp(max=_MAX_CORRELATION).to(dtype)


def ar2_parameters(gamma1: Tensor, gamma2: Tensor) -> Tensor:
    """Yule-Walker AR(2) parameters of a unit-variance process.

    Parameters
    ----------
    gamma1, gamma2
        Lag-1 and lag-2 correlations (``gamma2`` as returned by :func:`adjust_lag2`).

    Returns
    -------
    Tensor
        ``(..., 3)``: ``phi1``, ``phi2`` and the innovation scale
        ``phi0 = sqrt(1 - phi1 g1 - phi2 g2)`` that keeps the variance at one.
    """
    dtype = gamma1.dtype
    g1 = gamma1.double().clamp(-_MAX_CORRELATION, _MAX_CORRELATION)
    gamma2 = gamma2.double()
    denominator = 1.0 - g1.square()
    phi1 = g1 * (1.0 - gamma2) / denominator
    phi2 = (gamma2 - g1.square()) / denominator
    phi0 = (1.0 - phi1 * g1 - phi2 * gamma2).clamp_min(0.0).sqrt()
    return torch.stack((phi1, phi2, phi0), dim=-1).to(dtype)


def ar2_autocorrelation(phi: Tensor, lags: int) -> Tensor:
    """Theoretical autocorrelation of the AR(2) process with parameters ``phi``.

    Parameters
    ----------
    phi
        ``(..., 3)`` as returned by :func:`ar2_parameters`.
    lags
        Number of lags.

    Returns
    -------
    Tensor
        ``(..., lags + 1)``: correlation at lags ``0 .. lags``.
    """
    phi1, phi2 = phi[..., 0], phi[..., 1]
    rho = [torch.ones_like(phi1), phi1 / (1.0 - phi2)]
    for _ in range(2, lags + 1):
        rho.append(phi1 * rho[-1] + phi2 * rho[-2])
    return torch.stack(rho[: lags + 1], dim=-1)


def ar2_step(
    current: Tensor, previous: Tensor, phi: Tensor, noise: Tensor | None, level_dim: int = -3
) -> Tensor:
    """One AR(2) step for every level: ``phi1 c(t) + phi2 c(t-1) + phi0 e``.

    Parameters
    ----------
    current, previous
        Levels at ``t`` and ``t - 1`` (real tensors; a complex spectrum as
        :func:`torch.view_as_real`), the levels along ``level_dim``.
    phi
        ``(levels, 3)`` parameters from :func:`ar2_parameters`.
    noise
        Innovations shaped like ``current`` (unit variance for a unit-variance
        process), or None (deterministic).
    level_dim
        The dimension of ``current`` that counts the levels (negative).

    Returns
    -------
    Tensor
        The levels at ``t + 1``, a new tensor.
    """
    view = (-1,) + (1,) * (-level_dim - 1)
    out = current * phi[:, 0].view(view)
    out.addcmul_(previous, phi[:, 1].view(view))
    if noise is not None:
        out.addcmul_(noise, phi[:, 2].view(view))
    return out

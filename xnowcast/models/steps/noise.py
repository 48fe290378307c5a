"""Stochastic perturbations of STEPS: spatially correlated noise and motion noise.

Rain noise (Seed 2003; Bowler, Pierce and Seed 2006; Seed et al. 2013): white
Gaussian noise is filtered in the Fourier domain so that it has the power
spectrum of the observed rain field, then decomposed into the same cascade as
the rain. The filter is either

``"nonparametric"``
    the amplitude spectrum of the observed (dB) fields themselves, tapered by a
    Tukey window so that the domain edges add no spurious power;
``"parametric"``
    a two-regime power law ``|F(k)|^2 ~ k**beta`` fitted to their radially
    averaged power spectrum.

Motion noise (Bowler et al. 2006, Sect. 3c) lives in
:mod:`xnowcast.models.motion_perturbation` (extrapolation's members use it too).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from xnowcast.models.steps.cascade import BandpassCascade, hermitian_weights

__all__ = [
    "noise_drive",
    "noise_filter",
    "tukey_window",
    "white_spectrum",
]


def tukey_window(height: int, width: int, alpha: float, device: torch.device) -> Tensor:
    """Radial Tukey window: 1 in the centre, a cosine taper to 0 at the inscribed ellipse.

    ``alpha`` is the tapered fraction of the radius (0: no taper).
    """
    ys = torch.arange(height, device=device, dtype=torch.float32) / height - 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) / width - 0.5
    radius = torch.sqrt(ys[:, None].square() + xs[None].square())
    if alpha <= 0:
        return (radius < 0.5).to(torch.float32)
    edge = 0.5 * (1.0 - alpha)
    taper = 0.5 * (1.0 + torch.cos(math.pi * (radius - edge) / (0.5 * alpha)))
    window = torch.where(radius <= edge, torch.ones_like(radius), taper)
    return torch.where(radius < 0.5, window, torch.zeros_like(radius))


def _fit_two_power_laws(log_k: Tensor, log_power: Tensor) -> tuple[Tensor, Tensor]:
    """Continuous two-segment line fitted to ``log_power(log_k)``: break and coefficients.

    The break point is chosen on a grid (least squares for each candidate, all at
    once); returns ``(break, (intercept, slope, slope change))``.
    """
    breaks = torch.linspace(
        float(log_k[1]), float(log_k[-2]), 64, dtype=log_k.dtype, device=log_k.device
    )
    hinge = (log_k[None] - breaks[:, None]).clamp_min(0.0)
    design = torch.stack((torch.ones_like(hinge), log_k.expand_as(hinge), hinge), dim=-1)
    target = log_power.expand(breaks.numel(), -1).unsqueeze(-1)
    solution = torch.linalg.lstsq(design, target).solution
    residual = (design @ solution - target).square().sum(dim=(1, 2))
    best = int(torch.argmin(residual))
    return breaks[best], solution[best, :, 0]


def noise_filter(
    fields: Tensor, method: str = "nonparametric", window_alpha: float = 0.2
) -> Tensor:
    """Fourier amplitude filter giving white noise the spectrum of ``fields``.

    Parameters
    ----------
    fields
        ``(T, H, W)`` observed fields (dB), finite everywhere.
    method
        ``"nonparametric"`` or ``"parametric"`` (see the module docstring).
    window_alpha
        Taper of the Tukey window applied before the transform (0: none).

    Returns
    -------
    Tensor
        ``(H, W // 2 + 1)`` real amplitudes in ``rfft2`` layout.
    """
    _, height, width = fields.shape
    # The jump from "no rain" to the smallest rain rate would add power at every scale:
    # shift the rain values down so they start at the no-rain value.
    floor = fields.amin()
    wet = fields > floor
    if bool(wet.any()):
        fields = torch.where(wet, fields - (fields[wet].amin() - floor), fields)
    fields = fields - fields.amin(dim=(1, 2), keepdim=True)
    fields = fields * tukey_window(height, width, window_alpha, fields.device)
    spectrum = torch.fft.rfft2(fields).mean(dim=0)
    if method == "nonparametric":
        return spectrum.abs()
    if method != "parametric":
        raise ValueError(f"unknown noise method {method!r}: 'nonparametric' or 'parametric'")
    length = max(height, width)
    ky = torch.fft.fftfreq(height, device=fields.device) * length
    kx = torch.fft.rfftfreq(width, device=fields.device) * length
    radius = torch.sqrt(ky[:, None].square() + kx[None].square())
    ring = radius.round().long().flatten()
    power = (spectrum.abs().square() / (height * width)).flatten()
    rings = length // 2
    inside = ring < rings
    total = torch.zeros(rings, device=fields.device).index_add_(0, ring[inside], power[inside])
    count = torch.zeros(rings, device=fields.device).index_add_(
        0, ring[inside], torch.ones_like(power[inside])
    )
    mean_power = total[1:] / count[1:].clamp_min(1.0)
    log_k = torch.log(torch.arange(1, rings, device=fields.device, dtype=torch.float32))
    usable = mean_power > 0
    brk, (intercept, slope, change) = _fit_two_power_laws(
        log_k[usable], torch.log(mean_power[usable])
    )
    slope = slope.clamp(-4.0, -1.0)
    change = (slope + change).clamp(-4.0, -1.0) - slope
    log_r = torch.log(radius.clamp_min(1e-6))
    log_power = intercept + slope * log_r + change * (log_r - brk).clamp_min(0.0)
    amplitude = torch.exp(0.5 * (log_power - log_power.max()))
    amplitude[0, 0] = 1.0
    return amplitude


def white_spectrum(
    members: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``rfft2`` of ``members`` fields of unit Gaussian white noise, ``(M, H, W // 2 + 1)``."""
    white = torch.randn(
        (members, height, width), generator=generator, device=device, dtype=torch.float32
    )
    return torch.fft.rfft2(white)


def noise_drive(amplitude: Tensor, cascade: BandpassCascade, scale: Tensor) -> Tensor:
    """Filters turning white noise into cascade levels of noise with the observed spectrum.

    Multiplying :func:`white_spectrum` by level ``k`` of the result gives the
    spectrum of a zero-mean field with the spectral shape ``amplitude`` restricted to
    level ``k`` of the cascade, and with standard deviation ``scale[k]`` over the grid
    (in expectation: the variance is that of the filter, not re-estimated from each
    draw).

    Parameters
    ----------
    amplitude
        ``(H, W // 2 + 1)`` from :func:`noise_filter`.
    cascade
        The cascade of the rain.
    scale
        ``(levels,)`` standard deviation wanted for each level.

    Returns
    -------
    Tensor
        ``(levels, H, W // 2 + 1)`` real filters.
    """
    height, width = cascade.height, cascade.width
    filters = amplitude * cascade.weights
    filters[:, 0, 0] = 0.0
    weights = hermitian_weights(height, width, amplitude.device)
    variance = (filters.square() * weights).sum(dim=(-2, -1)) / (height * width)
    factor = torch.where(variance > 0, scale / variance.clamp_min(1e-30).sqrt(), 0.0)
    return filters * factor[:, None, None]

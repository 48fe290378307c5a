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

Motion noise (Bowler et al. 2006, Sect. 3c): each member's motion field gets a
perturbation along and across the local motion direction, drawn once per member
from a Laplace distribution and growing with lead time as ``a t**b + c`` (km/h).
With ``n > 1`` members the draws of one forecast are made in one of three ways:

``"independent"``
    as pysteps: ``n`` independent draws per component.  Their mean, the ensemble
    mean's displacement, is not zero (variance ``1 / n`` of a draw), and their
    mean square about it is ``(n - 1) / n`` on average but 0.14-2.4 between the
    5th and 95th percentile of seeds for 8 members.
``"centred"``
    independent draws minus their mean, times ``sqrt(n / (n + 1))``: the
    ensemble mean is not displaced, and the set is still a random sample, so
    the ensemble's envelope (how often the observation falls outside it: the
    outer bins of the rank histogram) behaves as with independent draws.
``"stratified"``
    the ``n`` quantiles of the distribution at ``(i + 1/2) / n`` (the ``n``
    points that best represent it in the CRPS sense), rescaled, dealt to the
    members in a random order, independently for the two components.  The
    members span the distribution by design, which lowers the CRPS most, but
    the envelope is never narrow, so the observation falls outside it less
    often than for a random sample (a hump in the rank histogram).

Both ways without a displaced mean have an expected mean square of
``(n - 1) / (n + 1)`` times the distribution's variance about their mean.  That
keeps the ensemble as well calibrated as with independent draws: these
displace the ensemble mean at random, which adds to its error as much as the
members' spread accounts for in the spread-error relation of a finite ensemble
(Fortin et al. 2014: mean-square error of the mean = ``(n + 1) / n`` x ensemble
variance); with that displacement gone, the members must spread by the factor
``(n - 1) / (n + 1)`` rather than ``(n - 1) / n``.  One member always gets an
independent draw.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from xnowcast.models.steps.cascade import BandpassCascade, hermitian_weights

__all__ = [
    "BPS_PARALLEL",
    "BPS_PERPENDICULAR",
    "MOTION_DRAWS",
    "MotionPerturbation",
    "centred_laplace",
    "noise_drive",
    "noise_filter",
    "stratified_laplace",
    "tukey_window",
    "white_spectrum",
]

#: ``(a, b, c)`` of the standard deviation ``a t**b + c`` (km/h, ``t`` in minutes) of
#: the motion perturbations along and across the motion (Bowler et al. 2006, Table 1).
BPS_PARALLEL = (10.88, 0.23, -7.68)
BPS_PERPENDICULAR = (5.76, 0.31, -2.72)

#: The ways of drawing the members' motion perturbations (module docstring).
MOTION_DRAWS = ("centred", "stratified", "independent")


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


def _laplace_quantile(centred: Tensor) -> Tensor:
    """Unit-variance Laplace quantile (scale 1/sqrt(2)) of ``p - 0.5``, ``p`` in (0, 1)."""
    return -torch.sign(centred) * torch.log1p(-2.0 * centred.abs()) / math.sqrt(2.0)


def stratified_laplace(
    members: int, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> Tensor:
    """``(members, 2)`` Laplace quantiles at ``(i + 1/2) / members``, rescaled, dealt at random.

    Each column holds the same ``members`` values (mean 0, mean square exactly
    ``(members - 1) / (members + 1)``, see the module docstring) in its own random
    order; ``members`` must be at least 2.
    """
    if members < 2:
        raise ValueError(f"stratified draws need at least 2 members, got {members}")
    levels = (torch.arange(members, dtype=torch.float64) + 0.5) / members - 0.5
    values = _laplace_quantile(levels)
    spread = math.sqrt((members - 1) / (members + 1))
    values = (spread * values / values.square().mean().sqrt()).to(torch.float32).to(device)
    order = [torch.randperm(members, generator=generator, device=device) for _ in range(2)]
    return torch.stack([values[index] for index in order], dim=1)


def centred_laplace(
    members: int, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> Tensor:
    """``(members, 2)`` independent Laplace draws minus their mean, times ``sqrt(n / (n + 1))``.

    The mean square about the (zero) mean is ``(members - 1) / (members + 1)`` on
    average, as for :func:`stratified_laplace`, but it varies from call to call
    as that of a random sample does; ``members`` must be at least 2.
    """
    if members < 2:
        raise ValueError(f"centred draws need at least 2 members, got {members}")
    draws = _independent_laplace(members, generator, device)
    draws = draws - draws.mean(dim=0, keepdim=True)
    return draws * math.sqrt(members / (members + 1))


def _independent_laplace(
    members: int, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    uniform = torch.rand((members, 2), generator=generator, device=device) - 0.5
    return _laplace_quantile(uniform)


class MotionPerturbation:
    """Per-member perturbations of a motion field growing with lead time (Bowler et al. 2006).

    Parameters
    ----------
    flow
        ``(1, 2, h, w)`` motion in pixels per time step (any grid covering the domain).
    members
        Number of members, each with its own two Laplace draws.
    generator
        Random generator on the device of ``flow``.
    grid_spacing_km, time_step_minutes
        Pixel size and time step, to turn the km/h of the perturbation model into
        pixels per step.
    parallel, perpendicular
        ``(a, b, c)`` of the standard deviation ``a t**b + c`` in km/h along and
        across the local motion (``t``: lead time in minutes).
    sampling
        How the members' draws are made: "independent" (as pysteps), "centred" or
        "stratified" (module docstring); one member always gets an independent draw.
    """

    def __init__(
        self,
        flow: Tensor,
        members: int,
        generator: torch.Generator | None,
        grid_spacing_km: float,
        time_step_minutes: float,
        parallel: tuple[float, float, float] = BPS_PARALLEL,
        perpendicular: tuple[float, float, float] = BPS_PERPENDICULAR,
        *,
        sampling: str = "independent",
    ) -> None:
        if sampling not in MOTION_DRAWS:
            raise ValueError(f"sampling must be one of {MOTION_DRAWS}, got {sampling!r}")
        if sampling == "stratified" and members > 1:
            self.draws = stratified_laplace(members, generator, flow.device)
        elif sampling == "centred" and members > 1:
            self.draws = centred_laplace(members, generator, flow.device)
        else:
            self.draws = _independent_laplace(members, generator, flow.device)
        speed = flow.norm(dim=1, keepdim=True)
        along = torch.where(speed > 1e-12, flow / speed.clamp_min(1e-12), torch.zeros_like(flow))
        across = torch.stack((-along[:, 1], along[:, 0]), dim=1)
        self.along, self.across = along, across
        # km/h -> pixels per step
        self.scale = time_step_minutes / (60.0 * grid_spacing_km)
        self.parallel, self.perpendicular = parallel, perpendicular
        self.time_step_minutes = time_step_minutes

    def __call__(self, step: int) -> Tensor:
        """Perturbed motion minus the motion, ``(members, 2, h, w)``, at lead ``step``."""
        minutes = step * self.time_step_minutes
        a, b, c = self.parallel
        std_along = a * minutes**b + c
        a, b, c = self.perpendicular
        std_across = a * minutes**b + c
        along = (std_along * self.scale) * self.draws[:, 0].view(-1, 1, 1, 1)
        across = (std_across * self.scale) * self.draws[:, 1].view(-1, 1, 1, 1)
        return along * self.along + across * self.across

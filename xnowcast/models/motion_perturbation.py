"""Per-member motion perturbations of an extrapolation (Bowler, Pierce and Seed 2006).

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

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BPS_PARALLEL",
    "BPS_PERPENDICULAR",
    "MOTION_DRAWS",
    "MotionPerturbation",
    "centred_laplace",
    "laplace_draws_from_seed",
    "stratified_laplace",
]

#: ``(a, b, c)`` of the standard deviation ``a t**b + c`` (km/h, ``t`` in minutes) of
#: the motion perturbations along and across the motion (Bowler et al. 2006, Table 1).
BPS_PARALLEL = (10.88, 0.23, -7.68)
BPS_PERPENDICULAR = (5.76, 0.31, -2.72)

#: The ways of drawing the members' motion perturbations (module docstring).
MOTION_DRAWS = ("centred", "stratified", "independent")


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
        ``(1, 2, h, w)`` motion in pixels per time step (any grid covering the domain),
        or ``(members, 2, h, w)``, one motion per member (each row's own directions).
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
    draws
        ``(members, 2)`` standard Laplace draws (along, across) to use instead of
        drawing them (e.g. from each member's own seed); ``generator`` and
        ``sampling`` are then unused.
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
        draws: Tensor | None = None,
    ) -> None:
        if sampling not in MOTION_DRAWS:
            raise ValueError(f"sampling must be one of {MOTION_DRAWS}, got {sampling!r}")
        if draws is not None:
            if tuple(draws.shape) != (members, 2):
                raise ValueError(f"draws must be ({members}, 2), got {tuple(draws.shape)}")
            self.draws = draws.to(device=flow.device, dtype=flow.dtype)
        elif sampling == "stratified" and members > 1:
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


def laplace_draws_from_seed(seeds: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """``(len(seeds), 2)`` independent unit-variance Laplace draws, one row per seed.

    Each row depends on its seed alone (through :class:`numpy.random.SeedSequence`),
    so a member's motion perturbation does not depend on the other members computed
    with it, on the batch or on the tile.
    """
    rows = []
    for seed in seeds:
        uniform = np.random.default_rng(np.random.SeedSequence([seed, 0])).random(2) - 0.5
        rows.append(uniform)
    centred = torch.as_tensor(np.asarray(rows, dtype=np.float64).reshape(-1, 2))
    return _laplace_quantile(centred).to(torch.float32).to(device)

"""Motion-aware downscaling without weights: the ``flow`` baseline.

Coarse, infrequent rain-rate frames ``(B, T, C, h, w)`` (mm/h) become fine,
frequent ones ``(B, (T-1)*tf + 1, 1, h*f, w*f)`` in three steps:

1. **motion**: a dense optical flow between every pair of consecutive coarse
   frames (:func:`~xnowcast.models.optical_flow.dense_lucas_kanade` on the
   log-transformed rain rate, one field per pair, so motion may change from
   one pair to the next);
2. **consistent spatial refinement** of every input frame
   (:func:`consistent_upsample`): bicubic interpolation, a few back-projection
   iterations (the block-mean error is interpolated back onto the fine grid),
   then an exact multiplicative correction so that the ``f x f`` block means of
   the output **equal** the input (and rain stays nonnegative);
3. **two-way semi-Lagrangian interpolation** of the inserted frames
   (:func:`interpolate_along_flow`): at the fraction ``s = j / tf`` of the way
   from frame ``k`` to ``k + 1``, the earlier fine frame is taken at the
   departure point ``x - s u`` and the later one at ``x + (1 - s) u``
   (:func:`~xnowcast.models.advection.semi_lagrangian`), and the two are
   averaged with weights ``1 - s`` and ``s`` (the nearer frame counts more).
   Where one trajectory leaves the domain the other one is used alone.

Output frames at input times are the refined inputs, so coarsening them gives
the input back exactly.  The model works for any integer ``factor`` and
``time_factor``, any time step (the flow is measured per input step), any
grid size, batched, on the device of its input.

Not mass-conserving in the strict sense: the advected fields are not scaled
by the divergence of the flow (radar rain grows and decays far more than an
estimated divergence would explain).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xnowcast.errors import ModelError
from xnowcast.models.advection import _corner_grid, departure_points
from xnowcast.models.base import DownscaleModel
from xnowcast.models.extrapolation import _FLOW_KEYS as _LK_KEYS
from xnowcast.models.interpolation import resolve_config
from xnowcast.models.optical_flow import (
    dense_lucas_kanade,
    normalized_pixel_size,
    rain_intensity,
)
from xnowcast.registry import ModelSpec, register

__all__ = [
    "FLOW_CONFIGS",
    "FlowDownscaler",
    "build_flow",
    "consistent_upsample",
    "enforce_block_mean",
    "interpolate_along_flow",
    "pair_flows",
]

FLOW_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "standard"},
    # Chosen on MeteoSwiss 2015-05-15 (benchmarks/downscale_flow.py); RMI was not looked at.
    "standard": {
        "in_channels": 1,
        "window": 4,
        "static_channels": 0,
        "static_names": [],
        "rain_threshold": 0.1,
        "context_pairs": 0,
        "levels": 5,
        "finest_level": 1,
        "iterations": 2,
        "window_sigma": 8.0,
        "presmooth_sigma": 1.0,
        "regularization": 0.5,
        "confidence_scale": 0.5,
        "flow_smooth_sigma": 8.0,
        "margin": 0,
        "edge_margin": 1,
        "backprojection": 1,
        "trajectory_scale": 4,
    },
}


def enforce_block_mean(fine: Tensor, coarse: Tensor, factor: int) -> Tensor:
    """Scale each ``factor x factor`` block of ``fine`` so that its mean is ``coarse``.

    Parameters
    ----------
    fine
        Nonnegative ``(N, C, h*f, w*f)``.
    coarse
        Nonnegative ``(N, C, h, w)``.
    factor
        Block side.

    Returns
    -------
    Tensor
        ``fine`` with every block multiplied by ``coarse / blockmean(fine)``
        (a block whose mean is zero takes the value ``coarse`` uniformly), so the
        block means equal ``coarse`` and the values stay nonnegative.
    """
    if factor == 1:
        return coarse
    mean = F.avg_pool2d(fine, factor)
    tiny = 1e-6
    ratio = coarse / mean.clamp_min(tiny)
    ratio_up = F.interpolate(ratio, scale_factor=factor, mode="nearest")
    coarse_up = F.interpolate(coarse, scale_factor=factor, mode="nearest")
    empty = F.interpolate((mean <= tiny).to(fine.dtype), scale_factor=factor, mode="nearest")
    return torch.where(empty > 0, coarse_up, fine * ratio_up)


def consistent_upsample(coarse: Tensor, factor: int, backprojection: int = 3) -> Tensor:
    """Bicubic refinement of ``(N, C, h, w)`` whose block means equal the input exactly.

    Parameters
    ----------
    coarse
        Nonnegative fields, ``(N, C, h, w)``.
    factor
        Spatial refinement.
    backprojection
        Iterations of iterative back-projection (the block-mean error, upsampled
        bilinearly, is added back) before the exact correction.

    Returns
    -------
    Tensor
        ``(N, C, h*f, w*f)``, nonnegative, block means equal to ``coarse``.
    """
    if factor == 1:
        return coarse
    fine = F.interpolate(coarse, scale_factor=factor, mode="bicubic", align_corners=False)
    fine = fine.clamp_min(0)
    for _ in range(backprojection):
        error = coarse - F.avg_pool2d(fine, factor)
        fine = fine + F.interpolate(
            error, scale_factor=factor, mode="bilinear", align_corners=False
        )
        fine = fine.clamp_min(0)
    return enforce_block_mean(fine, coarse, factor)


def pair_flows(frames: Tensor, config: dict[str, Any]) -> Tensor:
    """Optical flow between consecutive frames of rain rate ``(B, T, h, w)``.

    Returns
    -------
    Tensor
        ``(B, T-1, 2, h', w')``: x and y displacement in pixels of ``frames`` per
        input step, on the (possibly coarser) grid of ``finest_level``.
    """
    b, t, h, w = frames.shape
    images = rain_intensity(frames, float(config["rain_threshold"]))
    length = min(t, 2 + 2 * int(config["context_pairs"]))
    starts = [min(max(k - int(config["context_pairs"]), 0), t - length) for k in range(t - 1)]
    index = torch.tensor([s + i for s in starts for i in range(length)], device=frames.device)
    pairs = images[:, index].reshape(b * (t - 1), length, h, w)
    settings = {key: config[key] for key in _LK_KEYS}
    flow = dense_lucas_kanade(pairs, None, full_resolution=False, **settings)
    return flow.view(b, t - 1, 2, *flow.shape[-2:])


def warp_back(fields: Tensor, flow: Tensor, trajectory_scale: int = 4) -> tuple[Tensor, Tensor]:
    """Each field taken at the departure point of a one-step backward trajectory along ``flow``.

    The semi-Lagrangian step of :func:`~xnowcast.models.advection.semi_lagrangian`
    (midpoint velocity, trajectories on a grid ``trajectory_scale`` times coarser,
    departure points interpolated to every pixel), without its mask bookkeeping.

    Parameters
    ----------
    fields
        ``(N, C, H, W)``.
    flow
        ``(N, 2, h, w)`` displacement per step in pixels of ``fields`` (any grid).

    Returns
    -------
    tuple of Tensor
        The warped fields ``(N, C, H, W)`` and a boolean ``(N, 1, H, W)``: True where
        the departure point lies inside the domain.
    """
    height, width = fields.shape[-2:]
    pixel = normalized_pixel_size(height, width, fields.dtype, fields.device)
    velocity = flow.to(fields.dtype) * pixel.view(1, 2, 1, 1)
    coarse = (
        max(2, -(-(height - 1) // trajectory_scale) + 1),
        max(2, -(-(width - 1) // trajectory_scale) + 1),
    )
    if trajectory_scale <= 1 or coarse[0] >= height or coarse[1] >= width:
        coarse = (height, width)
    start = _corner_grid(*coarse, (height, width), fields.dtype, fields.device)
    points = departure_points(velocity, 1, start)[0][:, 0]
    if coarse != (height, width):
        points = F.interpolate(points, size=(height, width), mode="bilinear", align_corners=True)
    points = points.permute(0, 2, 3, 1)
    inside = (points.abs() <= 1.0).all(dim=-1).unsqueeze(1)
    warped = F.grid_sample(
        fields, points, mode="bilinear", padding_mode="border", align_corners=False
    )
    return warped, inside


def interpolate_along_flow(
    fine: Tensor, flows: Tensor, time_factor: int, trajectory_scale: int = 4
) -> Tensor:
    """Fine frames at input times -> the whole refined sequence, inserted frames along the flow.

    Parameters
    ----------
    fine
        ``(B, T, C, H, W)`` fine frames at the input times.
    flows
        ``(B, T-1, 2, h', w')`` motion of each pair in pixels of ``fine`` per input step.
    time_factor
        Output frames per input step.
    trajectory_scale
        Passed to :func:`semi_lagrangian`.

    Returns
    -------
    Tensor
        ``(B, (T-1)*tf + 1, C, H, W)``; output ``k*tf`` is ``fine[:, k]``.
    """
    if time_factor == 1:
        return fine
    b, t, c, height, width = fine.shape
    pairs = b * (t - 1)
    first = fine[:, :-1].reshape(pairs, c, height, width)
    second = fine[:, 1:].reshape(pairs, c, height, width)
    flow = flows.reshape(pairs, 2, *flows.shape[-2:])
    inserted = []
    for j in range(1, time_factor):
        s = j / time_factor
        # both neighbours in one call: the earlier one back along s*u, the later one
        # forward along (1-s)*u
        warped, inside = warp_back(
            torch.cat([first, second]), torch.cat([flow * s, flow * (s - 1)]), trajectory_scale
        )
        a, z = warped[:pairs], warped[pairs:]
        a_in, z_in = inside[:pairs].to(a.dtype), inside[pairs:].to(a.dtype)
        # weights (1 - s) and s where both trajectories stay inside the domain, the one
        # that does otherwise, linear in time where neither does
        wa, wz = (1 - s) * a_in, s * z_in
        total = wa + wz
        value = torch.where(
            total > 0,
            (wa * a + wz * z) / total.clamp_min(1e-12),
            (1 - s) * first + s * second,
        )
        inserted.append(value.view(b, t - 1, c, height, width))
    stacked = torch.stack([fine[:, :-1], *inserted], dim=2).flatten(1, 2)
    return torch.cat([stacked, fine[:, -1:]], dim=1)


class FlowDownscaler(DownscaleModel):
    """Optical flow + two-way semi-Lagrangian interpolation + consistent refinement.

    No trainable weights; see the module docstring for the scheme.

    Parameters
    ----------
    config
        A full config (see :data:`FLOW_CONFIGS`).
    factor, time_factor
        Spatial and temporal refinement, integers >= 1.
    """

    def __init__(self, config: dict[str, Any], factor: int = 2, time_factor: int = 2) -> None:
        super().__init__()
        self.factor, self.time_factor = factor, time_factor
        self.in_channels = int(config["in_channels"])
        self.static_channels = 0
        self.window = int(config["window"])
        self.spatial_multiple = 1
        self.config = {**config, "model": "flow", "factor": factor, "time_factor": time_factor}

    def motion(self, frames: Tensor) -> Tensor:
        """Pair flows ``(B, T-1, 2, h', w')`` of rain rate ``(B, T, 1, h, w)``, coarse px/step."""
        return pair_flows(frames[:, :, 0], self.config)

    def refine(self, frames: Tensor, flows: Tensor | None = None) -> Tensor:
        """The refined sequence of rain rate ``(B, T, 1, h, w)``; ``flows`` from :meth:`motion`."""
        b, t, _, h, w = frames.shape
        f = self.factor
        rain = frames[:, :, :1].clamp_min(0)
        fine = consistent_upsample(
            rain.reshape(b * t, 1, h, w), f, int(self.config["backprojection"])
        ).view(b, t, 1, h * f, w * f)
        if self.time_factor == 1 or t < 2:
            return fine
        if flows is None:
            flows = self.motion(rain)
        return interpolate_along_flow(
            fine, flows * f, self.time_factor, int(self.config["trajectory_scale"])
        )

    def forward(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        """Fine frames in mm/h, ``(B, (T-1)*tf + 1, 1, h*f, w*f)``, nonnegative."""
        self.check_inputs(frames, static)
        return self.refine(frames)


def build_flow(
    config: str | dict[str, Any] = "default", factor: int = 2, time_factor: int = 2
) -> FlowDownscaler:
    """The ``flow`` downscaler; any integer ``factor`` and ``time_factor`` >= 1."""
    SPEC.check_factors(factor, time_factor)
    cfg = resolve_config("flow", config, FLOW_CONFIGS)
    if int(cfg["static_channels"]) or cfg["static_names"]:
        raise ModelError("flow takes no static fields")
    for key in ("rain_threshold", "regularization", "confidence_scale", "trajectory_scale"):
        if not float(cfg[key]) > 0:
            raise ModelError(f"flow setting {key} must be positive, got {cfg[key]!r}")
    return FlowDownscaler(cfg, factor, time_factor)


SPEC = register(
    ModelSpec(
        name="flow",
        task="downscale",
        builder="xnowcast.models.flow:build_flow",
        summary=(
            "Optical flow between coarse frames, two-way semi-Lagrangian interpolation of the "
            "inserted frames, bicubic refinement whose block means equal the input."
        ),
        reference="Lucas & Kanade (1981); Germann & Zawadzki (2002); Irani & Peleg (1991)",
        default_config="default",
        window=4,
    )
)

"""Trilinear interpolation: the downscaling baseline, and the skip path of the learned models.

The interpolation scheme
------------------------
Input frames ``(B, T, C, h, w)`` are refined to ``(B, (T-1)*tf + 1, 1, h*f, w*f)``:

* **time**: output frame ``k*tf + j`` (``0 <= j < tf``) is
  ``(1 - j/tf) * frame[k] + (j/tf) * frame[k+1]``, so output frame ``k*tf`` is
  input frame ``k`` exactly and inserted frames are linear in time;
* **space**: input values sit at the centres of coarse cells and output values
  at the centres of the ``f x f`` fine cells inside each coarse cell.  Values are
  interpolated bilinearly between coarse centres; beyond the outermost coarse
  centres (the outer half coarse cell) they are extrapolated linearly from the
  two outermost cells.  The scheme is therefore exact for any field that is
  linear in x, y and t, everywhere including the borders;
* results are clipped at zero (rain is nonnegative); the clip only acts where
  the linear border extrapolation would go negative.

Coarsening back (factor 2)
--------------------------
For ``f = 2`` the 2x2 block mean of the output is the input filtered by the
separable kernel ``[1/8, 3/4, 1/8]`` along y and x (with the linearly
extrapolated ghost cells at the borders)::

    blockmean(up(x))[i] = x[i] + (x[i-1] - 2 x[i] + x[i+1]) / 8

It equals the input exactly wherever the field is locally linear (zero second
difference), and in general it is a mild smoothing of it: interpolation alone
does not conserve each coarse cell's mean.  (The downscaling runtime restores
what must be restored; the learned models are trained towards fine targets
whose block mean *is* the input.)

This module also holds what every downscaling model here shares: the value
transforms (mm/h <-> the space a network works in) and config presets
(:func:`resolve_config`); the model contract is :mod:`xnowcast.models.base`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.errors import ModelError
from xnowcast.models.base import DownscaleModel
from xnowcast.registry import ModelSpec, register

__all__ = [
    "TRILINEAR_CONFIGS",
    "DownscaleModel",
    "RainTransform",
    "Trilinear",
    "build_trilinear",
    "interpolate_time",
    "resolve_config",
    "trilinear_upsample",
]

#: Reflectivity range of the FC-ZSM paper's preprocessing, dBZ.
DBZ_FLOOR = 15.0
DBZ_CEIL = 70.0


class RainTransform(nn.Module):
    """Map rain rate (mm/h) to the value space a network works in, and back.

    Parameters
    ----------
    kind
        ``"log"``: ``z = log1p(R) / log1p(scale)`` (default ``scale`` 10 mm/h,
        so 10 mm/h -> 1);
        ``"linear"``: ``z = R / scale``;
        ``"dbz"``: the FC-ZSM paper's preprocessing: ``R`` to reflectivity with
        ``Z = a R**b``, values below 15 dBZ floored to 15, then
        ``z = (dBZ - 15) / (70 - 15)`` (values above 70 dBZ are kept, not
        clipped, so heavy rain is not lost); back-transformed values with
        ``z <= 0`` are no rain.
    scale
        Rain rate scale of ``"log"`` and ``"linear"``, mm/h.
    zr_a, zr_b
        The Z-R relation of ``"dbz"`` (Marshall-Palmer by default).
    """

    KINDS = ("log", "linear", "dbz")

    def __init__(
        self, kind: str = "log", scale: float = 10.0, zr_a: float = 200.0, zr_b: float = 1.6
    ) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ModelError(f"unknown transform {kind!r}; choose one of {self.KINDS}")
        self.kind, self.scale, self.zr_a, self.zr_b = kind, float(scale), zr_a, zr_b

    def forward(self, rate: Tensor) -> Tensor:
        """Rain rate (mm/h) -> network space."""
        rate = rate.clamp_min(0)
        if self.kind == "log":
            return torch.log1p(rate) / math.log1p(self.scale)
        if self.kind == "linear":
            return rate / self.scale
        dbz = 10 * torch.log10(self.zr_a * rate.clamp_min(1e-6) ** self.zr_b)
        return (dbz.clamp_min(DBZ_FLOOR) - DBZ_FLOOR) / (DBZ_CEIL - DBZ_FLOOR)

    def inverse(self, z: Tensor) -> Tensor:
        """Network space -> rain rate (mm/h), nonnegative."""
        if self.kind == "log":
            return torch.expm1(z.clamp_min(0) * math.log1p(self.scale))
        if self.kind == "linear":
            return (z * self.scale).clamp_min(0)
        dbz = DBZ_FLOOR + z * (DBZ_CEIL - DBZ_FLOOR)
        rate = (10 ** (dbz / 10) / self.zr_a) ** (1 / self.zr_b)
        return torch.where(z > 0, rate, torch.zeros_like(rate))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, scale={self.scale}"


def interpolate_time(frames: Tensor, time_factor: int) -> Tensor:
    """Insert ``time_factor - 1`` linearly interpolated frames between frames (dim 1).

    ``(B, T, ...) -> (B, (T-1)*time_factor + 1, ...)``; output ``k*tf`` is input ``k``.
    """
    if time_factor == 1:
        return frames
    first, second = frames[:, :-1], frames[:, 1:]
    parts = [(1 - j / time_factor) * first + (j / time_factor) * second for j in range(time_factor)]
    stacked = torch.stack(parts, dim=2)  # (B, T-1, tf, ...)
    stacked = stacked.flatten(1, 2)
    return torch.cat([stacked, frames[:, -1:]], dim=1)


def _pad_linear(images: Tensor) -> Tensor:
    """Pad the last two dims by one cell of linear extrapolation (replication if size 1)."""
    for dim in (-2, -1):
        size = images.shape[dim]
        first = images.narrow(dim, 0, 1)
        last = images.narrow(dim, size - 1, 1)
        if size > 1:
            first = 2 * first - images.narrow(dim, 1, 1)
            last = 2 * last - images.narrow(dim, size - 2, 1)
        images = torch.cat([first, images, last], dim=dim)
    return images


def upsample_space(images: Tensor, factor: int) -> Tensor:
    """Bilinear cell-centre upsampling of ``(N, C, h, w)`` by ``factor``, linear at the borders."""
    if factor == 1:
        return images
    padded = _pad_linear(images)
    up = F.interpolate(padded, scale_factor=factor, mode="bilinear", align_corners=False)
    return up[..., factor:-factor, factor:-factor]


def trilinear_upsample(frames: Tensor, factor: int, time_factor: int) -> Tensor:
    """Trilinear refinement of ``(B, T, C, h, w)`` to ``(B, (T-1)*tf+1, C, h*f, w*f)``.

    No clipping (see :class:`Trilinear` for the rain-rate baseline).
    """
    refined = interpolate_time(frames, time_factor)
    b, t, c, h, w = refined.shape
    up = upsample_space(refined.reshape(b * t, c, h, w), factor)
    return up.view(b, t, c, h * factor, w * factor)


def resolve_config(
    name: str, config: str | dict[str, Any], presets: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A full config dict from a preset name or from a dict of overrides.

    A dict may name its preset under ``"preset"`` (default ``"default"``);
    its other keys override that preset's; unknown keys are an error.  The
    keys ``"model"``, ``"factor"`` and ``"time_factor"`` of a config read back
    from a weights file are ignored (the builder's arguments set the factors).
    """
    if isinstance(config, str):
        key = config
        overrides: dict[str, Any] = {}
    elif isinstance(config, dict):
        overrides = {k: v for k, v in config.items() if k not in ("model", "factor", "time_factor")}
        key = overrides.pop("preset", "default")
    else:
        raise ModelError(f"config of {name!r} must be a preset name or a dict, not {config!r}")
    if key == "default":
        key = presets["default"]["preset"]
    if key not in presets:
        choices = sorted(k for k in presets if k != "default")
        raise ModelError(f"{name!r} has no config {key!r}; choose one of {choices}")
    resolved = dict(presets[key])
    unknown = sorted(set(overrides) - set(resolved))
    if unknown:
        raise ModelError(f"unknown config keys for {name!r}: {unknown}; known: {sorted(resolved)}")
    resolved.update(overrides)
    resolved["preset"] = key
    return resolved


class Trilinear(DownscaleModel):
    """Trilinear interpolation of the precipitation channel (no parameters).

    See the module docstring for the scheme.  Extra input channels (dynamic
    fields) are ignored; ``static`` must be None or empty.

    Parameters
    ----------
    factor, time_factor
        Spatial and temporal refinement, integers >= 1.
    in_channels
        Channels of the input (only channel 0, the rain rate, is used).
    window
        Frames per window the runtime should feed (any length works).
    """

    def __init__(
        self, factor: int = 2, time_factor: int = 2, in_channels: int = 1, window: int = 4
    ) -> None:
        super().__init__()
        self.factor, self.time_factor = factor, time_factor
        self.in_channels, self.static_channels = in_channels, 0
        self.window, self.spatial_multiple = window, 1
        self.config = {
            "model": "trilinear",
            "preset": "plain",
            "factor": factor,
            "time_factor": time_factor,
            "in_channels": in_channels,
            "static_channels": 0,
            "static_names": [],
            "window": window,
        }

    def forward(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        self.check_inputs(frames, static)
        up = trilinear_upsample(frames[:, :, :1], self.factor, self.time_factor)
        return up.clamp_min(0)


TRILINEAR_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "plain"},
    "plain": {"in_channels": 1, "window": 4, "static_channels": 0, "static_names": []},
}


def build_trilinear(
    config: str | dict[str, Any] = "default", factor: int = 2, time_factor: int = 2
) -> Trilinear:
    """The trilinear baseline; any integer ``factor`` and ``time_factor`` >= 1."""
    SPEC.check_factors(factor, time_factor)
    cfg = resolve_config("trilinear", config, TRILINEAR_CONFIGS)
    if int(cfg["static_channels"]) or cfg["static_names"]:
        raise ModelError("trilinear takes no static fields")
    return Trilinear(factor, time_factor, int(cfg["in_channels"]), int(cfg["window"]))


SPEC = register(
    ModelSpec(
        name="trilinear",
        task="downscale",
        builder="xnowcast.models.interpolation:build_trilinear",
        summary="Linear interpolation in time, bilinear in space: the interpolation baseline.",
        reference="Chen, Qin & Dai (2022), Front. Earth Sci. 10:887842 (baseline)",
        default_config="default",
        window=4,
    )
)

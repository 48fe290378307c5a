"""The model contract: what a nowcast or downscale module takes, returns and says about itself.

A model is a plain ``torch.nn.Module`` subclassing :class:`NowcastModel` or
:class:`DownscaleModel`; its module also registers a
:class:`~xnowcast.registry.ModelSpec` (what the runtime needs before any module is
built: task, builder, input frames, time step, factors, window, channels, units,
weights).  The runtime (:mod:`xnowcast.runtime`) does the rest: units, missing data,
orientation, padding, tiling, batching, devices, dask.

``nowcast``
    ``model(frames, steps, *, generator=None, **extra)`` with ``frames`` shaped
    ``(B, T_in, 1, H, W)`` in the spec's units (NaN already filled), returning
    ``(B, steps, 1, H, W)`` in the same units.  ``extra`` is ``valid=`` (a boolean
    mask shaped like ``frames``) for models with :attr:`~NowcastModel.accepts_mask`,
    and ``grid_spacing_km=``, ``time_step_minutes=`` (None when unknown) for models
    with :attr:`~NowcastModel.accepts_geometry`.
``downscale``
    ``model(frames, static=None)`` with ``frames`` shaped ``(B, T, C, h, w)``
    (channel 0 precipitation in the spec's units, then dynamic fields) and ``static``
    ``(B, S, h*factor, w*factor)`` or None, returning
    ``(B, (T-1)*time_factor + 1, 1, h*factor, w*factor)``.

The attributes each base class lists are read by the runtime from the built
module; the input checks are here, in one place (:meth:`NowcastModel.check_inputs`,
:meth:`DownscaleModel.check_inputs`), and raise :class:`~xnowcast.errors.ModelError`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from xnowcast.errors import ModelError

__all__ = ["DownscaleModel", "NowcastModel", "check_nowcast_inputs", "merge_settings"]


def merge_settings(
    name: str, defaults: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` updated with ``settings``; a key ``defaults`` lacks is a clear error.

    Every model that takes its settings as keyword arguments checks them here, so
    that a misspelt setting is refused (naming the valid ones) instead of ignored.
    """
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ModelError(f"{name}: unknown settings {unknown}; valid ones are {sorted(defaults)}")
    return {**defaults, **settings}


def check_nowcast_inputs(
    frames: Tensor,
    steps: int,
    valid: Tensor | None,
    input_frames: int,
    name: str,
    *,
    spatial_multiple: int = 1,
    exact: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Check a nowcast call and return the frames (floating point) and mask it uses.

    Parameters
    ----------
    frames
        Input ``(B, T, 1, H, W)``.
    steps
        Number of lead times, a positive integer.
    valid
        Boolean mask shaped like ``frames`` or ``None``.
    input_frames
        Number of most recent frames the model uses; ``T`` must be at least this
        (exactly this when ``exact``).
    name
        Model name, for error messages.
    spatial_multiple
        H and W must be positive multiples of it.

    Returns
    -------
    tuple
        The last ``input_frames`` frames (integers promoted to float32) and the
        matching slice of ``valid`` (``None`` when not given).

    Raises
    ------
    ModelError
        On a wrong shape, too few frames, a bad ``steps``, a grid that is not a
        multiple of ``spatial_multiple`` or a mask of another shape.
    """
    if frames.ndim != 5 or frames.shape[2] != 1:
        raise ModelError(
            f"{name} expects frames shaped (batch, time, 1, y, x), got {tuple(frames.shape)}"
        )
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ModelError(f"{name}: steps must be a positive integer, got {steps!r}")
    t = frames.shape[1]
    if t < input_frames or (exact and t != input_frames):
        need = "exactly" if exact else "at least"
        raise ModelError(f"{name} needs {need} {input_frames} input frames, got {t}")
    h, w = frames.shape[-2:]
    m = spatial_multiple
    if h % m or w % m or h == 0 or w == 0:
        raise ModelError(f"{name} needs H and W multiples of {m}, got {h} x {w}: pad the input")
    if valid is not None and tuple(valid.shape) != tuple(frames.shape):
        raise ModelError(
            f"{name}: valid must be shaped like frames {tuple(frames.shape)}, "
            f"got {tuple(valid.shape)}"
        )
    if not frames.is_floating_point():
        frames = frames.to(torch.float32)
    frames = frames[:, -input_frames:]
    if valid is not None:
        valid = valid[:, -input_frames:].to(device=frames.device, dtype=torch.bool)
    return frames, valid


class NowcastModel(nn.Module):
    """Base class of nowcasters: the attributes the runtime reads, and the input check.

    Attributes
    ----------
    input_frames : int
        Frames the model reads (the last ones of its input); equal to its spec's.
    spatial_multiple : int
        The runtime pads H and W to a multiple of it (tiles start on multiples).
    accepts_mask : bool
        ``forward`` takes ``valid=``; such models are not tiled (they see the
        whole field and its mask) and set their own NaN.
    accepts_geometry : bool
        ``forward`` takes ``grid_spacing_km=`` and ``time_step_minutes=``.
    batches_members : bool
        All members of an initialisation come in one call (one row per member).
    config : dict
        The configuration it was built from (stored with trained weights).
    label : str
        The name used in error messages (default: the class name).
    """

    input_frames: int
    label: str = ""
    spatial_multiple: int = 1
    accepts_mask: bool = False
    accepts_geometry: bool = False
    batches_members: bool = False
    config: dict[str, Any]

    def check_inputs(
        self, frames: Tensor, steps: int, valid: Tensor | None = None, *, exact: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """:func:`check_nowcast_inputs` with this model's attributes."""
        return check_nowcast_inputs(
            frames,
            steps,
            valid,
            int(self.input_frames),
            self.label or type(self).__name__,
            spatial_multiple=int(self.spatial_multiple),
            exact=exact,
        )


class DownscaleModel(nn.Module):
    """Base class of downscalers: the attributes the runtime reads, and the input check.

    Subclasses set ``factor``, ``time_factor``, ``in_channels``,
    ``static_channels``, ``window``, ``spatial_multiple`` and ``config`` and
    call :meth:`check_inputs` at the top of ``forward``.

    Attributes
    ----------
    factor, time_factor : int
        Spatial and temporal refinement.
    in_channels : int
        Input channels: precipitation + dynamic fields.
    static_channels : int
        Static fields on the fine grid (0: ``static`` must be None or empty).
    window : int
        Frames per window the runtime feeds (long series are cut into windows
        sharing one frame).
    spatial_multiple : int
        The runtime pads h and w to a multiple of it.
    accepts_frames : str
        ``"any"`` (>= 1 frame, >= 2 when refining time) or ``"window"`` (exactly
        ``window`` frames).
    """

    factor: int
    time_factor: int
    in_channels: int
    static_channels: int
    window: int
    spatial_multiple: int
    config: dict[str, Any]
    accepts_frames: str = "any"

    def check_inputs(self, frames: Tensor, static: Tensor | None) -> None:
        """Raise :class:`~xnowcast.errors.ModelError` unless the inputs fit this model."""
        if frames.dim() != 5:
            raise ModelError(f"frames must be (B, T, C, h, w); got shape {tuple(frames.shape)}")
        b, t, c, h, w = frames.shape
        name = type(self).__name__
        if c != self.in_channels:
            raise ModelError(f"{name} expects {self.in_channels} input channels, got {c}")
        if self.accepts_frames == "window" and t != self.window:
            raise ModelError(f"{name} takes exactly {self.window} input frames, got {t}")
        if t < (2 if self.time_factor > 1 else 1):
            raise ModelError(f"{name} needs at least 2 frames to refine time, got {t}")
        m = self.spatial_multiple
        if h % m or w % m:
            raise ModelError(f"{name} needs h and w multiples of {m} (pad first); got {h}x{w}")
        if static is None or static.shape[1] == 0:
            if self.static_channels:
                raise ModelError(f"{name} needs {self.static_channels} static channels")
            return
        expected = (b, self.static_channels, h * self.factor, w * self.factor)
        if tuple(static.shape) != expected:
            raise ModelError(
                f"static must be (B, S, h*f, w*f) = {expected} for {name}; "
                f"got {tuple(static.shape)}"
            )

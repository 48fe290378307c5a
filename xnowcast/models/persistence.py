"""Persistence nowcast: the last observed frame held for every lead time.

The floor every nowcasting model must beat. Also home of the input checks that
the deterministic baselines share.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from xnowcast.errors import ModelError

__all__ = ["Persistence", "build_persistence", "check_nowcast_inputs", "config_settings"]


def check_nowcast_inputs(
    frames: Tensor, steps: int, valid: Tensor | None, input_frames: int, name: str
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
        Number of most recent frames the model uses; ``T`` must be at least this.
    name
        Model name, for error messages.

    Returns
    -------
    tuple
        The last ``input_frames`` frames (integers promoted to float32) and the
        matching slice of ``valid`` (``None`` when not given).

    Raises
    ------
    ModelError
        On a wrong shape, too few frames, a bad ``steps`` or a mask of another shape.
    """
    if frames.ndim != 5 or frames.shape[2] != 1:
        raise ModelError(
            f"{name} expects frames shaped (batch, time, 1, y, x), got {tuple(frames.shape)}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ModelError(f"{name}: steps must be a positive integer, got {steps!r}")
    if frames.shape[1] < input_frames:
        raise ModelError(f"{name} needs {input_frames} input frames, got {frames.shape[1]}")
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


def config_settings(
    config: str | dict[str, Any], configs: dict[str, dict[str, Any]], name: str
) -> dict[str, Any]:
    """The settings of a named configuration (a copy), or a dict of overrides as given.

    Raises
    ------
    ModelError
        For an unknown name or a config that is neither a name nor a dict.
    """
    if isinstance(config, str):
        if config not in configs:
            raise ModelError(f"unknown {name} config {config!r}; choose one of {sorted(configs)}")
        return copy.deepcopy(configs[config])
    if isinstance(config, dict):
        return dict(config)
    raise ModelError(f"{name} config must be a name or a dict, got {type(config)}")


class Persistence(nn.Module):
    """Hold the last input frame for every lead time.

    Attributes
    ----------
    input_frames : int
        1: only the most recent frame is used.
    spatial_multiple : int
        1: any grid size.
    accepts_mask : bool
        True: ``valid`` is honoured; the output is NaN where the last frame is invalid.
    config : dict
        The (empty) configuration.
    """

    input_frames = 1
    spatial_multiple = 1
    accepts_mask = True

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    def forward(
        self,
        frames: Tensor,
        steps: int,
        *,
        valid: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Repeat the last frame ``steps`` times.

        Parameters
        ----------
        frames
            Rain rate ``(B, T, 1, H, W)`` (mm/h), NaN already replaced.
        steps
            Number of lead times.
        valid
            Boolean mask of observed pixels, shaped like ``frames``.
        generator
            Ignored (the model is deterministic).

        Returns
        -------
        Tensor
            ``(B, steps, 1, H, W)``, NaN where the last frame is not observed.
        """
        last, mask = check_nowcast_inputs(frames, steps, valid, self.input_frames, "persistence")
        out = last.expand(-1, steps, -1, -1, -1)
        if mask is not None:
            nan = torch.tensor(float("nan"), dtype=out.dtype, device=out.device)
            return torch.where(mask, out, nan)
        return out.clone()


def build_persistence(config: dict[str, Any] | None = None) -> Persistence:
    """Build the persistence model.

    Parameters
    ----------
    config
        Must be empty or ``None``: persistence has no settings.

    Returns
    -------
    Persistence
    """
    if config:
        raise ModelError(f"persistence takes no configuration, got keys {sorted(config)}")
    return Persistence()

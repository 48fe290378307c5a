"""Persistence nowcast: the last observed frame held for every lead time.

The floor every nowcasting model must beat.  Also home of :func:`config_settings`,
which the baselines share (the input checks are :mod:`xnowcast.models.base`'s).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from xnowcast.errors import ModelError
from xnowcast.models.base import NowcastModel, check_nowcast_inputs
from xnowcast.registry import ModelSpec, register

__all__ = ["Persistence", "build_persistence", "check_nowcast_inputs", "config_settings"]


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


class Persistence(NowcastModel):
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
    label = "persistence"
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
        last, mask = self.check_inputs(frames, steps, valid)
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


SPEC = register(
    ModelSpec(
        name="persistence",
        task="nowcast",
        builder="xnowcast.models.persistence:build_persistence",
        summary="The last observed frame held for every lead time: the floor every model must beat.",
        reference="-",
        input_frames=1,
    )
)

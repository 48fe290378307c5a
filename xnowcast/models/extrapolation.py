"""Extrapolation nowcast: dense optical flow + semi-Lagrangian advection, in torch.

The motion field is estimated from the last ``input_frames`` rain-rate frames by
pyramidal dense Lucas-Kanade on a log-transformed field
(:mod:`xnowcast.models.optical_flow`), then the last frame is advected backward
along it (:mod:`xnowcast.models.advection`). Everything runs on the device of the
input tensor (CPU or GPU) with no host round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from xnowcast.errors import ModelError
from xnowcast.models.advection import semi_lagrangian
from xnowcast.models.base import NowcastModel, merge_settings
from xnowcast.models.motion_perturbation import MotionPerturbation
from xnowcast.models.optical_flow import dense_lucas_kanade, rain_intensity
from xnowcast.models.persistence import config_settings
from xnowcast.registry import ModelSpec, register

__all__ = ["CONFIGS", "Extrapolation", "build_extrapolation"]

#: Motion-estimation settings passed on to :func:`dense_lucas_kanade`.
_FLOW_KEYS = (
    "levels",
    "finest_level",
    "iterations",
    "window_sigma",
    "presmooth_sigma",
    "regularization",
    "confidence_scale",
    "flow_smooth_sigma",
    "margin",
    "edge_margin",
)

#: Named configurations; a dict given to :func:`build_extrapolation` overrides "default".
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {
        # Chosen on the five shared radar events (CSI at 1 mm/h at 30/60/90 min,
        # see benchmarks/extrapolation_vs_pysteps.py).
        "input_frames": 3,
        "rain_threshold": 0.1,
        "levels": 5,
        "finest_level": 2,
        "iterations": 2,
        "window_sigma": 4.0,
        "presmooth_sigma": 1.0,
        "regularization": 0.5,
        "confidence_scale": 0.5,
        "flow_smooth_sigma": 4.0,
        "margin": 2,
        "edge_margin": 1,
        "midpoint": True,
        "trajectory_scale": 4,
    },
}


class Extrapolation(NowcastModel):
    """Optical-flow extrapolation nowcast (deterministic, no trainable weights).

    Parameters
    ----------
    **config
        Settings, the keys of ``CONFIGS["default"]``: ``input_frames`` (frames used
        for the motion field), ``rain_threshold`` (mm/h, smallest rate tracked), the
        :func:`~xnowcast.models.optical_flow.dense_lucas_kanade` settings, and the
        :func:`~xnowcast.models.advection.semi_lagrangian` settings ``midpoint``
        (second-order trajectories) and ``trajectory_scale``.

    Attributes
    ----------
    input_frames : int
        Number of most recent frames used.
    spatial_multiple : int
        1: any grid size.
    accepts_mask : bool
        True: invalid pixels take no part in the motion fit, and the output is NaN
        where a trajectory departs from an invalid pixel of the last frame.
    config : dict
        The full configuration.
    """

    label = "extrapolation"
    spatial_multiple = 1
    accepts_mask = True

    def __init__(self, **config: Any) -> None:
        super().__init__()
        full = merge_settings("extrapolation", CONFIGS["default"], config)
        if int(full["input_frames"]) < 2:
            raise ModelError("extrapolation needs input_frames >= 2 to estimate motion")
        if not 0 <= int(full["finest_level"]) <= int(full["levels"]):
            raise ModelError("extrapolation needs 0 <= finest_level <= levels")
        positive = ("rain_threshold", "regularization", "confidence_scale", "iterations")
        for key in (*positive, "trajectory_scale"):
            if not full[key] > 0:
                raise ModelError(f"extrapolation setting {key} must be positive, got {full[key]}")
        self.config: dict[str, Any] = full
        self.input_frames = int(full["input_frames"])

    def motion(
        self, frames: Tensor, valid: Tensor | None = None, *, full_resolution: bool = True
    ) -> Tensor:
        """Motion field of a sequence of rain-rate frames.

        Parameters
        ----------
        frames
            Rain rate ``(B, T, 1, H, W)`` in mm/h (all ``T`` frames are used).
        valid
            Boolean mask shaped like ``frames``, or ``None``.
        full_resolution
            Return the field at ``(H, W)``; otherwise on the coarser grid it is
            estimated on (same domain, still in pixels of ``frames``).

        Returns
        -------
        Tensor
            ``(B, 2, H, W)``: x and y displacement in pixels per time step.
        """
        images = rain_intensity(frames[:, :, 0], self.config["rain_threshold"])
        mask = None if valid is None else valid[:, :, 0]
        settings = {key: self.config[key] for key in _FLOW_KEYS}
        return dense_lucas_kanade(images, mask, full_resolution=full_resolution, **settings)

    def forward(
        self,
        frames: Tensor,
        steps: int,
        *,
        valid: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Nowcast ``steps`` frames ahead.

        Parameters
        ----------
        frames
            Rain rate ``(B, T, 1, H, W)`` in mm/h, ``T >= input_frames``; NaN left in
            counts as unobserved.
        steps
            Number of lead times (in units of the input time step).
        valid
            Boolean mask of observed pixels shaped like ``frames``, or ``None``.
        generator
            Ignored (the model is deterministic).

        Returns
        -------
        Tensor
            ``(B, steps, 1, H, W)`` in mm/h, dtype of ``frames``; NaN where the
            backward trajectory leaves the domain or departs from an invalid pixel.
        """
        frames, valid = self._observed(frames, steps, valid)
        flow = self.motion(frames, valid, full_resolution=False)
        return self.advect(frames[:, -1], flow, steps, None if valid is None else valid[:, -1])

    def perturbed(
        self,
        frames: Tensor,
        steps: int,
        draws: Tensor,
        *,
        grid_spacing_km: float,
        time_step_minutes: float,
        valid: Tensor | None = None,
    ) -> Tensor:
        """Nowcast each row along its own perturbed motion (Bowler et al. 2006).

        The motion of row ``b`` gets the perturbation of
        :class:`~xnowcast.models.motion_perturbation.MotionPerturbation` with the Laplace
        draws ``draws[b]`` (along and across the local motion, standard deviations
        growing with lead time as in STEPS): one member of a motion ensemble per row.

        Parameters
        ----------
        frames, steps, valid
            As for :meth:`forward`.
        draws
            ``(B, 2)`` unit-variance draws (along, across) scaling the perturbation's
            standard deviations; zeros give :meth:`forward`.
        grid_spacing_km, time_step_minutes
            Pixel size and time step (the perturbation model is in km/h).

        Returns
        -------
        Tensor
            As for :meth:`forward`.
        """
        frames, valid = self._observed(frames, steps, valid)
        flow = self.motion(frames, valid, full_resolution=False)
        perturbation = MotionPerturbation(
            flow, frames.shape[0], None, grid_spacing_km, time_step_minutes, draws=draws
        )
        last_valid = None if valid is None else valid[:, -1]
        return self.advect(frames[:, -1], flow, steps, last_valid, perturbation=perturbation)

    def _observed(
        self, frames: Tensor, steps: int, valid: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Checked frames with NaN set to 0, and the mask of what was observed."""
        frames, valid = self.check_inputs(frames, steps, valid)
        finite = torch.isfinite(frames)
        if not bool(finite.all()):  # NaN left in: treated as unobserved, never as rain
            valid = finite if valid is None else valid & finite
            frames = torch.where(finite, frames, 0.0)
        return frames, valid

    def advect(
        self,
        field: Tensor,
        flow: Tensor,
        steps: int,
        valid: Tensor | None = None,
        *,
        perturbation: Callable[[int], Tensor] | None = None,
    ) -> Tensor:
        """Semi-Lagrangian extrapolation of one frame along a motion field.

        Parameters
        ----------
        field
            Rain rate ``(B, 1, H, W)``.
        flow
            Motion ``(B, 2, h, w)`` from :meth:`motion` (any grid covering the domain).
        steps
            Number of lead times.
        valid
            Boolean mask ``(B, 1, H, W)`` of observed pixels of ``field``, or ``None``.
        perturbation
            ``perturbation(k)``: motion added during step ``k`` (pixels per step, on
            the grid of ``flow``), as for
            :func:`~xnowcast.models.advection.semi_lagrangian`.

        Returns
        -------
        Tensor
            ``(B, steps, 1, H, W)``, NaN where unknown.
        """
        return semi_lagrangian(
            field,
            flow,
            steps,
            valid=valid,
            midpoint=self.config["midpoint"],
            trajectory_scale=self.config["trajectory_scale"],
            perturbation=perturbation,
        )


def build_extrapolation(config: str | dict[str, Any] = "default") -> Extrapolation:
    """Build the extrapolation model from a named configuration or a dict of overrides.

    Parameters
    ----------
    config
        A name in :data:`CONFIGS`, or a dict of settings overriding ``"default"``.

    Returns
    -------
    Extrapolation

    Raises
    ------
    ModelError
        For an unknown name or setting.
    """
    return Extrapolation(**config_settings(config, CONFIGS, "extrapolation"))


SPEC = register(
    ModelSpec(
        name="extrapolation",
        task="nowcast",
        builder="xnowcast.models.extrapolation:build_extrapolation",
        summary="Dense optical flow (torch) + semi-Lagrangian backward advection with grid_sample.",
        reference="Germann & Zawadzki (2002), Mon. Wea. Rev. 130; Lucas & Kanade (1981)",
        default_config="default",
        input_frames=int(CONFIGS["default"]["input_frames"]),
    )
)

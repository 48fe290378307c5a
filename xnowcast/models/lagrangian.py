"""Deterministic nowcasters as residuals over a physical baseline, in either frame of reference.

The learned nowcasters (:mod:`xnowcast.models.convlstm`,
:mod:`xnowcast.models.unet_nowcast`) share this wrapper; only their network
differs.  With rain rates ``R`` in mm/h and ``L(R) = log1p(R)``:

``frame="lagrangian"`` (the default)
    The motion field is estimated from the input frames by the project's optical
    flow (:class:`~xnowcast.models.extrapolation.Extrapolation`), every input frame
    is advected to the time of the last one (so the network sees the rain where it
    is now, growing or decaying, not moving), and the network predicts, per lead
    time ``k``, a change ``D_k`` of ``L`` in that frame of reference.  ``D_k`` is then
    carried along the motion to lead time ``k``
    (:func:`~xnowcast.models.advection.advect_per_lead`) and added to the
    extrapolation nowcast ``E_k``::

        forecast_k = expm1(clip(L(E_k) + advect_k(D_k), 0, L(max_rate)))

    The network never has to learn motion; it learns growth, decay and smoothing
    along the trajectories.
``frame="eulerian"``
    As published (Shi et al. 2015): the network reads the frames on the fixed grid
    and has to learn the motion itself; its ``D_k`` is added to persistence
    (``E_k`` = the last frame), not advected.

The network's output head starts at zero, so an untrained Lagrangian model *is*
the extrapolation nowcast (an untrained Eulerian one is persistence), and
training can only add to the physics.  Rates are clipped to ``[0, max_rate]``
inside the module; NaN in the input takes no part in the motion estimate and
counts as no rain otherwise (the runtime fills missing pixels with 0 before the
model sees them, and puts NaN back where the last frame was not observed), and where extrapolation does not
know the answer (rain flowing in across the domain edge) the base is 0, as in
:mod:`xnowcast.models.dgmr`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from xnowcast.errors import ModelError
from xnowcast.models.advection import advect_per_lead, semi_lagrangian
from xnowcast.models.base import NowcastModel, merge_settings
from xnowcast.models.extrapolation import Extrapolation
from xnowcast.models.persistence import check_nowcast_inputs

__all__ = ["FRAMES", "RESIDUAL_NORMALISATION", "ResidualNowcaster", "zero_init"]

#: The frames of reference a residual nowcaster can work in.
FRAMES = ("lagrangian", "eulerian")


#: What the residual nowcasters take and give (their specs' ``normalisation``).
RESIDUAL_NORMALISATION = (
    "log1p of mm/h in (inputs advected to the last input time); out: a log1p change over "
    "extrapolation, carried along the motion"
)


class ResidualNowcaster(NowcastModel):
    """A network forecasting the log-rain change over extrapolation (or persistence).

    Subclasses set ``self.network``: a module mapping ``log1p`` of the (aligned)
    input frames ``(B, T, 1, H, W)`` and ``steps`` to ``D`` ``(B, steps, 1, H, W)``.

    Parameters
    ----------
    name
        Model name for error messages.
    config
        Settings overriding ``defaults``; reads ``input_frames``, ``frame``,
        ``max_rate`` and ``motion_frames`` (frames used for the motion field, the
        last ones).
    defaults
        The model's complete default configuration (its keys are the valid ones).

    Attributes
    ----------
    input_frames : int
        Frames the model reads.
    spatial_multiple : int
        Set by the subclass (the network's down-sampling).
    config : dict
        The configuration (stored with the weights).
    """

    spatial_multiple = 1
    network: nn.Module

    def __init__(self, name: str, config: dict[str, Any], defaults: dict[str, Any]) -> None:
        super().__init__()
        config = merge_settings(name, defaults, config)
        if config["frame"] not in FRAMES:
            raise ModelError(f"{name}: frame must be one of {FRAMES}, got {config['frame']!r}")
        if not 2 <= int(config["motion_frames"]) <= int(config["input_frames"]):
            raise ModelError(f"{name}: need 2 <= motion_frames <= input_frames")
        self.name = name
        self.config = dict(config)
        self.input_frames = int(config["input_frames"])
        self.frame = str(config["frame"])
        self.max_rate = float(config["max_rate"])
        self.extrapolation = Extrapolation(input_frames=int(config["motion_frames"]))

    def baseline(
        self, frames: Tensor, steps: int, valid: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(aligned inputs, base forecast, motion)`` in mm/h for clipped, finite frames.

        Lagrangian: input frame ``i`` advected ``T - 1 - i`` steps to the last input
        time, the extrapolation nowcast and the motion field (estimated where
        ``valid``, all pixels by default, exactly as the ``extrapolation`` model
        does in the pipeline).  Eulerian: the frames as given, persistence and ``None``.
        """
        if self.frame == "eulerian":
            return frames, frames[:, -1:].expand(-1, steps, -1, -1, -1), None
        if valid is None:
            valid = torch.ones_like(frames, dtype=torch.bool)
        count = self.extrapolation.input_frames
        flow = self.extrapolation.motion(
            frames[:, -count:], valid[:, -count:], full_resolution=False
        )
        base = self.extrapolation.advect(frames[:, -1], flow, steps)
        count = frames.shape[1]
        aligned = [
            semi_lagrangian(frames[:, i], flow, count - 1 - i)[:, -1] for i in range(count - 1)
        ]
        aligned = torch.stack([*aligned, frames[:, -1]], dim=1)
        # unknown where the trajectory comes from outside the domain: no rain, as in DGMR
        return self._clip(aligned), self._clip(base), flow

    def _clip(self, x: Tensor) -> Tensor:
        return torch.nan_to_num(x, nan=0.0).clamp(0.0, self.max_rate)

    def forward(
        self,
        frames: Tensor,
        steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Nowcast ``steps`` frames ahead.

        Parameters
        ----------
        frames
            Rain rate ``(B, T, 1, H, W)`` in mm/h, ``T >= input_frames`` (the last
            ``input_frames`` are used); NaN counts as no rain.
        steps
            Number of lead times.
        generator
            Ignored (the model is deterministic).

        Returns
        -------
        Tensor
            ``(B, steps, 1, H, W)`` in mm/h, in ``[0, max_rate]``.
        """
        frames, _ = check_nowcast_inputs(frames, steps, None, self.input_frames, self.name)
        dtype = frames.dtype
        x = self._clip(frames.float())
        aligned, base, flow = self.baseline(x, steps, torch.isfinite(frames))
        change = self.network(torch.log1p(aligned), steps)
        if flow is not None:
            change = advect_per_lead(
                change,
                flow,
                midpoint=self.extrapolation.config["midpoint"],
                trajectory_scale=self.extrapolation.config["trajectory_scale"],
            )
        top = float(torch.log1p(torch.tensor(self.max_rate)))
        out = torch.expm1(torch.clamp(torch.log1p(base) + change, min=0.0, max=top))
        return out.to(dtype)


def zero_init(conv: nn.Module) -> nn.Module:
    """Zero the weights and bias of an output convolution (the residual starts at 0)."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv

"""U-Net nowcaster: the input frames as channels in, one channel per lead time out.

A 2-D U-Net (Ronneberger et al. 2015; the encoder-decoder of
:mod:`xnowcast.models.unet`) maps ``log1p`` of the ``input_frames`` frames,
stacked as channels, to ``lead_frames`` output channels in one pass, the usual
"U-Net nowcaster" (e.g. Ayzel et al. 2020, RainNet; Agrawal et al. 2019).  The
output is the log-rain change of
:class:`~xnowcast.models.lagrangian.ResidualNowcaster` over extrapolation (or
persistence), from a zero-initialised 1x1 convolution.

Lead times beyond ``lead_frames`` keep the change of the last one (in the
Lagrangian frame: growth or decay stops, the motion goes on).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from xnowcast.models.lagrangian import RESIDUAL_NORMALISATION, ResidualNowcaster, zero_init
from xnowcast.models.persistence import config_settings
from xnowcast.models.unet import _UNetBody
from xnowcast.registry import ModelSpec, WeightsFile, register

__all__ = ["CONFIGS", "UNetNowcaster", "build_unet_nowcast"]

_BASE: dict[str, Any] = {
    "input_frames": 4,
    "motion_frames": 3,
    "frame": "lagrangian",
    "max_rate": 128.0,
    "lead_frames": 18,
}

#: Named configurations; a dict given to :func:`build_unet_nowcast` overrides "small".
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {**_BASE, "nf": 16, "depth": 3},
    "tiny": {**_BASE, "nf": 4, "depth": 2},
}


class _FramesToLeads(nn.Module):
    """``log1p`` frames ``(B, T, 1, H, W)`` -> log-rain change ``(B, steps, 1, H, W)``."""

    def __init__(self, input_frames: int, lead_frames: int, nf: int, depth: int) -> None:
        super().__init__()
        self.body = _UNetBody(2, input_frames, nf, depth)
        self.out = zero_init(nn.Conv2d(self.body.out_channels, lead_frames, 1))
        self.lead_frames = lead_frames

    def forward(self, log_frames: Tensor, steps: int) -> Tensor:
        change = self.out(self.body(log_frames[:, :, 0]))
        if steps > self.lead_frames:
            extra = change[:, -1:].expand(-1, steps - self.lead_frames, -1, -1)
            change = torch.cat([change, extra], dim=1)
        return change[:, :steps, None]


class UNetNowcaster(ResidualNowcaster):
    """U-Net nowcaster on top of extrapolation (or persistence).

    ``model(frames[B, T, 1, H, W], steps)`` -> ``[B, steps, 1, H, W]`` in mm/h.

    Parameters
    ----------
    **config
        ``nf`` (channels of the first level), ``depth`` (down-samplings),
        ``lead_frames`` (lead times predicted), and the
        :class:`~xnowcast.models.lagrangian.ResidualNowcaster` settings
        ``input_frames``, ``motion_frames``, ``frame`` and ``max_rate``.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__("unet", config, CONFIGS["small"])
        full = self.config
        self.spatial_multiple = 2 ** int(full["depth"])
        self.network = _FramesToLeads(
            self.input_frames, int(full["lead_frames"]), int(full["nf"]), int(full["depth"])
        )


def build_unet_nowcast(config: str | dict[str, Any] = "small") -> UNetNowcaster:
    """Build the U-Net nowcaster from a name in :data:`CONFIGS` or a dict of overrides."""
    return UNetNowcaster(**config_settings(config, CONFIGS, "unet"))


SPEC = register(
    ModelSpec(
        name="unet",
        task="nowcast",
        builder="xnowcast.models.unet_nowcast:build_unet_nowcast",
        summary=(
            "U-Net from the input frames to every lead time, forecasting growth and decay over "
            "extrapolation."
        ),
        reference="Ronneberger et al. (2015); Ayzel et al. (2020), Geosci. Model Dev. 13 (RainNet)",
        time_step_minutes=5.0,
        normalisation=RESIDUAL_NORMALISATION,
        default_config="small",
        weights={
            "small": WeightsFile(
                "unet-nowcast-small.safetensors",
                "926311f2a6394141dacdaebf39760040a1242b87600e2c78cf7696f82cd7fd07",
            )
        },
        default_weights="small",
        input_frames=int(CONFIGS["small"]["input_frames"]),
    )
)

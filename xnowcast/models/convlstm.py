"""ConvLSTM encoder-forecaster nowcaster (Shi et al. 2015), as a residual over extrapolation.

The network of Shi et al. (2015, "Convolutional LSTM Network: A Machine
Learning Approach for Precipitation Nowcasting", NeurIPS): a stack of ConvLSTM
layers *encodes* the input frames; a second stack, its states copied from the
encoder's, *forecasts* by unrolling without input, one step per lead time; a
1x1 convolution over the concatenated forecaster states gives each output
frame.  As in the paper the frames are folded into patches first (here two
stride-2 convolutions: 1/4 resolution); the output, a smooth field of growth
and decay, is made at 1/4 resolution and interpolated bilinearly to the grid
(no checkerboards; at full resolution the head cost 15 times the rest).

Differences from the paper, deliberate: the input is ``log1p`` of the rain rate
in mm/h; the output is not a frame but the log-rain change over extrapolation
(or persistence) of :class:`~xnowcast.models.lagrangian.ResidualNowcaster`,
with a zero-initialised last convolution; convolutions pad by replication, so
that the domain edges do not grow blobs over the unrolled steps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.models.lagrangian import RESIDUAL_NORMALISATION, ResidualNowcaster, zero_init
from xnowcast.models.persistence import config_settings
from xnowcast.registry import ModelSpec, WeightsFile, register

__all__ = ["CONFIGS", "ConvLSTMCell", "ConvLSTMNowcaster", "build_convlstm"]

_BASE: dict[str, Any] = {
    "input_frames": 4,
    "motion_frames": 3,
    "frame": "lagrangian",
    "max_rate": 128.0,
    "kernel_size": 3,
}

#: Named configurations; a dict given to :func:`build_convlstm` overrides "small".
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {**_BASE, "channels": 32, "layers": 2},
    "tiny": {**_BASE, "channels": 8, "layers": 1},
}

#: down-sampling of the recurrent layers (two stride-2 convolutions)
_PATCH = 4


def _conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, padding_mode="replicate")


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer: LSTM gates from one convolution over ``[input, hidden]``.

    ``i, f, o = σ(·)``, ``g = tanh(·)``, ``c' = f c + i g``, ``h' = o tanh(c')``
    (Shi et al. 2015, eq. 3, without the peephole terms).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = _conv(in_channels + hidden_channels, 4 * hidden_channels, kernel_size)
        with torch.no_grad():  # forget gate open at first (bias 1): long memory
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def forward(self, x: Tensor | None, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        inputs = h if x is None else torch.cat([x, h], dim=1)
        i, f, o, g = self.gates(inputs).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _EncoderForecaster(nn.Module):
    """``log1p`` frames ``(B, T, 1, H, W)`` -> log-rain change ``(B, steps, 1, H, W)``."""

    def __init__(self, channels: int, layers: int, kernel_size: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv(1, channels // 2, 3, 2),
            nn.LeakyReLU(0.1),
            _conv(channels // 2, channels, 3, 2),
            nn.LeakyReLU(0.1),
        )
        self.encoder = nn.ModuleList(
            ConvLSTMCell(channels, channels, kernel_size) for _ in range(layers)
        )
        # the forecaster's first layer has no input (as the paper): its "input" is nothing
        self.forecaster = nn.ModuleList(
            ConvLSTMCell(0 if k == 0 else channels, channels, kernel_size) for k in range(layers)
        )
        self.mix = _conv(layers * channels, channels)
        self.out = zero_init(_conv(channels, 1))

    def forward(self, log_frames: Tensor, steps: int) -> Tensor:
        b, t, _, h, w = log_frames.shape
        features = self.stem(log_frames.flatten(0, 1))
        features = features.unflatten(0, (b, t))
        zeros = features.new_zeros(b, self.encoder[0].hidden_channels, *features.shape[-2:])
        states = [(zeros, zeros) for _ in self.encoder]
        for k in range(t):
            x = features[:, k]
            for n, cell in enumerate(self.encoder):
                states[n] = cell(x, states[n])
                x = states[n][0]
        outputs = []
        for _ in range(steps):
            x = None
            for n, cell in enumerate(self.forecaster):
                states[n] = cell(x, states[n])
                x = states[n][0]
            outputs.append(torch.cat([s[0] for s in states], dim=1))
        y = torch.stack(outputs, dim=1).flatten(0, 1)
        y = self.out(F.leaky_relu(self.mix(y), 0.1))
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return y.unflatten(0, (b, steps))


class ConvLSTMNowcaster(ResidualNowcaster):
    """ConvLSTM encoder-forecaster on top of extrapolation (or persistence).

    ``model(frames[B, T, 1, H, W], steps)`` -> ``[B, steps, 1, H, W]`` in mm/h; any
    number of lead times (the forecaster unrolls ``steps`` times).

    Parameters
    ----------
    **config
        ``channels`` (hidden channels per layer), ``layers``, ``kernel_size``, and
        the :class:`~xnowcast.models.lagrangian.ResidualNowcaster` settings
        ``input_frames``, ``motion_frames``, ``frame`` and ``max_rate``.
    """

    spatial_multiple = _PATCH

    def __init__(self, **config: Any) -> None:
        super().__init__("convlstm", config, CONFIGS["small"])
        full = self.config
        self.network = _EncoderForecaster(
            int(full["channels"]), int(full["layers"]), int(full["kernel_size"])
        )


def build_convlstm(config: str | dict[str, Any] = "small") -> ConvLSTMNowcaster:
    """Build the ConvLSTM nowcaster from a name in :data:`CONFIGS` or a dict of overrides."""
    return ConvLSTMNowcaster(**config_settings(config, CONFIGS, "convlstm"))


SPEC = register(
    ModelSpec(
        name="convlstm",
        task="nowcast",
        builder="xnowcast.models.convlstm:build_convlstm",
        summary="ConvLSTM encoder-forecaster forecasting growth and decay over extrapolation.",
        reference="Shi et al. (2015), NeurIPS 28",
        time_step_minutes=5.0,
        normalisation=RESIDUAL_NORMALISATION,
        default_config="small",
        weights={
            "small": WeightsFile(
                "convlstm-small.safetensors",
                "54695051b1789cd7be36c30a5e4dc7004e0b1898f1457c793f7e018152267a3c",
            )
        },
        default_weights="small",
        input_frames=int(CONFIGS["small"]["input_frames"]),
    )
)

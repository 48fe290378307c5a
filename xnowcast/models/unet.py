"""U-Net baselines of the FC-ZSM paper: a 2D U-Net (time folded into channels) and a 3D U-Net.

Both work on the **coarse** grid and end with a sub-pixel (pixel-shuffle) head
that produces the ``factor x factor`` fine cells of every output frame; like
ZSM here they predict a residual over trilinear interpolation in their output
value space (zero-initialised head: an untrained U-Net is the trilinear
baseline), so the baselines and ZSM differ only in their network.

* :class:`UNet2D`: the ``T`` input frames are stacked as channels, the head
  emits ``T_out * factor**2`` channels; it therefore takes exactly ``window``
  input frames.
* :class:`UNet3D`: the input is first interpolated linearly in time to the
  ``T_out`` output times, then 3D convolutions (3x3x3) run over
  (time, y, x) with pooling in space only; any number of frames works.

No normalisation layers (batch statistics would differ between small training
crops and whole-domain inference).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.models.base import DownscaleModel
from xnowcast.models.interpolation import (
    RainTransform,
    interpolate_time,
    resolve_config,
    trilinear_upsample,
)
from xnowcast.registry import ModelSpec, WeightsFile, register

__all__ = ["UNET3D_CONFIGS", "UNET_CONFIGS", "UNet2D", "UNet3D", "build_unet", "build_unet3d"]

_COMMON: dict[str, Any] = {
    "in_channels": 1,
    "static_channels": 0,
    "static_names": [],
    "window": 4,
    "transform": "linear",
    "input_transform": "log",
    "transform_scale": 10.0,
}

UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "compact"},
    "paper": {**_COMMON, "nf": 64, "depth": 4, "transform": "dbz", "input_transform": "dbz"},
    "compact": {**_COMMON, "nf": 12, "depth": 3},
    "tiny": {**_COMMON, "nf": 8, "depth": 2},
}

UNET3D_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "compact"},
    "paper": {**_COMMON, "nf": 32, "depth": 3, "transform": "dbz", "input_transform": "dbz"},
    "compact": {**_COMMON, "nf": 12, "depth": 2},
    "tiny": {**_COMMON, "nf": 4, "depth": 2},
}


def _double_conv(conv: type, c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        conv(c_in, c_out, 3, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
        conv(c_out, c_out, 3, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
    )


class _UNetBody(nn.Module):
    """Encoder-decoder with skip connections, for 2D or 3D (spatial-only pooling) convs."""

    def __init__(self, dims: int, c_in: int, nf: int, depth: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims = dims
        widths = [nf * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList([_double_conv(conv, c_in, widths[0])])
        self.enc.extend(_double_conv(conv, widths[i], widths[i + 1]) for i in range(depth))
        self.dec = nn.ModuleList(
            _double_conv(conv, widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.out_channels = widths[0]

    def _pool(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, 2) if self.dims == 2 else F.max_pool3d(x, (1, 2, 2))

    def _up(self, x: Tensor) -> Tensor:
        if self.dims == 2:
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=(1, 2, 2), mode="trilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self._pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.dec:
            x = block(torch.cat([self._up(x), skips.pop()], 1))
        return x


class _UNetBase(DownscaleModel):
    def _setup(self, config: dict[str, Any], factor: int, time_factor: int) -> None:
        self.factor, self.time_factor = factor, time_factor
        self.in_channels = int(config["in_channels"])
        self.static_channels = 0
        self.window = int(config["window"])
        self.depth = int(config["depth"])
        self.spatial_multiple = 2**self.depth
        self.config = {**config, "factor": factor, "time_factor": time_factor}
        self.transform = RainTransform(config["transform"], config["transform_scale"])
        self.input_transform = RainTransform(config["input_transform"], config["transform_scale"])

    def network_input(self, frames: Tensor) -> Tensor:
        """``(B, T, C, h, w)``: the transformed rain rate and the other channels as given."""
        rain = self.input_transform(frames[:, :, :1])
        return torch.cat([rain, frames[:, :, 1:]], 2)

    def skip(self, frames: Tensor) -> Tensor:
        return trilinear_upsample(self.transform(frames[:, :, :1]), self.factor, self.time_factor)

    def forward(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        """Fine frames in mm/h, ``(B, (T-1)*tf + 1, 1, h*f, w*f)``, nonnegative."""
        return self.transform.inverse(self.forward_z(frames, static))

    def forward_z(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class UNet2D(_UNetBase):
    """2D U-Net on the coarse grid, time folded into channels, pixel-shuffle head."""

    accepts_frames = "window"

    def __init__(self, config: dict[str, Any], factor: int = 2, time_factor: int = 2) -> None:
        super().__init__()
        self._setup(config, factor, time_factor)
        self.t_out = (self.window - 1) * time_factor + 1
        nf = int(config["nf"])
        self.body = _UNetBody(2, self.window * self.in_channels, nf, self.depth)
        self.head = nn.Conv2d(nf, self.t_out * factor * factor, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward_z(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        """The prediction in the output transform's space (unclipped)."""
        self.check_inputs(frames, static)
        b, t, c, h, w = frames.shape
        x = self.network_input(frames).reshape(b, t * c, h, w)
        out = self.head(self.body(x))  # (B, T_out * f^2, h, w)
        f = self.factor
        out = F.pixel_shuffle(out.view(b * self.t_out, f * f, h, w), f)
        return self.skip(frames) + out.view(b, self.t_out, 1, h * f, w * f)


class UNet3D(_UNetBase):
    """3D U-Net over (time, y, x) after linear time interpolation; pixel-shuffle head."""

    def __init__(self, config: dict[str, Any], factor: int = 2, time_factor: int = 2) -> None:
        super().__init__()
        self._setup(config, factor, time_factor)
        nf = int(config["nf"])
        self.body = _UNetBody(3, self.in_channels, nf, self.depth)
        self.head = nn.Conv3d(nf, factor * factor, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward_z(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        """The prediction in the output transform's space (unclipped)."""
        self.check_inputs(frames, static)
        x = interpolate_time(self.network_input(frames), self.time_factor)  # (B, T_out, C, h, w)
        b, t_out, _, h, w = x.shape
        out = self.head(self.body(x.transpose(1, 2)))  # (B, f^2, T_out, h, w)
        f = self.factor
        out = out.transpose(1, 2).reshape(b * t_out, f * f, h, w)
        out = F.pixel_shuffle(out, f).view(b, t_out, 1, h * f, w * f)
        return self.skip(frames) + out


def build_unet(config: str | dict = "default", factor: int = 2, time_factor: int = 2) -> UNet2D:
    """2D U-Net baseline.  ``config``: a preset of :data:`UNET_CONFIGS` or a dict of overrides."""
    UNET_SPEC.check_factors(factor, time_factor)
    model = UNet2D(resolve_config("unet", config, UNET_CONFIGS), factor, time_factor)
    model.config["model"] = "unet"
    return model


def build_unet3d(config: str | dict = "default", factor: int = 2, time_factor: int = 2) -> UNet3D:
    """3D U-Net baseline.  ``config``: a preset of :data:`UNET3D_CONFIGS` or a dict of overrides."""
    UNET3D_SPEC.check_factors(factor, time_factor)
    model = UNet3D(resolve_config("unet3d", config, UNET3D_CONFIGS), factor, time_factor)
    model.config["model"] = "unet3d"
    return model


_PAPER = "Chen, Qin & Dai (2022), Front. Earth Sci. 10:887842 (baseline)"
_UNET_COMMON: dict[str, Any] = {
    "task": "downscale",
    "normalisation": "log1p inside the module; output is a residual over trilinear",
    "default_config": "default",
    "default_weights": "compact",
    # any factor the single pixel-shuffle head can do, kept to those tested
    "factors": (1, 2, 3, 4),
    "time_factors": (1, 2, 3, 4),
    "window": 4,
}
UNET_SPEC = register(
    ModelSpec(
        name="unet",
        builder="xnowcast.models.unet:build_unet",
        summary="2-D U-Net with time folded into channels (residual over trilinear): a paper baseline.",
        reference=f"Ronneberger et al. (2015); {_PAPER}",
        weights={
            "compact": WeightsFile(
                "unet-compact.safetensors",
                "3e2cb92e19a52d027e26879048cf581fdd990c9d63d01d61c6f10f13439213c9",
            )
        },
        **_UNET_COMMON,
    )
)
UNET3D_SPEC = register(
    ModelSpec(
        name="unet3d",
        builder="xnowcast.models.unet:build_unet3d",
        summary="3-D U-Net over (time, y, x) (residual over trilinear): a paper baseline.",
        reference=f"Cicek et al. (2016); {_PAPER}",
        weights={
            "compact": WeightsFile(
                "unet3d-compact.safetensors",
                "f7658b57db595711a39f0c1ecd0fb470bfaa644bca4ad373d4b592811efd645f",
            )
        },
        **_UNET_COMMON,
    )
)

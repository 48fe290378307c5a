"""``srgan``: super-resolution GAN downscaler on a consistent bicubic baseline.

Every coarse frame (mm/h) is refined on its own:

1. **baseline**: :func:`~xnowcast.models.flow.consistent_upsample` (bicubic +
   back-projection, block means equal to the input), the spatial step of ``flow``;
2. **generator**: a residual trunk on the coarse grid (the input in
   ``z = log1p(R) / log1p(10 mm/h)``), then sub-pixel upsampling (convolution +
   ``pixel_shuffle``, one x2 stage per factor of 2; separate stages for factor 2
   and 4 on a shared trunk), then a head that reads the features beside the
   baseline's ``z`` and adds a residual to it (zero-initialised: an untrained
   generator *is* the baseline);
3. **exact consistency**: :func:`~xnowcast.models.flow.enforce_block_mean`
   scales every ``f x f`` block so that its mean equals the input cell (and rain
   stays nonnegative), so coarsening the output gives the input back exactly.

``time_factor > 1`` composes the refined frames with ``flow``'s motion: the
optical flow of each coarse pair and two-way semi-Lagrangian interpolation of
the inserted frames (:func:`~xnowcast.models.flow.interpolate_along_flow`), as
cheap as ``flow`` itself; the generator only ever sees single frames.

:class:`PatchDiscriminator` (spectrally normalised, conditioned on the coarse
input) and the training losses (adversarial + the AtmoDist encoder's content
loss + a small pixel term) are in :mod:`xnowcast.training.srgan`.  No batch
statistics: the output does not depend on the batch or the tiling.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.errors import ModelError
from xnowcast.models.base import DownscaleModel
from xnowcast.models.flow import (
    FLOW_CONFIGS,
    consistent_upsample,
    enforce_block_mean,
    interpolate_along_flow,
    pair_flows,
)
from xnowcast.models.interpolation import resolve_config
from xnowcast.models.layers import sn_conv2d
from xnowcast.registry import ModelSpec, WeightsFile, register

__all__ = [
    "SRGAN_CONFIGS",
    "SRGAN_FACTORS",
    "SRGAN_TIME_FACTORS",
    "PatchDiscriminator",
    "SRGANGenerator",
    "build_srgan",
]

#: Generator values are capped at this rain rate (mm/h) before the block-mean correction.
MAX_RATE = 1000.0
#: What the generator can do: its sub-pixel stages exist for these factors.
SRGAN_FACTORS = (2, 4)
#: time_factor > 1 is flow's interpolation of the refined frames.
SRGAN_TIME_FACTORS = (1, 2, 3, 4)

_COMMON: dict[str, Any] = {
    "in_channels": 1,
    "window": 4,
    "static_channels": 0,
    "static_names": [],
    "backprojection": 3,
    "transform_scale": 10.0,
    "factors": list(SRGAN_FACTORS),
    "time_factors": list(SRGAN_TIME_FACTORS),
}

SRGAN_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "small"},
    "small": {**_COMMON, "nf": 32, "blocks": 4},
    "tiny": {**_COMMON, "nf": 8, "blocks": 1},
}


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate")


class _Residual(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(nf, nf), nn.LeakyReLU(0.2), _conv(nf, nf))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _upsampler(nf: int, factor: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(int(math.log2(factor))):
        layers += [_conv(nf, 4 * nf), nn.PixelShuffle(2), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class SRGANGenerator(DownscaleModel):
    """The ``srgan`` downscaler; see the module docstring.

    Parameters
    ----------
    config
        A full config (:data:`SRGAN_CONFIGS`).
    factor, time_factor
        Spatial refinement (2 or 4) and temporal refinement (any integer >= 1).
    """

    def __init__(self, config: dict[str, Any], factor: int = 4, time_factor: int = 1) -> None:
        super().__init__()
        self.factor, self.time_factor = factor, time_factor
        self.in_channels = int(config["in_channels"])
        self.static_channels = 0
        self.window = int(config["window"])
        self.spatial_multiple = 1
        self.config = {**config, "model": "srgan", "factor": factor, "time_factor": time_factor}
        nf, self.scale = int(config["nf"]), float(config["transform_scale"])
        self.z_max = math.log1p(MAX_RATE) / math.log1p(self.scale)
        self.trunk_in = _conv(1, nf)
        self.trunk = nn.Sequential(*[_Residual(nf) for _ in range(int(config["blocks"]))])
        factors = [int(f) for f in config["factors"]]
        self.up = nn.ModuleDict({str(f): _upsampler(nf, f) for f in factors})
        self.head = nn.ModuleDict(
            {
                str(f): nn.Sequential(_conv(nf + 1, nf), nn.LeakyReLU(0.2), _conv(nf, 1))
                for f in factors
            }
        )
        for head in self.head.values():
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        self.flow_config = dict(FLOW_CONFIGS["standard"])

    def to_z(self, rate: Tensor) -> Tensor:
        """Rain rate (mm/h) -> ``log1p(R) / log1p(scale)``."""
        return torch.log1p(rate.clamp_min(0)) / math.log1p(self.scale)

    def from_z(self, z: Tensor) -> Tensor:
        """``z`` -> rain rate, within 0..:data:`MAX_RATE` mm/h (no overflow, whatever the weights)."""
        return torch.expm1(z.clamp(0, self.z_max) * math.log1p(self.scale))

    def baseline(self, coarse: Tensor, factor: int | None = None) -> Tensor:
        """The back-projected bicubic refinement ``(N, 1, h*f, w*f)`` of ``(N, 1, h, w)`` mm/h."""
        f = factor or self.factor
        return consistent_upsample(coarse.clamp_min(0), f, int(self.config["backprojection"]))

    def refine_frames(self, coarse: Tensor, factor: int | None = None) -> Tensor:
        """Generator output ``(N, 1, h*f, w*f)`` mm/h for single frames ``(N, 1, h, w)`` mm/h."""
        f = factor or self.factor
        if str(f) not in self.up:
            raise ModelError(f"srgan has no upsampling stage for factor {f}")
        coarse = coarse.clamp_min(0)
        base = self.baseline(coarse, f)
        x = self.trunk_in(self.to_z(coarse))
        x = self.up[str(f)](self.trunk(x))
        z_base = self.to_z(base)
        z = z_base + self.head[str(f)](torch.cat([x, z_base], 1))
        return enforce_block_mean(self.from_z(z), coarse, f)

    def forward(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        """Fine frames in mm/h, ``(B, (T-1)*tf + 1, 1, h*f, w*f)``, nonnegative."""
        self.check_inputs(frames, static)
        b, t, _, h, w = frames.shape
        f = self.factor
        rain = frames[:, :, :1].clamp_min(0)
        fine = self.refine_frames(rain.reshape(b * t, 1, h, w)).view(b, t, 1, h * f, w * f)
        if self.time_factor == 1 or t < 2:
            return fine
        flows = pair_flows(rain[:, :, 0], self.flow_config)
        return interpolate_along_flow(
            fine, flows * f, self.time_factor, int(self.flow_config["trajectory_scale"])
        )


class PatchDiscriminator(nn.Module):
    """Spectrally normalised patch discriminator on ``z`` of the fine field and the coarse input.

    ``forward(fine_z, coarse_z)``: ``(N, 1, H, W)`` and ``(N, 1, H/f, W/f)`` ->
    logits ``(N, 1, H/8, W/8)`` (one per 8 x 8 patch, real > 0).
    """

    def __init__(self, nf: int = 32) -> None:
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.body = nn.Sequential(
            sn_conv2d(2, nf), act,
            nn.Conv2d(nf, nf, 4, stride=2, padding=1), act,
            sn_conv2d(nf, 2 * nf), act,
            nn.Conv2d(2 * nf, 2 * nf, 4, stride=2, padding=1), act,
            sn_conv2d(2 * nf, 4 * nf), act,
            nn.Conv2d(4 * nf, 4 * nf, 4, stride=2, padding=1), act,
            sn_conv2d(4 * nf, 1),
        )  # fmt: skip
        for module in self.body:
            if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                torch.nn.utils.parametrizations.spectral_norm(module)

    def forward(self, fine_z: Tensor, coarse_z: Tensor) -> Tensor:
        factor = fine_z.shape[-1] // coarse_z.shape[-1]
        cond = F.interpolate(coarse_z, scale_factor=factor, mode="nearest")
        return self.body(torch.cat([fine_z, cond], 1))


def build_srgan(
    config: str | dict[str, Any] = "default", factor: int = 4, time_factor: int = 1
) -> SRGANGenerator:
    """The ``srgan`` generator: ``factor`` 2 or 4, any ``time_factor`` (flow in time)."""
    cfg = resolve_config("srgan", config, SRGAN_CONFIGS)
    SPEC.check_factors(factor, time_factor)
    if factor not in [int(v) for v in cfg["factors"]]:
        raise ModelError(
            f"This srgan config has sub-pixel stages for factor in {cfg['factors']}, not {factor}."
        )
    if int(cfg["static_channels"]) or cfg["static_names"] or int(cfg["in_channels"]) != 1:
        raise ModelError("srgan takes the rain rate alone (no static or dynamic fields)")
    return SRGANGenerator(cfg, factor, time_factor)


SPEC = register(
    ModelSpec(
        name="srgan",
        task="downscale",
        builder="xnowcast.models.srgan:build_srgan",
        summary=(
            "Super-resolution GAN: a residual sub-pixel generator on the back-projected bicubic "
            "baseline, block means equal to the input, trained with an adversarial loss and the "
            "content loss of a self-supervised radar encoder (AtmoDist); time by flow."
        ),
        reference="Ledig et al. (2017), CVPR; Hoffmann & Lessig (2021), arXiv:2109.09076",
        units="mm/h",
        normalisation="log1p(R)/log1p(10) inside the module; residual over consistent bicubic",
        default_config="default",
        weights={
            "radar": WeightsFile(
                "srgan-radar.safetensors",
                "75f61e295808b2f1407a49b2ead6b2bf792ee84a815f2da8238c27b9b05b0ecc",
            )
        },
        default_weights="radar",
        factors=SRGAN_FACTORS,
        time_factors=SRGAN_TIME_FACTORS,
        window=4,
    )
)

"""Zooming Slow-Mo (ZSM) and the Feature-Constrained ZSM (FC-ZSM) for rain downscaling.

ZSM (Xiang et al. 2020, "Zooming Slow-Mo", CVPR) turns ``T`` coarse frames into
``(T-1)*tf + 1`` fine frames in one network:

1. **feature extraction**: a 3x3 conv and ``k1`` residual blocks per input
   frame, plus a feature pyramid (stride-2 convs) for the alignment below;
2. **frame feature temporal interpolation**: the features of an inserted frame
   are ``F2 = a(T1(F1, dp1)) + b(T3(F3, dp3))``, where ``T`` is a deformable
   convolution sampling a neighbour's features with offsets
   ``dp1 = g1([F1, F3])``, ``dp3 = g3([F3, F1])`` (predicted coarse-to-fine
   over the pyramid) and ``a``, ``b`` are learnable 1x1 convolutions;
3. **bidirectional deformable ConvLSTM** over the ``(T-1)*tf + 1`` feature
   maps: before each update the hidden and cell states are aligned to the
   current frame's features by deformable convolutions whose offsets come from
   ``[h, F_t]``; the forward and backward passes are fused by a 1x1 conv;
4. **reconstruction**: ``k2`` residual blocks, sub-pixel (pixel-shuffle)
   upsampling by ``factor`` and two convs, per frame.

FC-ZSM (Chen, Qin and Dai 2022, Front. Earth Sci. 10:887842) adds a parallel
extractor of **static** fields given on the fine grid (the paper: terrain
height, land-sea mask; here by default the radar coverage mask and the
normalised projected x and y) whose features ``Fs`` join every offset
predictor: ``dp = g([F1, F3, Fs])`` (and ``g([h, F_t, Fs])`` in the ConvLSTM).
**Dynamic** fields are stacked with the rain rate as extra input channels.

Differences from the papers (all deliberate, see the report in the docs):

* values are mapped to a network space by :class:`RainTransform` (``log1p``
  input by default; the paper's dBZ [15, 70] preprocessing is the ``"dbz"``
  transform of the ``paper`` preset), and the network predicts a **residual
  over trilinear interpolation** in the output space, with a zero-initialised
  last layer, so an untrained model is the trilinear baseline;
* the ConvLSTM aligns ``h`` and ``c`` with two deformable convolutions sharing
  one offset prediction (ZSM predicts two), and its output is added to the
  frame features (a skip connection);
* no cascaded deformable conv after the pyramid alignment.

Public entry points: :func:`build_zsm`, :func:`build_fczsm`, and
:func:`build_model` (every downscaling model of the package by name).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.errors import ModelError
from xnowcast.models.deform import DeformAlign, DeformConv2d
from xnowcast.models.interpolation import (
    DownscaleModel,
    RainTransform,
    check_factors,
    resolve_config,
    trilinear_upsample,
)

__all__ = [
    "DOWNSCALE_MODELS",
    "FCZSM_CONFIGS",
    "ZSM",
    "ZSM_CONFIGS",
    "ResidualBlock",
    "build_fczsm",
    "build_model",
    "build_zsm",
    "upsample_stages",
]

#: Names accepted by :func:`build_model`.
DOWNSCALE_MODELS = ("trilinear", "unet", "unet3d", "zsm", "fczsm")

#: Spatial factors the pixel-shuffle models support.
PIXEL_SHUFFLE_FACTORS = (1, 2, 3, 4)
#: Time factors ZSM / FC-ZSM support (one interpolation module per inserted frame).
ZSM_TIME_FACTORS = (1, 2, 3, 4)

_COMMON: dict[str, Any] = {
    "in_channels": 1,
    "dynamic_mean": [],
    "dynamic_std": [],
    "static_channels": 0,
    "static_names": [],
    "window": 4,
    "modulated": True,
    "max_offset": None,
    "transform": "linear",
    "input_transform": "log",
    "transform_scale": 10.0,
}

ZSM_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "compact"},
    # Sizes of the papers (k1 = 5, k2 = 10, 64 features, 8 deformable groups,
    # 3 pyramid levels) and the FC-ZSM paper's dBZ preprocessing.
    "paper": {
        **_COMMON,
        "nf": 64,
        "k1": 5,
        "k2": 10,
        "groups": 8,
        "levels": 3,
        "static_nf": 0,
        "static_blocks": 0,
        "transform": "dbz",
        "input_transform": "dbz",
    },
    # Small enough to train on a CPU in minutes and ship in a few hundred kB.
    "compact": {
        **_COMMON,
        "nf": 16,
        "k1": 3,
        "k2": 4,
        "groups": 4,
        "levels": 2,
        "static_nf": 0,
        "static_blocks": 0,
        "max_offset": 8.0,
    },
    # For tests.
    "tiny": {
        **_COMMON,
        "nf": 8,
        "k1": 1,
        "k2": 1,
        "groups": 2,
        "levels": 2,
        "static_nf": 0,
        "static_blocks": 0,
    },
}

_STATIC: dict[str, Any] = {"static_channels": 3, "static_names": ["coverage", "x", "y"]}
FCZSM_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"preset": "compact"},
    "paper": {**ZSM_CONFIGS["paper"], **_STATIC, "static_nf": 64, "static_blocks": 5},
    "compact": {**ZSM_CONFIGS["compact"], **_STATIC, "static_nf": 8, "static_blocks": 1},
    "tiny": {**ZSM_CONFIGS["tiny"], **_STATIC, "static_nf": 4, "static_blocks": 1},
}


def upsample_stages(factor: int) -> list[int]:
    """Pixel-shuffle stages of a spatial factor: 4 -> [2, 2], 3 -> [3], 1 -> []."""
    stages: list[int] = []
    while factor % 2 == 0 and factor > 1:
        stages.append(2)
        factor //= 2
    if factor > 1:
        stages.append(factor)
    return stages


class ResidualBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 plus the input (no normalisation), scaled-down init."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class FeatureExtractor(nn.Module):
    """A conv and ``blocks`` residual blocks, then a pyramid of ``levels`` feature maps."""

    def __init__(self, in_channels: int, nf: int, blocks: int, levels: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(in_channels, nf, 3, padding=1), _lrelu())
        self.body = nn.Sequential(*[ResidualBlock(nf) for _ in range(blocks)])
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(nf, nf, 3, stride=2, padding=1),
                _lrelu(),
                nn.Conv2d(nf, nf, 3, padding=1),
                _lrelu(),
            )
            for _ in range(levels - 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.body(self.head(x))]
        for down in self.down:
            feats.append(down(feats[-1]))
        return feats


def _upsample_offsets(offset: Tensor) -> Tensor:
    """Offsets of a pyramid level, brought to the next finer level (doubled, in pixels)."""
    return 2 * F.interpolate(offset, scale_factor=2, mode="bilinear", align_corners=False)


class PyramidAlign(nn.Module):
    """Deformably sample ``source`` features towards another time, coarse to fine.

    Offsets at each level are predicted from ``[source, other, static]`` with
    the coarser level's (upsampled, doubled) offsets as the prior; aligned
    features of finer levels are fused with the upsampled coarser result.
    """

    def __init__(self, nf: int, levels: int, groups: int, static_nf: int, **deform: Any) -> None:
        super().__init__()
        self.align = nn.ModuleList(
            DeformAlign(nf, 2 * nf + static_nf, groups, **deform) for _ in range(levels)
        )
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * nf, nf, 3, padding=1), _lrelu()) for _ in range(levels - 1)
        )

    def forward(
        self, source: list[Tensor], other: list[Tensor], static: list[Tensor] | None
    ) -> Tensor:
        offset: Tensor | None = None
        aligned: Tensor | None = None
        for level in reversed(range(len(self.align))):
            parts = [source[level], other[level]]
            if static is not None:
                parts.append(static[level])
            prior = None if offset is None else _upsample_offsets(offset)
            offset, mask = self.align[level].offsets(torch.cat(parts, 1), prior)
            feat = self.align[level].conv(source[level], offset, mask)
            if aligned is not None:
                up = F.interpolate(aligned, scale_factor=2, mode="bilinear", align_corners=False)
                feat = self.fuse[level](torch.cat([feat, up], 1))
            aligned = feat
        assert aligned is not None
        return aligned


class FrameInterpolation(nn.Module):
    """Features of an inserted frame from its two neighbours' (deformable sampling + 1x1 blend)."""

    def __init__(self, nf: int, levels: int, groups: int, static_nf: int, **deform: Any) -> None:
        super().__init__()
        self.from_first = PyramidAlign(nf, levels, groups, static_nf, **deform)
        self.from_second = PyramidAlign(nf, levels, groups, static_nf, **deform)
        self.blend_first = nn.Conv2d(nf, nf, 1)
        self.blend_second = nn.Conv2d(nf, nf, 1)

    def forward(
        self, first: list[Tensor], second: list[Tensor], static: list[Tensor] | None
    ) -> Tensor:
        a = self.from_first(first, second, static)
        b = self.from_second(second, first, static)
        return self.blend_first(a) + self.blend_second(b)


class DeformConvLSTMCell(nn.Module):
    """ConvLSTM cell whose previous hidden and cell states are deformably aligned first."""

    def __init__(self, nf: int, groups: int, static_nf: int, **deform: Any) -> None:
        super().__init__()
        self.align = DeformAlign(nf, 2 * nf + static_nf, groups, **deform)
        self.align_cell = DeformConv2d(nf, nf, 3, padding=1)
        self.gates = nn.Conv2d(2 * nf, 4 * nf, 3, padding=1)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None, static: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if state is None:
            h = c = torch.zeros_like(x)
        else:
            h, c = state
            parts = [h, x] if static is None else [h, x, static]
            offset, mask = self.align.offsets(torch.cat(parts, 1))
            h = self.align.conv(h, offset, mask)
            c = self.align_cell(c, offset, mask)
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class BiDeformConvLSTM(nn.Module):
    """Forward and backward deformable ConvLSTMs over a sequence, fused by a 1x1 conv."""

    def __init__(self, nf: int, groups: int, static_nf: int, **deform: Any) -> None:
        super().__init__()
        self.forward_cell = DeformConvLSTMCell(nf, groups, static_nf, **deform)
        self.backward_cell = DeformConvLSTMCell(nf, groups, static_nf, **deform)
        self.fuse = nn.Conv2d(2 * nf, nf, 1)

    def _run(self, cell: DeformConvLSTMCell, seq: list[Tensor], static: Tensor | None) -> list:
        state = None
        out = []
        for x in seq:
            state = cell(x, state, static)
            out.append(state[0])
        return out

    def forward(self, seq: list[Tensor], static: Tensor | None) -> list[Tensor]:
        fwd = self._run(self.forward_cell, seq, static)
        bwd = self._run(self.backward_cell, seq[::-1], static)[::-1]
        return [x + self.fuse(torch.cat([f, b], 1)) for x, f, b in zip(seq, fwd, bwd, strict=True)]


class Reconstruction(nn.Module):
    """``blocks`` residual blocks, pixel-shuffle upsampling, two convs to one channel."""

    def __init__(self, nf: int, blocks: int, factor: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[ResidualBlock(nf) for _ in range(blocks)])
        layers: list[nn.Module] = []
        for r in upsample_stages(factor):
            layers += [nn.Conv2d(nf, nf * r * r, 3, padding=1), nn.PixelShuffle(r), _lrelu()]
        self.upsample = nn.Sequential(*layers)
        self.hr = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), _lrelu())
        self.last = nn.Conv2d(nf, 1, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.last(self.hr(self.upsample(self.body(x))))


class StaticExtractor(nn.Module):
    """Features of fine-grid static fields on the coarse grid (pixel-unshuffle, convs, pyramid)."""

    def __init__(self, channels: int, nf: int, blocks: int, factor: int, levels: int) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(factor) if factor > 1 else nn.Identity()
        self.head = nn.Sequential(nn.Conv2d(channels * factor * factor, nf, 3, padding=1), _lrelu())
        self.body = nn.Sequential(*[ResidualBlock(nf) for _ in range(blocks)])
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(nf, nf, 3, stride=2, padding=1), _lrelu())
            for _ in range(levels - 1)
        )

    def forward(self, static: Tensor) -> list[Tensor]:
        feats = [self.body(self.head(self.unshuffle(static)))]
        for down in self.down:
            feats.append(down(feats[-1]))
        return feats


class ZSM(DownscaleModel):
    """Zooming Slow-Mo; with ``static_channels > 0`` (and ``static_nf > 0``) it is FC-ZSM.

    Parameters
    ----------
    config
        A full config (see :data:`ZSM_CONFIGS`): ``nf`` features, ``k1`` /
        ``k2`` residual blocks of extraction / reconstruction, ``groups``
        deformable groups, ``levels`` pyramid levels, ``static_nf`` /
        ``static_blocks`` of the static extractor, transforms, channels, window.
    factor, time_factor
        Spatial and temporal refinement.
    """

    def __init__(self, config: dict[str, Any], factor: int = 2, time_factor: int = 2) -> None:
        super().__init__()
        self.factor, self.time_factor = factor, time_factor
        self.in_channels = int(config["in_channels"])
        self.static_channels = int(config["static_channels"])
        self.window = int(config["window"])
        self.levels = int(config["levels"])
        self.spatial_multiple = 2 ** (self.levels - 1)
        self.config = {**config, "factor": factor, "time_factor": time_factor}
        nf, groups = int(config["nf"]), int(config["groups"])
        static_nf = int(config["static_nf"]) if self.static_channels else 0
        deform = {"modulated": bool(config["modulated"]), "max_offset": config["max_offset"]}

        self.transform = RainTransform(config["transform"], config["transform_scale"])
        self.input_transform = RainTransform(config["input_transform"], config["transform_scale"])
        n_dynamic = self.in_channels - 1
        mean = list(config["dynamic_mean"]) or [0.0] * n_dynamic
        std = list(config["dynamic_std"]) or [1.0] * n_dynamic
        if len(mean) != n_dynamic or len(std) != n_dynamic:
            raise ModelError(f"dynamic_mean/std need {n_dynamic} values (in_channels - 1)")
        self.register_buffer("dynamic_mean", torch.tensor(mean).view(1, -1, 1, 1), False)
        self.register_buffer("dynamic_std", torch.tensor(std).view(1, -1, 1, 1), False)

        self.extractor = FeatureExtractor(self.in_channels, nf, int(config["k1"]), self.levels)
        self.static_extractor = (
            StaticExtractor(
                self.static_channels, static_nf, int(config["static_blocks"]), factor, self.levels
            )
            if static_nf
            else None
        )
        self.interpolators = nn.ModuleList(
            FrameInterpolation(nf, self.levels, groups, static_nf, **deform)
            for _ in range(time_factor - 1)
        )
        self.lstm = BiDeformConvLSTM(nf, groups, static_nf, **deform)
        self.reconstruction = Reconstruction(nf, int(config["k2"]), factor)

    def network_input(self, frames: Tensor) -> Tensor:
        """``(B*T, C, h, w)``: transformed rain rate and standardised dynamic fields."""
        rain = self.input_transform(frames[:, :, :1])
        parts = [rain]
        if self.in_channels > 1:
            dyn = frames[:, :, 1:]
            parts.append((dyn - self.dynamic_mean.unsqueeze(1)) / self.dynamic_std.unsqueeze(1))
        return torch.cat(parts, 2).flatten(0, 1)

    def forward_z(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        """The prediction in the output transform's space, ``(B, T_out, 1, H, W)`` (unclipped)."""
        self.check_inputs(frames, static)
        b, t = frames.shape[:2]
        tf = self.time_factor
        pyramid = self.extractor(self.network_input(frames))
        per_frame = [[lvl.view(b, t, *lvl.shape[1:])[:, k] for lvl in pyramid] for k in range(t)]
        static_pyr = None
        if self.static_extractor is not None:
            assert static is not None
            static_pyr = self.static_extractor(static)
        seq: list[Tensor] = []
        for k in range(t):
            seq.append(per_frame[k][0])
            if k + 1 < t:
                for interp in self.interpolators:
                    seq.append(interp(per_frame[k], per_frame[k + 1], static_pyr))
        static_l1 = None if static_pyr is None else static_pyr[0]
        feats = torch.stack(self.lstm(seq, static_l1), 1)
        t_out = feats.shape[1]
        residual = self.reconstruction(feats.flatten(0, 1))
        residual = residual.view(b, t_out, 1, *residual.shape[-2:])
        skip = trilinear_upsample(self.transform(frames[:, :, :1]), self.factor, tf)
        return skip + residual

    def forward(self, frames: Tensor, static: Tensor | None = None) -> Tensor:
        """Fine frames in mm/h, ``(B, (T-1)*tf + 1, 1, h*f, w*f)``, nonnegative."""
        return self.transform.inverse(self.forward_z(frames, static))


def _build(name: str, presets: dict, config: Any, factor: int, time_factor: int) -> ZSM:
    check_factors(name, factor, time_factor, PIXEL_SHUFFLE_FACTORS, ZSM_TIME_FACTORS)
    cfg = resolve_config(name, config, presets)
    if name == "fczsm" and (int(cfg["static_channels"]) < 1 or int(cfg["static_nf"]) < 1):
        raise ModelError("fczsm needs static_channels >= 1 and static_nf >= 1 (else use zsm)")
    if name == "zsm" and int(cfg["static_channels"]):
        raise ModelError("zsm takes no static fields; use fczsm for static_channels > 0")
    if len(cfg["static_names"]) != int(cfg["static_channels"]):
        raise ModelError("static_names must name each of the static_channels")
    model = ZSM(cfg, factor, time_factor)
    model.config["model"] = name
    return model


def build_zsm(config: str | dict = "default", factor: int = 2, time_factor: int = 2) -> ZSM:
    """Zooming Slow-Mo.  ``config``: a preset of :data:`ZSM_CONFIGS` or a dict of overrides."""
    return _build("zsm", ZSM_CONFIGS, config, factor, time_factor)


def build_fczsm(config: str | dict = "default", factor: int = 2, time_factor: int = 2) -> ZSM:
    """FC-ZSM.  ``config``: a preset of :data:`FCZSM_CONFIGS` or a dict of overrides."""
    return _build("fczsm", FCZSM_CONFIGS, config, factor, time_factor)


def build_model(
    name: str, config: str | dict = "default", factor: int = 2, time_factor: int = 2
) -> nn.Module:
    """Any downscaling model of the package by name (see :data:`DOWNSCALE_MODELS`).

    Parameters
    ----------
    name
        ``"trilinear"``, ``"unet"``, ``"unet3d"``, ``"zsm"`` or ``"fczsm"``.
    config
        A preset name (``"default"``, ``"compact"``, ``"paper"``, ``"tiny"``) or
        a dict of overrides of a preset (``{"preset": "compact", "in_channels": 3}``);
        a full config read from a weights file also works.
    factor, time_factor
        Spatial and temporal refinement; an unsupported value raises
        :class:`~xnowcast.errors.ModelError` naming the supported ones.
    """
    if name == "zsm":
        return build_zsm(config, factor, time_factor)
    if name == "fczsm":
        return build_fczsm(config, factor, time_factor)
    if name == "trilinear":
        from xnowcast.models.interpolation import build_trilinear

        return build_trilinear(config, factor, time_factor)
    if name == "unet":
        from xnowcast.models.unet import build_unet

        return build_unet(config, factor, time_factor)
    if name == "unet3d":
        from xnowcast.models.unet import build_unet3d

        return build_unet3d(config, factor, time_factor)
    raise ModelError(f"unknown downscaling model {name!r}; choose one of {list(DOWNSCALE_MODELS)}")

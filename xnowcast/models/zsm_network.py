"""The ZSM / FC-ZSM network: feature extraction, flow-guided deformable alignment, ConvLSTM.

The building blocks (feature pyramid, pyramid alignment, frame-feature
interpolation, bidirectional deformable ConvLSTM, reconstruction, the static
extractor of FC-ZSM) and the :class:`ZSM` module that chains them on top of the
``flow`` baseline.  What the network computes, and how it differs from the
papers, is described in :mod:`xnowcast.models.zsm`, which holds the configs,
the builders and the registered specs (and re-exports :class:`ZSM`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.errors import ModelError
from xnowcast.models.base import DownscaleModel
from xnowcast.models.deform import DeformAlign, DeformConv2d
from xnowcast.models.flow import build_flow, enforce_block_mean
from xnowcast.models.interpolation import RainTransform

__all__ = ["ZSM", "ResidualBlock", "flow_offsets", "upsample_stages"]


def flow_offsets(displacement: Tensor, groups: int, level: int = 0) -> Tensor:
    """Deformable-conv offsets that move every kernel tap by ``displacement``.

    ``displacement`` is ``(B, 2, h, w)`` (x, y) in pixels of pyramid level 0;
    the result ``(B, 2 * groups * 9, h / 2**level, w / 2**level)`` holds the
    ``(dy, dx)`` pairs of the deformable convolution, in pixels of ``level``.
    """
    if level:
        displacement = F.avg_pool2d(displacement, 2**level, ceil_mode=True) / 2**level
    return displacement[:, [1, 0]].repeat(1, groups * 9, 1, 1)


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
        self,
        source: list[Tensor],
        other: list[Tensor],
        static: list[Tensor] | None,
        displacement: Tensor,
    ) -> Tensor:
        """Aligned features; ``displacement`` ``(B, 2, h, w)``: where to sample, level-0 px."""
        residual: Tensor | None = None
        aligned: Tensor | None = None
        for level in reversed(range(len(self.align))):
            parts = [source[level], other[level]]
            if static is not None:
                parts.append(static[level])
            flow = flow_offsets(displacement, self.align[level].groups, level)
            flow = flow[..., : source[level].shape[-2], : source[level].shape[-1]]
            prior = flow if residual is None else flow + _upsample_offsets(residual)
            offset, mask = self.align[level].offsets(torch.cat(parts, 1), prior)
            residual = offset - flow
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
        self,
        first: list[Tensor],
        second: list[Tensor],
        static: list[Tensor] | None,
        flow: Tensor,
        s: float,
    ) -> Tensor:
        """Features at the fraction ``s`` from ``first`` to ``second``; ``flow`` in level-0 px/step."""
        a = self.from_first(first, second, static, -s * flow)
        b = self.from_second(second, first, static, (1 - s) * flow)
        return self.blend_first(a) + self.blend_second(b)


class DeformConvLSTMCell(nn.Module):
    """ConvLSTM cell whose previous hidden and cell states are deformably aligned first."""

    def __init__(self, nf: int, groups: int, static_nf: int, **deform: Any) -> None:
        super().__init__()
        self.align = DeformAlign(nf, 2 * nf + static_nf, groups, **deform)
        self.align_cell = DeformConv2d(nf, nf, 3, padding=1)
        self.gates = nn.Conv2d(2 * nf, 4 * nf, 3, padding=1)

    def forward(
        self,
        x: Tensor,
        state: tuple[Tensor, Tensor] | None,
        static: Tensor | None,
        displacement: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One step; ``displacement`` ``(B, 2, h, w)``: where the state is sampled (flow)."""
        if state is None:
            h = c = torch.zeros_like(x)
        else:
            h, c = state
            parts = [h, x] if static is None else [h, x, static]
            prior = None if displacement is None else flow_offsets(displacement, self.align.groups)
            offset, mask = self.align.offsets(torch.cat(parts, 1), prior)
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

    def _run(
        self,
        cell: DeformConvLSTMCell,
        seq: list[Tensor],
        static: Tensor | None,
        moves: list[Tensor],
    ) -> list:
        state = None
        out = []
        for k, x in enumerate(seq):
            state = cell(x, state, static, moves[k - 1] if k else None)
            out.append(state[0])
        return out

    def forward(
        self, seq: list[Tensor], static: Tensor | None, moves: list[Tensor]
    ) -> list[Tensor]:
        """``moves[k]``: flow from output frame ``k`` to ``k + 1`` (level-0 px)."""
        fwd = self._run(self.forward_cell, seq, static, [-m for m in moves])
        bwd = self._run(self.backward_cell, seq[::-1], static, moves[::-1])[::-1]
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
        self.hr = nn.Sequential(nn.Conv2d(nf + 1, nf, 3, padding=1), _lrelu())
        self.last = nn.Conv2d(nf, 1, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def forward(self, x: Tensor, prior: Tensor) -> Tensor:
        """Residual ``(N, 1, H, W)`` from features ``x`` and the prior ``(N, 1, H, W)``."""
        return self.last(self.hr(torch.cat([self.upsample(self.body(x)), prior], 1)))


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
        A full config (see :data:`xnowcast.models.zsm.ZSM_CONFIGS`): ``nf`` features, ``k1`` /
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
        if config["motion_prior"] != "flow":
            raise ModelError(f"motion_prior must be 'flow', got {config['motion_prior']!r}")
        self.prior = build_flow(str(config["flow_preset"]), factor, time_factor)

    def network_input(self, frames: Tensor) -> Tensor:
        """``(B*T, C, h, w)``: transformed rain rate and standardised dynamic fields."""
        rain = self.input_transform(frames[:, :, :1])
        parts = [rain]
        if self.in_channels > 1:
            dyn = frames[:, :, 1:]
            parts.append((dyn - self.dynamic_mean.unsqueeze(1)) / self.dynamic_std.unsqueeze(1))
        return torch.cat(parts, 2).flatten(0, 1)

    def forward_z(
        self, frames: Tensor, static: Tensor | None = None, motion: Tensor | None = None
    ) -> Tensor:
        """The prediction in the output transform's space, ``(B, T_out, 1, H, W)``."""
        return self.transform(self.forward(frames, static, motion))

    def forward(
        self, frames: Tensor, static: Tensor | None = None, motion: Tensor | None = None
    ) -> Tensor:
        """Fine frames in mm/h, ``(B, (T-1)*tf + 1, 1, h*f, w*f)``, nonnegative.

        The ``flow`` baseline plus a learned residual in the output space; frames at
        input times are scaled so that their block means equal the input.  ``motion``
        (optional, ``(B, T-1, 2, h', w')``, coarse pixels per input step, any grid
        covering the domain): pair flows measured beforehand, e.g. on a whole domain
        when training on crops of it; by default they are measured on ``frames``.
        """
        self.check_inputs(frames, static)
        b, t = frames.shape[:2]
        h, w = frames.shape[-2:]
        tf, f = self.time_factor, self.factor
        rain = frames[:, :, :1].clamp_min(0)
        with torch.no_grad():
            flows = motion if motion is not None or t < 2 else self.prior.motion(rain)
            baseline = self.prior.refine(rain, flows)
        pyramid = self.extractor(self.network_input(frames))
        per_frame = [[lvl.view(b, t, *lvl.shape[1:])[:, k] for lvl in pyramid] for k in range(t)]
        static_pyr = None
        if self.static_extractor is not None:
            assert static is not None
            static_pyr = self.static_extractor(static)
        pair_flow = []
        if flows is not None:  # (B, 2, h, w) per pair, coarse px per input step
            dense = F.interpolate(
                flows.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False
            )
            pair_flow = list(dense.view(b, t - 1, 2, h, w).unbind(1))
        seq: list[Tensor] = []
        for k in range(t):
            seq.append(per_frame[k][0])
            if k + 1 < t:
                for j, interp in enumerate(self.interpolators, start=1):
                    seq.append(
                        interp(per_frame[k], per_frame[k + 1], static_pyr, pair_flow[k], j / tf)
                    )
        moves = [pair_flow[i // tf] / tf for i in range(len(seq) - 1)]
        static_l1 = None if static_pyr is None else static_pyr[0]
        feats = torch.stack(self.lstm(seq, static_l1, moves), 1)
        t_out = feats.shape[1]
        prior_z = self.transform(baseline)
        residual = self.reconstruction(feats.flatten(0, 1), prior_z.flatten(0, 1))
        out = self.transform.inverse(prior_z + residual.view(b, t_out, 1, h * f, w * f))
        # consistency: block means of the frames at input times equal the input
        anchors = enforce_block_mean(out[:, ::tf].flatten(0, 1), rain.flatten(0, 1), f).view(
            b, t, 1, h * f, w * f
        )
        if tf == 1:
            return anchors
        parts = out.view(b, t_out, 1, h * f, w * f)
        inserted = parts[:, :-1].reshape(b, t - 1, tf, 1, h * f, w * f)[:, :, 1:]
        stacked = torch.cat([anchors[:, :-1, None], inserted], 2).flatten(1, 2)
        return torch.cat([stacked, anchors[:, -1:]], 1)

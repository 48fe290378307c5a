"""DGMR's discriminators (training only): spatial and temporal, as in Ravuri et al. (2021).

* spatial: 8 lead frames drawn at random (per batch element), 2x average
  pooled, space-to-depth, 5 down-sampling D blocks and one more, ReLU,
  sum-pool, batch norm, a spectrally normalised linear layer; scores summed
  over the frames;
* temporal: a random crop (half the frame size) of the whole 22-frame
  sequence (inputs + lead), space-to-depth, two 3-D D blocks, then D blocks
  per remaining time slice as above; scores summed over time.

The temporal crop offset is uniform over the whole frame (the pseudocode
draws it from the first half only).  Nothing here imports xarray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.models.dgmr_config import resolve_config
from xnowcast.models.layers import DBlock, sn_linear, space_to_depth

__all__ = [
    "Discriminator",
    "SpatialDiscriminator",
    "TemporalDiscriminator",
    "build_discriminator",
]


class SpatialDiscriminator(nn.Module):
    """Scores single frames: 2x pooled, space-to-depth, 6 D blocks, sum-pooled, linear."""

    def __init__(self, channels: int = 48) -> None:
        super().__init__()
        widths = [channels * 2**i for i in range(5)]
        ins = [4, *widths[:-1]]
        blocks = [
            DBlock(i, o, pre_activation=k > 0)
            for k, (i, o) in enumerate(zip(ins, widths, strict=False))
        ]
        blocks.append(DBlock(widths[-1], widths[-1], downsample=False))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm1d(widths[-1])
        self.fc = sn_linear(widths[-1], 1)

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, N, 1, H, W)`` -> ``(B, 1)``, the sum of the N frame scores."""
        b, n = frames.shape[:2]
        x = F.avg_pool2d(frames.flatten(0, 1), 2)
        y = self.blocks(space_to_depth(x))
        y = self.fc(self.bn(F.relu(y).sum(dim=(-2, -1))))
        return y.reshape(b, n).sum(dim=1, keepdim=True)


class TemporalDiscriminator(nn.Module):
    """Scores sequences: space-to-depth, two 3-D D blocks, 4 2-D D blocks, summed over time."""

    def __init__(self, channels: int = 48) -> None:
        super().__init__()
        w = [channels * 2**i for i in range(5)]
        self.blocks3d = nn.Sequential(
            DBlock(4, w[0], pre_activation=False, dims=3), DBlock(w[0], w[1], dims=3)
        )
        self.blocks2d = nn.Sequential(
            DBlock(w[1], w[2]),
            DBlock(w[2], w[3]),
            DBlock(w[3], w[4]),
            DBlock(w[4], w[4], downsample=False),
        )
        self.bn = nn.BatchNorm1d(w[4])
        self.fc = sn_linear(w[4], 1)

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, T, 1, H, W)`` -> ``(B, 1)``."""
        b = frames.shape[0]
        x = space_to_depth(frames).transpose(1, 2)  # (B, 4, T, H/2, W/2)
        y = self.blocks3d(x).transpose(1, 2)  # (B, T', C, h, w)
        t = y.shape[1]
        y = self.blocks2d(y.flatten(0, 1))
        y = self.fc(self.bn(F.relu(y).sum(dim=(-2, -1))))
        return y.reshape(b, t).sum(dim=1, keepdim=True)


class Discriminator(nn.Module):
    """The spatial and temporal discriminators of DGMR, with their random frame/crop choice."""

    def __init__(self, config: str | Mapping[str, Any] = "paper") -> None:
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        self.input_frames = int(cfg["input_frames"])
        self.spatial_frames = int(cfg["spatial_frames"])
        self.crop_fraction = float(cfg["temporal_crop_fraction"])
        self.spatial = SpatialDiscriminator(cfg["discriminator_channels"])
        self.temporal = TemporalDiscriminator(cfg["discriminator_channels"])

    def forward(
        self, inputs: Tensor, lead: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Score (input, lead) sequences: ``(B, 4, 1, H, W)``, ``(B, T, 1, H, W)`` -> ``(B, 2)``.

        Column 0 is the spatial score, column 1 the temporal one.
        """
        b, t = lead.shape[:2]
        h, w = lead.shape[-2:]
        n = min(self.spatial_frames, t)
        order = torch.argsort(torch.rand(b, t, generator=generator), dim=1)[:, :n]
        order = order.to(lead.device)
        picked = torch.gather(
            lead, 1, order[:, :, None, None, None].expand(-1, -1, *lead.shape[2:])
        )
        spatial = self.spatial(picked)

        ch = round(h * self.crop_fraction)
        cw = round(w * self.crop_fraction)
        oy = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        ox = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        seq = torch.cat([inputs, lead], dim=1)[..., oy : oy + ch, ox : ox + cw]
        temporal = self.temporal(seq)
        return torch.cat([spatial, temporal], dim=1)


def build_discriminator(config: str | Mapping[str, Any] = "paper") -> Discriminator:
    """An untrained :class:`Discriminator` pair for a config name or dict."""
    return Discriminator(config)

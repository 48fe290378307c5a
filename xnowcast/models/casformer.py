"""CasFormer: the denoiser of CasCast, in the latent space of the frame autoencoder.

CasCast (Gong et al. 2024, ICML) generates the small scales of a nowcast with a
diffusion model whose denoiser, "CasFormer", first encodes every lead time on its
own (frame-wise blocks), then mixes the whole sequence of lead times
(sequence-wise blocks), guided frame by frame by the deterministic forecast.
Written here from that description, not from the paper's code:

* **input per lead time** ``k``: the noisy latent ``x_t[k]`` concatenated with its
  condition, the latent of the deterministic forecast at ``k`` and the latents of
  all input frames (the same for every ``k``).  Dropped conditions (classifier-free
  guidance) are replaced by a learned null condition, one value per channel.
* **frame-wise blocks**: residual 3x3 convolution blocks applied to each lead time
  separately, at the latent resolution, then after a stride-2 convolution at half
  of it.  Convolutions rather than windowed spatial attention because they cost
  a fraction on CPU at these sizes, are equivariant under the flips and
  rotations the runtime relies on, and give a tile the same result as the whole
  domain away from its edges.  The normalisation is a per-pixel LayerNorm over
  channels (no spatial statistics, so tiling does not change it).
* **sequence-wise blocks** (at half resolution): per latent position, multi-head
  self-attention over the lead times (with a learned lead-time embedding), a
  depth-wise 3x3 convolution for local spatial mixing, and an MLP; adaLN-style
  scale and shift from the diffusion step (as DiT).
* **output**: up-sampling (nearest + 3x3 convolution), the frame-wise features of
  full resolution added back, one more residual block, a 3x3 convolution to the
  latent channels: the v prediction of :mod:`xnowcast.models.diffusion`.

Every block gets the diffusion step through a sinusoidal embedding and an MLP.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.errors import ModelError
from xnowcast.models.base import merge_settings
from xnowcast.models.persistence import config_settings

__all__ = ["CONFIGS", "CasFormer", "build_casformer", "step_embedding"]

_BASE: dict[str, Any] = {"latent_channels": 4, "input_frames": 4, "lead_frames": 18}

#: Named configurations; ``width`` at the latent resolution, twice that at half of it.
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {**_BASE, "width": 24, "frame_blocks": 1, "sequence_blocks": 2, "heads": 4},
    "tiny": {**_BASE, "width": 8, "frame_blocks": 1, "sequence_blocks": 1, "heads": 2},
    # for an accelerator: 2.4 M parameters, 12x "small" (benchmarks/gpu_train_cascast.sh)
    "medium": {**_BASE, "width": 64, "frame_blocks": 2, "sequence_blocks": 4, "heads": 4},
    "paper": {**_BASE, "width": 192, "frame_blocks": 4, "sequence_blocks": 12, "heads": 8},
}


def step_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``(B, dim)`` of integer diffusion steps ``(B,)`` (as the Transformer)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _conv(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, groups=groups, padding_mode="replicate")


class _ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel of ``(N, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class _FrameBlock(nn.Module):
    """Residual convolution block of one frame, scaled and shifted by the step embedding."""

    def __init__(self, channels: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = _ChannelNorm(channels), _ChannelNorm(channels)
        self.conv1, self.conv2 = _conv(channels, channels), _conv(channels, channels)
        self.film = nn.Linear(emb, 2 * channels)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class _SequenceBlock(nn.Module):
    """Attention over the lead times of each position, local spatial mixing, MLP (adaLN)."""

    def __init__(self, channels: int, emb: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(channels, elementwise_affine=False)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.spatial = _conv(channels, channels, groups=channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels)
        )
        self.ada = nn.Linear(emb, 4 * channels)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x`` ``(B, L, C, H, W)``, ``emb`` ``(B, E)``."""
        b, n, c, h, w = x.shape
        s1, b1, s2, b2 = self.ada(emb)[:, None, None, :].chunk(4, dim=-1)  # (B, 1, 1, C)
        seq = x.permute(0, 3, 4, 1, 2).reshape(b, h * w, n, c)
        y = self.norm1(seq) * (1 + s1) + b1
        y = y.reshape(b * h * w, n, c)
        y, _ = self.attention(y, y, y, need_weights=False)
        seq = seq + y.reshape(b, h * w, n, c)
        x = seq.reshape(b, h, w, n, c).permute(0, 3, 4, 1, 2)
        x = x + self.spatial(x.flatten(0, 1)).unflatten(0, (b, n))
        seq = x.permute(0, 1, 3, 4, 2)  # (B, L, H, W, C)
        seq = seq + self.mlp(self.norm2(seq) * (1 + s2[:, :, None]) + b2[:, :, None])
        return seq.permute(0, 1, 4, 2, 3)


class CasFormer(nn.Module):
    """The CasCast denoiser: ``v = model(x_t, t, condition, drop)`` on latent sequences.

    Parameters
    ----------
    **config
        ``latent_channels``, ``input_frames`` (input latents in the condition),
        ``lead_frames`` (length of the sequences, for the lead-time embedding),
        ``width``, ``frame_blocks``, ``sequence_blocks``, ``heads``.

    Attributes
    ----------
    spatial_multiple : int
        2: latent height and width must be even (one down-sampling).
    """

    spatial_multiple = 2

    def __init__(self, **config: Any) -> None:
        super().__init__()
        full = merge_settings("casformer", CONFIGS["small"], config)
        self.config = full
        c, d = int(full["latent_channels"]), int(full["width"])
        self.latent_channels, self.lead_frames = c, int(full["lead_frames"])
        self.condition_channels = c * (1 + int(full["input_frames"]))
        if (2 * d) % int(full["heads"]):
            raise ModelError(f"casformer: 2 x width ({2 * d}) must be a multiple of heads")
        emb = 4 * d
        self.embed_dim = d
        self.step_mlp = nn.Sequential(nn.Linear(d, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.null_condition = nn.Parameter(torch.zeros(self.condition_channels, 1, 1))
        self.stem = _conv(c + self.condition_channels, d)
        self.frame_high = nn.ModuleList(_FrameBlock(d, emb) for _ in range(full["frame_blocks"]))
        self.down = _conv(d, 2 * d, stride=2)
        self.frame_low = nn.ModuleList(_FrameBlock(2 * d, emb) for _ in range(full["frame_blocks"]))
        self.lead_embedding = nn.Parameter(torch.zeros(self.lead_frames, 2 * d, 1, 1))
        self.sequence = nn.ModuleList(
            _SequenceBlock(2 * d, emb, int(full["heads"])) for _ in range(full["sequence_blocks"])
        )
        self.up = _conv(2 * d, d)
        self.out_block = _FrameBlock(d, emb)
        self.out = nn.Sequential(_ChannelNorm(d), nn.SiLU(), _conv(d, c))

    def forward(self, x_t: Tensor, t: Tensor, condition: Tensor, drop: Tensor) -> Tensor:
        """The v prediction.

        Parameters
        ----------
        x_t
            Noisy latents ``(B, L, C, h, w)`` with ``L <= lead_frames``.
        t
            Diffusion steps ``(B,)``.
        condition
            ``(B, L, C * (1 + input_frames), h, w)``: per lead time the latent of the
            deterministic forecast, then the input frames' latents.
        drop
            ``(B,)`` bool: use the learned null condition for these samples.
        """
        b, n, _, h, w = x_t.shape
        if n > self.lead_frames or h % 2 or w % 2:
            raise ModelError(
                f"casformer: at most {self.lead_frames} lead times and an even latent grid, "
                f"got {n} x {h} x {w}"
            )
        null = self.null_condition.to(condition.dtype).expand_as(condition[0, 0])
        condition = torch.where(drop[:, None, None, None, None], null, condition)
        emb = self.step_mlp(step_embedding(t, self.embed_dim).to(x_t.dtype))
        emb_frames = emb.repeat_interleave(n, dim=0)
        z = self.stem(torch.cat([x_t, condition], dim=2).flatten(0, 1))
        for block in self.frame_high:
            z = block(z, emb_frames)
        skip = z
        z = self.down(z)
        for block in self.frame_low:
            z = block(z, emb_frames)
        z = z.unflatten(0, (b, n)) + self.lead_embedding[:n]
        for block in self.sequence:
            z = block(z, emb)
        z = self.up(F.interpolate(z.flatten(0, 1), scale_factor=2, mode="nearest")) + skip
        z = self.out_block(z, emb_frames)
        return self.out(z).unflatten(0, (b, n))


def build_casformer(config: str | dict[str, Any] = "small") -> CasFormer:
    """Build the denoiser from a name in :data:`CONFIGS` or a dict of overrides."""
    return CasFormer(**config_settings(config, CONFIGS, "casformer"))

"""DGMR: the Deep Generative Model of Radar (Ravuri et al. 2021), as plain torch modules.

Written from the paper (Nature 597, 672-677, Methods, Extended Data Figs. 1-2)
and its published pseudocode.

Generator (:class:`Generator`)
    * context conditioning stack: the 4 input frames are space-to-depth'ed
      (2x), each frame goes through 4 down-sampling D blocks; at each of the
      4 scales (1/4 ... 1/32 of the input size) the per-frame features are
      stacked over time and a spectrally normalised 3x3 convolution + ReLU
      halves them into the initial state of that scale's ConvGRU;
    * latent conditioning stack: Gaussian noise ``(B, 8, H/32, W/32)`` (its own
      draw for every batch element), a 3x3 convolution, three L blocks,
      spatial attention, one more L block;
    * sampler: per scale (coarse to fine) a ConvGRU unrolled over the lead
      times, a 1x1 convolution, a G block and an up-sampling G block; the
      coarsest ConvGRU reads the latent at every step, the others read the
      output of the scale below; then batch norm, ReLU, a 1x1 convolution to
      4 channels, depth-to-space and a ReLU: one full-resolution frame per lead
      time, in mm/h.

Discriminators (:class:`Discriminator`, training only)
    * spatial: 8 lead frames drawn at random (per batch element), 2x average
      pooled, space-to-depth, 5 down-sampling D blocks and one more, ReLU,
      sum-pool, batch norm, a spectrally normalised linear layer; scores
      summed over the frames;
    * temporal: a random crop (half the frame size) of the whole 22-frame
      sequence (inputs + lead), space-to-depth, two 3-D D blocks, then D
      blocks per remaining time slice as above; scores summed over time.

Differences from the paper, all deliberate:

* inference-time work is reorganised, not changed: the ConvGRU's input half
  is computed for all lead times in one batched convolution (see
  :class:`~xnowcast.models.layers.ConvGRU`), the per-step blocks run
  batched over the lead times in chunks bounded in memory, the 1x1
  shortcut of an up-sampling G block is applied before the (nearest)
  up-sampling, and the spectral-norm weights are computed once per call;
* inputs are clipped to ``[0, max_rate]`` mm/h inside the module (NaN -> 0);
  configs may also compress the inputs (``input_transform="log1p"``) and scale
  the ReLU output (``output_scale`` mm/h per unit): the ``small`` config does,
  so that a short training reaches rain rates of tens of mm/h without waiting
  for batch-norm gains to grow that large (the ``paper`` config does not);
* the temporal discriminator's crop offset is uniform over the whole frame
  (the pseudocode draws it from the first half only).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xnowcast.errors import ModelError
from xnowcast.models.layers import (
    ConvGRU,
    DBlock,
    GBlock,
    LBlock,
    SpatialAttention,
    depth_to_space,
    sn_conv2d,
    sn_linear,
    space_to_depth,
)

__all__ = [
    "CONFIGS",
    "ContextConditioningStack",
    "Discriminator",
    "Generator",
    "LatentConditioningStack",
    "Sampler",
    "SpatialDiscriminator",
    "TemporalDiscriminator",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "resolve_config",
]

#: Model configurations.  ``paper`` has the published widths; ``small`` is the
#: CPU-trainable one the shipped weights use (1/6 of the paper's generator
#: widths, 1/4 of its discriminator widths: about 1/36 of the generator's
#: parameters and FLOPs).
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {
        "input_frames": 4,
        "context_channels": 384,  # ConvGRU state width at the coarsest scale (48 ... 384)
        "latent_channels": 768,  # latent stack output width (sampler widths 768 ... 48)
        "noise_channels": 8,  # channels of the Gaussian latent at 1/32 resolution
        "attention": True,
        "discriminator_channels": 48,  # first D block width (48 ... 768)
        "spatial_frames": 8,  # lead frames drawn for the spatial discriminator
        "temporal_crop_fraction": 0.5,  # temporal discriminator crop (128 of 256)
        "max_rate": 128.0,  # mm/h: inputs are clipped to [0, max_rate]
        "input_transform": "none",  # "none": rates in mm/h; "log1p": log(1 + rate)
        "output_scale": 1.0,  # mm/h per unit of the network's (ReLU) output
    },
    "small": {
        "input_frames": 4,
        "context_channels": 64,
        "latent_channels": 128,
        "noise_channels": 8,
        "attention": True,
        "discriminator_channels": 12,
        "spatial_frames": 8,
        "temporal_crop_fraction": 0.5,
        "max_rate": 128.0,
        "input_transform": "log1p",
        "output_scale": 10.0,
    },
}

#: elements allowed in one activation of a lead-time chunk (bounds inference memory:
#: 2**22 float32 = 16 MiB per tensor).
_CHUNK_ELEMENTS = 2**22


def resolve_config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """A full config dict from a name in :data:`CONFIGS` or a (partial) dict over ``paper``."""
    if isinstance(config, str):
        if config not in CONFIGS:
            known = ", ".join(sorted(CONFIGS))
            raise ValueError(f"unknown DGMR config {config!r}; known configs: {known}")
        return copy.deepcopy(CONFIGS[config])
    unknown = set(config) - set(CONFIGS["paper"])
    if unknown:
        raise ValueError(f"unknown DGMR config keys {sorted(unknown)}")
    full = copy.deepcopy(CONFIGS["paper"])
    full.update(config)
    json.dumps(full)  # configs travel in weights metadata: must be JSON
    return full


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (spectral-norm weights counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ContextConditioningStack(nn.Module):
    """Input frames -> initial ConvGRU states at 1/4, 1/8, 1/16 and 1/32 resolution."""

    def __init__(self, input_frames: int, context_channels: int) -> None:
        super().__init__()
        if context_channels % 8 or (2 * context_channels // 8) % input_frames:
            raise ValueError(
                "context_channels must be a multiple of 8 with 2*context_channels/8 "
                "divisible by input_frames"
            )
        self.state_channels = [context_channels // 2 ** (3 - i) for i in range(4)]
        per_frame = [2 * c // input_frames for c in self.state_channels]
        ins = [4, *per_frame[:-1]]
        self.blocks = nn.ModuleList(
            DBlock(i, o, pre_activation=k > 0)
            for k, (i, o) in enumerate(zip(ins, per_frame, strict=False))
        )
        self.mix = nn.ModuleList(
            sn_conv2d(p * input_frames, c, 3)
            for p, c in zip(per_frame, self.state_channels, strict=False)
        )

    def forward(self, frames: Tensor) -> list[Tensor]:
        """``(B, T, 1, H, W)`` -> states, finest (H/4) first."""
        b, t = frames.shape[:2]
        h = space_to_depth(frames).flatten(0, 1)
        states = []
        for block, mix in zip(self.blocks, self.mix, strict=False):
            h = block(h)
            stacked = h.reshape(b, t * h.shape[1], *h.shape[-2:])
            states.append(F.relu(mix(stacked), inplace=True))
        return states


class LatentConditioningStack(nn.Module):
    """Gaussian noise at 1/32 resolution -> the latent read by the coarsest ConvGRU."""

    def __init__(self, noise_channels: int, latent_channels: int, attention: bool = True) -> None:
        super().__init__()
        self.noise_channels = noise_channels
        w1 = max(latent_channels // 32, noise_channels)
        w2 = max(latent_channels // 16, w1)
        w3 = max(latent_channels // 4, w2)
        self.conv = sn_conv2d(noise_channels, noise_channels, 3)
        self.l1 = LBlock(noise_channels, w1)
        self.l2 = LBlock(w1, w2)
        self.l3 = LBlock(w2, w3)
        self.attention = SpatialAttention(w3) if attention else None
        self.l4 = LBlock(w3, latent_channels)

    def forward(self, z: Tensor) -> Tensor:
        h = self.l3(self.l2(self.l1(self.conv(z))))
        if self.attention is not None:
            h = self.attention(h)
        return self.l4(h)


class Sampler(nn.Module):
    """ConvGRU + G blocks per scale, unrolled over lead times; the output head."""

    def __init__(self, context_channels: int, latent_channels: int) -> None:
        super().__init__()
        if latent_channels % 16:
            raise ValueError("latent_channels must be a multiple of 16")
        self.grus = nn.ModuleList()
        self.projections = nn.ModuleList()
        self.gblocks = nn.ModuleList()
        self.upblocks = nn.ModuleList()
        for k in range(4):
            x_ch = latent_channels // 2**k
            hid = context_channels // 2**k
            self.grus.append(ConvGRU(x_ch, hid))
            self.projections.append(sn_conv2d(hid, x_ch, 1))
            self.gblocks.append(GBlock(x_ch, x_ch))
            self.upblocks.append(GBlock(x_ch, x_ch // 2, upsample=True))
        self.out_bn = nn.BatchNorm2d(latent_channels // 16)
        self.out_conv = sn_conv2d(latent_channels // 16, 4, 1)

    def _head(self, h: Tensor) -> Tensor:
        return F.relu(depth_to_space(self.out_conv(F.relu(self.out_bn(h), inplace=True))))

    def forward(
        self, states: list[Tensor], latent: Tensor, steps: int, time_chunk: int | None = None
    ) -> Tensor:
        """States (finest first) and latent -> ``(B, steps, 1, H, W)``."""
        b = latent.shape[0]
        seq: Tensor | None = None  # the previous scale's outputs, (B, steps, C, h, w)
        for k in range(4):
            state = states[3 - k]
            last = k == 3
            h_out, w_out = 2 * state.shape[-2], 2 * state.shape[-1]
            widest = self.upblocks[k].conv1.in_channels
            chunk = time_chunk or max(1, _CHUNK_ELEMENTS // (b * widest * h_out * w_out))
            chunk = min(chunk, steps)
            pieces = []
            for t0 in range(0, steps, chunk):
                n = min(chunk, steps - t0)
                if k == 0:
                    hs, state = self.grus[0](latent, state, steps=n)
                else:
                    assert seq is not None
                    hs, state = self.grus[k](seq[:, t0 : t0 + n], state)
                y = self.projections[k](hs.flatten(0, 1))
                y = self.upblocks[k](self.gblocks[k](y))
                if last:
                    y = self._head(y)
                pieces.append(y.reshape(b, n, *y.shape[1:]))
            seq = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
        assert seq is not None
        return seq


class Generator(nn.Module):
    """The DGMR generator: 4 frames of rain rate (mm/h) -> ``steps`` future frames (mm/h).

    Parameters
    ----------
    config
        A name in :data:`CONFIGS` or a config dict; stored as ``self.config``.

    Notes
    -----
    ``forward(frames, steps=18, *, generator=None)`` takes ``(B, 4, 1, H, W)``
    finite rain rates with H and W multiples of 32 and returns ``(B, steps, 1,
    H, W)`` (ReLU output).  Each batch element gets its own latent noise,
    drawn from ``generator`` when given, so an ensemble is a repeated batch
    and a seeded generator reproduces a forecast exactly.
    """

    spatial_multiple = 32

    def __init__(self, config: str | Mapping[str, Any] = "paper") -> None:
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        self.input_frames = int(cfg["input_frames"])
        self.max_rate = float(cfg["max_rate"])
        if cfg["input_transform"] not in ("none", "log1p"):
            raise ValueError(
                f"input_transform must be 'none' or 'log1p', got {cfg['input_transform']!r}"
            )
        self.input_transform = cfg["input_transform"]
        self.output_scale = float(cfg["output_scale"])
        self.noise_channels = int(cfg["noise_channels"])
        self.context_stack = ContextConditioningStack(self.input_frames, cfg["context_channels"])
        self.latent_stack = LatentConditioningStack(
            self.noise_channels, cfg["latent_channels"], cfg["attention"]
        )
        self.sampler = Sampler(cfg["context_channels"], cfg["latent_channels"])
        # channels-last convolutions are ~10-40% faster with oneDNN on CPU
        self.to(memory_format=torch.channels_last)

    def _check(self, frames: Tensor, steps: int) -> None:
        if frames.dim() != 5 or frames.shape[1] != self.input_frames or frames.shape[2] != 1:
            raise ModelError(
                f"DGMR expects frames of shape (batch, {self.input_frames}, 1, H, W), "
                f"got {tuple(frames.shape)}"
            )
        h, w = frames.shape[-2:]
        m = self.spatial_multiple
        if h % m or w % m or h == 0 or w == 0:
            raise ModelError(f"DGMR needs H and W multiples of {m}, got {h} x {w}: pad the input")
        if steps < 1:
            raise ModelError(f"DGMR: steps must be >= 1, got {steps}")

    def sample_noise(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The latent noise for ``frames``: ``(B, noise_channels, H/32, W/32)``."""
        b = frames.shape[0]
        h, w = frames.shape[-2] // 32, frames.shape[-1] // 32
        return torch.randn(
            (b, self.noise_channels, h, w),
            generator=generator,
            device=frames.device,
            dtype=frames.dtype,
        )

    def forward(
        self,
        frames: Tensor,
        steps: int = 18,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        time_chunk: int | None = None,
    ) -> Tensor:
        """Forecast ``steps`` frames; see the class notes.

        ``noise`` overrides the latent draw; ``time_chunk`` fixes how many
        lead times run batched (default: as many as fit a memory bound).
        """
        self._check(frames, steps)
        x = torch.nan_to_num(frames, nan=0.0).clamp(0.0, self.max_rate)
        if self.input_transform == "log1p":
            x = torch.log1p(x)
        z = self.sample_noise(x, generator) if noise is None else noise
        # every parametrized (spectral-norm) weight is read once per module call: the
        # ConvGRUs read theirs once per sequence, the other blocks run batched over
        # lead times, so no weight cache (and no copy of all weights) is needed
        fmt = self._memory_format()
        x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x
        states = [s.contiguous(memory_format=fmt) for s in self.context_stack(x)]
        latent = self.latent_stack(z.contiguous(memory_format=fmt))
        y = self.sampler(states, latent, steps, time_chunk)
        return y if self.output_scale == 1.0 else y * self.output_scale

    def _memory_format(self) -> torch.memory_format:
        w = self.sampler.out_conv.weight
        cl = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        return torch.channels_last if cl else torch.contiguous_format


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


def build_generator(config: str | Mapping[str, Any] = "paper") -> Generator:
    """An untrained :class:`Generator` for a config name or dict."""
    return Generator(config)


def build_discriminator(config: str | Mapping[str, Any] = "paper") -> Discriminator:
    """An untrained :class:`Discriminator` pair for a config name or dict."""
    return Discriminator(config)

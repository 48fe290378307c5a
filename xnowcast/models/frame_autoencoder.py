"""Frame-wise autoencoder of rain-rate fields: the latent space of a CasCast-style cascade.

CasCast (Gong et al. 2024, "Skillful High-resolution Precipitation Nowcasting via
Cascaded Modelling", ICML) runs its diffusion model in the latent space of an
autoencoder that compresses every radar frame on its own.  This is that stage,
written from the paper's description (not its code): a convolutional
variational autoencoder (as the "KL-f4/f8" autoencoders of latent diffusion,
Rombach et al. 2022) that maps one frame ``(N, 1, H, W)`` in mm/h to a latent
``(N, latent_channels, H/f, W/f)`` (``f`` = ``factor``, 4 or 8) and back.

* values: ``z = log1p(R) / log1p(max_rate)`` in ``[0, 1]`` in, the same out
  (decoded with a sigmoid, so the rain rate stays in ``[0, max_rate]``);
* encoder: a 3x3 convolution, then per halving a residual block and a stride-2
  convolution, a residual block, and a 3x3 convolution to the mean and log-variance
  of the latent; decoder: the mirror image, with nearest up-sampling + 3x3
  convolution (no checkerboards); replicate padding, GroupNorm-free (no batch
  statistics);
* loss (:func:`autoencoder_loss`): L1 in ``z`` (reconstruction) + ``spectral_weight``
  times the L1 distance of the log Fourier amplitudes of prediction and target
  (a light spectral term: L1 alone blurs, i.e. loses power at small scales) +
  ``kl_weight`` times the KL divergence to a standard normal (keeps the latent
  smooth and of unit scale for the diffusion model).

The model never imports xarray; missing pixels (NaN) are encoded as no rain and
the caller masks the reconstruction.
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

__all__ = ["CONFIGS", "FrameAutoencoder", "autoencoder_loss", "build_frame_autoencoder"]

_BASE: dict[str, Any] = {"max_rate": 128.0, "latent_channels": 4}

#: Named configurations; a dict given to :func:`build_frame_autoencoder` overrides "small".
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {**_BASE, "factor": 4, "channels": 32},
    "tiny": {**_BASE, "factor": 4, "channels": 8},
    "f8": {**_BASE, "factor": 8, "channels": 32},
}


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, padding_mode="replicate")


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a, self.b = _conv(channels, channels), _conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(F.silu(self.a(F.silu(x))))


class _Upsample(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = _conv(c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class FrameAutoencoder(nn.Module):
    """Variational autoencoder of single rain-rate frames.

    Parameters
    ----------
    **config
        ``factor`` (4 or 8: compression per side), ``channels`` (width),
        ``latent_channels`` and ``max_rate`` (mm/h).

    Attributes
    ----------
    factor : int
        Spatial compression per side; inputs must be multiples of it.
    spatial_multiple : int
        Same as ``factor``.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        full = merge_settings("frame autoencoder", CONFIGS["small"], config)
        if full["factor"] not in (4, 8):
            raise ModelError(f"frame autoencoder: factor must be 4 or 8, got {full['factor']}")
        self.config = full
        self.factor = self.spatial_multiple = int(full["factor"])
        self.max_rate = float(full["max_rate"])
        c, latent = int(full["channels"]), int(full["latent_channels"])
        levels = int(math.log2(self.factor))
        down: list[nn.Module] = [_conv(1, c)]
        for _ in range(levels):
            down += [_Residual(c), _conv(c, c, stride=2)]
        down += [_Residual(c), nn.SiLU(), _conv(c, 2 * latent)]
        self.encoder = nn.Sequential(*down)
        up: list[nn.Module] = [_conv(latent, c), _Residual(c)]
        for _ in range(levels):
            up += [_Upsample(c, c), _Residual(c)]
        up += [nn.SiLU(), _conv(c, 1)]
        self.decoder = nn.Sequential(*up)

    def to_z(self, rain: Tensor) -> Tensor:
        """Rain rate (mm/h, NaN -> 0) -> ``log1p(R) / log1p(max_rate)`` in [0, 1]."""
        rain = torch.nan_to_num(rain, nan=0.0).clamp(0.0, self.max_rate)
        return torch.log1p(rain) / math.log1p(self.max_rate)

    def from_z(self, z: Tensor) -> Tensor:
        """The inverse of :meth:`to_z`."""
        return torch.expm1(z.clamp(0.0, 1.0) * math.log1p(self.max_rate))

    def _check(self, rain: Tensor) -> None:
        if rain.ndim != 4 or rain.shape[1] != 1:
            raise ModelError(f"frame autoencoder expects (N, 1, H, W), got {tuple(rain.shape)}")
        if rain.shape[-2] % self.factor or rain.shape[-1] % self.factor:
            raise ModelError(
                f"frame autoencoder: height and width must be multiples of {self.factor}, "
                f"got {tuple(rain.shape[-2:])} (pad the frames first)"
            )

    def encode(self, rain: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of the latent, each ``(N, latent_channels, H/f, W/f)``."""
        self._check(rain)
        mean, logvar = self.encoder(self.to_z(rain)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_z(self, latent: Tensor) -> Tensor:
        """Latent -> reconstruction in ``z`` units (in [0, 1])."""
        return torch.sigmoid(self.decoder(latent))

    def decode(self, latent: Tensor) -> Tensor:
        """Latent -> rain rate ``(N, 1, H, W)`` in mm/h."""
        return self.from_z(self.decode_z(latent))

    def forward(
        self, rain: Tensor, *, generator: torch.Generator | None = None, sample: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(reconstruction in z units, latent mean, latent log-variance)``.

        ``sample=True`` decodes a draw from the latent distribution (training),
        otherwise its mean.
        """
        mean, logvar = self.encode(rain)
        latent = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            latent = mean + torch.exp(0.5 * logvar) * noise.to(mean.device)
        return self.decode_z(latent), mean, logvar


def log_amplitude_distance(a: Tensor, b: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean L1 distance of the log Fourier amplitudes of two batches of fields."""
    fa = torch.fft.rfft2(a - a.mean(dim=(-2, -1), keepdim=True)).abs()
    fb = torch.fft.rfft2(b - b.mean(dim=(-2, -1), keepdim=True)).abs()
    return (torch.log(fa + eps) - torch.log(fb + eps)).abs().mean()


def autoencoder_loss(
    model: FrameAutoencoder,
    rain: Tensor,
    *,
    spectral_weight: float = 0.1,
    kl_weight: float = 1e-4,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Training loss of a batch of frames ``(N, 1, H, W)`` in mm/h and its parts."""
    target = model.to_z(rain)
    recon, mean, logvar = model(rain, generator=generator, sample=True)
    l1 = (recon - target).abs().mean()
    spectral = log_amplitude_distance(recon, target)
    kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).mean()
    loss = l1 + spectral_weight * spectral + kl_weight * kl
    parts = {
        "l1": float(l1.detach()),
        "spectral": float(spectral.detach()),
        "kl": float(kl.detach()),
    }
    return loss, parts


def build_frame_autoencoder(config: str | dict[str, Any] = "small") -> FrameAutoencoder:
    """Build the frame autoencoder from a name in :data:`CONFIGS` or a dict of overrides."""
    return FrameAutoencoder(**config_settings(config, CONFIGS, "frame autoencoder"))

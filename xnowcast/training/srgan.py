"""Training of ``srgan``: crops, losses, MSE pre-training, then adversarial training.

Data (:func:`fine_crops`): fully observed ``crop x crop`` fine crops (1 km, mm/h,
canonical orientation) of single 5-minute frames, mostly wet (a share of dry
crops is kept); the coarse input is their ``f x f`` block mean, ``f`` drawn per
batch (4 with probability ``p_factor4``, else 2); dihedral augmentation.
RMI 2021-07-04 is held out (validation only).

Losses (:func:`generator_loss`), by ``variant``:

* ``"mse"``: ``pixel`` = MSE of ``z = log1p(R)/log1p(10)`` + MSE of ``R / 10 mm/h``;
* ``"mse_adv"``: ``pixel`` + ``adv_weight`` x hinge generator loss;
* ``"content_adv"`` (the shipped one): ``content_weight`` x the AtmoDist
  encoder's feature distance between output and target + ``adv_weight`` x hinge
  + ``pixel_weight`` x ``pixel``.

Every variant starts from the same MSE pre-training (``pretrain_steps``); the
discriminator (:class:`~xnowcast.models.srgan.PatchDiscriminator`) uses the hinge
loss.  Block means of the output equal the input by construction, so no
consistency term is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xnowcast.models.atmodist import RadarEncoder
from xnowcast.models.srgan import PatchDiscriminator, SRGANGenerator
from xnowcast.training.atmodist import WET_RATE, WET_SHARE
from xnowcast.training.losses import hinge_discriminator_loss, hinge_generator_loss

__all__ = [
    "VARIANTS",
    "GanConfig",
    "band_power_ratio",
    "coarse_batch",
    "discriminator_step",
    "fine_crops",
    "generator_loss",
    "validate",
]

VARIANTS = ("mse", "mse_adv", "content_adv")


@dataclass
class GanConfig:
    """Settings of the generator / discriminator training (recorded in the weights)."""

    variant: str = "content_adv"
    batch_size: int = 16
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    adv_weight: float = 0.01
    content_weight: float = 10.0
    pixel_weight: float = 0.1
    p_factor4: float = 0.75
    crop: int = 64


def fine_crops(
    values: np.ndarray,
    crop: int,
    count: int,
    rng: np.random.Generator,
    dry_share: float = 0.1,
    stride: int | None = None,
) -> np.ndarray:
    """Up to ``count`` fully observed crops ``(N, 1, crop, crop)`` of a ``(T, H, W)`` array."""
    t, h, w = values.shape
    stride = stride or crop // 2
    wet, dry = [], []
    for k in range(t):
        for y in range(0, h - crop + 1, stride):
            for x in range(0, w - crop + 1, stride):
                window = values[k, y : y + crop, x : x + crop]
                if not np.isfinite(window).all():
                    continue
                is_wet = (window >= WET_RATE).mean() >= WET_SHARE
                (wet if is_wet else dry).append((k, y, x))
    n_dry = min(len(dry), round(count * dry_share))
    n_wet = min(len(wet), count - n_dry)
    chosen = [wet[i] for i in rng.permutation(len(wet))[:n_wet]]
    chosen += [dry[i] for i in rng.permutation(len(dry))[:n_dry]]
    out = [values[k, y : y + crop, x : x + crop] for k, y, x in chosen]
    if not out:
        return np.zeros((0, 1, crop, crop), np.float32)
    return np.stack(out)[:, None].astype(np.float32)


def coarse_batch(
    crops: Tensor, size: int, p_factor4: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, int]:
    """``(coarse, fine, factor)``: a random batch, one dihedral element, its block means."""
    idx = torch.randint(crops.shape[0], (size,), generator=generator)
    fine = crops[idx]
    k = int(torch.randint(4, (1,), generator=generator))
    fine = torch.rot90(fine, k, dims=(-2, -1))
    if bool(torch.randint(2, (1,), generator=generator)):
        fine = torch.flip(fine, dims=(-1,))
    factor = 4 if float(torch.rand((1,), generator=generator)) < p_factor4 else 2
    return F.avg_pool2d(fine, factor), fine.contiguous(), factor


def pixel_loss(gen: SRGANGenerator, fake: Tensor, real: Tensor) -> Tensor:
    """MSE in ``z`` + MSE of ``R / 10 mm/h`` (light and heavy rain both count)."""
    return F.mse_loss(gen.to_z(fake), gen.to_z(real)) + F.mse_loss(fake / 10, real / 10)


def generator_loss(
    gen: SRGANGenerator,
    disc: PatchDiscriminator | None,
    encoder: RadarEncoder | None,
    coarse: Tensor,
    fake: Tensor,
    real: Tensor,
    cfg: GanConfig,
) -> tuple[Tensor, dict[str, float]]:
    """The generator's loss of ``cfg.variant`` and its terms."""
    terms: dict[str, Tensor] = {"pixel": pixel_loss(gen, fake, real)}
    if cfg.variant != "mse":
        assert disc is not None
        terms["adv"] = hinge_generator_loss(disc(gen.to_z(fake), gen.to_z(coarse)))
    if cfg.variant == "content_adv":
        assert encoder is not None
        terms["content"] = encoder.feature_difference(fake, real).mean() / encoder.distance_scale
    if cfg.variant == "mse":
        total = terms["pixel"]
    elif cfg.variant == "mse_adv":
        total = terms["pixel"] + cfg.adv_weight * terms["adv"]
    else:
        total = (
            cfg.content_weight * terms["content"]
            + cfg.adv_weight * terms["adv"]
            + cfg.pixel_weight * terms["pixel"]
        )
    return total, {k: float(v.detach()) for k, v in terms.items()}


def discriminator_step(
    gen: SRGANGenerator,
    disc: PatchDiscriminator,
    optimiser: torch.optim.Optimizer,
    coarse: Tensor,
    fake: Tensor,
    real: Tensor,
) -> float:
    """One hinge-loss step of the discriminator; its loss."""
    cz = gen.to_z(coarse)
    loss = hinge_discriminator_loss(disc(gen.to_z(real), cz), disc(gen.to_z(fake.detach()), cz))
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def band_power_ratio(fake: Tensor, real: Tensor, low_km: float, high_km: float) -> float:
    """Power of ``fake`` over ``real`` at wavelengths ``low..high`` km (1 km cells, ``(N,1,H,W)``)."""
    h, w = real.shape[-2:]
    ky = torch.fft.fftfreq(h).view(-1, 1)
    kx = torch.fft.rfftfreq(w).view(1, -1)
    wavelength = 1 / torch.sqrt(ky**2 + kx**2).clamp_min(1e-9)
    band = (wavelength >= low_km) & (wavelength <= high_km)

    def power(x: Tensor) -> Tensor:
        spec = torch.fft.rfft2(x.double() - x.double().mean((-2, -1), keepdim=True))
        return spec.abs().pow(2)[..., band].sum()

    return float(power(fake) / power(real).clamp_min(1e-30))


@torch.no_grad()
def validate(
    gen: SRGANGenerator, encoder: RadarEncoder | None, crops: Tensor, factor: int = 4
) -> dict[str, Any]:
    """Held-out scores of the generator and the baseline on fine crops at ``factor``."""
    gen.eval()
    coarse = F.avg_pool2d(crops, factor)
    out: dict[str, Any] = {}
    for name, fake in (
        ("srgan", torch.cat([gen.refine_frames(c, factor) for c in coarse.split(32)])),
        ("baseline", gen.baseline(coarse, factor)),
    ):
        scores = {
            "mse": float(F.mse_loss(fake, crops)),
            "power_2_6km": band_power_ratio(fake, crops, 2, 6),
            "power_6_16km": band_power_ratio(fake, crops, 6, 16),
            "q999_ratio": float(torch.quantile(fake.flatten(), 0.999))
            / max(float(torch.quantile(crops.flatten(), 0.999)), 1e-9),
        }
        if encoder is not None:
            scores["atmodist"] = float(encoder.distance(fake, crops).mean())
        out[name] = scores
    out["mse_ratio"] = out["srgan"]["mse"] / max(out["baseline"]["mse"], 1e-12)
    gen.train()
    return out

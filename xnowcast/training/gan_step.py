"""One DGMR training step (:func:`gan_step`) and the dihedral augmentation of its crops.

See :mod:`xnowcast.training.gan` for the recipe and the training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from xnowcast.models.dgmr import Discriminator, Generator
from xnowcast.training.data import CropBatch
from xnowcast.training.losses import (
    ensemble_crps_loss,
    grid_cell_regularizer,
    hinge_discriminator_loss,
    hinge_generator_loss,
    volume_regularizer,
)

__all__ = ["dihedral", "gan_step", "scored_targets"]


def dihedral(batch: CropBatch, rng: torch.Generator | None = None) -> CropBatch:
    """Each sequence of ``batch`` turned by one of the 8 symmetries of the square, drawn at random.

    Inputs, targets and masks of a sequence get the same transform (a rotation
    by a multiple of 90 degrees, then a transpose for half of them); the crops
    must be square.
    """
    h, w = batch.inputs.shape[-2:]
    if h != w:
        raise ValueError(f"dihedral augmentation needs square crops, got {h} x {w}")
    codes = torch.randint(0, 8, (batch.inputs.shape[0],), generator=rng).tolist()

    def turn(t: Tensor) -> Tensor:
        out = []
        for i, code in enumerate(codes):
            x = torch.rot90(t[i], code % 4, dims=(-2, -1))
            out.append(x.transpose(-2, -1) if code >= 4 else x)
        return torch.stack(out).contiguous()

    return CropBatch(
        turn(batch.inputs),
        turn(batch.targets),
        turn(batch.valid),
        turn(batch.input_valid),
        [{**o, "dihedral": c} for o, c in zip(batch.origins, codes, strict=True)],
    )


def scored_targets(
    generator: Generator, batch: CropBatch, lead_steps: int, inflow_mask: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """The extrapolation, and the observed sequence and its mask as the losses see them.

    Returns ``(base, targets, scored)``: the targets are zero where not
    scored; ``scored`` is False where the target is missing and, with
    ``inflow_mask``, where the extrapolation's trajectory leaves the crop (see
    :func:`gan_step`).
    """
    y, valid = batch.targets[:, :lead_steps], batch.valid[:, :lead_steps]
    base, reach = generator.extrapolate_reach(batch.inputs, lead_steps)
    if inflow_mask:
        valid = valid & reach
    return base, y * valid.to(y.dtype), valid


def gan_step(
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    batch: CropBatch,
    *,
    lead_steps: int = 18,
    grid_samples: int = 6,
    grid_weight: float = 20.0,
    grid_weight_mode: str = "plus_one",
    disc_steps: int = 2,
    rng: torch.Generator | None = None,
    precision: str = "fp32",
    backward: Callable[[Tensor], Any] | None = None,
    inflow_mask: bool = True,
    volume_weight: float = 0.0,
    crps_weight: float = 0.0,
) -> dict[str, float]:
    """One DGMR training step: ``disc_steps`` discriminator updates, one generator update.

    The same batch serves every update, with one extrapolation shared by all
    of them.  The generator's ``grid_samples`` samples run as one batched
    forward, and are scored by the discriminators in one call together with
    the observed sequence (the pseudocode scores each sample with the
    observation in its own call).  ``backward`` runs the backward passes
    (default ``loss.backward()``; a Lightning module passes ``manual_backward``).
    Returns the losses.

    With ``inflow_mask`` (the default) the pixels whose extrapolation
    trajectory leaves the crop (:meth:`Generator.extrapolate_reach`) count as
    missing: they leave the grid-cell term and are zeroed in the observed and
    generated sequences the discriminators see.  The rain there flowed into
    the crop from outside the input frames; on 128-px crops it is 20 % of the
    observed rain at 30 min and 57 % at 90 min.  Scored, it teaches the
    generator to hedge with rain wherever the extrapolation is dry, more so at
    long leads: the wet drift with lead time of the earlier weights on a
    512-km domain, where most extrapolation-dry pixels are truly dry.

    ``volume_weight`` > 0 adds that many times
    :func:`~xnowcast.training.losses.volume_regularizer` (over the scored
    pixels) to the generator loss; ``crps_weight`` > 0 adds that many times
    :func:`~xnowcast.training.losses.ensemble_crps_loss` of the
    ``grid_samples`` samples (which keeps the latent in use).
    """
    backward = backward or Tensor.backward
    dev = batch.inputs.device
    x = batch.inputs
    base, y, valid = scored_targets(generator, batch, lead_steps, inflow_mask)
    vmask = valid.to(y.dtype)

    def autocast() -> Any:
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    discriminator.requires_grad_(True)
    d_loss = torch.zeros(())
    for _ in range(disc_steps):
        with torch.no_grad(), autocast():
            fake = generator(x, lead_steps, generator=rng, base=base).float() * vmask
        with autocast():
            scores = discriminator(torch.cat([x, x]), torch.cat([y, fake]), generator=rng)
        real_s, fake_s = scores.float().chunk(2)
        d_loss = hinge_discriminator_loss(real_s, fake_s)
        opt_d.zero_grad(set_to_none=True)
        backward(d_loss)
        opt_d.step()

    discriminator.requires_grad_(False)
    xs = x.repeat(grid_samples, 1, 1, 1, 1)
    with autocast():
        samples = generator(
            xs, lead_steps, generator=rng, base=base.repeat(grid_samples, 1, 1, 1, 1)
        ).float()
    samples = samples.reshape(grid_samples, *y.shape)
    grid = grid_cell_regularizer(samples, y, valid, mode=grid_weight_mode)
    fakes = (samples * vmask).flatten(0, 1)
    with autocast():
        scores = discriminator(torch.cat([x, xs]), torch.cat([y, fakes]), generator=rng)
    g_hinge = hinge_generator_loss(scores.float()[x.shape[0] :])
    volume = volume_regularizer(samples, y, valid)
    g_loss = g_hinge + grid_weight * grid
    if volume_weight:
        g_loss = g_loss + volume_weight * volume
    crps = ensemble_crps_loss(samples, y, valid) if crps_weight else torch.zeros(())
    if crps_weight:
        g_loss = g_loss + crps_weight * crps
    opt_g.zero_grad(set_to_none=True)
    backward(g_loss)
    opt_g.step()
    discriminator.requires_grad_(True)
    return {
        "d_loss": d_loss.item(),
        "g_hinge": g_hinge.item(),
        "grid": grid.item(),
        "volume": volume.item(),
        "crps": crps.item(),
        "g_loss": g_loss.item(),
        "scored": vmask.mean().item(),
    }

"""The ``LightningModule`` of each training family; the models stay plain ``nn.Module``\\ s.

:class:`SupervisedModule`
    Downscalers (``zsm``, ``fczsm``, ``unet``, ``unet3d``) and deterministic
    nowcasters.  Masked MSE over the cells whose truth is known: for
    downscalers in the model's output value space (``forward_z`` /
    ``transform``, as :mod:`xnowcast.training.supervised`), for nowcasters in
    ``log1p`` of mm/h.  Adam with a cosine decay to 5 % of the learning rate
    over the recipe's ``lr_decay_steps`` (fixed, so that where a run stops or
    resumes does not change its schedule); gradient clipping is the trainer's.
:class:`AdversarialModule`
    DGMR: manual optimisation, each step is :func:`~xnowcast.training.gan_step.gan_step`
    (``disc_steps`` discriminator updates, one generator update; hinge losses and
    the grid-cell regulariser) with Lightning's ``manual_backward``.  Only the
    generator's optimiser counts as a trainer step, so ``global_step`` is the number
    of training steps.  Latents of step ``s`` on rank ``r`` are drawn from a
    generator seeded by ``(seed, s, r)``: a resumed run draws what an
    uninterrupted one would.
:class:`RepresentationModule`
    Self-supervised encoders (``atmodist``): cross-entropy of the lag
    classifier's logits on pairs of patches ``lag`` frames apart
    (:class:`~xnowcast.training.lightning.datamodule.LagTask`), Adam at a constant
    learning rate, as the encoder's own trainer
    (:func:`xnowcast.training.atmodist.train_steps`).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from xnowcast.training.data import CropBatch
from xnowcast.training.lightning.windows import key_rng
from xnowcast.training.supervised import masked_mse

__all__ = ["AdversarialModule", "RepresentationModule", "SupervisedModule", "cosine_decay"]


def cosine_decay(steps: int, floor: float = 0.05) -> Any:
    """Learning-rate factor: a cosine from 1 at step 0 to ``floor`` at ``steps`` (then flat)."""

    def factor(step: int) -> float:
        progress = min(step / max(steps, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class SupervisedModule(L.LightningModule):
    """Masked-MSE training of a downscaler or a deterministic nowcaster.

    Parameters
    ----------
    model
        The ``nn.Module`` to train.
    task
        ``"downscale"`` or ``"nowcast"``.
    lr
        Peak learning rate of Adam.
    lead_steps
        Lead times a nowcaster is trained on.
    decay_steps
        Length of the cosine decay of the learning rate.
    """

    def __init__(
        self, model: nn.Module, task: str, lr: float, lead_steps: int = 12, decay_steps: int = 1000
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.lr = float(lr)
        self.lead_steps = int(lead_steps)
        self.decay_steps = int(decay_steps)

    def loss(self, batch: Any) -> torch.Tensor:
        """The masked MSE of one batch."""
        if self.task == "downscale":
            coarse, fine, mask, static = batch
            static_in = static if int(getattr(self.model, "static_channels", 0)) else None
            pred = self.model.forward_z(coarse, static_in)
            return masked_mse(pred.float(), self.model.transform(fine), mask)
        lead = min(self.lead_steps, int(batch.targets.shape[1]))
        pred = self.model(batch.inputs, lead)
        target = batch.targets[:, :lead]
        return masked_mse(torch.log1p(pred.float().clamp_min(0)), torch.log1p(target), batch.valid)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, sync_dist=False)
        return loss

    def configure_optimizers(self) -> Any:
        optimiser = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, cosine_decay(self.decay_steps))
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class AdversarialModule(L.LightningModule):
    """DGMR's adversarial training (manual optimisation around ``gan_step``).

    Parameters
    ----------
    generator, discriminator
        The DGMR generator (whose weights ship) and its spatial + temporal discriminator.
    recipe
        ``lead_steps``, ``grid_samples``, ``grid_weight``, ``grid_weight_mode``,
        ``volume_weight``, ``inflow_mask`` (see :func:`~xnowcast.training.gan_step.gan_step`),
        ``disc_steps``, ``lr_generator``, ``lr_discriminator``, ``betas``.
    seed
        Seed of the latents (with the step and the rank).
    bf16
        Run the forward passes under bfloat16 autocast (``--precision bf16-mixed``).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        recipe: dict[str, Any],
        seed: int = 0,
        bf16: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.recipe = dict(recipe)
        self.seed = int(seed)
        self.bf16 = bool(bf16)

    def training_step(self, batch: CropBatch, batch_idx: int) -> None:
        from xnowcast.training.gan_step import gan_step

        opt_g, opt_d = self.optimizers()
        draw = key_rng(self.seed, self.global_step, self.global_rank, 2**20).integers(2**62)
        rng = torch.Generator(device=self.device).manual_seed(int(draw))
        r = self.recipe
        losses = gan_step(
            self.generator,
            self.discriminator,
            opt_g,
            opt_d.optimizer,  # the raw optimiser: discriminator updates are not trainer steps
            batch,
            lead_steps=int(r["lead_steps"]),
            grid_samples=int(r["grid_samples"]),
            grid_weight=float(r["grid_weight"]),
            grid_weight_mode=str(r["grid_weight_mode"]),
            disc_steps=int(r["disc_steps"]),
            inflow_mask=bool(r.get("inflow_mask", True)),
            volume_weight=float(r.get("volume_weight", 0.0)),
            rng=rng,
            precision="bf16" if self.bf16 else "fp32",
            backward=self.manual_backward,
        )
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}: {losses}")
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True)

    def configure_optimizers(self) -> Any:
        betas = tuple(float(b) for b in self.recipe["betas"])
        opt_g = torch.optim.Adam(
            self.generator.parameters(), lr=float(self.recipe["lr_generator"]), betas=betas
        )
        opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=float(self.recipe["lr_discriminator"]), betas=betas
        )
        return [opt_g, opt_d]


class RepresentationModule(L.LightningModule):
    """Time-lag classification of a self-supervised encoder (cross-entropy, Adam).

    Parameters
    ----------
    model
        The lag classifier (:class:`~xnowcast.models.atmodist.LagClassifier`:
        ``model(first, second)`` gives lag-class logits); its encoder ships.
    lr
        Learning rate of Adam (constant).
    """

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__()
        self.model = model
        self.lr = float(lr)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        from xnowcast.training.atmodist import lag_loss

        loss = lag_loss(self.model, *batch)
        self.log("train/loss", loss, prog_bar=True, sync_dist=False)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)

"""Denoising diffusion in a few functions: noise schedule, training loss, DDIM sampling, CFG.

Used by :mod:`xnowcast.models.cascast` (the latent diffusion stage of CasCast),
written from the papers (Ho et al. 2020, DDPM; Song et al. 2021, DDIM; Nichol &
Dhariwal 2021, the cosine schedule; Salimans & Ho 2022, v-prediction; Ho &
Salimans 2022, classifier-free guidance), not from any code base.

* **schedule**: the cosine schedule by default
  (``abar(t) = cos^2(((t/T + s)/(1 + s)) pi/2) / cos^2((s/(1 + s)) pi/2)``, ``s = 0.008``,
  each step's beta capped at 0.999), or the linear one of DDPM (beta from 1e-4 to 0.02);
  ``T`` = ``timesteps`` discrete steps.  The cosine schedule destroys the signal more
  gradually, which matters for small latents (Nichol & Dhariwal 2021).
* **parameterisation**: the network predicts **v** = ``sqrt(abar) eps - sqrt(1 - abar) x0``
  (Salimans & Ho 2022): its target has unit scale at every noise level, so one MSE
  weights all levels sensibly, and ``x0`` and ``eps`` both follow from it without
  dividing by a vanishing ``sqrt(1 - abar)``.
* **loss** (:func:`diffusion_loss`): the masked MSE between predicted and true v at a
  uniformly drawn step, the condition dropped (replaced by the model's learned null
  condition) for a fraction ``drop_prob`` of the samples, which is what classifier-free
  guidance needs.
* **sampling** (:func:`ddim_sample`): DDIM on an evenly spaced sub-sequence of
  ``sampling_steps`` steps from ``T - 1`` down to 0, ``eta`` = 0 deterministic (the
  probability-flow ODE), ``eta`` = 1 as ancestral DDPM sampling; the last step returns
  the predicted ``x0``.  With guidance scale ``w`` the model's prediction is
  ``v_null + w (v_cond - v_null)`` (:func:`guided`; ``w = 1`` is the conditional model
  alone and costs one pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from xnowcast.errors import ModelError

__all__ = [
    "SCHEDULES",
    "NoiseSchedule",
    "ddim_sample",
    "ddim_timesteps",
    "diffusion_loss",
    "guided",
]

SCHEDULES = ("cosine", "linear")

#: ``v = model(x_t, t, drop)``: ``drop`` (bool per sample) asks for the null condition.
Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


class NoiseSchedule:
    """The cumulative signal fraction ``abar`` of ``timesteps`` discrete diffusion steps.

    Parameters
    ----------
    timesteps
        Number of steps ``T`` of the forward process.
    kind
        ``"cosine"`` (default) or ``"linear"``.
    """

    def __init__(self, timesteps: int = 1000, kind: str = "cosine") -> None:
        if kind not in SCHEDULES:
            raise ModelError(f"noise schedule must be one of {SCHEDULES}, not {kind!r}")
        if int(timesteps) < 2:
            raise ModelError(f"a noise schedule needs at least 2 timesteps, got {timesteps}")
        self.timesteps, self.kind = int(timesteps), kind
        t = torch.arange(self.timesteps + 1, dtype=torch.float64) / self.timesteps
        if kind == "cosine":
            s = 0.008
            f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            betas = torch.linspace(1e-4, 0.02, self.timesteps, dtype=torch.float64)
        #: abar at steps 0..T-1 (float64; gathered and cast where used)
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)

    def abar(self, t: Tensor, like: Tensor) -> Tensor:
        """``abar`` at integer steps ``t`` (``-1`` -> 1, no noise), shaped to broadcast on ``like``."""
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        values = table.to(t.device)[t.long() + 1].to(like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps``."""
        a = self.abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def v_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``v = sqrt(abar) eps - sqrt(1 - abar) x0``."""
        a = self.abar(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def split(self, x_t: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(x0, eps)`` implied by ``x_t`` and a v prediction at step ``t``."""
        a = self.abar(t, x_t)
        return a.sqrt() * x_t - (1 - a).sqrt() * v, (1 - a).sqrt() * x_t + a.sqrt() * v


def guided(model: Denoiser, x_t: Tensor, t: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: ``v_null + scale (v_cond - v_null)``.

    ``scale`` 1 is the conditional prediction (one pass); 0 the unconditional one.
    """
    keep = torch.zeros(x_t.shape[0], dtype=torch.bool, device=x_t.device)
    if scale == 1.0:
        return model(x_t, t, keep)
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([keep, ~keep]))
    cond, null = both.chunk(2)
    return null + scale * (cond - null)


def ddim_timesteps(timesteps: int, sampling_steps: int) -> list[int]:
    """The steps DDIM visits: ``sampling_steps`` evenly spaced from ``timesteps - 1`` to 0."""
    if not 1 <= int(sampling_steps) <= int(timesteps):
        raise ModelError(f"sampling_steps must be in 1..{timesteps}, got {sampling_steps}")
    if sampling_steps == 1:
        return [timesteps - 1]
    step = (timesteps - 1) / (sampling_steps - 1)
    return sorted({round(i * step) for i in range(sampling_steps)}, reverse=True)


def ddim_sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    noise: Tensor,
    *,
    sampling_steps: int = 20,
    eta: float = 0.0,
    guidance: float = 1.0,
    step_noise: Callable[[int], Tensor] | None = None,
) -> Tensor:
    """Draw ``x0`` by DDIM from the starting noise ``x_T`` (``noise``).

    Parameters
    ----------
    model
        ``v = model(x_t, t, drop)``.
    schedule
        The noise schedule the model was trained with.
    noise
        ``x_T``, standard normal, any shape with the batch first.
    sampling_steps, eta, guidance
        Number of DDIM steps; 0 deterministic (DDIM) to 1 (DDPM-like) stochasticity;
        the classifier-free guidance scale.
    step_noise
        ``step_noise(k)``: the fresh standard-normal noise of step ``k`` (0-based), shaped
        like ``noise`` (needed when ``eta > 0``; default: drawn from torch's generator).

    Returns
    -------
    Tensor
        The sample ``x0``, shaped like ``noise``.
    """
    if eta < 0:
        raise ModelError(f"eta must be >= 0, got {eta}")
    steps = ddim_timesteps(schedule.timesteps, sampling_steps)
    x = noise
    for k, step in enumerate(steps):
        following = steps[k + 1] if k + 1 < len(steps) else -1
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        v = guided(model, x, t, guidance)
        x0, eps = schedule.split(x, t, v)
        if following < 0:
            return x0
        a_t = schedule.abar(t, x)
        a_s = schedule.abar(torch.full_like(t, following), x)
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).clamp_min(0).sqrt()
        x = a_s.sqrt() * x0 + (1 - a_s - sigma**2).clamp_min(0).sqrt() * eps
        if eta > 0:
            z = step_noise(k) if step_noise is not None else torch.randn_like(x)
            x = x + sigma * z
    return x


def diffusion_loss(
    model: Denoiser,
    schedule: NoiseSchedule,
    x0: Tensor,
    *,
    weight: Tensor | None = None,
    drop_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The v-prediction loss of a batch ``x0`` (a step, noise and condition drop drawn per sample).

    Parameters
    ----------
    model, schedule
        As :func:`ddim_sample`.
    x0
        Clean samples, batch first.
    weight
        Per-element weight broadcastable to ``x0`` (0 where the target is unknown).
    drop_prob
        Probability of training a sample on the null condition.
    generator
        Draws the steps, the noise and the drops (reproducible training).
    """
    b = x0.shape[0]
    t = torch.randint(0, schedule.timesteps, (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    drop = (torch.rand(b, generator=generator) < drop_prob).to(x0.device)
    v = model(schedule.add_noise(x0, t, noise), t, drop)
    err = (v - schedule.v_target(x0, t, noise)) ** 2
    if weight is None:
        return err.mean()
    w = weight.to(err.dtype).expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1.0)

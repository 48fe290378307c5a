"""Adversarial training of DGMR (Ravuri et al. 2021), written from the paper's pseudocode.

One training step:

1. ``disc_steps`` (2) discriminator steps: a generated forecast (no gradient to
   the generator) and the observed one, each prefixed with the 4 input frames,
   are scored by the spatial and temporal discriminators; hinge loss; Adam
   (betas 0 and 0.999).
2. one generator step: ``grid_samples`` forecasts of the same inputs (each
   with its own latent), the hinge generator loss on their scores plus
   ``grid_weight`` (20) times the grid-cell regulariser on the *mean of the
   samples* against the observation; Adam (betas 0 and 0.999).

The recipe, and where it departs from the paper:

* **data**: importance-sampled crops
  (:class:`~xnowcast.training.data.SequenceCropSampler`, the paper's
  acceptance ``min(1, q_min + m * mean(1 - exp(-y)))``), each turned by one of
  the 8 symmetries of the square (**dihedral augmentation**, :func:`dihedral`):
  rain moves in every direction, and the model must not learn the
  orientation or the prevailing wind of the few training events;
* **grid-cell weight** ``min(y + 1, 24)`` (``grid_weight_mode="plus_one"``,
  the paper's text): the pseudocode's ``clip(y, 0, 24)`` gives dry pixels no
  weight, so rain generated where none fell costs nothing there, one cause
  of the wet bias of the earlier weights.  Any weight growing with the rain
  still moves the L1 optimum towards rain (a pixel is best forecast wet once
  its chance of rain exceeds ``1 / (1 + w)``); ``grid_weight_mode="none"``
  (plain L1, the median) drifts dry instead: see the training guide;
* **no separate deterministic warm-up**: the generator forecasts a residual
  over extrapolation whose output head starts at zero
  (:mod:`xnowcast.models.dgmr`), so step 0 already *is* the extrapolation
  nowcast and adversarial training starts from a physically sound forecast;
* the extrapolation is computed once per batch and shared by every sample
  and discriminator step;
* **validation** on held-out radar every ``val_every`` steps (and at step 0)
  by :func:`~xnowcast.training.gan_validation.ensemble_scores` (CRPS per lead,
  spread/skill, volume and area ratios, 2-4 px power, first-step jump,
  member spread, against persistence and extrapolation); the generator of
  lowest :func:`~xnowcast.training.gan_validation.selection_score` (CRPS,
  multiplied by a penalty for rain volume and area outside the issue-14
  targets at 30, 60 and 90 min) is kept (``best.safetensors``) and becomes
  the weights file: CRPS alone rewards forecasts that are too dry;
* **inflow mask** (not in the paper): pixels whose extrapolation trajectory
  leaves the crop are left out of every loss (see
  :func:`~xnowcast.training.gan_step.gan_step`): the rain there came from
  outside the crop, and scoring it taught earlier weights a wet drift with
  lead time;
* **volume term** (not in the paper, ``volume_weight``, 0 by default):
  :func:`~xnowcast.training.losses.volume_regularizer` ties the rain volume
  of the samples' mean to the observed one at every lead time; the grid-cell
  term's per-pixel (weighted) median is too dry (``"none"``) or too wet
  (``"plus_one"``) in volume.

Missing target pixels are left out of the regulariser and zeroed in the
generated sequences the discriminators see, as they are in the observed ones.
Batch-norm statistics of the generator are recomputed on training batches
(BigGAN's "standing statistics") before every validation and before weights
are written.  Checkpoints (:mod:`xnowcast.training.gan_checkpoint`) resume
bit for bit.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from xnowcast.models.dgmr import (
    Discriminator,
    Generator,
    build_discriminator,
    build_generator,
    count_parameters,
    resolve_config,
)
from xnowcast.training.data import SequenceCropSampler
from xnowcast.training.gan_checkpoint import (
    load_checkpoint,
    load_optimisers,
    save_checkpoint,
    save_generator_weights,
    strip_prefix,
)
from xnowcast.training.gan_step import dihedral, gan_step
from xnowcast.training.gan_validation import (
    forecast_scores,
    refresh_batchnorm,
    selection_score,
    validate_generator,
)

__all__ = [
    "TrainResult",
    "dihedral",
    "forecast_scores",
    "gan_step",
    "load_checkpoint",
    "refresh_batchnorm",
    "save_generator_weights",
    "train_dgmr",
]

BEST = "best.safetensors"


@dataclass
class TrainResult:
    """What :func:`train_dgmr` returns."""

    generator: Generator
    discriminator: Discriminator
    config: dict[str, Any]
    steps: int
    history: list[dict[str, Any]]
    scores: dict[str, Any]
    wall_time: float
    checkpoint: Path
    weights: Path
    sha256: str
    training: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- training


def _as_list(data: Any) -> Any:
    if data is None or isinstance(data, Mapping | xr.DataArray | xr.Dataset):
        return data
    return list(data)


def train_dgmr(
    data: xr.DataArray | xr.Dataset | Sequence[xr.DataArray] | Mapping[str, xr.DataArray],
    *,
    config: str | Mapping[str, Any] = "small",
    steps: int = 500_000,
    crop: int = 256,
    batch_size: int = 16,
    lead_steps: int = 18,
    grid_samples: int = 6,
    grid_weight: float = 20.0,
    grid_weight_mode: str = "plus_one",
    disc_steps: int = 2,
    lr_generator: float = 5e-5,
    lr_discriminator: float = 2e-4,
    betas: tuple[float, float] = (0.0, 0.999),
    seed: int = 0,
    augment: bool = True,
    val_data: xr.DataArray | Mapping[str, xr.DataArray] | None = None,
    val_every: int = 1000,
    val_crops: int = 4,
    val_crop: int = 256,
    val_members: int = 4,
    checkpoint_every: int = 500,
    bn_batches: int = 4,
    out_dir: str | os.PathLike[str] = "dgmr-training",
    weights_name: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    resume: str | os.PathLike[str] | None = None,
    time_budget: float | None = None,
    stride: int = 8,
    max_missing: float = 0.05,
    q_min: float = 2e-4,
    q_m: float = 0.1,
    metadata: Mapping[str, Any] | None = None,
    precision: str = "fp32",
    init_weights: str | os.PathLike[str] | None = None,
    inflow_mask: bool = True,
    volume_weight: float = 0.0,
    crps_weight: float = 0.0,
    ema_decay: float = 0.0,
) -> TrainResult:
    """Train DGMR on radar DataArrays; write checkpoints and the generator's weights.

    The defaults are the paper's settings (256 x 256 crops, batch 16, 18 lead
    times, 6 samples in the grid-cell term of weight 20, 2 discriminator steps
    per generator step, Adam 5e-5 / 2e-4 with betas (0, 0.999), 5e5 steps)
    with the changes listed in the module docstring; smaller budgets change
    ``crop``, ``batch_size``, ``lead_steps``, ``grid_samples`` and ``steps``.

    Parameters
    ----------
    data
        Training radar: DataArrays/Datasets with dims time/y/x and rain (or
        reflectivity) units, or a mapping event name -> data.
    config
        Model config name or dict (:data:`xnowcast.models.dgmr.CONFIGS`).
    steps
        Generator steps to train (in total, counting resumed ones).
    crop, batch_size, lead_steps
        Training crop size (multiple of 32, at least 128), batch size and lead
        times per sequence.
    grid_samples, grid_weight, grid_weight_mode
        Samples and weight of the grid-cell regulariser; ``"plus_one"`` weights by
        ``min(y + 1, 24)`` (the paper's text), ``"clip"`` by ``clip(y, 0, 24)``
        (its pseudocode).
    disc_steps, lr_generator, lr_discriminator, betas
        Optimisation as in the paper.
    seed
        Seeds weights, data sampling, augmentation and latents: a seed reproduces a run.
    augment
        Dihedral augmentation of every training crop (:func:`dihedral`).
    val_data
        Held-out radar for validation (:func:`~xnowcast.training.gan_validation.ensemble_scores`),
        scored at step 0, every ``val_every`` steps and at the end on ``val_crops``
        deterministic rainy crops of ``val_crop`` pixels with ``val_members`` members;
        the trained generator of lowest CRPS is kept.
    checkpoint_every
        Steps between checkpoints in ``out_dir``.
    bn_batches
        Training batches used to recompute batch-norm statistics.
    out_dir
        Folder for ``checkpoint.safetensors``, ``optimiser.safetensors``,
        ``history.json``, ``best.safetensors`` (the best validated generator) and
        the weights ``dgmr-<config>.safetensors`` (or ``weights_name``): the best
        validated generator when there is validation, else the last one.
    device
        Torch device.
    progress
        Show a tqdm bar with the losses.
    resume
        A checkpoint file or folder to continue from.
    time_budget
        Stop (with a checkpoint) after this many seconds of training in this call.
    stride, max_missing, q_min, q_m
        Crop sampling (see :class:`SequenceCropSampler`).
    metadata
        Extra entries for the ``training`` metadata (events, commit, ...).
    precision
        ``"fp32"`` (default) or ``"bf16"``: bfloat16 autocast of the forward
        passes (losses and optimiser in float32), about 1.7x faster on CPUs
        with AMX/AVX512-BF16.
    init_weights
        Start a new run from these generator weights (a DGMR weights file of the
        same config; the discriminators start afresh), e.g. to fine-tune the best
        generator of an earlier run with another recipe.  Ignored on ``resume``.
    inflow_mask
        Leave out of the losses the pixels whose extrapolation trajectory leaves
        the crop (:func:`~xnowcast.training.gan_step.gan_step`).
    volume_weight
        Weight of :func:`~xnowcast.training.losses.volume_regularizer` in the
        generator loss (0: the paper's losses only).
    crps_weight
        Weight of :func:`~xnowcast.training.losses.ensemble_crps_loss` of the
        ``grid_samples`` samples in the generator loss (0: the paper's losses only).
    ema_decay
        > 0: keep an exponential moving average of the generator's parameters
        (``ema = decay * ema + (1 - decay) * generator`` after every generator
        step; buffers copied), as BigGAN does, and validate, keep and export
        that average instead of the last generator: one GAN step moves the
        rain volume at 90 min by up to 30 %, the average does not.  A run
        resumed from a checkpoint without an average starts it from the generator.

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    cfg = resolve_config(config)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    config_name = config if isinstance(config, str) else "custom"
    if crop % 32 or crop < 128:
        raise ValueError(f"crop must be a multiple of 32 and at least 128, got {crop}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)

    torch.manual_seed(seed)
    generator = build_generator(cfg).to(dev)
    discriminator = build_discriminator(cfg).to(dev)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_generator, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_discriminator, betas=betas)
    rng = torch.Generator().manual_seed(seed + 1)

    sampler = SequenceCropSampler(
        _as_list(data),
        input_frames=generator.input_frames,
        lead_frames=lead_steps,
        crop=crop,
        stride=stride,
        q_min=q_min,
        m=q_m,
        max_missing=max_missing,
        max_rate=float(cfg["max_rate"]),
        seed=seed,
    )
    val_batch = None
    if val_data is not None:
        val_sampler = SequenceCropSampler(
            _as_list(val_data),
            input_frames=generator.input_frames,
            lead_frames=18,
            crop=val_crop,
            stride=32,
            max_missing=max_missing,
            max_rate=float(cfg["max_rate"]),
        )
        val_batch = val_sampler.rainiest(val_crops)

    args = {
        "config_name": config_name,
        "crop": crop,
        "batch_size": batch_size,
        "lead_steps": lead_steps,
        "grid_samples": grid_samples,
        "grid_weight": grid_weight,
        "grid_weight_mode": grid_weight_mode,
        "disc_steps": disc_steps,
        "lr_generator": lr_generator,
        "lr_discriminator": lr_discriminator,
        "betas": list(betas),
        "seed": seed,
        "augment": "dihedral" if augment else "none",
        "stride": stride,
        "max_missing": max_missing,
        "q_min": q_min,
        "q_m": q_m,
        "val_crops": val_crops,
        "val_crop": val_crop,
        "val_members": val_members,
        "inflow_mask": inflow_mask,
        "volume_weight": volume_weight,
        "crps_weight": crps_weight,
        "ema_decay": ema_decay,
        "selection": SELECTION,
        "candidate_crops": len(sampler),
        "events": sorted(set(sampler.names)),
        "generator_parameters": count_parameters(generator),
        "discriminator_parameters": count_parameters(discriminator),
        **dict(metadata or {}),
    }
    history: list[dict[str, Any]] = []
    step = 0
    wall = 0.0
    cpu = 0.0
    best: dict[str, Any] = {}
    revalidate = False
    if init_weights is not None and resume is None:
        from xnowcast.weights import load_state_dict

        state, init_meta = load_state_dict(init_weights)
        if resolve_config(init_meta["config"]) != cfg:
            raise ValueError(f"{init_weights} holds another DGMR config than {config_name!r}")
        generator.load_state_dict(state)
        done = init_meta.get("training", {})
        args["initialised_from"] = {
            "weights": str(init_weights),
            "steps": done.get("selected_step", done.get("steps")),
            "recipe": {k: done.get(k) for k in ("grid_weight_mode", "lr_generator", "crop")},
            "wall_time_s": done.get("wall_time_trained_s", done.get("wall_time_s")),
            "cpu_time_s": done.get("cpu_time_trained_s", done.get("cpu_time_s")),
        }
    ema: Generator | None = None
    if resume is not None:
        tensors, meta = load_checkpoint(resume)
        generator.load_state_dict(strip_prefix(tensors, "generator"))
        if ema_decay > 0 and any(k.startswith("ema.") for k in tensors):
            ema = build_generator(cfg).to(dev)
            ema.load_state_dict(strip_prefix(tensors, "ema"))
        discriminator.load_state_dict(strip_prefix(tensors, "discriminator"))
        rng.set_state(tensors["rng.torch"])
        load_optimisers(resume, opt_g, opt_d)
        sampler.rng.bit_generator.state = meta["sampler_rng"]
        step = int(meta["step"])
        history = list(meta.get("history", []))
        wall = float(meta.get("wall_time", 0.0))
        cpu = float(meta.get("cpu_time", 0.0))
        best = dict(meta.get("best", {}))
        old = meta["args"]
        # the recipe may change on resume (a new term, another learning rate): say at which step
        changes = list(old.get("recipe_changes", []))
        changed = {
            k: [old.get(k), args[k]]
            for k in args
            if k not in ("events", "candidate_crops", "commit") and old.get(k) != args[k]
        }
        if changed:
            changes.append({"step": int(meta["step"]), "changed": changed})
        if changes:
            args["recipe_changes"] = changes
        if any(
            old.get(k) != args[k] for k in ("val_crops", "val_crop", "val_members", "selection")
        ):
            best = {}  # another validation set or criterion: the kept scores do not compare
            revalidate = True
        if "initialised_from" in meta["args"]:
            args["initialised_from"] = meta["args"]["initialised_from"]
        args["resumed_at"] = [*meta["args"].get("resumed_at", []), step]

    if ema_decay > 0 and ema is None:
        ema = copy.deepcopy(generator)
    if ema is not None:
        ema.requires_grad_(False)

    def update_ema() -> None:
        assert ema is not None
        with torch.no_grad():
            for avg, now in zip(ema.parameters(), generator.parameters(), strict=True):
                avg.lerp_(now, 1.0 - ema_decay)
            for avg, now in zip(ema.buffers(), generator.buffers(), strict=True):
                avg.copy_(now)

    def checkpoint() -> Path:
        meta = {
            "step": step,
            "config": cfg,
            "args": args,
            "history": history,
            "wall_time": wall,
            "cpu_time": cpu,
            "best": best,
            "sampler_rng": sampler.rng.bit_generator.state,
        }
        path = save_checkpoint(out, generator, discriminator, opt_g, opt_d, meta, rng, ema)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        return path

    def bn_inputs() -> list[Tensor]:
        state = sampler.rng.bit_generator.state
        sampler.rng = np.random.default_rng(seed + 12345)
        xs = [sampler.sample(batch_size).inputs.to(dev) for _ in range(bn_batches)]
        sampler.rng.bit_generator.state = state
        return xs

    def inference_copy() -> Generator:
        # a copy with standing batch-norm statistics; the training state stays untouched
        # (the forward passes would also move the spectral-norm vectors)
        ev = copy.deepcopy(ema if ema is not None else generator)
        refresh_batchnorm(ev, bn_inputs(), lead_steps, seed)
        return ev

    def training_record(stopped: bool) -> dict[str, Any]:
        return {
            **args,
            "steps": step,
            "wall_time_s": round(wall, 1),
            "cpu_time_s": round(cpu, 1),
            "stopped_by_time_budget": stopped,
            "torch": torch.__version__,
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "precision": precision,
        }

    def validate_and_keep() -> dict[str, Any]:
        assert val_batch is not None
        ev = inference_copy()
        scores_now = validate_generator(ev, val_batch, val_members, 18, seed, dev)
        score = selection_score(scores_now)
        if step > 0 and (not best or score < float(best.get("score", math.inf))):
            best.clear()
            best.update({"step": step, "crps": scores_now["crps"], "score": score})
            best["volume_ratio"] = scores_now.get("volume_ratio", float("nan"))
            record = {**training_record(False), "selected_step": step}
            save_generator_weights(ev, out / BEST, training=record, scores=scores_now)
        return scores_now

    generator.train()
    discriminator.train()
    if val_batch is not None and (step == 0 or revalidate):
        history.append({"step": step, "wall_time": round(wall, 2), "val": validate_and_keep()})
    bar = tqdm(total=steps, initial=step, disable=not progress, desc="dgmr", dynamic_ncols=True)
    start = time.perf_counter()
    cpu_start = time.process_time()
    spent = 0.0
    stopped_by_budget = False
    last: dict[str, float] = {}
    while step < steps:
        batch = sampler.sample(batch_size)
        if augment:
            batch = dihedral(batch, rng)
        last = gan_step(
            generator,
            discriminator,
            opt_g,
            opt_d,
            batch.to(dev),
            lead_steps=lead_steps,
            grid_samples=grid_samples,
            grid_weight=grid_weight,
            grid_weight_mode=grid_weight_mode,
            disc_steps=disc_steps,
            rng=rng,
            precision=precision,
            inflow_mask=inflow_mask,
            volume_weight=volume_weight,
            crps_weight=crps_weight,
        )
        if ema is not None:
            update_ema()
        step += 1
        now, cpu_now = time.perf_counter(), time.process_time()
        cpu += cpu_now - cpu_start
        cpu_start = cpu_now
        wall += now - start
        spent += now - start
        start = now
        if not all(math.isfinite(v) for v in last.values()):
            checkpoint()
            raise FloatingPointError(f"non-finite loss at step {step}: {last}")
        history.append(
            {"step": step, "wall_time": round(wall, 2), "cpu_time": round(cpu, 2), **last}
        )
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in last.items()})
        if val_batch is not None and step % val_every == 0:
            scores_now = validate_and_keep()
            history[-1]["val"] = scores_now
            bar.write(
                f"step {step}: " + json.dumps({k: round(v, 4) for k, v in scores_now.items()})
            )
            # validation time is not training time (the CPU time counts it: it is spent on training)
            start = time.perf_counter()
        if step % checkpoint_every == 0:
            checkpoint()
        if time_budget is not None and spent >= time_budget:
            stopped_by_budget = True
            break
    bar.close()

    final = inference_copy()
    final_scores: dict[str, Any] = {}
    if val_batch is not None and (not history or "val" not in history[-1]):
        final_scores = validate_and_keep()
        history.append({"step": step, "wall_time": round(wall, 2), "val": final_scores})
    elif val_batch is not None:
        final_scores = history[-1]["val"]
    ckpt = checkpoint()
    training = training_record(stopped_by_budget)
    weights = out / (weights_name or f"dgmr-{config_name}.safetensors")
    chosen, scores = final, final_scores
    if (out / BEST).exists() and best:
        from xnowcast.weights import load_state_dict

        state, meta = load_state_dict(out / BEST)
        chosen = build_generator(cfg)
        chosen.load_state_dict(state)
        chosen.eval()
        scores = meta["scores"]
        training = {**training, "selected_step": best["step"]}
    training["curve"] = [
        {"step": h["step"], **{k: h["val"][k] for k in CURVE_KEYS if k in h["val"]}}
        for h in history
        if "val" in h
    ]
    sha = save_generator_weights(chosen, weights, training=training, scores=scores)
    return TrainResult(
        generator=chosen,
        discriminator=discriminator,
        config=cfg,
        steps=step,
        history=history,
        scores=scores,
        wall_time=wall,
        checkpoint=ckpt,
        weights=weights,
        sha256=sha,
        training=training,
    )


#: the name of the rule that picks the kept generator (stored in the run's args).
SELECTION = (
    "crps x exp(log-excess of volume and area ratios at 30/60/90 min"
    " and of the 60-min member std below 0.05 mm/h)"
)


#: validation scores kept in the weights' training curve.
CURVE_KEYS = (
    "crps",
    "crps_60",
    "crps_90",
    "spread_skill",
    "volume_ratio",
    "volume_ratio_30",
    "volume_ratio_60",
    "volume_ratio_90",
    "area_ratio_1",
    "area_ratio_1_30",
    "area_ratio_1_60",
    "area_ratio_1_90",
    "power_ratio_2_4km",
    "member_std_60",
    "first_step_jump",
)

"""Training of the CasCast denoiser (:mod:`xnowcast.models.cascast`) on the shared events.

The recipe:

* **frozen stages**: the frame autoencoder (trained first by
  :mod:`xnowcast.training.autoencoder`, loaded from ``--autoencoder``) and the
  deterministic backbone (extrapolation by default; a learned backbone comes
  with its shipped weights) are not trained here;
* **scales**: before the first step ``latent_scale`` and ``residual_scale`` are
  set to the standard deviations of the latents and of the latent residual over
  the backbone, the latter per lead time (``per_lead_scale``, the default since
  session 10: the 5-minute residual is a third of the 90-minute one), on one
  batch of 16 training crops (8 with one residual scale; stored with the weights);
* **data**: importance-sampled ``input_frames + lead_frames`` crops of the four
  training events (:class:`~xnowcast.training.data.SequenceCropSampler`), each
  turned by one of the 8 symmetries of the square
  (:func:`~xnowcast.training.gan_step.dihedral`); RMI 2021-07-04 is held out;
* **loss**: :meth:`~xnowcast.models.cascast.CasCast.training_loss`, the
  v-prediction MSE of the latent residual at a uniformly drawn diffusion step,
  weighted by the observed fraction of each latent cell, the condition dropped
  with probability ``drop_prob`` (classifier-free guidance);
* **reuse** (``reuse`` > 1): the frozen stages' output for a batch (condition,
  latent residual, weights: three quarters of a CPU step of the ``small`` model)
  serves ``reuse`` consecutive steps, each with a fresh diffusion step, noise and
  condition drop, and is kept in the checkpoints for an exact resume;
* **optimiser**: Adam on the denoiser, constant learning rate, gradients clipped
  to norm 1;
* **weight average** (``ema_decay`` > 0): an exponential moving average of the
  denoiser's weights (:class:`~xnowcast.training.averaging.WeightAverage`),
  started at the step the option is first given, validated and exported
  instead of the last weights;
* **validation** every ``val_every`` steps: the same loss on the rainiest crops of
  the held-out event with fixed steps, noise and drops (comparable along the
  run; of the average when there is one, ``val_last`` of the last weights); at
  the end one sampled member per crop is scored (MAE in mm/h, rain volume)
  against the backbone's forecast and its autoencoder round trip;
* **recipe changes** on resume (learning rate, batch size, crop, average) are
  recorded with the step they took effect in ``recipe_changes``;
* **budget**: ``steps``, ``cpu_budget`` seconds of process CPU time, or
  ``time_budget`` seconds of wall time (for an accelerator, where CPU time says
  little);
* **device** (``device="cuda"``): model, batches and Adam on the accelerator, the
  crops cut and turned on the CPU as before (TF32 matmuls allowed); the device's
  name and the wall time are recorded with the CPU time;
* **autoencoder**: a frame autoencoder file, or any exported ``cascast`` file
  (its ``autoencoder.`` tensors and their record), so that a run with another
  denoiser size starts from the shipped autoencoder;
* **warm start** (``init_from``, a run's exported ``cascast.safetensors``): a new
  run folder starts from those weights (denoiser, autoencoder, scales; fresh Adam),
  so that training continues on a machine without the old run folder; the file
  and its lineage (steps, CPU time, curve) are recorded in ``initialised_from``,
  and ``cpu_time_lineage_s`` adds up the CPU time of every stage (autoencoder
  included);
* **checkpoints** (safetensors) every ``checkpoint_every`` steps: the model,
  Adam, the random states and the history (bit-for-bit resume in the same folder).

The last model is written to ``out/cascast.safetensors`` with its config, recipe,
data, steps, curve and held-out scores.

Command line::

    nice -n 19 env OMP_NUM_THREADS=1 python -m xnowcast.training.cascast \\
        --data-root ../shared/data --autoencoder RUN/autoencoder/autoencoder.safetensors \\
        --out RUN/cascast --cpu-budget 840
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xnowcast.errors import ModelError
from xnowcast.models.cascast import CasCast, build_cascast
from xnowcast.training.averaging import WeightAverage
from xnowcast.training.data import CropBatch, SequenceCropSampler
from xnowcast.training.gan_step import dihedral
from xnowcast.training.nowcasters import (
    CHECKPOINT,
    _commit,
    _load_checkpoint,
    _save_checkpoint,
    build_samplers,
    optimiser_step,
    resume,
)
from xnowcast.weights import file_sha256, load_state_dict, save_weights

__all__ = [
    "lineage_cpu_seconds",
    "load_autoencoder",
    "main",
    "replace_decoder",
    "sample_scores",
    "train_cascast",
    "validation_loss",
]

HOLDOUT = "rmi-20210704"
WEIGHTS = "cascast.safetensors"
#: Seeds the held-out loss (the same steps, noise and drops at every validation).
_VAL_SEED = 12_345


@torch.no_grad()
def validation_loss(model: CasCast, batch: CropBatch) -> float:
    """The training loss on ``batch`` with fixed diffusion steps, noise and drops."""
    model.eval()
    g = torch.Generator().manual_seed(_VAL_SEED)
    loss = model.training_loss(batch.inputs, batch.targets, batch.valid, generator=g)
    model.train()
    return round(float(loss), 5)


@torch.no_grad()
def sample_scores(model: CasCast, batch: CropBatch, seed: int = 0) -> dict[str, float]:
    """One sampled member per crop against the backbone and its autoencoder round trip.

    MAE (mm/h, over observed pixels and all lead times) and forecast / observed rain
    volume of the cascast member, of the backbone's forecast, and of the backbone's
    forecast encoded and decoded (what the autoencoder alone costs).
    """
    model.eval()
    leads = model.lead_frames
    x, truth, valid = batch.inputs, batch.targets[:, :leads], batch.valid[:, :leads]
    member = model(x, leads, generator=torch.Generator().manual_seed(seed))
    det = model.deterministic(model._clip(x))
    roundtrip = model.decode(model.encode(det))
    model.train()
    weight = valid.float()
    observed = float((truth * weight).sum())
    out: dict[str, float] = {}
    for name, fc in (("cascast", member), ("backbone", det), ("backbone_autoencoded", roundtrip)):
        out[f"mae_{name}"] = round(float(((fc - truth).abs() * weight).sum() / weight.sum()), 5)
        out[f"volume_{name}"] = round(float((fc * weight).sum()) / max(observed, 1e-12), 4)
    return out


def load_autoencoder(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The frame autoencoder's tensors in ``path`` and the record of how it was trained.

    ``path`` is a frame autoencoder file (:mod:`xnowcast.training.autoencoder`) or an
    exported ``cascast`` file, whose ``autoencoder.`` tensors and ``training.autoencoder``
    record are taken (the denoiser's are not).
    """
    state, meta = load_state_dict(path)
    head = "autoencoder."
    if any(k.startswith(head) for k in state):
        inner = {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
        record = dict((meta.get("training") or {}).get("autoencoder") or {})
        record["taken_from"] = {"file": Path(path).name, "sha256": file_sha256(path)}
        return inner, record
    training = meta.get("training") or {}
    record = {"file": Path(path).name, "sha256": file_sha256(path),
              "steps": training.get("steps"), "cpu_time_s": training.get("cpu_time_s")}  # fmt: skip
    return state, record


def replace_decoder(
    cascast_path: str | Path, autoencoder_path: str | Path, dest: str | Path
) -> dict[str, Any]:
    """Write ``dest``: the cascast of ``cascast_path`` with the decoder of ``autoencoder_path``.

    Only a decoder trained with the cascast's own encoder frozen can be swapped in
    (``python -m xnowcast.training.autoencoder --init-from CASCAST --decoder-only``): the
    latents the denoiser was trained on stay the same.  The file's record names the new
    autoencoder, adds its CPU time to the lineage, and moves the scores measured with
    the old decoder to ``scores["before_decoder_replaced"]`` (they no longer describe it).
    Returns the new file's metadata.
    """
    state, meta = load_state_dict(cascast_path)
    decoder_state, ae_meta = load_state_dict(autoencoder_path)
    head = "autoencoder."
    mine = {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
    if not mine:
        raise ModelError(f"{cascast_path} holds no autoencoder.* tensors: not a cascast file")
    same_keys = set(mine) == set(decoder_state)
    if not same_keys or any(
        not torch.equal(mine[k], decoder_state[k]) for k in mine if k.startswith("encoder.")
    ):
        raise ModelError(
            f"the autoencoder in {autoencoder_path} does not have the encoder of "
            f"{cascast_path} (the denoiser works in that encoder's latents): train the decoder "
            f"with python -m xnowcast.training.autoencoder --init-from {cascast_path} "
            f"--decoder-only"
        )
    for key, value in decoder_state.items():
        state[head + key] = value
    training = dict(meta.get("training") or {})
    ae_training = dict(ae_meta.get("training") or {})
    record = {"file": Path(autoencoder_path).name, "sha256": file_sha256(autoencoder_path),
              **{k: ae_training.get(k) for k in ("steps", "cpu_time_s", "trained", "loss", "lr",
                                                 "batch_size", "crop", "events", "augment",
                                                 "initialised_from", "curve", "commit")}}  # fmt: skip
    training["decoder_replaced"] = {"autoencoder_before": training.get("autoencoder"), "by": record}
    training["autoencoder"] = record
    lineage = training.get("cpu_time_lineage_s")
    if lineage is not None:
        training["cpu_time_lineage_s"] = round(float(lineage) + float(record["cpu_time_s"] or 0), 1)
    scores = dict(meta.get("scores") or {})
    new_meta = {**meta, "training": training, "scores": {"before_decoder_replaced": scores}}
    save_weights(state, dest, new_meta)
    return new_meta


def lineage_cpu_seconds(cpu: float, parent: dict[str, Any], autoencoder: dict[str, Any]) -> float:
    """CPU seconds behind a run's weights: its own, its parents' and the autoencoder's."""
    ae = float(autoencoder.get("cpu_time_s") or 0.0)
    if not parent:
        return round(cpu + ae, 1)
    before = parent.get("cpu_time_lineage_s")
    if before is None:  # an export written before lineages were recorded
        before = float(parent.get("cpu_time_s", 0.0)) + ae
    return round(cpu + float(before), 1)


def train_cascast(
    sampler: SequenceCropSampler,
    val_batch: CropBatch | None,
    out_dir: str | Path,
    autoencoder: str | Path | None,
    *,
    config: str | dict[str, Any] = "small",
    init_from: str | Path | None = None,
    steps: int = 1000,
    cpu_budget: float | None = None,
    batch_size: int = 2,
    lr: float = 3e-4,
    seed: int = 0,
    val_every: int = 50,
    checkpoint_every: int = 25,
    ema_decay: float = 0.0,
    time_budget: float | None = None,
    device: str = "cpu",
    reuse: int = 1,
    per_lead_scale: bool = True,
    reset_scales: bool = False,
    final_samples: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume, when ``out_dir`` holds a checkpoint) the CasCast denoiser.

    ``autoencoder`` (a frame autoencoder file) may be None with ``init_from``, whose
    file holds one.  Returns ``steps``, ``cpu_time``, ``history`` and the final ``scores``; writes
    ``out_dir/cascast.safetensors`` (the weight average when ``ema_decay`` > 0).
    ``per_lead_scale``: a fresh run scales the latent residual per lead time
    (:meth:`~xnowcast.models.cascast.CasCast.set_scales`); False: one scale.
    ``reset_scales``: a run warm-started from ``init_from`` sets both scales afresh
    (the residual's per lead time unless ``per_lead_scale`` is False) instead of
    keeping the parent's, and the denoiser adapts; ``scales_from`` in the record says
    which ("parent" or "reset").
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    parent: dict[str, Any] = {}
    if init_from is not None:
        parent_state, parent_meta = load_state_dict(init_from)
        model = build_cascast(parent_meta["config"])
        model.load_state_dict(parent_state)
        parent = {"file": Path(init_from).name, "sha256": file_sha256(init_from),
                  **parent_meta.get("training", {})}  # fmt: skip
        ae_record = dict(parent.get("autoencoder", {}))
    elif autoencoder is None:
        raise ValueError("train_cascast needs an autoencoder file, or init_from")
    else:
        model = build_cascast(config)
        ae_state, ae_record = load_autoencoder(autoencoder)
        model.autoencoder.load_state_dict(ae_state)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(dev)  # before Adam and the resume: its state follows the parameters' device
    model.train()
    opt = torch.optim.Adam(model.denoiser.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed + 1)
    sampler.rng = np.random.default_rng(seed)
    state = resume(out, model, opt, rng, sampler)
    step, cpu, history = state["step"], state["cpu_time"], state["history"]
    if reuse < 1:
        raise ValueError(f"reuse must be >= 1, got {reuse}")
    recipe = {"lr": lr, "batch_size": batch_size, "crop": sampler.crop, "ema_decay": ema_decay}
    if reuse > 1:
        recipe["reuse"] = reuse
    changes = list(state.get("recipe_changes", []))
    if step > 0 and state.get("recipe") != recipe:  # say what changed, and from which step
        changes.append(
            {"step": step, "before": state.get("recipe", "not recorded"), "after": recipe}
        )
    if val_batch is not None:
        val_batch = val_batch.to(dev)
    average = WeightAverage(model.denoiser, ema_decay) if ema_decay > 0 else None
    average_since = state.get("average_since")
    if average is not None:
        if step == 0 or not average.load(_load_checkpoint(out / CHECKPOINT)[0]):
            average_since = step  # the average starts here
    scales = state.get("scales") or (None if reset_scales else parent.get("scales"))
    if scales is None:  # a fresh run: scales from one batch of training crops
        scale_batch = sampler.sample(16 if per_lead_scale else 8).to(dev)
        scales = model.set_scales(
            scale_batch.inputs, scale_batch.targets, scale_batch.valid, per_lead=per_lead_scale
        )
    # (steps left, (condition, residual, weight)) of the batch being reused
    held: tuple[int, tuple[torch.Tensor, ...]] | None = None
    if state.get("reuse_left"):
        saved = _load_checkpoint(out / CHECKPOINT)[0]
        held = (int(state["reuse_left"]), tuple(saved[f"reuse.{i}"].to(dev) for i in range(3)))
    start = time.process_time() - cpu
    wall_start, wall_before = time.perf_counter(), float(state.get("wall_time", 0.0))

    def checkpoint() -> None:
        meta = {"step": step, "cpu_time": cpu, "history": history, "best": {}, "scales": scales}
        meta["wall_time"] = wall_before + time.perf_counter() - wall_start
        meta.update(recipe=recipe, recipe_changes=changes, average_since=average_since)
        meta["sampler_rng"] = dict(sampler.rng.bit_generator.state)
        extra = dict(average.tensors()) if average is not None else {}
        if held is not None:
            meta["reuse_left"] = held[0]
            extra.update({f"reuse.{i}": t for i, t in enumerate(held[1])})
        _save_checkpoint(out, model, opt, rng, meta, extra)

    def validation() -> None:
        if val_batch is None or any(h["step"] == step and "val" in h for h in history):
            return
        if average is None:
            history.append({"step": step, "val": validation_loss(model, val_batch)})
            return
        last = validation_loss(model, val_batch)
        with average.applied(model.denoiser):
            history.append(
                {"step": step, "val": validation_loss(model, val_batch), "val_last": last}
            )

    bar = tqdm(total=steps, initial=step, desc="cascast", disable=not progress)

    def within_budget() -> bool:
        if cpu_budget is not None and cpu >= cpu_budget:
            return False
        return time_budget is None or time.perf_counter() - wall_start < time_budget

    while step < steps and within_budget():
        if step % val_every == 0:
            validation()
        if held is None or held[0] == 0:
            batch = dihedral(sampler.sample(batch_size), rng).to(dev)
            held = (reuse, model.targets(batch.inputs, batch.targets, batch.valid))
        held = (held[0] - 1, held[1])
        loss = model.loss_on_targets(*held[1], generator=rng)
        value = optimiser_step(opt, loss, model.denoiser)
        if average is not None:
            average.update(model.denoiser)
        step += 1
        cpu = time.process_time() - start
        history.append({"step": step, "loss": round(value, 5)})
        bar.update()
        bar.set_postfix(loss=f"{value:.3f}", cpu=f"{cpu:.0f}s")
        if step % checkpoint_every == 0:
            checkpoint()
    bar.close()
    validation()
    checkpoint()
    if average is not None:  # from here on the model holds the exported (averaged) weights
        model.denoiser.load_state_dict(average.state)
    scores: dict[str, Any] = {}
    if val_batch is not None and final_samples:
        scores = {"step": step, **sample_scores(model, val_batch)}
    curve = [{"step": h["step"], "val_loss": h["val"]} for h in history if "val" in h]
    training = {
        "model": "cascast",
        "loss": "v-prediction MSE of the latent residual over the backbone (cosine schedule), "
        "weighted by the observed fraction of each latent cell; condition dropped with "
        f"probability {model.config['drop_prob']}",
        "optimiser": "Adam on the denoiser, constant learning rate, gradient norm clipped to 1",
        "reuse": reuse,
        "weights": (
            f"moving average of the denoiser's weights (decay {ema_decay}) since step "
            f"{average_since}"
            if average is not None
            else "the last step's"
        ),
        "recipe_changes": changes,
        "steps": step,
        "cpu_time_s": round(cpu, 1),
        "wall_time_s": round(wall_before + time.perf_counter() - wall_start, 1),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "batch_size": batch_size,
        "lr": lr,
        "crop": sampler.crop,
        "lead_frames": model.lead_frames,
        "events": sorted(set(sampler.names)),
        "held_out": HOLDOUT,
        "augment": "dihedral (8 symmetries of the square)",
        "parameters_trained": sum(p.numel() for p in model.denoiser.parameters()),
        "scales": scales,
        "autoencoder": ae_record,
        "cpu_time_lineage_s": lineage_cpu_seconds(cpu, parent, ae_record),
        "curve": curve,
        "commit": _commit(),
    }
    if parent:
        keep = ("file", "sha256", "steps", "cpu_time_s", "cpu_time_lineage_s", "curve", "weights")
        training["initialised_from"] = {k: parent[k] for k in keep if k in parent}
        training["scales_from"] = "parent" if scales == parent.get("scales") else "reset"
    save_weights(
        {k: v.cpu() for k, v in model.state_dict().items()},
        out / WEIGHTS,
        {"model": "cascast", "config": model.config, "training": training, "scores": scores},
    )
    return {"steps": step, "cpu_time": cpu, "history": history, "scores": scores}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xnowcast.training.cascast``: train the CasCast denoiser, RMI held out."""
    from xnowcast.io import open_radar
    from xnowcast.training.gan_cli import EVENTS

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data-root", required=True, help="folder holding radar/ (the shared data)")
    p.add_argument("--out", required=True, help="run folder (resumes from its checkpoint)")
    p.add_argument("--autoencoder", default=None,
                   help="frame autoencoder .safetensors, or a cascast file (its autoencoder)")  # fmt: skip
    p.add_argument("--init-from", default=None,
                   help="start a new run from an exported cascast.safetensors (its AE too)")  # fmt: skip
    p.add_argument("--config", default="small")
    p.add_argument("--backbone", default=None, help="deterministic stage (default extrapolation)")
    p.add_argument("--cpu-budget", type=float, default=None,
                   help="process CPU seconds of the run (default 840 without --time-budget)")  # fmt: skip
    p.add_argument("--time-budget", type=float, default=None, help="wall seconds of this call")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--reuse", type=int, default=1,
                   help="steps served by one batch's frozen-stage output (fresh noise each)")  # fmt: skip
    p.add_argument("--residual-scale", choices=("per-lead", "global"), default="per-lead",
                   help="a fresh run's residual scale: one per lead time, or one for all")  # fmt: skip
    p.add_argument("--reset-scales", action="store_true",
                   help="with --init-from: set the residual scales afresh (per lead by default)")  # fmt: skip
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="export a moving average of the weights (e.g. 0.999); 0: the last")  # fmt: skip
    a = p.parse_args(argv)
    if a.autoencoder is None and a.init_from is None:
        p.error("give --autoencoder (a new run) or --init-from (continue from exported weights)")
    config: str | dict[str, Any] = a.config
    if a.backbone:
        config = {**build_cascast(a.config).config, "backbone": a.backbone}
    if a.init_from:
        from xnowcast.weights import read_metadata

        config = read_metadata(a.init_from)["config"]
    cpu_budget = a.cpu_budget
    if cpu_budget is None and a.time_budget is None:
        cpu_budget = 840.0
    probe = build_cascast(config)
    root = Path(a.data_root)
    train = {n: open_radar(root / EVENTS[n]) for n in EVENTS if n != HOLDOUT}
    val = {HOLDOUT: open_radar(root / EVENTS[HOLDOUT])}
    sampler, val_batch = build_samplers(
        train, val, input_frames=probe.input_frames, lead_frames=probe.lead_frames,
        crop=a.crop, val_crop=128, val_crops=4,
    )  # fmt: skip
    result = train_cascast(
        sampler, val_batch, a.out, a.autoencoder, config=config, steps=a.steps,
        cpu_budget=cpu_budget, batch_size=a.batch_size, lr=a.lr, val_every=a.val_every,
        ema_decay=a.ema_decay, init_from=a.init_from, time_budget=a.time_budget, device=a.device,
        reuse=a.reuse, per_lead_scale=a.residual_scale == "per-lead",
        reset_scales=a.reset_scales,
    )  # fmt: skip
    print(json.dumps({"steps": result["steps"], "scores": result["scores"]}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

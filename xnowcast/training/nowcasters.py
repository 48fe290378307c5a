"""Supervised training of the deterministic nowcasters (``convlstm``, ``unet``): MSE, Adam.

The recipe:

* **data**: importance-sampled ``input_frames + lead_frames`` crops of the real
  5-minute events (:class:`~xnowcast.training.data.SequenceCropSampler`, DGMR's
  acceptance), each turned by one of the 8 symmetries of the square
  (:func:`~xnowcast.training.gan_step.dihedral`: rain moves in every direction;
  no time reversal, which would turn growth into decay);
* **loss**: the mean squared error of the forecast rain rate in mm/h (clipped
  to ``max_rate``) over every lead time and every observed target pixel.  MSE in
  mm/h is the weighting that counts heavy rain: an error at 20 mm/h costs 400
  times one at 1 mm/h, and its optimum, the conditional mean, keeps the rain
  volume (a loss in ``log1p`` space would forecast too little rain);
* **optimiser**: Adam, a constant learning rate, gradients clipped to norm 1;
* **validation** every ``val_every`` steps on the rainiest crops of the held-out
  event (RMI 2021-07-04): MSE of the model, of its zero-residual baseline
  (extrapolation, or persistence for ``frame="eulerian"``) and of persistence,
  per lead time; the model of lowest validation MSE is kept (``best.safetensors``)
  and becomes the weights file, with the recipe, the data, the steps, the curve
  and the held-out scores in its metadata;
* **budget**: training stops after ``steps`` or after ``cpu_budget`` seconds of
  this process's CPU time (the machine is shared: CPU time, not wall time);
* **checkpoints** (safetensors, nothing pickled) every ``checkpoint_every`` steps
  hold the model, the Adam state, the random states of the sampler and of the
  augmentation, and the history: a run started again in the same folder resumes
  where it stopped, bit for bit.

Command line (one process for both models, sharing the loaded data)::

    nice -n 19 env OMP_NUM_THREADS=1 python -m xnowcast.training.nowcasters \\
        --data-root ../shared/data --out /work/nowcasters-run \\
        --models convlstm unet --cpu-budget 780 480
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xnowcast.registry import get_spec
from xnowcast.training.data import CropBatch, SequenceCropSampler
from xnowcast.training.gan_checkpoint import _load_optimiser, _optimiser_tensors
from xnowcast.training.gan_step import dihedral
from xnowcast.weights import load_state_dict, save_weights

__all__ = [
    "CHECKPOINT",
    "NowcastRun",
    "build_samplers",
    "main",
    "resume",
    "train_nowcaster",
    "validate",
]

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"


@dataclass
class NowcastRun:
    """Settings of one training run (stored with the weights).

    Attributes
    ----------
    model, config
        Registered nowcast model (``"convlstm"`` or ``"unet"``) and its config
        name or dict of overrides (e.g. ``{"frame": "eulerian"}``).
    steps
        Most optimiser steps (the CPU budget may stop the run first).
    cpu_budget
        Seconds of process CPU time after which the run stops (None: no limit).
    batch_size, lr
        Adam batch size and learning rate.
    seed
        Seeds the model's initialisation, the sampler and the augmentation.
    val_every, checkpoint_every
        Steps between validations and between checkpoints.
    augment
        Dihedral augmentation of the crops.
    """

    model: str = "convlstm"
    config: str | dict[str, Any] = "small"
    steps: int = 1000
    cpu_budget: float | None = None
    batch_size: int = 4
    lr: float = 3e-4
    seed: int = 0
    val_every: int = 100
    checkpoint_every: int = 50
    augment: bool = True


def build_samplers(
    train: Mapping[str, Any],
    val: Mapping[str, Any] | None,
    *,
    input_frames: int = 4,
    lead_frames: int = 18,
    crop: int = 128,
    val_crop: int = 256,
    val_crops: int = 6,
    seed: int = 0,
) -> tuple[SequenceCropSampler, CropBatch | None]:
    """The training sampler and the fixed validation batch (the rainiest held-out crops)."""
    sampler = SequenceCropSampler(
        dict(train), input_frames=input_frames, lead_frames=lead_frames, crop=crop, stride=16,
        seed=seed,
    )  # fmt: skip
    if val is None:
        return sampler, None
    val_sampler = SequenceCropSampler(
        dict(val), input_frames=input_frames, lead_frames=lead_frames, crop=val_crop, stride=32
    )
    return sampler, val_sampler.rainiest(val_crops)


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weight = valid.to(pred.dtype)
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


@torch.no_grad()
def validate(model: Any, batch: CropBatch) -> dict[str, Any]:
    """MSE (mm/h)^2 per lead time of the model, its baseline and persistence on ``batch``.

    Also the totals, the model's ratio to its baseline and the forecast / observed
    rain volume over all lead times.
    """
    model.eval()
    steps = batch.targets.shape[1]
    x = batch.inputs.float()
    pred = model(x, steps)
    _, base, _ = model.baseline(model._clip(x), steps)
    last = x[:, -1:].expand(-1, steps, -1, -1, -1)
    valid = batch.valid
    out: dict[str, Any] = {}
    for name, fc in (("model", pred), ("baseline", base), ("persistence", last)):
        err = (fc - batch.targets) ** 2 * valid
        per_lead = err.sum(dim=(0, 2, 3, 4)) / valid.sum(dim=(0, 2, 3, 4)).clamp_min(1)
        out[f"mse_{name}"] = round(float(err.sum() / valid.sum().clamp_min(1)), 5)
        out[f"mse_{name}_per_lead"] = [round(float(v), 4) for v in per_lead]
    out["mse_ratio"] = round(out["mse_model"] / max(out["mse_baseline"], 1e-12), 5)
    observed = float((batch.targets * valid).sum())
    out["volume_ratio"] = round(float((pred * valid).sum()) / max(observed, 1e-12), 4)
    model.train()
    return out


def optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor, model: Any) -> float:
    """Back-propagate ``loss``, clip ``model``'s gradients to norm 1, step; the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def _rng_state(sampler: SequenceCropSampler) -> dict[str, Any]:
    return dict(sampler.rng.bit_generator.state)


def _save_checkpoint(
    out: Path,
    model: Any,
    opt: torch.optim.Optimizer,
    rng: torch.Generator,
    meta: dict[str, Any],
    extra: Mapping[str, torch.Tensor] | None = None,
) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimiser_tensors(opt, "adam"))
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    tensors["rng.torch"] = rng.get_state()
    tmp = out / (CHECKPOINT + ".tmp")
    save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in meta.items()})
    os.replace(tmp, out / CHECKPOINT)


def _load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        raw = f.metadata() or {}
    return load_file(path), {k: json.loads(v) for k, v in raw.items()}


def resume(
    out: Path, model: Any, opt: torch.optim.Optimizer, rng: torch.Generator, sampler: Any
) -> dict[str, Any]:
    """Restore model, Adam, random states from ``out``'s checkpoint; its progress record.

    Without a checkpoint nothing changes and the record is that of step 0
    (``step``, ``cpu_time``, ``history``, ``best``).
    """
    if not (out / CHECKPOINT).exists():
        return {"step": 0, "cpu_time": 0.0, "history": [], "best": {}}
    tensors, meta = _load_checkpoint(out / CHECKPOINT)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _load_optimiser(opt, {k: v for k, v in tensors.items() if k.startswith("adam.")}, "adam")
    rng.set_state(tensors["rng.torch"])
    sampler.rng.bit_generator.state = meta["sampler_rng"]
    return meta


def _save_best(model: Any, path: Path, training: dict[str, Any], scores: dict[str, Any]) -> str:
    return save_weights(
        model.state_dict(),
        path,
        {
            "model": training["model"],
            "config": model.config,
            "training": training,
            "scores": scores,
        },
    )


def train_nowcaster(
    run: NowcastRun,
    sampler: SequenceCropSampler,
    val_batch: CropBatch | None,
    out_dir: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume, when ``out_dir`` holds a checkpoint) one nowcaster.

    Returns
    -------
    dict
        ``steps``, ``cpu_time``, ``history`` (loss and validation records) and
        ``best`` (the step and scores of the kept model).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(run.seed)
    model = get_spec(run.model, task="nowcast").build(run.config)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=run.lr)
    rng = torch.Generator().manual_seed(run.seed + 1)
    sampler.rng = np.random.default_rng(run.seed)
    state = resume(out, model, opt, rng, sampler)
    step, cpu, history, best = state["step"], state["cpu_time"], state["history"], state["best"]
    training = {
        **asdict(run),
        "loss": "MSE of rain rate in mm/h over observed target pixels, all lead times",
        "optimiser": "Adam, constant learning rate, gradient norm clipped to 1",
        "crop": sampler.crop,
        "lead_frames": sampler.lead_frames,
        "events": sorted(set(sampler.names)),
        "augment": "dihedral (8 symmetries of the square)" if run.augment else "none",
        **dict(metadata or {}),
    }
    start_cpu = time.process_time() - cpu

    def checkpoint() -> None:
        meta = {"step": step, "cpu_time": cpu, "history": history, "best": best}
        _save_checkpoint(out, model, opt, rng, {**meta, "sampler_rng": _rng_state(sampler)})

    def validation() -> None:
        nonlocal best
        if val_batch is None or any(h["step"] == step and "val" in h for h in history):
            return
        scores = validate(model, val_batch)
        history.append({"step": step, "val": scores})
        if not best or scores["mse_model"] < best["scores"]["mse_model"]:
            best = {"step": step, "scores": scores}
            curve = [{"step": h["step"], **_curve(h["val"])} for h in history if "val" in h]
            record = {**training, "selected_step": step, "curve": curve}
            _save_best(model, out / BEST, record, scores)

    bar = tqdm(total=run.steps, initial=step, desc=run.model, disable=not progress)
    while step < run.steps and (run.cpu_budget is None or cpu < run.cpu_budget):
        if step % run.val_every == 0:
            validation()
        batch = sampler.sample(run.batch_size)
        if run.augment:
            batch = dihedral(batch, rng)
        pred = model(batch.inputs, batch.targets.shape[1])
        value = optimiser_step(opt, _masked_mse(pred, batch.targets, batch.valid), model)
        step += 1
        cpu = time.process_time() - start_cpu
        history.append({"step": step, "loss": round(value, 5)})
        bar.update()
        bar.set_postfix(loss=f"{value:.3f}", cpu=f"{cpu:.0f}s")
        if step % run.checkpoint_every == 0:
            checkpoint()
    bar.close()
    validation()
    checkpoint()
    return {"steps": step, "cpu_time": cpu, "history": history, "best": best}


def _curve(val: Mapping[str, Any]) -> dict[str, Any]:
    return {k: val[k] for k in ("mse_model", "mse_baseline", "mse_ratio", "volume_ratio")}


def export(
    run_dir: str | os.PathLike[str], path: str | os.PathLike[str], *, last: bool = False
) -> str:
    """Write the kept model of ``run_dir`` to ``path`` with the run's final curve; the sha256.

    ``last=True`` writes the model of the last checkpoint instead (e.g. to measure
    how much choosing the kept model on the held-out event flatters it).
    """
    run = Path(run_dir)
    state, meta = load_state_dict(run / BEST)
    tensors, ckpt = _load_checkpoint(run / CHECKPOINT)
    if last:
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        final = [h for h in ckpt["history"] if "val" in h][-1]
        meta = {**meta, "scores": final["val"]}
    training = dict(meta["training"])
    training["selected_step"] = int(ckpt["step"]) if last else training["selected_step"]
    training["max_steps"] = training.get("max_steps", training["steps"])
    training["steps"] = training["steps_trained"] = int(ckpt["step"])
    training["parameters"] = sum(int(v.numel()) for v in state.values())
    training["cpu_time_trained_s"] = round(float(ckpt["cpu_time"]), 1)
    training["curve"] = [
        {"step": h["step"], **_curve(h["val"])} for h in ckpt["history"] if "val" in h
    ]
    meta = {**meta, "training": training}
    return save_weights(state, path, meta)


def _commit() -> str:
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xnowcast.training.nowcasters``: train convlstm / unet on the shared events."""
    from xnowcast.io import open_radar
    from xnowcast.training.gan_cli import EVENTS

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data-root", default=None, help="folder holding radar/ (the shared data)")
    p.add_argument("--out", required=True, help="run folder: one sub-folder per model")
    p.add_argument("--models", nargs="+", default=["convlstm", "unet"])
    p.add_argument("--config", default="small")
    p.add_argument("--frame", default=None, choices=["lagrangian", "eulerian"])
    p.add_argument("--cpu-budget", nargs="+", type=float, default=[780.0, 480.0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--last", action="store_true", help="--export the last, not the kept model")
    p.add_argument("--export", nargs="+", default=None, metavar="WEIGHTS",
                   help="write each model's kept weights to these files and exit")  # fmt: skip
    a = p.parse_args(argv)
    if a.export:
        for name, path in zip(a.models, a.export, strict=True):
            print(
                json.dumps(
                    {
                        "model": name,
                        "weights": path,
                        "sha256": export(Path(a.out) / name, path, last=a.last),
                    }
                )
            )
        return 0
    if a.data_root is None:
        p.error("--data-root is required to train")
    root = Path(a.data_root)
    holdout = "rmi-20210704"
    train = {n: open_radar(root / EVENTS[n]) for n in EVENTS if n != holdout}
    val = {holdout: open_radar(root / EVENTS[holdout])}
    sampler, val_batch = build_samplers(train, val, crop=a.crop)
    budgets = (a.cpu_budget * len(a.models))[: len(a.models)]
    for name, budget in zip(a.models, budgets, strict=True):
        config: str | dict[str, Any] = a.config
        if a.frame:
            config = {**get_spec(name, task="nowcast").build(a.config).config, "frame": a.frame}
        run = NowcastRun(model=name, config=config, steps=a.steps, cpu_budget=budget,
                         batch_size=a.batch_size, lr=a.lr, val_every=a.val_every)  # fmt: skip
        meta = {
            "commit": _commit(),
            "held_out": holdout,
            "data": "pysteps-data eaa59fb",
            "val_crops": len(val_batch.inputs),
        }
        result = train_nowcaster(run, sampler, val_batch, Path(a.out) / name, metadata=meta)
        print(json.dumps({"model": name, "steps": result["steps"], "best": result["best"]}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

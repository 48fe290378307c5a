"""Resumable training of ZSM / FC-ZSM on the motion prior, validated against ``flow``.

What a run does:

* **data**: downscaling pairs from every training event at every time step the
  event allows: the native 5-minute frames and the same frames subsampled to
  10, 15 and 20 minutes (``strides``), each coarsened to pairs of
  ``factor`` x space and ``time_factor`` x time (:func:`make_pairs`), with the
  optical flow of every coarse pair measured on the event's whole domain (as
  the model sees it at inference); RMI 2021-07-04 is held out for validation
  (model selection only);
* **loss**: Charbonnier, ``sqrt((z - z*)**2 + eps**2)``, in the space
  ``z = log1p(R) / log1p(10 mm/h)`` where light rain counts (a 0.1 -> 0.2 mm/h
  error weighs like 10 -> 11 mm/h), plus ``mse_weight`` (default 5) times the
  MSE of ``R / 10 mm/h``, where heavy rain counts as the MSE in mm/h it is
  judged by (with the log-space term alone, a first run improved its training
  loss while its held-out MSE in mm/h rose to 1.1-1.3 x flow's: a small
  log-space residual is a large error at 50 mm/h); over the observed cells;
* **augmentation**: the dihedral group (the 4 rotations, with and without a
  flip) and time reversal, applied alike to the frames, the masks, the static
  fields and the motion vectors (whose components are rotated / negated);
* **sampling**: with ``sample_power`` p > 0 a pair is drawn with probability
  proportional to ``(SSE_flow + mean SSE_flow) ** p``, where ``SSE_flow`` is the
  ``flow`` baseline's squared error (mm/h)^2 on it: the crops where the judged
  MSE is (heavy rain) are seen more often; p = 0 draws uniformly;
* **optimiser**: Adam, cosine decay to 5 % of ``lr`` over ``steps``; the
  reconstruction's last two convolutions (the residual head) at
  ``head_lr_mult`` x ``lr``; ``init_from`` warm-starts from a weights file of
  the same architecture (only when the run has no state yet);
* **resumable**: every ``checkpoint_every`` steps the model, optimiser, random
  generator, step and curves go to ``state.pt`` (written atomically); running
  again with the same work folder continues *exactly* where it stopped;
* **validation**: every ``val_every`` steps the MSE (mm/h)^2 on the held-out
  pairs, with the ``flow`` baseline's on the same pairs; the best model so far
  is kept as ``best.safetensors`` (weights + config + curve in metadata).

Command line (one model per process)::

    nice -n 19 env OMP_NUM_THREADS=1 python -m xnowcast.training.longrun zsm \\
        --data-root ../shared/data --workdir runs/zsm --steps 6000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xnowcast.training.longrun_export import export
from xnowcast.training.pairs import PairSet, dihedral, load_rain_rate, make_pairs
from xnowcast.training.supervised import (
    DEFAULT_EVENTS,
    HOLDOUT_EVENT,
    load_checkpoint,
    masked_mse,
    save_checkpoint,
)

__all__ = [
    "RunConfig",
    "charbonnier",
    "evaluate_vs_flow",
    "export",
    "flow_sse",
    "multistep_pairs",
    "run",
    "warm_start",
]


@dataclass
class RunConfig:
    """Settings of a resumable run (all recorded in the weights' metadata)."""

    steps: int = 6000
    batch_size: int = 8
    lr: float = 3e-4
    grad_clip: float = 1.0
    eps: float = 1e-3
    mse_weight: float = 5.0
    seed: int = 0
    val_every: int = 100
    checkpoint_every: int = 50
    log_every: int = 10
    threads: int = 1
    head_lr_mult: float = 1.0
    sample_power: float = 0.0
    init_from: str | None = None


def charbonnier(pred: Any, target: Any, mask: Any, eps: float = 1e-3) -> Any:
    """Masked mean of ``sqrt((pred - target)**2 + eps**2) - eps`` (0 for a perfect fit)."""
    weight = mask.to(pred.dtype)
    loss = (pred - target).pow(2).add(eps * eps).sqrt().sub(eps)
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def multistep_pairs(
    data_root: str | os.PathLike[str],
    events: dict[str, str],
    strides: Sequence[int],
    seed: int = 0,
    **kwargs: Any,
) -> PairSet:
    """Pairs (with motion) from each event at each time stride of its native frames."""
    sets = []
    for i, (name, pattern) in enumerate(events.items()):
        da = load_rain_rate(str(Path(data_root) / pattern))
        for stride in strides:
            sub = da.isel(time=slice(0, None, stride))
            window = int(kwargs.get("window", 4))
            if sub.sizes["time"] < (window - 1) * int(kwargs.get("time_factor", 2)) + 1:
                continue
            label = f"{name}@{stride}"
            sets.append(
                make_pairs(sub, seed=seed + 31 * i + stride, event=label, motion=True, **kwargs)
            )
    return PairSet.concat(sets)


def evaluate_vs_flow(model: Any, pairs: PairSet, batch_size: int = 8) -> dict[str, float]:
    """Masked MSE (mm/h)^2 of ``model`` (all / inserted / input-time frames) on ``pairs``.

    ZSM / FC-ZSM and ``flow`` get the pairs' whole-domain motion, other models the
    coarse frames only.
    """
    import torch

    tf = int(model.time_factor)
    sums = {"mse": 0.0, "mse_inserted": 0.0, "mse_original": 0.0}
    counts = dict.fromkeys(sums, 0.0)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            sl = slice(start, start + batch_size)
            static = pairs.static[sl] if int(getattr(model, "static_channels", 0)) else None
            motion = pairs.motion[sl]
            if hasattr(model, "prior"):  # ZSM / FC-ZSM
                pred = model(pairs.coarse[sl], static, motion)
            elif hasattr(model, "refine"):  # flow
                pred = model.refine(pairs.coarse[sl], motion)
            else:  # trilinear, U-Nets: no motion input
                pred = model(pairs.coarse[sl], static)
            err = ((pred - pairs.fine[sl]) ** 2).masked_fill(~pairs.mask[sl], 0.0)
            inserted = torch.tensor([k % tf != 0 for k in range(pred.shape[1])])
            for key, frames in (
                ("mse", torch.ones_like(inserted)),
                ("mse_inserted", inserted),
                ("mse_original", ~inserted),
            ):
                sums[key] += float(err[:, frames].sum())
                counts[key] += float(pairs.mask[sl][:, frames].sum())
    model.train(was_training)
    return {k: sums[k] / max(counts[k], 1.0) for k in sums}


def _cached(path: Path, make: Any) -> PairSet:
    import torch

    if path.is_file():
        stored = torch.load(path, weights_only=False)
        return PairSet(**stored)
    pairs = make()
    tmp = path.with_suffix(".tmp")
    torch.save(pairs.__dict__, tmp)
    tmp.replace(path)
    return pairs


def _param_groups(model: Any, run_config: RunConfig) -> list[dict[str, Any]]:
    """Adam parameter groups: the residual head at ``head_lr_mult`` x ``lr``, the rest at ``lr``."""
    head_ids = set()
    recon = getattr(model, "reconstruction", None)
    if recon is not None and run_config.head_lr_mult != 1.0:
        head_ids = {id(p) for p in (*recon.hr.parameters(), *recon.last.parameters())}
    rest = [p for p in model.parameters() if id(p) not in head_ids]
    head = [p for p in model.parameters() if id(p) in head_ids]
    groups = [{"params": rest, "lr_mult": 1.0}]
    if head:
        groups.append(
            {
                "params": head,
                "lr": run_config.lr * run_config.head_lr_mult,
                "lr_mult": run_config.head_lr_mult,
            }
        )
    return groups


def warm_start(model: Any, source: dict[str, Any]) -> dict[str, list[str]]:
    """Load the tensors of ``source`` that fit ``model`` (e.g. ZSM weights into FC-ZSM).

    A tensor of the same shape is copied; one that has more input channels
    (dimension 1) in ``model`` than in ``source`` (FC-ZSM's offset predictors
    also read the static features, concatenated last) gets the source's
    weights for the leading channels and zeros for the others, so the warm
    model computes exactly what the source did; the rest (the static
    extractor) keep their initialisation.

    Returns
    -------
    dict
        The names of the tensors ``copied``, ``padded`` and ``kept``.
    """
    import torch

    state = model.state_dict()
    done: dict[str, list[str]] = {"copied": [], "padded": [], "kept": []}
    with torch.no_grad():
        for key, target in state.items():
            value = source.get(key)
            if value is not None and value.shape == target.shape:
                target.copy_(value)
                done["copied"].append(key)
            elif (
                value is not None
                and value.dim() == target.dim() >= 2
                and value.shape[0] == target.shape[0]
                and value.shape[2:] == target.shape[2:]
                and value.shape[1] < target.shape[1]
            ):
                target.zero_()
                target[:, : value.shape[1]].copy_(value)
                done["padded"].append(key)
            else:
                done["kept"].append(key)
    model.load_state_dict(state)
    return done


def flow_sse(pairs: PairSet, factor: int, time_factor: int, batch_size: int = 16) -> Any:
    """The ``flow`` baseline's squared error (mm/h)^2 summed over each pair's observed cells."""
    import torch

    from xnowcast.models.flow import build_flow

    flow = build_flow(factor=factor, time_factor=time_factor)
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            sl = slice(start, start + batch_size)
            pred = flow.refine(pairs.coarse[sl], pairs.motion[sl])
            err = ((pred - pairs.fine[sl]) ** 2).masked_fill(~pairs.mask[sl], 0.0)
            out.append(err.flatten(1).sum(1).double())
    return torch.cat(out)


def _cached_weights(path: Path, pairs: PairSet, factor: int, time_factor: int, power: float) -> Any:
    """Sampling probabilities of the training pairs (see ``sample_power``)."""
    import torch

    if not power:
        return torch.ones(len(pairs), dtype=torch.float64)
    if path.is_file():
        sse = torch.load(path)
    else:
        sse = flow_sse(pairs, factor, time_factor)
        torch.save(sse, path)
    return (sse + sse.mean()) ** power


def run(
    name: str,
    *,
    data_root: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    config: str | dict[str, Any] = "default",
    run_config: RunConfig | None = None,
    factor: int = 2,
    time_factor: int = 2,
    strides: Sequence[int] = (1, 2, 3, 4),
    pairs_per_set: int = 96,
    val_pairs: int = 64,
    crop: int = 32,
    events: dict[str, str] | None = None,
    holdout: tuple[str, str] = HOLDOUT_EVENT,
    max_minutes: float | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train (or resume training of) ``name`` in ``workdir``; see the module docstring.

    ``max_minutes`` / ``stop_after`` end this session of the run early (after the
    step that crosses them); the schedule still follows ``run_config.steps``, so a
    later call with the same settings continues the same run.

    Returns
    -------
    dict
        The run's record: steps done, curves, best step and its validation scores.
    """
    import torch

    from xnowcast.models.flow import build_flow
    from xnowcast.registry import build_model

    run_config = run_config or RunConfig()
    events = dict(events or DEFAULT_EVENTS)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(run_config.threads)
    torch.manual_seed(run_config.seed)
    model = build_model(name, config, task="downscale", factor=factor, time_factor=time_factor)
    common = {"window": int(model.window), "factor": factor, "time_factor": time_factor}
    train_pairs = _cached(
        work / "train-pairs.pt",
        lambda: multistep_pairs(
            data_root,
            events,
            strides,
            run_config.seed,
            crop=crop,
            max_pairs=pairs_per_set,
            **common,
        ),
    )
    val = _cached(
        work / "val-pairs.pt",
        lambda: multistep_pairs(
            data_root, dict([holdout]), (1,), 1234, crop=crop, max_pairs=val_pairs, **common
        ),
    )
    optimiser = torch.optim.Adam(_param_groups(model, run_config), lr=run_config.lr)
    generator = torch.Generator().manual_seed(run_config.seed)
    record: dict[str, Any] = {
        "model": name,
        "recipe": asdict(run_config),
        "loss": (
            "Charbonnier in z = log1p(R)/log1p(10 mm/h) + mse_weight * MSE of R/(10 mm/h), "
            "over observed cells"
        ),
        "augmentation": "dihedral group (4 rotations x flip) + time reversal, motion rotated",
        "events": sorted(set(train_pairs.events)),
        "strides_5min_frames": list(strides),
        "time_steps_minutes": [10 * s for s in strides],
        "grid_spacing_m": [2000.0],
        "holdout": holdout[0],
        "train_pairs": len(train_pairs),
        "val_pairs": len(val),
        "crop": crop,
        "steps": 0,
        "wall_s": 0.0,
        "cpu_s": 0.0,
        "loss_history": [],
        "val_history": [],
        "best": None,
    }
    baseline = evaluate_vs_flow(build_flow(factor=factor, time_factor=time_factor), val)
    record["val_flow"] = baseline
    state_path = work / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        record = state["record"]
        now = asdict(run_config)
        if record["recipe"] != now:  # e.g. a longer schedule: say what changed, and when
            before = {k: v for k, v in record["recipe"].items() if now.get(k) != v}
            record.setdefault("recipe_changes", []).append(
                {"step": record["steps"], "before": before}
            )
            record["recipe"] = now
    elif run_config.init_from:
        warm = load_checkpoint(run_config.init_from)
        loaded = warm_start(model, warm.state_dict())
        before = warm.metadata.get("training", {})
        record["warm_start"] = {
            "from": Path(run_config.init_from).name,
            "model": warm.metadata.get("model"),
            "tensors": {k: len(v) for k, v in loaded.items()},
            "steps": (before.get("best") or {}).get("step"),
            "wall_s": (before.get("run") or before).get("wall_s"),
            "val_history": (before.get("run") or before).get("val_history"),
            **_warm_cpu(before),
        }
    start_wall = time.perf_counter()
    wall_before = float(record["wall_s"])
    cpu_before = float(record.get("cpu_s", 0.0))
    start_cpu = time.process_time()
    probs = _cached_weights(
        work / "sample-sse.pt", train_pairs, factor, time_factor, run_config.sample_power
    )
    running = record["loss_history"][-1][1] if record["loss_history"] else None
    model.train()
    step = int(record["steps"])
    while step < run_config.steps:
        step += 1
        idx = torch.multinomial(probs, run_config.batch_size, True, generator=generator)
        batch = dihedral(
            tuple(
                x[idx]
                for x in (
                    train_pairs.coarse,
                    train_pairs.fine,
                    train_pairs.mask,
                    train_pairs.static,
                    train_pairs.motion,
                )
            ),
            generator,
        )
        coarse, fine, mask, static, motion = batch
        static = static if int(model.static_channels) else None
        pred = model(coarse, static, motion)
        loss = charbonnier(model.transform(pred), model.transform(fine), mask, run_config.eps)
        if run_config.mse_weight:
            loss = loss + run_config.mse_weight * masked_mse(pred / 10, fine / 10, mask)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run_config.grad_clip)
        optimiser.step()
        share = min(step / run_config.steps, 1.0)
        for group in optimiser.param_groups:
            scale = group.get("lr_mult", 1.0) * (0.05 + 0.475 * (1 + math.cos(math.pi * share)))
            group["lr"] = run_config.lr * scale
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        record["wall_s"] = wall_before + time.perf_counter() - start_wall
        record["cpu_s"] = cpu_before + time.process_time() - start_cpu
        if step % run_config.log_every == 0:
            record["loss_history"].append((step, running))
            print(
                f"step {step} loss {running:.5f} wall {record['wall_s']:.0f}s "
                f"cpu {record['cpu_s']:.0f}s",
                flush=True,
            )
        if step % run_config.val_every == 0 or step == run_config.steps:
            scores = evaluate_vs_flow(model, val)
            ratio = scores["mse"] / baseline["mse"]
            record["val_history"].append((step, scores["mse"], ratio))
            print(f"val step {step} mse {scores['mse']:.5f} ratio_to_flow {ratio:.4f}", flush=True)
            if record["best"] is None or scores["mse"] < record["best"]["scores"]["mse"]:
                record["best"] = {"step": step, "scores": scores, "ratio_to_flow": ratio}
                save_checkpoint(model, work / "best.safetensors", record, {"val": scores})
        record["steps"] = step
        if step % run_config.checkpoint_every == 0 or step == run_config.steps:
            tmp = work / "state.tmp"
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "generator": generator.get_state(),
                    "record": record,
                },
                tmp,
            )
            tmp.replace(state_path)
        if max_minutes is not None and time.perf_counter() - start_wall > 60 * max_minutes:
            break
        if stop_after is not None and step >= stop_after:
            break
    (work / "record.json").write_text(json.dumps(record, indent=1, default=float))
    return record


def _warm_cpu(before: dict[str, Any]) -> dict[str, float]:
    """CPU seconds recorded in a warm start's training record: to its shipped step, whole run."""
    out = {}
    if before.get("cpu_s") is not None:  # up to the step that was saved (the best one)
        out["cpu_s"] = float(before["cpu_s"])
    whole = (before.get("run") or {}).get("cpu_s")
    if whole is not None:  # the whole run it came from, steps after the best one included
        out["cpu_s_run"] = float(whole)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["zsm", "fczsm"])
    parser.add_argument("--config", default="default")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--pairs-per-set", type=int, default=96)
    parser.add_argument("--val-pairs", type=int, default=64)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--mse-weight", type=float, default=5.0)
    parser.add_argument("--head-lr-mult", type=float, default=1.0)
    parser.add_argument(
        "--sample-power", type=float, default=0.0, help="draw pairs ~ (flow SSE + mean)**p"
    )
    parser.add_argument("--init-from", default=None, help="warm start from these weights")
    parser.add_argument(
        "--strides",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4],
        help="time strides of the 5-min frames to make pairs from (1: 10-min input)",
    )
    parser.add_argument("--export", default=None, help="write the best model here and stop")
    parser.add_argument(
        "--export-warm-from", default=None, help="with --export: the warm start's weights file"
    )
    parser.add_argument(
        "--export-step",
        choices=["best", "last"],
        default="best",
        help="with --export: the best validation step, or the last checkpoint",
    )
    args = parser.parse_args(argv)
    if args.export:
        exported = export(args.workdir, args.export, args.export_warm_from, args.export_step)
        print(json.dumps(exported, indent=1, default=float))
        return 0
    cfg = RunConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        mse_weight=args.mse_weight,
        head_lr_mult=args.head_lr_mult,
        sample_power=args.sample_power,
        init_from=args.init_from,
    )
    record = run(
        args.model,
        data_root=args.data_root,
        workdir=args.workdir,
        config=args.config,
        run_config=cfg,
        pairs_per_set=args.pairs_per_set,
        val_pairs=args.val_pairs,
        crop=args.crop,
        strides=tuple(args.strides),
        max_minutes=args.max_minutes,
    )
    print(json.dumps({"steps": record["steps"], "best": record["best"]}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

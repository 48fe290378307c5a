"""Supervised training of the downscaling models on real radar (MSE, Adam).

The loss is the mean squared error in the model's output value space
(``model.forward_z``: for the U-Nets' shipped configs a linear scaling of mm/h,
for ZSM / FC-ZSM ``log1p(R) / log1p(10)``, for the ``paper`` presets the FC-ZSM
paper's normalised dBZ), over the fine cells the
pair's mask keeps (observed target, observed coarse input).  Adam with a cosine
learning-rate decay, gradient clipping, random flips / rotations / time
reversal of the crops, a tqdm progress bar, periodic validation and
checkpoints.  Checkpoints and shipped weights are safetensors files whose
metadata hold ``model``, ``config``, ``training`` and ``scores`` (JSON).

Scores (:func:`evaluate`) are in mm/h: MSE over all output frames, over the
inserted frames only (``t2`` in the FC-ZSM paper) and over the frames at input
times (``t1 + t3``), and the mean SSIM of the FC-ZSM paper (k1 = 0.01,
k2 = 0.03, c3 = c2/2, uniform 7x7 windows, L = the data range of the targets)
- each for the model and for the trilinear baseline.

Run from the command line (one model per process)::

    python -m xnowcast.training.supervised unet --config compact \\
        --data-root ../shared/data --out xnowcast/weights/unet-compact.safetensors

(ZSM / FC-ZSM on the motion prior are trained by :mod:`xnowcast.training.longrun`:
Charbonnier loss, pairs at every time step with whole-domain motion, exact resume.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xnowcast.training.pairs import (
    STATIC_NAMES,
    PairSet,
    dihedral,
    load_rain_rate,
    make_pairs,
)

__all__ = [
    "DEFAULT_EVENTS",
    "HOLDOUT_EVENT",
    "TrainConfig",
    "evaluate",
    "load_checkpoint",
    "load_event_pairs",
    "main",
    "masked_mse",
    "save_checkpoint",
    "train",
    "train_downscaler",
]

#: Training events (name -> glob relative to the data root, i.e. the folder holding radar/).
DEFAULT_EVENTS: dict[str, str] = {
    "mch-20150515": "radar/mch/20150515/*",
    "mch-20160711": "radar/mch/20160711/*",
    "fmi-20160928": "radar/fmi/pgm/20160928/*",
    "knmi-20100826": "radar/KNMI/2010/08/*",
}
#: The held-out event (the package's bundled sample is cut from it).
HOLDOUT_EVENT: tuple[str, str] = ("rmi-20210704", "radar/rmi/radqpe/20210704/*")


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes
    ----------
    steps
        Optimiser steps (the run also stops after ``max_wall_s`` seconds).
    batch_size, lr, grad_clip
        Adam on batches of pairs; the learning rate decays to 5 % of ``lr``
        along a cosine of the run's progress (the larger of the share of
        steps done and the share of ``max_wall_s`` used, so a run cut by its
        time budget still ends annealed); gradients are clipped to this norm
        (None: no clipping).
    augment
        Random flips, 90-degree rotations and time reversal of each batch.
    subcrop
        Train on random ``subcrop x subcrop`` (coarse cells) windows of the
        pairs' crops (None: whole crops).
    seed
        Seed of the initialisation, batch order and augmentation.
    val_every, checkpoint_every, log_every
        In steps (0: never).
    max_wall_s
        Stop after this many seconds (None: run all steps).
    threads
        ``torch.set_num_threads`` (None: leave as is).
    """

    steps: int = 400
    batch_size: int = 4
    lr: float = 5e-4
    grad_clip: float | None = 1.0
    augment: bool = True
    subcrop: int | None = None
    seed: int = 0
    val_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    max_wall_s: float | None = None
    threads: int | None = 1


def masked_mse(pred: Any, target: Any, mask: Any) -> Any:
    """Mean squared error over the cells where ``mask`` is True (0 when none)."""
    weight = mask.to(pred.dtype)
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def _augment(batch: tuple, generator: Any) -> tuple:
    """The same random rotation / flip / time reversal applied to every tensor of a batch."""
    return dihedral((*batch, None), generator)[:4]


def _subcrop(batch: tuple, size: int, factor: int, generator: Any) -> tuple:
    """A random ``size x size`` coarse window (and the matching fine window) of a batch."""
    import torch

    coarse, fine, mask, static = batch
    h, w = coarse.shape[-2:]
    if size >= min(h, w):
        return batch
    y0 = int(torch.randint(h - size + 1, (1,), generator=generator))
    x0 = int(torch.randint(w - size + 1, (1,), generator=generator))
    ys, xs = slice(y0, y0 + size), slice(x0, x0 + size)
    fy = slice(y0 * factor, (y0 + size) * factor)
    fx = slice(x0 * factor, (x0 + size) * factor)
    return coarse[..., ys, xs], fine[..., fy, fx], mask[..., fy, fx], static[..., fy, fx]


def _static_for(model: Any, static: Any) -> Any:
    return static if int(getattr(model, "static_channels", 0)) else None


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """Per-field SSIM of the FC-ZSM paper (:func:`xnowcast.metrics.ssim`), NaN-aware."""
    from xnowcast.metrics import ssim

    return np.asarray(ssim(a, b, data_range=data_range, window=7))


def evaluate(
    model: Any,
    pairs: PairSet,
    batch_size: int = 8,
    data_range: float | None = None,
) -> dict[str, float]:
    """MSE (all / inserted / original frames, mm/h) and SSIM of ``model`` on ``pairs``.

    Parameters
    ----------
    model
        A downscaling model (``forward(frames, static) -> mm/h``).
    pairs
        Coarse inputs, fine targets and masks.
    batch_size
        Pairs per forward pass.
    data_range
        ``L`` of the SSIM; default: max - min of the masked targets.

    Returns
    -------
    dict
        ``mse``, ``mse_inserted``, ``mse_original``, ``ssim`` and ``data_range``.
    """
    import torch

    tf = int(model.time_factor)
    sums = {"all": 0.0, "inserted": 0.0, "original": 0.0}
    counts = {"all": 0.0, "inserted": 0.0, "original": 0.0}
    if data_range is None:
        data_range = float(pairs.fine[pairs.mask].max() - pairs.fine[pairs.mask].min())
    ssim_values = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            sl = slice(start, start + batch_size)
            pred = model(pairs.coarse[sl], _static_for(model, pairs.static[sl]))
            target, mask = pairs.fine[sl], pairs.mask[sl]
            err = ((pred - target) ** 2).masked_fill(~mask, 0.0)
            t_out = pred.shape[1]
            inserted = torch.tensor([k % tf != 0 for k in range(t_out)])
            for key, frames in (
                ("all", torch.ones(t_out, dtype=torch.bool)),
                ("inserted", inserted),
                ("original", ~inserted),
            ):
                sums[key] += float(err[:, frames].sum())
                counts[key] += float(mask[:, frames].sum())
            p = pred.masked_fill(~mask, float("nan")).numpy()[:, :, 0]
            t = target.masked_fill(~mask, float("nan")).numpy()[:, :, 0]
            ssim_values.append(_ssim(p, t, data_range).ravel())
    model.train(was_training)
    all_ssim = np.concatenate(ssim_values)
    out = {f"mse_{k}" if k != "all" else "mse": sums[k] / max(counts[k], 1.0) for k in sums}
    out["ssim"] = float(np.nanmean(all_ssim)) if np.isfinite(all_ssim).any() else float("nan")
    out["data_range"] = data_range
    return out


def _scores(model: Any, val: PairSet | None, baseline: Any | None) -> dict[str, Any]:
    if val is None or not len(val):
        return {}
    scores: dict[str, Any] = {"model": evaluate(model, val)}
    if baseline is not None:
        scores["trilinear"] = evaluate(baseline, val, data_range=scores["model"]["data_range"])
        base = scores["trilinear"]["mse"]
        scores["mse_reduction_vs_trilinear"] = 1 - scores["model"]["mse"] / base if base else None
    scores["pairs"] = len(val)
    scores["events"] = sorted(set(val.events))
    return scores


def save_checkpoint(
    model: Any,
    path: str | os.PathLike[str],
    training: dict[str, Any] | None = None,
    scores: dict[str, Any] | None = None,
) -> str:
    """Write ``model``'s weights to a safetensors file with its config; return the sha256.

    The metadata hold ``model`` (its name), ``config`` (the full config,
    including ``factor``, ``time_factor`` and ``static_names``), ``training``
    and ``scores`` (JSON).
    """
    from xnowcast.weights import save_weights

    config = dict(model.config)
    metadata = {
        "model": str(config.get("model", type(model).__name__.lower())),
        "config": config,
        "training": training or {},
        "scores": scores or {},
        "format": "xnowcast-downscale-1",
    }
    return save_weights(model.state_dict(), path, metadata)


def load_checkpoint(path: str | os.PathLike[str], sha256: str | None = None) -> Any:
    """Build the model a checkpoint was written from and load its weights.

    Parameters
    ----------
    path
        A safetensors file written by :func:`save_checkpoint`.
    sha256
        Expected digest; a mismatch raises :class:`~xnowcast.errors.WeightsError`.

    Returns
    -------
    torch.nn.Module
        The model in eval mode; ``model.metadata`` holds the file's metadata.
    """
    from xnowcast.errors import WeightsError
    from xnowcast.registry import build_model
    from xnowcast.weights import load_state_dict

    state, metadata = load_state_dict(path, sha256=sha256)
    config = metadata.get("config")
    if not isinstance(config, dict) or "model" not in metadata:
        raise WeightsError(f"{path} has no model/config metadata of a downscaling model")
    model = build_model(
        metadata["model"],
        config,
        task="downscale",
        factor=int(config["factor"]),
        time_factor=int(config["time_factor"]),
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{path} does not fit {metadata['model']}: {err}") from None
    model.eval()
    model.metadata = metadata
    return model


def train(
    model: Any,
    train_pairs: PairSet,
    val_pairs: PairSet | None = None,
    config: TrainConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    training_info: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit ``model`` to the pairs with masked MSE and Adam.

    Parameters
    ----------
    model
        A learned downscaling model (with ``forward_z``).
    train_pairs, val_pairs
        Training pairs; validation pairs (scored every ``val_every`` steps and
        at the end, with the trilinear baseline).
    config
        Optimisation settings.
    checkpoint
        Where to write checkpoints (every ``checkpoint_every`` steps and at the
        end); None: none written.
    training_info
        Extra entries for the ``training`` metadata (events, held-out event).
    progress
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``training`` (recipe, steps, wall time, loss history), ``scores`` and
        ``sha256`` (of the final checkpoint, or None).
    """
    import torch
    from tqdm.auto import tqdm

    from xnowcast.models.interpolation import build_trilinear

    config = config or TrainConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    baseline = build_trilinear(factor=model.factor, time_factor=model.time_factor)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    info: dict[str, Any] = {
        **(training_info or {}),
        "recipe": asdict(config),
        "loss": "masked MSE in the model's output space (forward_z)",
        "optimiser": "Adam, cosine decay to 5% of lr",
        "train_pairs": len(train_pairs),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    history: list[tuple[int, float]] = []
    val_history: list[tuple[int, float]] = []
    start = time.perf_counter()
    sha = None
    bar = tqdm(total=config.steps, disable=not progress, desc=model.config.get("model", "train"))
    running = None
    step = 0
    model.train()
    for step in range(1, config.steps + 1):
        idx = torch.randint(len(train_pairs), (config.batch_size,), generator=generator)
        batch = (
            train_pairs.coarse[idx],
            train_pairs.fine[idx],
            train_pairs.mask[idx],
            train_pairs.static[idx],
        )
        if config.subcrop:
            batch = _subcrop(batch, config.subcrop, int(model.factor), generator)
        if config.augment:
            batch = _augment(batch, generator)
        coarse, fine, mask, static = batch
        pred = model.forward_z(coarse, _static_for(model, static))
        loss = masked_mse(pred, model.transform(fine), mask)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimiser.step()
        elapsed = time.perf_counter() - start
        done_share = step / config.steps
        if config.max_wall_s:
            done_share = max(done_share, elapsed / config.max_wall_s)
        for group in optimiser.param_groups:
            group["lr"] = config.lr * (0.05 + 0.475 * (1 + math.cos(math.pi * min(done_share, 1))))
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if config.log_every and step % config.log_every == 0:
            history.append((step, running))
            if not progress:
                print(f"step {step} loss {running:.5g} wall {elapsed:.0f}s", flush=True)
        bar.set_postfix(loss=f"{running:.4g}")
        bar.update(1)
        done = step == config.steps or (config.max_wall_s and elapsed > config.max_wall_s)
        if val_pairs is not None and config.val_every and step % config.val_every == 0:
            val_history.append((step, evaluate(model, val_pairs)["mse"]))
            model.train()
        if checkpoint is not None and (
            done or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            info.update(steps=step, wall_s=round(elapsed, 1), loss_history=history)
            info["val_mse_history"] = val_history
            scores = _scores(model, val_pairs, baseline) if done else {}
            sha = save_checkpoint(model, checkpoint, info, scores)
            model.train()
        if done:
            break
    bar.close()
    wall = time.perf_counter() - start
    info.update(steps=step, wall_s=round(wall, 1), loss_history=history)
    info["val_mse_history"] = val_history
    scores = _scores(model, val_pairs, baseline)
    model.eval()
    return {"training": info, "scores": scores, "sha256": sha}


def load_event_pairs(
    data_root: str | os.PathLike[str],
    events: dict[str, str],
    seed: int = 0,
    **pair_kwargs: Any,
) -> PairSet:
    """Pairs from several real events (name -> glob under ``data_root``), concatenated."""
    sets = []
    for i, (name, pattern) in enumerate(events.items()):
        da = load_rain_rate(str(Path(data_root) / pattern))
        sets.append(make_pairs(da, seed=seed + i, event=name, **pair_kwargs))
    return PairSet.concat(sets)


def _cached_pairs(
    cache: str | None, data_root: str, events: dict[str, str], seed: int, **kwargs: Any
) -> PairSet:
    import torch

    key = json.dumps({"events": events, "seed": seed, **kwargs}, sort_keys=True)
    if cache and Path(cache).is_file():
        stored = torch.load(cache, weights_only=True)
        if stored["key"] == key:
            return PairSet(
                stored["coarse"],
                stored["fine"],
                stored["mask"],
                stored["static"],
                list(stored["events"]),
                json.loads(stored["info"]),
            )
    pairs = load_event_pairs(data_root, events, seed=seed, **kwargs)
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "key": key,
                "coarse": pairs.coarse,
                "fine": pairs.fine,
                "mask": pairs.mask,
                "static": pairs.static,
                "events": pairs.events,
                "info": json.dumps(pairs.info),
            },
            cache,
        )
    return pairs


def train_downscaler(
    name: str,
    config: str | dict[str, Any] = "default",
    *,
    data_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    events: dict[str, str] | None = None,
    holdout: tuple[str, str] | None = HOLDOUT_EVENT,
    factor: int = 2,
    time_factor: int = 2,
    train_config: TrainConfig | None = None,
    pairs_per_event: int = 300,
    val_pairs: int = 64,
    crop: int = 32,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build ``name``, train it on real events, score it on the held-out one, save it.

    Parameters
    ----------
    name, config, factor, time_factor
        As :func:`xnowcast.registry.build_model` (a downscaler).
    data_root
        The folder holding ``radar/`` (the shared real data).
    out
        The safetensors file to write (checkpoints go there as training runs).
    events, holdout
        Training events and the held-out ``(name, glob)`` (default: the four
        of :data:`DEFAULT_EVENTS` and :data:`HOLDOUT_EVENT`).
    train_config
        Optimisation settings.
    pairs_per_event, val_pairs, crop
        Pairs cut from each training event, validation pairs from the
        held-out event, coarse crop side.
    cache_dir
        Where to keep the cut pairs between runs (None: not kept).
    """
    import torch

    from xnowcast.registry import build_model

    train_config = train_config or TrainConfig()
    torch.manual_seed(train_config.seed)
    model = build_model(name, config, task="downscale", factor=factor, time_factor=time_factor)
    events = dict(events or DEFAULT_EVENTS)
    window = int(model.window)
    common = {"window": window, "factor": factor, "time_factor": time_factor, "crop": crop}
    cache = None if cache_dir is None else str(Path(cache_dir) / "train-pairs.pt")
    train_pairs = _cached_pairs(
        cache, str(data_root), events, train_config.seed, max_pairs=pairs_per_event, **common
    )
    val = None
    if holdout is not None:
        vcache = None if cache_dir is None else str(Path(cache_dir) / "val-pairs.pt")
        val = _cached_pairs(
            vcache, str(data_root), dict([holdout]), 1234, max_pairs=val_pairs, **common
        )
    info = {
        "events": sorted(events),
        "event_globs": events,
        "holdout": None if holdout is None else holdout[0],
        "pairs": {**train_pairs.info, "per_event": pairs_per_event},
        "static_names": list(STATIC_NAMES) if model.static_channels else [],
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return train(model, train_pairs, val, train_config, out, info, progress)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line training of one downscaling model (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["unet", "unet3d", "zsm", "fczsm"])
    parser.add_argument("--config", default="default")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--time-factor", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--subcrop", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--pairs-per-event", type=int, default=300)
    parser.add_argument("--val-pairs", type=int, default=64)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        subcrop=args.subcrop,
        checkpoint_every=args.checkpoint_every,
        val_every=args.checkpoint_every,
        max_wall_s=None if args.max_minutes is None else 60 * args.max_minutes,
    )
    result = train_downscaler(
        args.model,
        args.config,
        data_root=args.data_root,
        out=args.out,
        factor=args.factor,
        time_factor=args.time_factor,
        train_config=cfg,
        pairs_per_event=args.pairs_per_event,
        val_pairs=args.val_pairs,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    print(json.dumps({"scores": result["scores"], "sha256": result["sha256"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

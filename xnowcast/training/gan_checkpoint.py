"""Checkpoints of DGMR's adversarial training, and the generator's weights file.

Checkpoints are safetensors files (models, RNG states, history as JSON
metadata) with the Adam states in a second safetensors file; nothing is
pickled, and :func:`xnowcast.training.gan.train_dgmr` resumes from them bit for bit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xnowcast.models.dgmr import Discriminator, Generator

__all__ = [
    "CHECKPOINT",
    "OPTIMISER",
    "export_best_weights",
    "load_checkpoint",
    "load_optimisers",
    "save_checkpoint",
    "save_generator_weights",
    "strip_prefix",
]

CHECKPOINT = "checkpoint.safetensors"
OPTIMISER = "optimiser.safetensors"


def _optimiser_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, Tensor]:
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            out[f"{prefix}.{idx}.{key}"] = t.detach().cpu().contiguous()
    return out


def _load_optimiser(opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], prefix: str) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        head, idx, key = name.split(".", 2)
        if head != prefix:
            continue
        state.setdefault(int(idx), {})[key] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


def _state_tensors(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def strip_prefix(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors under ``prefix.``, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(
    out_dir: Path,
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    meta: dict[str, Any],
    rng: torch.Generator,
    ema: Generator | None = None,
) -> Path:
    """Write the models (and the generator's moving average ``ema``), RNG state and
    ``meta`` (JSON) and the Adam states into ``out_dir``."""
    from safetensors.torch import save_file

    tensors = {
        **_state_tensors(generator, "generator"),
        **_state_tensors(discriminator, "discriminator"),
        **(_state_tensors(ema, "ema") if ema is not None else {}),
    }
    tensors["rng.torch"] = rng.get_state()
    path = out_dir / CHECKPOINT
    tmp = out_dir / (CHECKPOINT + ".tmp")
    save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in meta.items()})
    opt = {**_optimiser_tensors(opt_g, "generator"), **_optimiser_tensors(opt_d, "discriminator")}
    opt_tmp = out_dir / (OPTIMISER + ".tmp")
    save_file(opt, opt_tmp, metadata={"step": json.dumps(meta["step"])})
    os.replace(tmp, path)
    os.replace(opt_tmp, out_dir / OPTIMISER)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a training checkpoint (a file or its folder)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    tensors = load_file(p)
    with safe_open(p, framework="pt") as f:
        raw = f.metadata() or {}
    return tensors, {k: json.loads(v) for k, v in raw.items()}


def save_generator_weights(
    generator: Generator,
    path: str | os.PathLike[str],
    *,
    training: Mapping[str, Any],
    scores: Mapping[str, Any],
) -> str:
    """Write the generator's weights (safetensors, DGMR metadata); return the sha256."""
    import hashlib

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    meta = {
        "model": "dgmr",
        "config": json.dumps(generator.config, sort_keys=True),
        "training": json.dumps(dict(training), sort_keys=True),
        "scores": json.dumps(dict(scores), sort_keys=True),
        "format": "xnowcast-dgmr-generator-1",
    }
    save_file(tensors, path, metadata=meta)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_optimisers(
    checkpoint: str | os.PathLike[str], opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer
) -> None:
    """Load the Adam states written next to ``checkpoint`` (a file or its folder)."""
    from safetensors.torch import load_file

    p = Path(checkpoint)
    tensors = load_file((p if p.is_dir() else p.parent) / OPTIMISER)
    _load_optimiser(opt_g, tensors, "generator")
    _load_optimiser(opt_d, tensors, "discriminator")


def export_best_weights(
    run_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    curve_keys: Sequence[str],
    curve_since: int | None = None,
) -> str:
    """Write the best validated generator of a (possibly running) training run to ``path``.

    The weights are those of ``best.safetensors`` (kept by
    :func:`~xnowcast.training.gan.train_dgmr`); their ``training`` metadata gain
    the run's progress from its last checkpoint (``steps_trained``,
    ``wall_time_trained_s``, ``cpu_time_trained_s``: process CPU seconds, logged since
    session 4, and the ``recipe_changes`` made on resumes) and the validation ``curve``.  Returns the sha256.

    ``curve_since`` drops the validations before that step and the duplicate
    at it (a run resumed with another validation set validates again at the
    step it resumed from; the scores before it are not comparable).
    """
    import hashlib

    from safetensors.torch import save_file

    from xnowcast.weights import load_state_dict

    run = Path(run_dir)
    best = run / "best.safetensors"
    if not best.exists():
        raise FileNotFoundError(f"{best} does not exist: no validation has improved yet")
    state, meta = load_state_dict(best)
    _, ckpt = load_checkpoint(run)
    training = dict(meta["training"])
    training["steps_trained"] = int(ckpt["step"])
    training["wall_time_trained_s"] = round(float(ckpt["wall_time"]), 1)
    training["cpu_time_trained_s"] = round(float(ckpt.get("cpu_time", 0.0)), 1)
    if "recipe_changes" in ckpt["args"]:
        training["recipe_changes"] = ckpt["args"]["recipe_changes"]
    validations = [h for h in ckpt["history"] if "val" in h]
    if curve_since is not None:
        at = [h for h in validations if h["step"] == curve_since]
        validations = at[-1:] + [h for h in validations if h["step"] > curve_since]
        training["curve_since_step"] = curve_since
    training["curve"] = [
        {"step": h["step"], **{k: h["val"][k] for k in curve_keys if k in h["val"]}}
        for h in validations
    ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "model": "dgmr",
        "config": json.dumps(meta["config"], sort_keys=True),
        "training": json.dumps(training, sort_keys=True),
        "scores": json.dumps(meta["scores"], sort_keys=True),
        "format": "xnowcast-dgmr-generator-1",
    }
    save_file({k: v.contiguous() for k, v in state.items()}, out, metadata=header)
    return hashlib.sha256(out.read_bytes()).hexdigest()

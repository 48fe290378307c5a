"""Shippable weights from a :mod:`xnowcast.training.longrun` run (``--export``).

The run's best validation step (or its last checkpoint) is written with its
config, the run's record (recipe, data, steps, the validation curve with its
ratio to ``flow``, the CPU time, with a warm start's) and held-out scores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["export"]


def export(
    workdir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    warm_from: str | os.PathLike[str] | None = None,
    step: str = "best",
) -> dict[str, Any]:
    """Write the best (or the last) model of a run as shippable weights, with held-out scores.

    ``step="best"`` takes the step with the lowest validation MSE (chosen on the
    held-out pairs); ``"last"`` the run's last checkpoint, e.g. the end of its
    schedule, which involves no choice made on the held-out event.

    The metadata hold the config, the run's record (recipe, data, steps, the
    validation curve with its ratio to ``flow``, the best step) and ``scores``:
    MSE on the held-out pairs of the model, ``flow`` and ``trilinear``.
    ``cpu_s_total`` is the CPU time behind the exported weights: this run's up to
    the best step plus the warm start's up to its own shipped step.  A run whose
    record predates warm-start CPU bookkeeping takes it from ``warm_from`` (the
    weights file it was warm-started from).

    Returns
    -------
    dict
        ``sha256`` of the written file and the ``scores``.
    """
    import torch

    from xnowcast.models.flow import build_flow
    from xnowcast.models.interpolation import build_trilinear
    from xnowcast.training.longrun import _warm_cpu, evaluate_vs_flow
    from xnowcast.training.pairs import PairSet
    from xnowcast.training.supervised import load_checkpoint, save_checkpoint

    if step not in ("best", "last"):
        raise ValueError(f"step must be 'best' or 'last', got {step!r}")
    work = Path(workdir)
    model = load_checkpoint(work / "best.safetensors")
    val = PairSet(**torch.load(work / "val-pairs.pt", weights_only=False))
    factor, tf = int(model.factor), int(model.time_factor)
    record = dict(model.metadata["training"])
    state = work / "state.pt"
    saved = torch.load(state, weights_only=False) if state.is_file() else None
    if saved is not None:  # the curve up to the last step, not only up to the best one
        record["run"] = {
            k: v
            for k, v in saved["record"].items()
            if k in ("steps", "wall_s", "cpu_s", "loss_history", "val_history", "recipe_changes")
        }
    if step == "last":
        if saved is None:
            raise FileNotFoundError(f"{state} is missing: no last checkpoint to export")
        model.load_state_dict(saved["model"])
        record = {**saved["record"], "run": record["run"], "exported_step": "last"}
    elif record.get("best"):  # saved during the best step, before its count was updated
        record["steps"] = record["best"]["step"]
    warm = record.get("warm_start")
    if warm is not None and warm_from is not None and "cpu_s" not in warm:
        warm.update(_warm_cpu(load_checkpoint(warm_from).metadata.get("training", {})))
    if "cpu_s" in record:
        record["cpu_s_total"] = float(record["cpu_s"]) + float((warm or {}).get("cpu_s", 0.0))
    scores = {
        "holdout_pairs": {
            "event": record.get("holdout"),
            "pairs": len(val),
            "model": evaluate_vs_flow(model, val),
            "flow": evaluate_vs_flow(build_flow(factor=factor, time_factor=tf), val),
            "trilinear": evaluate_vs_flow(build_trilinear(factor=factor, time_factor=tf), val),
        }
    }
    sha = save_checkpoint(model, out, record, scores)
    return {"sha256": sha, "scores": scores}

"""Re-export weights of the older trainers through the Lightning path: ``xnowcast train MODEL --reexport W``.

Weights written by a trainer other than :func:`~xnowcast.training.lightning.run.fit`
(``longrun``, ``gan_cli``, ``nowcasters``, ``srgan_run``, ...) are

1. loaded, strictly, into the module ``xnowcast train MODEL`` builds
   (:func:`~xnowcast.training.lightning.models.build_trainable`, with the config
   stored in the file);
2. scored on the held-out windows the Lightning run scores
   (:meth:`~xnowcast.training.lightning.datamodule.RadarDataModule.heldout_batch`
   of the held-out event, RMI 2021-07-04, with the family's recipe;
   :func:`~xnowcast.training.lightning.heldout.score_heldout`), as shipped: nothing
   is trained, no batch-norm statistics are refreshed;
3. written by :func:`~xnowcast.training.lightning.run.export_weights`, so the file
   has the metadata of a Lightning-trained one (``model``, ``config``, ``training``,
   ``scores``, ``format``).

The original training record stays as its trainer wrote it: every key is kept (a
file must still say how it was trained); the export adds ``exported_by``,
``reexported_from``, ``reexported_from_sha256``, ``reexport`` (held-out data,
recipe, versions), ``heldout_scores`` and the Lightning keys the record lacks
(``model``, ``config``, ``task``, ``family``).  ``scores`` keeps the stored scores
and adds ``lightning_heldout``.

Two checks before the target is replaced: the tensors written equal those read,
bit for bit, and the written file, loaded through the registry as
``predict``/``downscale(..., weights=path)`` load it, gets the same held-out
scores as the source.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch

from xnowcast.errors import TrainingError, WeightsError
from xnowcast.training.lightning.datamodule import RadarDataModule
from xnowcast.training.lightning.heldout import score_heldout
from xnowcast.training.lightning.models import (
    Trainable,
    build_trainable,
    load_written,
    recipe_for,
)
from xnowcast.training.lightning.run import export_weights, heldout_time_step
from xnowcast.weights import file_sha256, load_state_dict

__all__ = ["LIGHTNING_EXPORT", "Reexport", "comparable_scores", "reexport"]

#: ``training["exported_by"]`` of a re-exported file.
LIGHTNING_EXPORT = "xnowcast.training.lightning (PyTorch Lightning), re-export without training"
_LIGHTNING_TRAINER = "xnowcast.training.lightning (PyTorch Lightning)"
#: Top-level metadata keys of a Lightning-written file.
_SCHEMA = ("model", "config", "training", "scores", "format")


@dataclass
class Reexport:
    """What a re-export wrote.

    Attributes
    ----------
    path, sha256
        The file written and its digest.
    source, source_sha256
        The file read and its digest.
    heldout_scores
        The Lightning held-out scores (``training["heldout_scores"]``).
    stored_scores
        The scores the source stored (``scores`` without ``lightning_heldout``).
    """

    path: Path
    sha256: str
    source: Path
    source_sha256: str
    heldout_scores: dict[str, Any]
    stored_scores: dict[str, Any] = field(default_factory=dict)


def _config_name(meta: dict[str, Any]) -> str:
    """The config name the source was trained with (selects the recipe, e.g. ``tiny``)."""
    training, config = meta.get("training") or {}, meta.get("config") or {}
    for value in (training.get("config"), training.get("config_name"), config.get("preset")):
        if isinstance(value, str) and value:
            return value
    return "custom"


def _check_source(meta: dict[str, Any], path: Path, name: str) -> None:
    """Refuse files that the Lightning path wrote already, or that lack what it needs."""
    training = meta.get("training")
    if not isinstance(meta.get("config"), dict) or not isinstance(training, dict):
        raise WeightsError(
            f"{path} has no config and training record in its metadata: only weights "
            "written by an xnowcast trainer can be re-exported"
        )
    if "exported_by" in training or training.get("trainer") == _LIGHTNING_TRAINER:
        raise WeightsError(
            f"{path} was written by the Lightning path already "
            f"({training.get('exported_by') or training.get('trainer')}): nothing to re-export"
        )
    stored = meta.get("model")
    if stored is not None and stored != name:
        raise WeightsError(
            f"{path} holds weights of {stored!r}, not {name!r}: re-export it as "
            f"`xnowcast train {stored} --reexport {path}`"
        )
    extra = sorted(set(meta) - set(_SCHEMA))
    if extra:
        raise WeightsError(
            f"{path} has metadata {extra} that the Lightning schema {list(_SCHEMA)} has no "
            "place for: it would be lost"
        )


def _load_strictly(trainable: Trainable, state: dict[str, torch.Tensor], path: Path) -> None:
    model = trainable.model
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ: another config
        raise WeightsError(
            f"{path} does not fit {trainable.name!r} built from its stored config: "
            f"{str(err).splitlines()[-1].strip()}"
        ) from None
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not fit {trainable.name!r} built from its stored config: missing "
            f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )


def _target(out: str | os.PathLike[str], source: Path) -> Path:
    out = Path(out)
    if out.is_dir() or out.suffix != ".safetensors":
        return out / source.name
    return out


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a
    )


def _record(
    old: dict[str, Any],
    trainable: Trainable,
    source: Path,
    source_sha: str,
    dm: RadarDataModule,
    recipe: dict[str, Any],
    seed: int,
    scores: dict[str, Any],
) -> dict[str, Any]:
    """The original record, every key kept, plus what the re-export adds."""
    training = dict(old)
    for key, value in (
        ("model", trainable.name),
        ("config", trainable.config_name),
        ("task", trainable.task),
        ("family", trainable.family),
    ):
        training.setdefault(key, value)
    keys = {
        "downscale": ("crop",),
        "nowcast": ("crop", "lead_steps", "val_members"),
        "representation": ("crop", "val_windows", "val_pairs_per_window"),
    }[trainable.task]
    training.update(
        exported_by=LIGHTNING_EXPORT,
        reexported_from=source.name,
        reexported_from_sha256=source_sha,
        reexport={
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tensors": "identical to the source file, bit for bit (nothing trained)",
            "heldout_data": dm.describe(),
            "heldout_recipe": {k: recipe[k] for k in keys if k in recipe},
            "factors": [int(trainable.model.factor), int(trainable.model.time_factor)]
            if trainable.task == "downscale"
            else None,
            "seed": seed,
            "torch": torch.__version__,
            "lightning": L.__version__,
            "machine": platform.machine(),
        },
        heldout_scores=scores,
    )
    return training


def _device(accelerator: str) -> torch.device:
    if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("--accelerator gpu: this machine has no CUDA device")
        return torch.device("cuda", 0)
    return torch.device("cpu")


def reexport(
    model: str,
    weights: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    data: Any = "rmi-20210704",
    factor: int | None = None,
    time_factor: int | None = None,
    seed: int = 0,
    accelerator: str = "cpu",
    var: str | None = None,
) -> Reexport:
    """Re-export ``weights`` of ``model`` through the Lightning path (see the module docstring).

    Parameters
    ----------
    model
        The registered model (``"TASK/NAME"`` for a name both tasks use), as for
        ``xnowcast train``.
    weights
        The weights file to re-export (safetensors with config and training record).
    out
        The file to write (may be ``weights`` itself: replaced only after the checks)
        or a folder (the file keeps its name).
    data
        Data holding the held-out event (its frames on RMI 2021-07-04 are scored).
    factor, time_factor
        Refinement a downscaler is scored at (default: the stored config's, else 2).
    seed
        Seed of the ensemble members' latents.
    accelerator
        ``"cpu"``, ``"gpu"`` or ``"auto"``.
    var
        Variable of a Dataset.

    Raises
    ------
    WeightsError
        For weights of another model or config, weights the Lightning path wrote
        already, or a written file that does not reproduce the source.
    """
    source = Path(weights)
    state, meta = load_state_dict(source)
    source_sha = file_sha256(source)
    name = str(model).rpartition("/")[2]
    _check_source(meta, source, name)
    config = dict(meta["config"])
    factor = int(factor if factor is not None else config.get("factor", 2))
    time_factor = int(time_factor if time_factor is not None else config.get("time_factor", 2))
    trainable = build_trainable(model, config, factor, time_factor)
    trainable = replace(trainable, config_name=_config_name(meta))
    _load_strictly(trainable, state, source)
    recipe = recipe_for(trainable)
    dm = RadarDataModule(
        data,
        trainable.data_task(recipe),
        crop=int(recipe["crop"]),
        batch_size=int(recipe["batch_size"]),
        seed=seed,
        val_windows=int(recipe.get("val_windows", 4)),
        var=var,
        heldout_only=True,
    )
    device = _device(accelerator)
    batch = dm.heldout_batch()
    step = heldout_time_step(dm)
    shipped = trainable.model.to(device).eval()
    scores = score_heldout(shipped, trainable.task, batch, recipe, seed, device, step)
    training = _record(meta["training"], trainable, source, source_sha, dm, recipe, seed, scores)
    stored = dict(meta.get("scores") or {})
    target = _target(out, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a new name per call: the registry caches loaded modules by path
    scratch = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}.reexport.safetensors")
    try:
        sha = export_weights(
            trainable,
            shipped.cpu(),
            scratch,
            training,
            {**stored, "lightning_heldout": scores},
        )
        written, _ = load_state_dict(scratch, sha256=sha)
        if not _same_tensors(state, written):
            raise WeightsError(f"the tensors written to {target} differ from those of {source}")
        again = score_heldout(
            load_written(trainable, scratch, str(device)),
            trainable.task,
            batch,
            recipe,
            seed,
            device,
            step,
        )
        if json.dumps(again, sort_keys=True) != json.dumps(scores, sort_keys=True):
            raise WeightsError(
                f"{target} loaded through the registry scores {again} on the held-out windows, "
                f"not {scores} as {source}: it was not written"
            )
        shutil.copymode(source, scratch)  # safetensors writes 0600: keep the source's mode
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    return Reexport(target, sha, source, source_sha, scores, stored)


def _entry(scores: dict[str, Any], *path: str) -> dict[str, Any]:
    for key in path:
        scores = scores.get(key) if isinstance(scores, dict) else None  # type: ignore[assignment]
    return scores if isinstance(scores, dict) else {}


def comparable_scores(stored: dict[str, Any], heldout: dict[str, Any]) -> list[dict[str, Any]]:
    """Stored scores beside the Lightning held-out scores of the same metric.

    Each row: ``metric``, ``stored``, ``lightning``, ``better`` (``"lower"`` or
    ``"higher"``; ``"none"`` for an encoder's mean distance by lag, which is in units
    of its own 60-minute distance).  The two are measured on different held-out windows of the same
    event (the older trainers cut their own), so a difference says how the windows
    differ, not the weights: those are identical.
    """
    rows: list[dict[str, Any]] = []

    def add(metric: str, old: Any, new: Any, better: str) -> None:
        if isinstance(old, int | float) and isinstance(new, int | float) and math.isfinite(old):
            rows.append({"metric": metric, "stored": old, "lightning": new, "better": better})

    if "lag_accuracy" in heldout:  # a self-supervised encoder
        old, new = _entry(stored, "heldout_lag_accuracy"), heldout["lag_accuracy"]
        add("lag accuracy", old.get("accuracy"), new["accuracy"], "higher")
        add("lag within one class", old.get("within_one_class"), new["within_one_class"], "higher")
        old_by_lag = _entry(stored, "heldout_distance_by_lag_minutes")
        for lag, value in _entry(heldout, "distance_by_lag_minutes").items():
            add(f"distance at {lag} min", old_by_lag.get(lag), value, "none")
    elif "trilinear" in heldout:  # a downscaler
        model, base = heldout["model"], heldout["trilinear"]
        for old_model, old_base in (
            (_entry(stored, "model"), _entry(stored, "trilinear")),
            (
                _entry(stored, "holdout_pairs", "model"),
                _entry(stored, "holdout_pairs", "trilinear"),
            ),
            (_entry(stored, "heldout_rmi_factor4_crops", "srgan"), {}),
        ):
            if not old_model:
                continue
            add("MSE (mm/h)^2", old_model.get("mse"), model["mse"], "lower")
            add("SSIM", old_model.get("ssim"), model["ssim"], "higher")
            if old_base.get("mse"):
                ratio = model["mse"] / base["mse"]
                add("MSE / trilinear MSE", old_model["mse"] / old_base["mse"], ratio, "lower")
    elif "model" in heldout:  # a nowcaster
        model, persistence = heldout["model"], heldout["persistence"]
        base = heldout.get("extrapolation", {})
        mse = model["mse_of_mean"]
        add("MSE (mm/h)^2", stored.get("mse_model"), mse, "lower")
        if base.get("mse_of_mean"):
            add(
                "MSE / extrapolation MSE",
                stored.get("mse_ratio"),
                mse / base["mse_of_mean"],
                "lower",
            )
        if stored.get("mse_persistence"):
            ratio = mse / persistence["mse_of_mean"]
            add(
                "MSE / persistence MSE",
                stored["mse_model"] / stored["mse_persistence"],
                ratio,
                "lower",
            )
        add("CRPS (mm/h)", stored.get("crps"), model["crps"], "lower")
        if stored.get("crps_persistence"):
            ratio = model["crps"] / persistence["crps"]
            add(
                "CRPS / persistence CRPS",
                stored["crps"] / stored["crps_persistence"],
                ratio,
                "lower",
            )
        add(
            "CSI >= 1 mm/h of the ensemble mean", stored.get("csi_mean_1"), model["csi_1"], "higher"
        )
    return rows

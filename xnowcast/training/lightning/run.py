"""The Lightning run behind :func:`xnowcast.train` and ``xnowcast train``.

A run folder holds ``run.json`` (the options, so ``--resume DIR`` needs nothing
else), ``checkpoints/last.ckpt`` (Lightning checkpoint: weights, optimisers,
loop state; written every ``checkpoint_every`` steps and at the end),
``logs/`` (CSV, and TensorBoard when installed) and the weights
``<model>-<config>.safetensors``, written by :mod:`xnowcast.weights` with the
model's ``config``, a ``training`` record (model, config, data, steps,
world_size, precision, seed, held-out scores, ...) and ``scores``.

Checkpoints are Lightning's (pickle-based) files: resume only runs you made.
The weights file is safetensors and never runs code.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.util
import json
import platform
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from xnowcast.errors import TrainingError
from xnowcast.training.lightning.datamodule import RadarDataModule
from xnowcast.training.lightning.heldout import score_heldout
from xnowcast.training.lightning.models import Trainable, build_trainable, recipe_for
from xnowcast.training.lightning.modules import (
    AdversarialModule,
    RepresentationModule,
    SupervisedModule,
)

__all__ = ["RUN_FILE", "export_weights", "fit", "heldout_time_step"]

RUN_FILE = "run.json"
LAST = "last.ckpt"
#: Options a resumed run must keep (``data`` may move; the others shape the run).
_KEPT = ("model", "config", "seed", "batch_size", "crop", "lr", "factor", "time_factor", "var")
_DEFAULTS = {"config": "default", "seed": 0, "factor": 2, "time_factor": 2}
_FORMATS = {
    "dgmr": "xnowcast-dgmr-generator-1",
    "downscale": "xnowcast-downscale-1",
    "representation": "xnowcast-representation-1",
}


def _merge_resume(options: dict[str, Any], resume: Path | None) -> dict[str, Any]:
    """The options of this call completed (and checked) by those of the run resumed."""
    if resume is None:
        return {k: (v if v is not None else _DEFAULTS.get(k)) for k, v in options.items()}
    recorded_path = resume / RUN_FILE
    if not recorded_path.is_file() or not (resume / "checkpoints" / LAST).is_file():
        raise TrainingError(
            f"{resume} is not a training run folder (no {RUN_FILE} and checkpoints/{LAST}): "
            "give the --out folder of an earlier `xnowcast train`"
        )
    recorded = json.loads(recorded_path.read_text())["options"]
    merged = dict(options)
    for key in (*_KEPT, "data"):
        given, before = options.get(key), recorded.get(key)
        if given is None:
            merged[key] = before
        elif key in _KEPT and before is not None and given != before:
            raise TrainingError(
                f"{resume} was trained with {key}={before!r}, not {given!r}: drop that option "
                "to resume, or start a new run with another --out"
            )
    if merged.get("data") is None:
        raise TrainingError(f"{resume} was trained on in-memory data: pass data= again")
    return merged


def _strategy(strategy: str, devices: int, adversarial: bool) -> Any:
    if devices == 1 and strategy == "auto":
        return "auto"
    # several processes: data parallel; the GAN's two optimisers leave parameters unused
    return DDPStrategy(find_unused_parameters=adversarial)


def _loggers(out: Path) -> list[Logger]:
    # a new version folder per call: a resumed run keeps the logs of the earlier calls
    loggers: list[Logger] = [CSVLogger(out / "logs", name="csv")]
    if any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        loggers.append(TensorBoardLogger(out / "logs", name="tensorboard"))
    return loggers


def _module(trainable: Trainable, recipe: dict[str, Any], options: dict[str, Any]) -> Any:
    if trainable.family == "adversarial":
        assert trainable.discriminator is not None
        return AdversarialModule(
            trainable.model,
            trainable.discriminator,
            recipe,
            seed=int(options["seed"]),
            bf16=options["precision"] == "bf16-mixed",
        )
    if trainable.family == "representation":
        return RepresentationModule(trainable.model, float(recipe["lr"]))
    return SupervisedModule(
        trainable.model,
        trainable.task,
        float(recipe["lr"]),
        int(recipe["lead_steps"]),
        int(recipe["lr_decay_steps"]),
    )


def heldout_time_step(dm: RadarDataModule) -> float | None:
    """The time step (minutes) of the held-out windows, when they have one step."""
    dm.setup()
    if dm.val_sampler is None:
        return None
    steps = dm.val_sampler.describe()["time_step_minutes"]
    return float(steps[0]) if len(steps) == 1 else None


def _heldout(
    trainable: Trainable, dm: RadarDataModule, recipe: dict[str, Any], seed: int, device: Any
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Held-out scores of the trained model.

    A copy of it, with standing batch-norm statistics (GAN generators), or with the
    distance calibrated on training windows no step drew (self-supervised encoders:
    :func:`~xnowcast.training.atmodist.calibrate_distance`).
    """
    model = copy.deepcopy(trainable.model).to(device)
    if trainable.family == "adversarial":
        from xnowcast.training.gan_validation import refresh_batchnorm

        inputs = [b.inputs.to(device) for b in dm.standing_batches(4)]
        refresh_batchnorm(model, inputs, int(recipe["lead_steps"]), seed)
    if trainable.family == "representation":
        from xnowcast.training.atmodist import calibrate_distance

        bank = dm.task.bank(dm.standing_windows(int(recipe["calibration_windows"])))
        generator = torch.Generator().manual_seed(seed)
        calibrate_distance(model.cpu(), [bank], generator)
        model = model.to(device)
    model.eval()
    step = heldout_time_step(dm)
    scores = score_heldout(model, trainable.task, dm.heldout_batch(), recipe, seed, device, step)
    return model, scores


def _replicas_in_sync(trainer: L.Trainer, model: torch.nn.Module) -> bool:
    """Whether every data-parallel rank ends with the same weights (a collective call)."""
    if trainer.world_size == 1:
        return True
    import torch.distributed as dist

    total = sum(p.detach().double().abs().sum() for p in model.parameters())
    mine = torch.as_tensor(total, device=trainer.strategy.root_device).reshape(1)
    everyone = [torch.zeros_like(mine) for _ in range(trainer.world_size)]
    dist.all_gather(everyone, mine)
    return all(bool(torch.equal(t, mine)) for t in everyone)


def export_weights(
    trainable: Trainable, model: torch.nn.Module, path: Path, training: dict, scores: dict
) -> str:
    """Write the trained model's weights with its config and records; return the sha256."""
    from xnowcast.weights import save_weights

    config = dict(model.config)
    metadata = {
        "model": trainable.name,
        "config": config,
        "training": training,
        "scores": scores,
        "format": _FORMATS.get(trainable.name, _FORMATS.get(trainable.task, "xnowcast-1")),
    }
    return save_weights(model.state_dict(), path, metadata)


def _trainer_options(
    out: Path,
    trainable: Trainable,
    recipe: dict[str, Any],
    *,
    accelerator: str,
    devices: int,
    strategy: str,
    precision: str,
    max_steps: int | None,
    max_time: dt.timedelta | None,
    checkpoint_every: int,
    progress: bool,
) -> dict[str, Any]:
    """The ``lightning.Trainer`` arguments of a run."""
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="step-{step}",
        every_n_train_steps=max(int(checkpoint_every), 1),
        save_top_k=1,
        save_last=True,
    )
    adversarial = trainable.family == "adversarial"
    return {
        "accelerator": accelerator,
        "devices": devices,
        "strategy": _strategy(strategy, devices, adversarial),
        "precision": "32-true" if precision == "32" else precision,
        "max_steps": -1 if max_steps is None else int(max_steps),
        "max_epochs": -1,
        "max_time": max_time,
        "callbacks": [checkpoints],
        "logger": _loggers(out),
        "log_every_n_steps": 1,
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "gradient_clip_val": None if adversarial else recipe.get("grad_clip"),
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,
        "default_root_dir": out,
    }


def fit(
    *,
    model: str | None,
    data: Any,
    out: Path,
    config: str | None,
    max_steps: int | None,
    max_time: dt.timedelta | None,
    devices: int,
    accelerator: str,
    strategy: str,
    precision: str,
    batch_size: int | None,
    crop: int | None,
    resume: Path | None,
    seed: int | None,
    lr: float | None,
    factor: int | None,
    time_factor: int | None,
    checkpoint_every: int,
    num_workers: int,
    var: str | None,
    progress: bool,
) -> Path | None:
    """Train (see :func:`xnowcast.training.command.train` for the parameters)."""
    options = _merge_resume(
        {
            "model": model,
            "config": config,
            "data": data,
            "seed": seed,
            "batch_size": batch_size,
            "crop": crop,
            "lr": lr,
            "factor": factor,
            "time_factor": time_factor,
            "var": var,
        },
        resume,
    )
    if options["model"] is None:
        raise TrainingError("name the model to train (e.g. `xnowcast train zsm ...`)")
    if options["data"] is None:
        raise TrainingError("give the training data: --data PATH_OR_GLOB_OR_NAME")
    if max_steps is None and max_time is None:
        raise TrainingError("give --max-steps N or --max-time HH:MM:SS (else it never stops)")
    options.update(max_steps=max_steps, precision=precision)
    L.seed_everything(int(options["seed"]), workers=False, verbose=False)
    trainable = build_trainable(
        options["model"], options["config"], int(options["factor"]), int(options["time_factor"])
    )
    recipe = recipe_for(trainable)
    for key in ("batch_size", "crop", "lr"):
        if options[key] is not None and key in recipe:
            recipe[key] = options[key]
    dm = RadarDataModule(
        options["data"],
        trainable.data_task(recipe),
        crop=int(recipe["crop"]),
        batch_size=int(recipe["batch_size"]),
        seed=int(options["seed"]),
        val_windows=int(recipe.get("val_windows", 4)),
        var=options["var"],
        num_workers=num_workers,
    )
    out.mkdir(parents=True, exist_ok=True)
    try:
        options_of_trainer = _trainer_options(
            out,
            trainable,
            recipe,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            precision=precision,
            max_steps=max_steps,
            max_time=max_time,
            checkpoint_every=checkpoint_every,
            progress=progress,
        )
        trainer = L.Trainer(**options_of_trainer)
    except MisconfigurationException as err:  # e.g. --accelerator gpu on a machine without one
        raise TrainingError(f"Lightning cannot run this: {err}") from None
    previous = json.loads((resume / RUN_FILE).read_text()) if resume is not None else {}
    data_record = options["data"] if isinstance(options["data"], str | list) else None
    if trainer.is_global_zero:
        record = {"options": {**options, "data": data_record}, "recipe": recipe}
        (out / RUN_FILE).write_text(json.dumps({**previous, **record}, indent=1, default=str))
    module = _module(trainable, recipe, options)
    ckpt = None if resume is None else resume / "checkpoints" / LAST
    start_step = 0
    if ckpt is not None:
        start_step = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    trainer.save_checkpoint(out / "checkpoints" / LAST, weights_only=False)
    wall = time.perf_counter() - started
    in_sync = _replicas_in_sync(trainer, trainable.model)
    if not trainer.is_global_zero:
        return None

    on_gpu = trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    final, scores = _heldout(trainable, dm, recipe, int(options["seed"]), device)
    resumed = [*previous.get("training", {}).get("resumed_at", [])]
    if resume is not None:
        resumed.append(start_step)
    training = {
        "trainer": "xnowcast.training.lightning (PyTorch Lightning)",
        "model": trainable.name,
        "config": trainable.config_name,
        "task": trainable.task,
        "family": trainable.family,
        "data": dm.describe(),
        "steps": int(trainer.global_step),
        "world_size": int(trainer.world_size),
        "replicas_in_sync": in_sync,
        "precision": precision,
        "seed": int(options["seed"]),
        "batch_size_per_device": int(recipe["batch_size"]),
        "global_batch_size": int(recipe["batch_size"]) * int(trainer.world_size),
        "crop": int(recipe["crop"]),
        "recipe": recipe,
        "accelerator": trainer.accelerator.__class__.__name__,
        "strategy": trainer.strategy.__class__.__name__,
        "max_time": None if max_time is None else str(max_time),
        "stopped_by": "max_steps"
        if max_steps is not None and trainer.global_step >= max_steps
        else "max_time",
        "resumed_at": resumed,
        "wall_time_s": round(float(previous.get("training", {}).get("wall_time_s", 0)) + wall, 1),
        "heldout_scores": scores,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "machine": platform.machine(),
    }
    if trainable.task == "downscale":  # the coarse inputs trained on (see xnowcast.downscaling)
        seen = training["data"]["train"]
        factors = int(trainable.model.factor), int(trainable.model.time_factor)
        training["time_steps_minutes"] = [m * factors[1] for m in seen["time_step_minutes"]]
        training["grid_spacing_m"] = [d * factors[0] for d in seen["grid_spacing"]]
    weights = out / f"{trainable.name}-{trainable.config_name}.safetensors"
    sha = export_weights(trainable, final.cpu(), weights, training, scores)
    saved = json.loads((out / RUN_FILE).read_text())
    saved["training"] = {k: training[k] for k in ("steps", "resumed_at", "wall_time_s")}
    saved["weights"] = {"path": weights.name, "sha256": sha}
    (out / RUN_FILE).write_text(json.dumps(saved, indent=1, default=str))
    return weights

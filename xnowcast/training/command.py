"""``xnowcast.train``: one call (and one command) trains any trainable model with Lightning.

This module imports neither torch nor lightning; :func:`train` loads
:mod:`xnowcast.training.lightning.run` when called.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xnowcast.errors import TrainingError

__all__ = ["parse_max_time", "reexport", "train"]

ACCELERATORS = ("cpu", "gpu", "auto")
STRATEGIES = ("auto", "ddp")
PRECISIONS = ("32", "bf16-mixed")


def parse_max_time(value: str | dt.timedelta | None) -> dt.timedelta | None:
    """``"HH:MM:SS"`` (or ``"MM:SS"``, or seconds) as a timedelta; None stays None."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    parts = str(value).strip().split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if not numbers or len(numbers) > 3 or any(n < 0 for n in numbers):
        raise TrainingError(f"--max-time must look like HH:MM:SS (e.g. 01:30:00), not {value!r}")
    seconds = 0.0
    for n in numbers:
        seconds = seconds * 60 + n
    return dt.timedelta(seconds=seconds)


def train(
    model: str | None = None,
    *,
    data: str | Sequence[str] | Any | None = None,
    out: str | os.PathLike[str] | None = None,
    config: str | None = None,
    max_steps: int | None = None,
    max_time: str | dt.timedelta | None = None,
    devices: int = 1,
    accelerator: str = "auto",
    strategy: str = "auto",
    precision: str = "32",
    batch_size: int | None = None,
    crop: int | None = None,
    resume: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    lr: float | None = None,
    factor: int | None = None,
    time_factor: int | None = None,
    checkpoint_every: int = 100,
    num_workers: int = 0,
    var: str | None = None,
    progress: bool = True,
) -> Path | None:
    """Train a registered model on radar data with PyTorch Lightning; write its weights.

    Parameters
    ----------
    model
        A registered model with trainable parameters (``zsm``, ``fczsm``, ``unet``,
        ``unet3d``, ``dgmr``, ``convlstm``, the ``atmodist`` encoder; see
        :func:`xnowcast.list_models`).  Optional with ``resume``.
    data
        Training data: radar file glob, NetCDF file(s), zarr store (local or fsspec
        URL), registered dataset name, several of them (a list or comma-separated),
        or an in-memory DataArray/Dataset.  RMI 2021-07-04 is never trained on.
    out
        Run folder: ``run.json``, ``checkpoints/``, ``logs/`` and the weights
        ``<model>-<config>.safetensors`` (default: the ``resume`` folder).
    config
        Model config (``tiny`` for every trainable model; default: the model's default).
    max_steps, max_time
        Stop after this many training steps in total (counting resumed ones) or this
        much time in this call (``"HH:MM:SS"``); at least one is needed.
    devices, accelerator, strategy
        Data-parallel training: ``devices`` processes on ``cpu`` (gloo) or ``gpu``
        (NCCL); ``strategy="ddp"`` (also chosen by ``"auto"`` when ``devices > 1``).
        Several devices need a script or the ``xnowcast train`` command: Lightning
        launches the other ranks by running the same command again.
    precision
        ``"32"`` or ``"bf16-mixed"`` (bfloat16 autocast; GPUs since Ampere, CPUs with
        AVX512-BF16/AMX).
    batch_size, crop
        Windows per batch and device, window side in pixels of the data (defaults:
        the model family's recipe; smaller for ``tiny``).
    resume
        A run folder to continue from (its last checkpoint, its recorded options).
    seed
        Seeds the weights, every window drawn, augmentation and latents (default 0).
    lr
        Learning rate (supervised and representation families).
    factor, time_factor
        Refinement of a downscaling model (default 2 and 2).
    checkpoint_every
        Steps between checkpoints (a last one is always written).
    num_workers
        Data-loader processes per device.
    var
        Variable of a Dataset to train on.
    progress
        Show progress bars.

    Returns
    -------
    pathlib.Path or None
        The weights file (None on the ranks > 0 of a data-parallel run).
    """
    if accelerator not in ACCELERATORS:
        raise TrainingError(f"accelerator must be one of {ACCELERATORS}, not {accelerator!r}")
    if strategy not in STRATEGIES:
        raise TrainingError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    precision = {"bf16": "bf16-mixed", "32-true": "32", "fp32": "32"}.get(precision, precision)
    if precision not in PRECISIONS:
        raise TrainingError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if int(devices) < 1:
        raise TrainingError(f"devices must be at least 1, not {devices}")
    if out is None and resume is None:
        raise TrainingError("give --out DIR (where the run is written) or --resume DIR")
    max_time = parse_max_time(max_time)
    from xnowcast.training.lightning.run import fit

    return fit(
        model=model,
        data=data,
        out=Path(out if out is not None else resume),  # type: ignore[arg-type]
        config=config,
        max_steps=max_steps,
        max_time=max_time,
        devices=int(devices),
        accelerator=accelerator,
        strategy=strategy,
        precision=precision,
        batch_size=batch_size,
        crop=crop,
        resume=None if resume is None else Path(resume),
        seed=seed,
        lr=lr,
        factor=factor,
        time_factor=time_factor,
        checkpoint_every=int(checkpoint_every),
        num_workers=int(num_workers),
        var=var,
        progress=progress,
    )


def reexport(
    model: str | None,
    weights: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    data: str | Sequence[str] | Any | None = None,
    factor: int | None = None,
    time_factor: int | None = None,
    seed: int | None = None,
    accelerator: str = "cpu",
    var: str | None = None,
) -> Any:
    """Re-export weights of an older trainer through the Lightning path (no training).

    ``xnowcast train MODEL --reexport WEIGHTS [--data D] --out FILE_OR_DIR``: the same
    tensors, scored on the held-out event's windows as a Lightning run scores them, written
    with the metadata of a Lightning-trained file; the original training record is
    kept.  See :mod:`xnowcast.training.lightning.reexport`.

    Parameters
    ----------
    model
        The registered model the weights belong to (``"TASK/NAME"`` for a name both
        tasks use).
    weights
        The weights file to re-export.
    out
        File or folder to write (default: ``weights`` itself, replaced after the checks).
    data
        Data holding the held-out event, RMI 2021-07-04 (default: the dataset
        ``rmi-20210704``).
    factor, time_factor
        Refinement a downscaler is scored at (default: its stored config's, else 2).
    seed
        Seed of ensemble members' latents (default 0).
    accelerator
        ``"cpu"``, ``"gpu"`` or ``"auto"``.
    var
        Variable of a Dataset.

    Returns
    -------
    xnowcast.training.lightning.reexport.Reexport
    """
    if model is None:
        raise TrainingError(
            "name the model of the weights (e.g. `xnowcast train zsm --reexport W`)"
        )
    if accelerator not in ACCELERATORS:
        raise TrainingError(f"accelerator must be one of {ACCELERATORS}, not {accelerator!r}")
    from xnowcast.training.lightning.reexport import reexport as run

    return run(
        model,
        weights,
        weights if out is None else out,
        data="rmi-20210704" if data is None else data,
        factor=factor,
        time_factor=time_factor,
        seed=0 if seed is None else int(seed),
        accelerator=accelerator,
        var=var,
    )

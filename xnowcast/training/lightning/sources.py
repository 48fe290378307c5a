"""Training data from any xarray source, opened lazily, and the held-out split.

A source is one of

* a **registered dataset** name (:func:`xnowcast.list_datasets`, e.g. ``"mch-20150515"``);
* a **zarr** store: a local ``*.zarr`` folder or an fsspec URL (``s3://bucket/radar.zarr``,
  ``gs://...``, ``https://...``, ``memory://...``);
* **NetCDF** files: a path or glob of ``*.nc`` / ``*.nc4`` / ``*.h5netcdf`` files;
* **radar files** in any format :func:`xnowcast.open_radar` reads: a path, folder or glob.

Several sources may be given at once (a list, or a comma-separated string): each
becomes one *stream* of frames.  The values stay dask arrays: only the block sums
of the importance sampler and the windows drawn for training are ever read.

Nothing here imports torch.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from xnowcast.errors import DataValueError

__all__ = [
    "HOLDOUT_DATES",
    "Stream",
    "heldout_streams",
    "open_source",
    "open_sources",
    "split_holdout",
]

#: Days never trained on: RMI 2021-07-04 is the project's held-out validation event.
HOLDOUT_DATES: tuple[str, ...] = ("2021-07-04",)

_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5netcdf")


@dataclass
class Stream:
    """One source of training frames: a lazy ``(time, y, x)`` DataArray in mm/h and its name."""

    name: str
    data: xr.DataArray


def _is_url(source: str) -> bool:
    return "://" in source


def _open_zarr(source: str) -> xr.Dataset:
    try:
        with warnings.catch_warnings():  # stores without consolidated metadata are fine
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
            return xr.open_zarr(source, consolidated=None)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise DataValueError(f"could not open the zarr store {source!r}: {err}") from None


def _open_any(source: str) -> xr.Dataset:
    """A lazy Dataset from one source string (see the module docstring)."""
    from xnowcast.datasets import _names, open_dataset

    if source in _names():
        return open_dataset(source, chunks={})
    stripped = source.rstrip("/")
    if stripped.endswith(".zarr") or _is_url(source):
        return _open_zarr(stripped)
    folder = Path(source)
    if folder.is_dir() and any((folder / f).exists() for f in (".zgroup", "zarr.json")):
        return _open_zarr(source)
    files = sorted(glob.glob(os.path.expanduser(source))) if glob.has_magic(source) else [source]
    if not files or not all(Path(f).exists() for f in files):
        raise DataValueError(
            f"training data {source!r} is neither a registered dataset "
            f"({', '.join(_names())}), a zarr store, nor existing files: check the path or glob"
        )
    if all(f.lower().endswith(_NETCDF_SUFFIXES) for f in files):
        if len(files) == 1:
            return xr.open_dataset(files[0], chunks={})
        return xr.open_mfdataset(files, combine="by_coords", chunks={})
    from xnowcast.io import open_radar

    return open_radar(source, chunks={})


def open_source(source: str | xr.DataArray | xr.Dataset, var: str | None = None) -> Stream:
    """One training stream: ``source`` opened lazily as rain rate ``(time, y, x)`` in mm/h.

    Parameters
    ----------
    source
        A source string (see the module docstring), or a DataArray / Dataset.
    var
        The variable of a Dataset to train on (default: ``precipitation``, else
        ``reflectivity``, else the only 3-D variable).

    Raises
    ------
    DataValueError
        When the source cannot be found or opened, or has no usable variable.
    """
    from xnowcast.training.data import as_rain_rate

    name = source if isinstance(source, str) else str(source.attrs.get("source", "data"))
    obj = _open_any(source) if isinstance(source, str) else source
    if isinstance(obj, xr.Dataset) and var is not None:
        if var not in obj.data_vars:
            raise DataValueError(f"{name!r} has no variable {var!r}; it has {list(obj.data_vars)}")
        obj = obj[var]
    da = as_rain_rate(obj)
    if not np.issubdtype(da["time"].dtype, np.datetime64):
        raise DataValueError(f"the time coordinate of {name!r} must hold datetimes")
    return Stream(name, da.sortby("time"))


def open_sources(
    sources: str | xr.DataArray | xr.Dataset | Sequence[str | xr.DataArray | xr.Dataset],
    var: str | None = None,
) -> list[Stream]:
    """Every source of a list (or of a comma-separated string) as a :class:`Stream`."""
    if isinstance(sources, str):
        items: list = [s.strip() for s in sources.split(",") if s.strip()]
    elif isinstance(sources, xr.DataArray | xr.Dataset):
        items = [sources]
    else:
        items = list(sources)
    if not items:
        raise DataValueError("no training data given: pass --data PATH_OR_GLOB_OR_NAME")
    return [open_source(s, var) for s in items]


def _on_dates(times: np.ndarray, dates: Sequence[str]) -> np.ndarray:
    days = times.astype("datetime64[D]")
    return np.isin(days, np.array(list(dates), dtype="datetime64[D]"))


def heldout_streams(
    streams: Sequence[Stream], holdout_dates: Sequence[str] = HOLDOUT_DATES
) -> list[Stream]:
    """Only the frames on ``holdout_dates``: to score trained weights (nothing is trained).

    Raises
    ------
    DataValueError
        When no stream holds a frame on those days.
    """
    out = []
    for s in streams:
        held = _on_dates(s.data["time"].values, holdout_dates)
        if held.any():
            out.append(Stream(s.name, s.data.isel(time=np.nonzero(held)[0])))
    if not out:
        names = ", ".join(s.name for s in streams)
        raise DataValueError(
            f"the data ({names}) hold no frame on the held-out day(s) {', '.join(holdout_dates)}: "
            "give the held-out event (e.g. --data rmi-20210704 or its radar files)"
        )
    return out


def split_holdout(
    streams: Sequence[Stream],
    holdout_dates: Sequence[str] = HOLDOUT_DATES,
    val_fraction: float = 0.1,
    min_frames: int = 1,
) -> tuple[list[Stream], list[Stream], str]:
    """Training and validation streams: held-out days never reach training.

    Frames on ``holdout_dates`` (UTC days; RMI 2021-07-04 by default) go to
    validation.  When the data hold none of them, the last ``val_fraction`` of
    each stream's frames (at least ``min_frames``, when the stream has twice as
    many) is held out instead; ``val_fraction=0`` holds nothing out.

    Returns
    -------
    train, validation, how
        The streams and a sentence saying how the split was made.
    """
    train: list[Stream] = []
    val: list[Stream] = []
    by_date = any(_on_dates(s.data["time"].values, holdout_dates).any() for s in streams)
    for s in streams:
        times = s.data["time"].values
        if by_date:
            held = _on_dates(times, holdout_dates)
        else:
            n = len(times)
            k = max(round(n * val_fraction), min_frames) if val_fraction > 0 else 0
            held = np.zeros(n, dtype=bool)
            if k and n >= 2 * k:
                held[n - k :] = True
        if (~held).any():
            train.append(Stream(s.name, s.data.isel(time=np.nonzero(~held)[0])))
        if held.any():
            val.append(Stream(s.name, s.data.isel(time=np.nonzero(held)[0])))
    if not train:
        raise DataValueError(
            f"every frame of the data is on a held-out day ({', '.join(holdout_dates)}): "
            "that event is for validation only; train on other data"
        )
    if by_date:
        how = f"frames on {', '.join(holdout_dates)} held out (never trained on)"
    elif val:
        how = f"the last {val_fraction:.0%} of each stream's frames held out"
    else:
        how = "nothing held out"
    return train, val, how

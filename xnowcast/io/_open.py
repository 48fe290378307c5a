"""``open_radar``: file paths or a glob -> one CF Dataset, with format detection."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import xarray as xr

from xnowcast.errors import RadarFormatError
from xnowcast.io import _cf, fmi, knmi, mch, odim

__all__ = ["FORMATS", "detect_format", "open_radar"]

#: Format name -> reader module (``sniff``, ``read_header``, ``read_data``).
FORMATS: dict[str, ModuleType] = {
    "odim_hdf5": odim,
    "knmi_hdf5": knmi,
    "fmi_pgm": fmi,
    "mch_gif": mch,
}
_ALIASES = {
    "odim": "odim_hdf5",
    "rmi": "odim_hdf5",
    "knmi": "knmi_hdf5",
    "fmi": "fmi_pgm",
    "pgm": "fmi_pgm",
    "mch": "mch_gif",
    "gif": "mch_gif",
}


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the radar format of one file, found from its content.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    str
        One of ``"odim_hdf5"``, ``"knmi_hdf5"``, ``"fmi_pgm"``, ``"mch_gif"``.

    Raises
    ------
    RadarFormatError
        When the content matches none of them.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    for name, module in FORMATS.items():
        if module.sniff(path, head):
            return name
    raise RadarFormatError(
        f"{path}: not a radar file xnowcast can read (formats: {', '.join(FORMATS)}); "
        f"it starts with {head[:8]!r}"
    )


def _expand(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        text = os.fspath(paths)
        if glob.has_magic(text):
            found = sorted(glob.glob(text))
            if not found:
                raise FileNotFoundError(f"no radar files match the pattern {text!r}")
            return [Path(p) for p in found]
        path = Path(text)
        if path.is_dir():
            found_paths = sorted(p for p in path.iterdir() if p.is_file() and p.name[0] != ".")
            if not found_paths:
                raise FileNotFoundError(f"the folder {path} holds no files")
            return found_paths
        if not path.exists():
            raise FileNotFoundError(f"no such radar file: {path}")
        return [path]
    out = [Path(os.fspath(p)) for p in paths]
    if not out:
        raise FileNotFoundError("open_radar got an empty list of files")
    for path in out:
        if not path.is_file():
            raise FileNotFoundError(f"no such radar file: {path}")
    return out


def _resolve_format(name: str) -> str:
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise RadarFormatError(
            f"unknown radar format {name!r}; use 'auto' or one of {sorted(FORMATS)} "
            f"(aliases {sorted(_ALIASES)})"
        )
    return key


def open_radar(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    format: str = "auto",
    *,
    chunks: Any = None,
) -> xr.Dataset:
    """Open a sequence of radar composite files as one CF-compliant Dataset.

    Parameters
    ----------
    paths : str, path-like or iterable of them
        Files, a glob pattern (``"radar/rmi/*.hdf"``) or a folder (all its files).
    format : str, default "auto"
        ``"auto"`` detects each file's format from its content; or one of
        ``"odim_hdf5"`` (RMI and other OPERA composites), ``"knmi_hdf5"``,
        ``"fmi_pgm"`` (plain or gzipped), ``"mch_gif"`` (aliases ``odim``,
        ``knmi``, ``fmi``, ``mch``).
    chunks : None, dict, int or "auto", optional
        ``None`` (default) decodes every file now.  Otherwise the data are a
        lazy dask array with one chunk per file (``chunks={}``), rechunked
        with ``chunks`` when it is not empty.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)`` sorted by time; ``x``/``y`` projection
        coordinates of cell centres in metres (``y`` in the files' row order,
        usually north to south); a scalar ``crs`` grid-mapping variable; the
        data variable ``precipitation`` (mm h-1, ``rainfall_rate``) or
        ``reflectivity`` (dBZ, ``equivalent_reflectivity_factor``), float32,
        NaN where the radar has no data.

    Raises
    ------
    FileNotFoundError
        When a file is missing or a pattern matches nothing.
    RadarFormatError
        When a file is not a radar format xnowcast reads, or the files
        disagree (format, variable or grid).
    TimeAxisError
        When two files have the same time stamp.
    """
    files = _expand(paths)
    if format == "auto":
        names = {path: detect_format(path) for path in files}
    else:
        name = _resolve_format(format)
        names = {path: name for path in files}
        head_checks = [p for p in files if not FORMATS[name].sniff(p, _head(p))]
        if head_checks:
            raise RadarFormatError(f"{head_checks[0]} is not a {name} file")
    infos = [FORMATS[names[path]].read_header(path) for path in files]
    module = FORMATS[infos[0].format]
    return _cf.assemble(infos, module.read_data, chunks=chunks)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(16)

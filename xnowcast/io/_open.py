"""``open_radar``: file paths or a glob -> one CF Dataset, with format detection."""

from __future__ import annotations

import contextlib
import glob
import gzip
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import xarray as xr

from xnowcast.errors import RadarFormatError
from xnowcast.io import _cf, bom, fmi, geotiff, knmi, mch, mrms, odim
from xnowcast.io._hdf5 import HDF5_SIGNATURE
from xnowcast.io._hdf5 import LOCK as HDF5_LOCK
from xnowcast.io._lazy import guarded
from xnowcast.io.protocol import ALIASES, FORMATS, load_entry_points, register_reader

__all__ = ["FORMATS", "detect_format", "open_radar"]

for _reader, _aliases in (
    (odim, ("odim", "rmi", "opera")),
    (knmi, ("knmi",)),
    (bom, ("bom", "rainfields", "rf3")),
    (fmi, ("fmi", "pgm")),
    (geotiff, ("geotiff", "tiff", "fmi_tiff")),
    (mch, ("mch", "gif")),
    (mrms, ("mrms", "grib", "grib2")),
):
    register_reader(_reader, aliases=_aliases)


_GZIP_MAGIC = b"\x1f\x8b"


class _NotRadar(RadarFormatError):
    """A file of no format xnowcast reads (as opposed to a damaged radar file)."""


def _damaged(path: Path, head: bytes) -> str | None:
    """Why a file that looks like a container format cannot be opened, or None."""
    if head.startswith(HDF5_SIGNATURE):
        import h5py

        try:
            with HDF5_LOCK, h5py.File(path, "r"):
                return None
        except OSError as err:
            return f"an HDF5 file that HDF5 cannot open ({err})"
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except (OSError, EOFError) as err:
            return f"a gzip file that cannot be decompressed ({err})"
    return None


def _sniff(module: Any, path: Path, head: bytes) -> bool:
    with getattr(module, "LOCK", None) or contextlib.nullcontext():
        return bool(guarded(str(path), "check its format", lambda: module.sniff(path, head)))


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the radar format of one file, found from its content.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    str
        One of ``"odim_hdf5"``, ``"knmi_hdf5"``, ``"bom_netcdf"``,
        ``"fmi_pgm"``, ``"fmi_geotiff"``, ``"mch_gif"``, ``"mrms_grib2"``, or a
        format registered by a plug-in (:mod:`xnowcast.io.protocol`).

    Raises
    ------
    RadarFormatError
        When the content matches none of them, or the file is a damaged
        (truncated, corrupt) container that may have been a radar file.
    """
    load_entry_points()
    path = Path(path)
    head = _head(path)
    for name, module in FORMATS.items():
        if _sniff(module, path, head):
            return name
    reason = _damaged(path, head)
    if reason:
        raise RadarFormatError(
            f"{path}: {reason}; the file is corrupt or truncated: download it again, "
            "or leave it out of the files you open"
        )
    raise _NotRadar(
        f"{path}: not a radar file xnowcast can read (formats: {', '.join(FORMATS)}); "
        f"it starts with {head[:8]!r}"
    )


def _expand(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> tuple[list[Path], bool]:
    """The files, and whether they were found by a pattern or in a folder (not named)."""
    if isinstance(paths, str | os.PathLike):
        text = os.fspath(paths)
        if glob.has_magic(text):
            found = sorted(p for p in glob.glob(text) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"no radar files match the pattern {text!r}")
            return [Path(p) for p in found], True
        path = Path(text)
        if path.is_dir():
            found_paths = sorted(p for p in path.iterdir() if p.is_file() and p.name[0] != ".")
            if not found_paths:
                raise FileNotFoundError(f"the folder {path} holds no files")
            return found_paths, True
        if not path.exists():
            raise FileNotFoundError(f"no such radar file: {path}")
        return [path], False
    out = [Path(os.fspath(p)) for p in paths]
    if not out:
        raise FileNotFoundError("open_radar got an empty list of files")
    for path in out:
        if not path.is_file():
            raise FileNotFoundError(f"no such radar file: {path}")
    return out, False


def _detect_all(files: list[Path], searched: bool) -> list[tuple[Path, str]]:
    """(file, format) pairs; files found by a pattern that are not radar files are skipped."""
    names: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    for path in files:
        try:
            names.append((path, detect_format(path)))
        except _NotRadar:
            if not searched:
                raise
            skipped.append(path)
    if skipped:
        if not names:
            raise RadarFormatError(
                f"none of the {len(files)} files found is a radar file xnowcast can read "
                f"(formats: {', '.join(FORMATS)}), e.g. {skipped[0]}"
            )
        shown = ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"open_radar skipped {len(skipped)} file(s) that are not radar files: {shown} "
            f"(in {skipped[0].parent})",
            UserWarning,
            stacklevel=3,
        )
    return names


def _resolve_format(name: str) -> str:
    load_entry_points()
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise RadarFormatError(
            f"unknown radar format {name!r}; use 'auto' or one of {sorted(FORMATS)} "
            f"(aliases {sorted(ALIASES)})"
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
        Files, a glob pattern (``"radar/rmi/*.hdf"``) or a folder (all its
        files).  Files found by a pattern or in a folder that are not radar
        files (a ``README.txt``) are skipped with a warning naming them; a
        named file that is not a radar file is an error.
    format : str, default "auto"
        ``"auto"`` detects each file's format from its content; or one of
        ``"odim_hdf5"`` (OPERA, RMI and other ODIM composites),
        ``"knmi_hdf5"``, ``"bom_netcdf"`` (Rainfields 3), ``"fmi_pgm"`` (plain
        or gzipped), ``"fmi_geotiff"``, ``"mch_gif"``, ``"mrms_grib2"``
        (aliases ``odim``, ``opera``, ``knmi``, ``bom``, ``fmi``,
        ``geotiff``, ``mch``, ``mrms``, ``grib2``), or a plug-in's format
        (:mod:`xnowcast.io.protocol`).
    chunks : None, dict, int or "auto", optional
        ``None`` (default) decodes every file now.  Otherwise the data are a
        lazy dask array with one file per time chunk: ``{}`` whole frames;
        ``"auto"`` the files' own storage chunks in space (HDF5 chunks, TIFF
        tiles) where the reader reads windows; ``{"y": 512, "x": 512}``
        spatial chunks of that size (each reads only its window where the
        format allows: ODIM, BOM, GeoTIFF); a ``"time"`` entry or an int then
        merges files into time chunks of that length.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)`` sorted by time; ``x``/``y`` projection
        coordinates of cell centres in metres (longitude/latitude in degrees
        for latitude-longitude grids such as MRMS; ``y`` in the files' row
        order, usually north to south); a scalar ``crs`` grid-mapping variable
        with CF attributes and its WKT (``crs_wkt``); the data variable
        ``precipitation`` (mm h-1, ``rainfall_rate``; accumulations become the
        mean rate over their interval) or ``reflectivity`` (dBZ,
        ``equivalent_reflectivity_factor``), float32, NaN where the radar has
        no data; a ``quality`` variable where the files carry one.

    Raises
    ------
    FileNotFoundError
        When a file is missing or a pattern matches nothing.
    RadarFormatError
        When a named file is not a radar format xnowcast reads, a file is
        truncated or corrupt (the message names it; with lazy data, when the
        values are computed), or the files disagree (format, variable, grid).
    TimeAxisError
        When two files have the same time stamp.
    """
    load_entry_points()
    files, searched = _expand(paths)
    if format == "auto":
        pairs = _detect_all(files, searched)
    else:
        name = _resolve_format(format)
        pairs = [(path, name) for path in files]
        for path in files:
            if not _sniff(FORMATS[name], path, _head(path)):
                reason = _damaged(path, _head(path))
                raise RadarFormatError(
                    f"{path} is not a {name} file" + (f": {reason}" if reason else "")
                )
    infos = []
    for path, name in pairs:
        with getattr(FORMATS[name], "LOCK", None) or contextlib.nullcontext():
            infos.append(
                guarded(
                    str(path), "read its metadata", lambda p=path, n=name: FORMATS[n].read_header(p)
                )
            )
    module = FORMATS[pairs[0][1]]
    return _cf.assemble(
        infos,
        module.read_data,
        chunks=chunks,
        read_window=getattr(module, "read_window", None),
        read_extra=getattr(module, "read_extra", None),
        lock=getattr(module, "LOCK", None),
    )


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(16)

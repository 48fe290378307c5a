"""The reader protocol: how a radar format plugs into :func:`xnowcast.io.open_radar`.

A reader is any object (usually a module) with these members:

``FORMAT`` : str
    The format's name, e.g. ``"odim_hdf5"``.
``sniff(path, head) -> bool``
    True when the file is of this format.  ``head`` holds the file's first 16
    bytes; open the file only when they match (magic numbers first).  Return
    False for other formats, never raise for them.
``read_header(path) -> FrameInfo``
    The file's time stamp, :class:`~xnowcast.io.Grid`, variable name and
    attributes, read from its metadata without decoding its values.  The
    variable is ``"precipitation"`` (mm h-1, a rain rate; accumulations are
    divided by their duration and say so in ``cell_methods``) or
    ``"reflectivity"`` (dBZ).  Time stamps are UTC, at the end of an
    accumulation.
``read_data(info) -> numpy.ndarray``
    The decoded frame ``(ny, nx)`` in the variable's units, NaN where the
    radar has no data (never 0), rows in the order of ``info.grid.y``.

and, optionally:

``read_window(info, rows, cols) -> numpy.ndarray``
    A window (two ``slice`` objects with explicit start and stop) decoded
    without reading the rest of the file: lazy opens then get spatial chunks
    that read only their part (HDF5 chunks, TIFF tiles, netCDF slices).
``read_extra(info, name, rows, cols) -> numpy.ndarray``
    The window of a further variable listed in ``info.extras`` (a quality
    field...), which then joins the Dataset with the attributes given there.
``LOCK``
    A lock held around every call into the reader, for libraries that are not
    thread-safe (the HDF5-based readers share xarray's ``HDF5_LOCK``).

``info.storage_chunks`` proposes the spatial chunks of ``chunks="auto"``.

Errors a reader raises on purpose are :class:`~xnowcast.errors.RadarFormatError`
naming the file; other low-level errors (``OSError``, ``EOFError``, ``KeyError``,
...) are turned into one naming the file by ``open_radar``.

**Registering a reader.** In a session: :func:`register_reader`.  From an
installed package: an entry point in the group ``xnowcast.readers`` whose
object is the reader, e.g. in the package's ``pyproject.toml``::

    [project.entry-points."xnowcast.readers"]
    my_format = "my_package.my_reader"

Entry points are loaded the first time ``open_radar`` or ``detect_format``
runs; a reader that fails to load is skipped with a warning.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid

__all__ = [
    "ENTRY_POINT_GROUP",
    "FrameInfo",
    "Grid",
    "RadarReader",
    "load_entry_points",
    "register_reader",
]

#: The entry-point group scanned for third-party readers.
ENTRY_POINT_GROUP = "xnowcast.readers"


@runtime_checkable
class RadarReader(Protocol):
    """What :func:`xnowcast.io.open_radar` needs of a reader (see the module docs)."""

    FORMAT: str

    def sniff(self, path: Path, head: bytes) -> bool:
        """True when ``path`` (first bytes ``head``) is of this format."""

    def read_header(self, path: Path) -> FrameInfo:
        """Time, grid and variable of one file, from its metadata."""

    def read_data(self, info: FrameInfo) -> np.ndarray:
        """The decoded frame (float32, NaN where missing)."""


#: Format name -> reader; filled by :mod:`xnowcast.io._open` with the built-in readers.
FORMATS: dict[str, Any] = {}
#: Short names users may pass as ``format=``.
ALIASES: dict[str, str] = {}
_loaded_entry_points = False


def register_reader(reader: Any, *, aliases: tuple[str, ...] = (), replace: bool = False) -> None:
    """Make ``reader`` known to :func:`~xnowcast.io.open_radar` and ``detect_format``.

    Parameters
    ----------
    reader : module or object
        With ``FORMAT``, ``sniff``, ``read_header``, ``read_data`` (and
        optionally ``read_window``, ``read_extra``).
    aliases : tuple of str
        Short names for ``format=``.
    replace : bool
        Replace a reader registered under the same ``FORMAT``.

    Raises
    ------
    RadarFormatError
        When the reader lacks a required member, or its name is taken.
    """
    missing = [
        name
        for name in ("FORMAT", "sniff", "read_header", "read_data")
        if not hasattr(reader, name)
    ]
    if missing:
        raise RadarFormatError(
            f"{reader!r} is not a radar reader: it lacks {', '.join(missing)} "
            "(see xnowcast.io.protocol)"
        )
    name = str(reader.FORMAT)
    if name in FORMATS and FORMATS[name] is not reader and not replace:
        raise RadarFormatError(
            f"a reader for the format {name!r} is already registered; pass replace=True"
        )
    FORMATS[name] = reader
    for alias in aliases:
        ALIASES[alias.lower()] = name


def load_entry_points() -> None:
    """Register the readers of the ``xnowcast.readers`` entry points (once)."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_reader(entry.load(), aliases=(entry.name,))
        except Exception as err:  # a broken plug-in must not break the built-in readers
            warnings.warn(
                f"xnowcast reader entry point {entry.name!r} ({entry.value}) was skipped: {err}",
                RuntimeWarning,
                stacklevel=2,
            )

"""Frames of many files as one (time, y, x) array, read eagerly or lazily through dask.

:class:`FrameStack` is an array-like of shape ``(files, ny, nx)`` whose
``__getitem__`` opens only the files and the windows it is asked for, so
``dask.array.from_array`` turns it into a lazy array with one file per time
chunk and spatial chunks that read only their window (when the reader has a
``read_window``; otherwise each file is decoded once and split).  Decoding
errors name the file (:func:`guarded`).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xnowcast.errors import RadarFormatError, XnowcastError

__all__ = ["FrameStack", "guarded", "lazy_array", "spatial_chunks"]

#: Reads one window of one file: ``read(info, rows, cols) -> float32 array``.
WindowReader = Callable[[Any, slice, slice], np.ndarray]


def guarded(path: str, what: str, call: Callable[[], Any]) -> Any:
    """Run ``call``; a low-level decoding error becomes a RadarFormatError naming ``path``."""
    try:
        return call()
    except (XnowcastError, MemoryError, FileNotFoundError):
        raise
    except (OSError, EOFError, KeyError, IndexError, zlib.error, ValueError, RuntimeError) as err:
        raise RadarFormatError(
            f"{path}: cannot {what} ({type(err).__name__}: {err}); the file is corrupt or "
            "truncated: download it again, or leave it out of the files you open"
        ) from err


class FrameStack:
    """A ``(len(infos), ny, nx)`` float32 array-like that decodes on indexing.

    Parameters
    ----------
    infos : sequence of FrameInfo
        One per file, in time order.
    read : callable
        ``read(info, rows, cols)``: the window of one file (float32, NaN missing).
    shape : (int, int)
        ``(ny, nx)`` of every frame.
    lock : lock, optional
        Held while a file is read (the reader's ``LOCK``: HDF5 is not thread-safe).
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(
        self,
        infos: Sequence[Any],
        read: WindowReader,
        shape: tuple[int, int],
        lock: Any = None,
    ) -> None:
        self.infos = list(infos)
        self.read = read
        self.shape = (len(self.infos), *shape)
        self.lock = lock

    def __len__(self) -> int:
        return self.shape[0]

    def frame(self, index: int, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """One window of one file, checked against the shape the metadata promised."""
        info = self.infos[index]
        rows = slice(*rows.indices(self.shape[1]))
        cols = slice(*cols.indices(self.shape[2]))
        with self.lock or contextlib.nullcontext():
            values = guarded(info.path, "decode its values", lambda: self.read(info, rows, cols))
        expected = (rows.stop - rows.start, cols.stop - cols.start)
        if values.shape != expected:
            raise RadarFormatError(
                f"{info.path}: decoded array has shape {values.shape}, its metadata says {expected}"
            )
        return values.astype(np.float32, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        times, rows, cols = key
        if isinstance(times, int | np.integer):
            return self.frame(int(times), *_as_slices(rows, cols))
        indices = range(len(self))[times]
        srows, scols = _as_slices(rows, cols)
        ny = len(range(*srows.indices(self.shape[1])))
        nx = len(range(*scols.indices(self.shape[2])))
        out = np.empty((len(indices), ny, nx), np.float32)
        for n, index in enumerate(indices):
            out[n] = self.frame(index, srows, scols)
        return out


def _as_slices(rows: Any, cols: Any) -> tuple[slice, slice]:
    if not (isinstance(rows, slice) and isinstance(cols, slice)):
        raise TypeError("FrameStack takes slices in y and x")
    if rows.step not in (None, 1) or cols.step not in (None, 1):
        raise TypeError("FrameStack takes contiguous slices in y and x")
    return rows, cols


def spatial_chunks(
    chunks: Any, shape: tuple[int, int], storage: tuple[int, int] | None, windows: bool
) -> tuple[int, int]:
    """Spatial chunk sizes ``(rows, cols)`` that ``open_radar(chunks=...)`` asks for.

    ``{}`` (and readers that cannot read windows, unless sizes are given) mean
    whole frames; ``"auto"`` the file's storage chunks when the reader reads
    windows; a dict's ``y``/``x`` entries (``-1`` = whole axis) their sizes.
    """
    ny, nx = shape
    if isinstance(chunks, dict):
        rows, cols = chunks.get("y", -1), chunks.get("x", -1)
        rows = ny if rows in (-1, None) else int(rows)
        cols = nx if cols in (-1, None) else int(cols)
        return max(1, min(rows, ny)), max(1, min(cols, nx))
    if chunks == "auto" and windows and storage is not None:
        return storage
    return ny, nx


def lazy_array(stack: FrameStack, chunks: tuple[int, int], name: str) -> Any:
    """A dask array over ``stack``: one file per time chunk, ``chunks`` in space."""
    import dask.array as dsa

    return dsa.from_array(
        stack,
        chunks=(1, *chunks),
        name=name,
        lock=False,
        asarray=True,
        fancy=False,
        meta=np.empty((0, 0, 0), np.float32),
    )

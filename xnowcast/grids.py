"""Grid geometry shared by downscaling and its training: refined cell centres and the
default static fields of FC-ZSM.  No torch here."""

from __future__ import annotations

import numpy as np

__all__ = ["STATIC_NAMES", "fine_centres", "known_fine_cells", "static_fields"]

#: Names (and order) of the static channels made by :func:`static_fields`.
STATIC_NAMES = ("coverage", "x", "y")


def _scaled(coord: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(coord)), float(np.max(coord))
    if hi == lo:
        return np.zeros_like(coord, dtype=np.float32)
    return (2 * (coord - lo) / (hi - lo) - 1).astype(np.float32)


def fine_centres(coarse_coord: np.ndarray, factor: int) -> np.ndarray:
    """Centres of the ``factor`` fine cells inside each coarse cell of a regular 1D axis."""
    coarse_coord = np.asarray(coarse_coord, dtype=np.float64)
    step = (coarse_coord[1] - coarse_coord[0]) if coarse_coord.size > 1 else 1.0
    sub = (np.arange(factor) + 0.5) / factor - 0.5
    return (coarse_coord[:, None] + sub[None, :] * step).ravel()


def static_fields(
    coarse: np.ndarray,
    factor: int,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
) -> np.ndarray:
    """The default static fields of FC-ZSM on the fine grid, from coarse data.

    Parameters
    ----------
    coarse
        ``(T, h, w)`` coarse data with NaN where missing (the whole input
        series, or a window of it).
    factor
        Spatial refinement.
    x, y
        Coarse cell-centre projection coordinates (1D, length ``w`` and ``h``);
        cell indices when None.

    Returns
    -------
    numpy.ndarray
        ``(3, h*f, w*f)`` float32 in the order of :data:`STATIC_NAMES`:
        coverage (1 where the coarse cell is observed in every frame, else 0),
        x and y of the fine cell centres scaled linearly to [-1, 1] over the
        domain (y follows the coordinate values, so north is +1 on a
        north-up grid).
    """
    _, h, w = coarse.shape
    coverage = np.isfinite(coarse).all(axis=0).astype(np.float32)
    coverage = coverage.repeat(factor, axis=0).repeat(factor, axis=1)
    x = np.arange(w, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    y = np.arange(h, dtype=np.float64) if y is None else np.asarray(y, dtype=np.float64)
    xs = _scaled(fine_centres(x, factor))
    ys = _scaled(fine_centres(y, factor))
    xx = np.broadcast_to(xs[None, :], coverage.shape)
    yy = np.broadcast_to(ys[:, None], coverage.shape)
    return np.stack([coverage, xx, yy]).astype(np.float32)


def known_fine_cells(valid: np.ndarray, factor: int, time_factor: int) -> np.ndarray:
    """Which refined cells are known, from which coarse cells were observed.

    ``valid`` is ``(T, h, w)`` bool; the result ``((T-1)*time_factor + 1, h*f, w*f)``
    is True where the coarse cell was observed at the output frame's time, or at
    both bracketing input times for an inserted frame.
    """
    frames = valid.shape[0]
    known = np.empty(((frames - 1) * time_factor + 1, *valid.shape[1:]), dtype=bool)
    for k in range(known.shape[0]):
        before, after = divmod(k, time_factor)
        known[k] = valid[before] & valid[before + 1] if after else valid[before]
    return known.repeat(factor, axis=-2).repeat(factor, axis=-1)

"""Lengths (``"4 km"``) as whole numbers of grid cells, for pooling scales and FSS windows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pint
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import CoordinateError, MetricError
from xnowcast.units import ureg

__all__ = ["LENGTH_RTOL", "grid_cells", "is_degrees", "metric_spacing"]

Length = int | str | pint.Quantity

#: How far from a whole number of cells a length may be (relative): 0.1 %, so that
#: "9 km" is 9 cells of FMI's 999.674 m grid.
LENGTH_RTOL = 1e-3


def metric_spacing(da: xr.DataArray, axes: cv.Axes) -> tuple[float, float] | None:
    """``(dy, dx)`` in metres, or None when unknown (no coordinates, or lat/lon)."""
    try:
        if is_degrees(da, axes):
            return None
        return cv.grid_spacing(da, axes)
    except (CoordinateError, KeyError):
        return None


def is_degrees(da: xr.DataArray, axes: cv.Axes) -> bool:
    """Whether the spatial coordinates are latitude/longitude."""
    for d in (axes.y, axes.x):
        units = str(da[d].attrs.get("units", "")) if d in da.coords else ""
        if "degree" in units or str(d).lower() in {"lat", "lon", "latitude", "longitude"}:
            return True
    return False


def grid_cells(value: Any, spacing: tuple[float, float] | None, what: str) -> int:
    """A length as a whole number of grid cells.

    ``value`` is a whole number of cells, or a length (a string such as
    ``"4 km"`` or a pint Quantity) that is a whole number of cells to within
    :data:`LENGTH_RTOL` (grids of 999.674 m take ``"9 km"`` as 9 cells).

    Raises
    ------
    MetricError
        For a length that is not a whole number of cells, cells below 1, a
        length on a grid whose spacing is unknown or not square.
    """
    if isinstance(value, (bool, np.bool_)):
        raise MetricError(f"A {what} is a number of grid cells or a length, not {value!r}.")
    if isinstance(value, (int, np.integer)) or (
        isinstance(value, (float, np.floating)) and float(value).is_integer()
    ):
        cells = int(value)
        if cells < 1:
            raise MetricError(f"A {what} must be at least 1 grid cell, got {value!r}.")
        return cells
    if isinstance(value, (float, np.floating)):
        raise MetricError(f"A {what} in grid cells must be a whole number, got {value!r}.")
    try:
        length = ureg.Quantity(value) if isinstance(value, str) else value
        metres = float(length.to("m").magnitude)
    except Exception:
        raise MetricError(
            f"Cannot read the {what} {value!r}: give grid cells (4) or a length ('4 km')."
        ) from None
    if spacing is None:
        raise MetricError(
            f"The {what} {value!r} is a length but the grid spacing in metres is unknown "
            "(no regular projection coordinates): give it in grid cells."
        )
    dy, dx = spacing
    if not np.isclose(dy, dx, rtol=LENGTH_RTOL):
        raise MetricError(
            f"The grid cells are not square ({dy:g} m x {dx:g} m): give the {what} in cells."
        )
    cells = metres / dx
    whole = max(1, round(cells))
    if cells < 1 - LENGTH_RTOL or abs(cells - whole) > LENGTH_RTOL * whole:
        raise MetricError(
            f"The {what} {value!r} is {cells:g} grid cells of {dx:g} m: give a whole number of "
            f"cells, e.g. {whole} or '{whole * dx / 1000:g} km'."
        )
    return whole

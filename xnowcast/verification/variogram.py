"""Semivariograms of fields with CF axes and units, and the ratio ``verify`` reports.

:func:`semivariogram` is the curve ``gamma(h)`` of every field (as
:func:`~xnowcast.verification.power_spectrum` is the spectrum);
:func:`semivariogram_ratio` is the score ``gamma_forecast(h) /
gamma_observation(h)`` behind ``verify(metrics=["semivariogram_ratio"])``.
The estimator and the ``log(1 + R)`` transform are described in
:mod:`xnowcast.metrics.variogram`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.metrics._common import whole_fields
from xnowcast.metrics.registry import METRICS
from xnowcast.metrics.variogram import check_lags, semivariogram_ratio_terms
from xnowcast.metrics.variogram import semivariogram as semivariogram_array
from xnowcast.units import convert_dataarray, units_of
from xnowcast.verification.lengths import grid_cells, metric_spacing

__all__ = ["DEFAULT_LAGS", "LAG", "RATIO_COMMENT", "semivariogram", "semivariogram_ratio"]

#: The name of the lag dim.
LAG = "lag"
#: Default lags (grid cells): 1, 2, 4, 8 and 16 km on a 1 km grid.
DEFAULT_LAGS = (1, 2, 4, 8, 16)
#: The ``comment`` of the ratio in ``verify``'s result.
RATIO_COMMENT = (
    "gamma_forecast(h) / gamma_observation(h) of log(1 + R), R in mm/h, on the pairs of "
    "cells h apart along x or y known in both, pooled over fields "
    "(xnowcast.metrics.variogram); 1: the observation's variability, < 1: smoother"
)
_RAIN_RATE = "mm h-1"


def lag_cells(lags: Any, spacing: tuple[float, float] | None) -> list[int]:
    """Lags given in cells or as lengths (``"4 km"``) as whole numbers of cells."""
    values = [lags] if isinstance(lags, str) or np.ndim(lags) == 0 else list(lags)
    return list(check_lags([grid_cells(v, spacing, "semivariogram lag") for v in values]))


def lag_coords(cells: Sequence[int], spacing: tuple[float, float] | None) -> dict[str, Any]:
    """The ``lag`` coordinate (cells) and, on a metric grid, ``lag_distance`` (km)."""
    coords: dict[str, Any] = {
        LAG: (
            LAG,
            np.asarray(cells),
            {"long_name": "lag", "units": "1", "comment": "in grid cells"},
        )
    }
    if spacing is not None:
        km = np.asarray(cells) * spacing[1] / 1000.0
        coords["lag_distance"] = (LAG, km, {"long_name": "lag distance", "units": "km"})
    return coords


def semivariogram(
    field: xr.DataArray | xr.Dataset,
    *,
    lags: int | str | Sequence[int | str] = DEFAULT_LAGS,
    var: str | None = None,
    transform: str | None = "log1p",
) -> xr.DataArray:
    """Empirical semivariogram of every 2-D field, at lags along the grid axes.

    Parameters
    ----------
    field
        Fields with two spatial axes (any other dims are kept); NaN cells are
        left out of every pair.
    lags
        Lags in grid cells (``4``) or lengths that are whole numbers of cells
        (``"4 km"``).
    var
        Variable name when ``field`` is a Dataset.
    transform
        ``"log1p"`` (default): the field is converted to rain rate in mm/h
        (reflectivity through the Z-R relation) and scored as ``log(1 + R)``;
        ``None``: the values in their own units.

    Returns
    -------
    xarray.DataArray
        The field's other dims plus ``lag``, with a ``lag_distance`` coordinate
        in km on a metric grid.  Lazy on dask input.

    Raises
    ------
    MetricError
        For a bad lag or transform, or negative rain rates under ``"log1p"``.
    """
    da = cv.find_precipitation(field, var)
    axes = cv.find_axes(da, require_time=False)
    if transform == "log1p" and units_of(da) not in ("mm/h", _RAIN_RATE):
        da = convert_dataarray(da, _RAIN_RATE)
    spacing = metric_spacing(da, axes)
    cells = lag_cells(lags, spacing)
    if da.chunks is not None:
        da = da.chunk({axes.y: -1, axes.x: -1})
    out = xr.apply_ufunc(
        semivariogram_array,
        da,
        input_core_dims=[[axes.y, axes.x]],
        output_core_dims=[[LAG]],
        kwargs={"lags": cells, "transform": transform},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {LAG: len(cells)}},
    )
    out = out.assign_coords(lag_coords(cells, spacing))
    if transform is None:
        what, units = "the field", METRICS["mse"].result_units(units_of(da))
    else:
        what, units = "log(1 + R), R the rain rate in mm/h", "1"
    out.attrs = {
        "long_name": f"empirical semivariogram of {what}",
        "units": units,
        "comment": "0.5 * mean of squared differences between cells lag apart along x or y",
    }
    return out


def semivariogram_ratio(
    forecast: xr.DataArray,
    observation: xr.DataArray,
    space: tuple[Hashable, Hashable],
    deterministic: list[Hashable],
    cells: Sequence[int],
    spacing: tuple[float, float] | None,
) -> xr.DataArray:
    """``gamma_forecast / gamma_observation`` per lag, pooled over the ``deterministic`` dims.

    Both fields are rain rate in mm/h with the same cells missing (see
    :func:`xnowcast.metrics.mask_pair`); ``cells`` are lags in grid cells.
    """
    ydim, xdim = space
    a, b = whole_fields((forecast, observation), space)
    terms = xr.apply_ufunc(
        semivariogram_ratio_terms,
        a,
        b,
        input_core_dims=[[ydim, xdim], [ydim, xdim]],
        output_core_dims=[[LAG, "variogram_term"]],
        kwargs={"lags": list(cells)},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {LAG: len(cells), "variogram_term": 2}},
    )
    extra = [d for d in deterministic if d in terms.dims]
    if extra:
        terms = terms.sum(extra)
    observed = terms.isel(variogram_term=1)
    ratio = terms.isel(variogram_term=0) / observed.where(observed > 0)
    return ratio.assign_coords(lag_coords(cells, spacing))

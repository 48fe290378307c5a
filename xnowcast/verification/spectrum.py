"""Radially averaged power spectra of fields with CF axes and units."""

from __future__ import annotations

import numpy as np
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import CoordinateError
from xnowcast.metrics import rapsd, rapsd_wavenumbers
from xnowcast.metrics.registry import METRICS
from xnowcast.units import units_of
from xnowcast.verification.lengths import is_degrees

__all__ = ["power_spectrum"]


def power_spectrum(
    field: xr.DataArray | xr.Dataset, *, var: str | None = None, fill_value: float | None = None
) -> xr.DataArray:
    """Radially averaged power spectral density of every 2-D field.

    Parameters
    ----------
    field
        Fields with two spatial axes (any other dims are kept).
    var
        Variable name when ``field`` is a Dataset.
    fill_value
        Value put in missing cells first.  By default a field with a missing cell
        has an all-NaN spectrum: crop to the observed domain (``field.isel(y=...,
        x=...)``) or fill explicitly (``fill_value=0`` says "no rain there").

    Returns
    -------
    xarray.DataArray
        The field's other dims plus ``wavenumber`` (cycles per km when the grid is
        in metres, else per grid unit), with a ``wavelength`` coordinate.  Lazy on
        dask input.  See :func:`xnowcast.metrics.rapsd`.
    """
    da = cv.find_precipitation(field, var)
    axes = cv.find_axes(da, require_time=False)
    try:
        dy, dx = cv.grid_spacing(da, axes)
        spacing, length_units = (dy / 1000.0, dx / 1000.0), "km"
        if is_degrees(da, axes):
            spacing, length_units = (dy, dx), "degree"
    except CoordinateError:
        spacing, length_units = (1.0, 1.0), "grid cell"
    if fill_value is not None:
        da = da.fillna(fill_value)
    if da.chunks is not None:
        da = da.chunk({axes.y: -1, axes.x: -1})
    shape = (da.sizes[axes.y], da.sizes[axes.x])
    k = rapsd_wavenumbers(shape, spacing)
    out = xr.apply_ufunc(
        rapsd,
        da,
        input_core_dims=[[axes.y, axes.x]],
        output_core_dims=[["wavenumber"]],
        kwargs={"spacing": spacing},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"wavenumber": k.size}},
    )
    with np.errstate(divide="ignore"):
        wavelength = np.where(k > 0, 1.0 / np.where(k > 0, k, 1.0), np.inf)
    units = units_of(da) if da.attrs.get("units") else None
    out = out.assign_coords(
        wavenumber=("wavenumber", k, {"long_name": "wavenumber", "units": f"{length_units}-1"}),
        wavelength=("wavenumber", wavelength, {"long_name": "wavelength", "units": length_units}),
    )
    out.attrs = {
        "long_name": "radially averaged power spectral density",
        "units": METRICS["mse"].result_units(units) if units else "1",
        "comment": "|FFT|**2 / (ny nx), averaged over rings of equal wavenumber",
    }
    return out

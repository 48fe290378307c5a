"""Longitude/latitude of a radar grid, on demand, through pyproj and the ``crs`` variable."""

from __future__ import annotations

import numpy as np
import xarray as xr

from xnowcast.errors import CoordinateError

__all__ = ["add_lat_lon"]


def add_lat_lon(ds: xr.Dataset | xr.DataArray, crs_var: str = "crs") -> xr.Dataset | xr.DataArray:
    """A copy with 2-D ``lat``/``lon`` coordinates of the cell centres (degrees, CF attributes).

    Parameters
    ----------
    ds : xarray.Dataset or DataArray
        A Dataset from :func:`~xnowcast.io.open_radar` (or anything with 1-D
        ``x``/``y`` projection coordinates in metres and a grid-mapping variable
        or coordinate holding ``crs_wkt``).
    crs_var : str
        Name of the grid-mapping variable.

    Returns
    -------
    xarray.Dataset or DataArray
        ``lat(y, x)`` and ``lon(y, x)`` on the CRS's own datum, computed by
        pyproj (for a latitude/longitude grid they are ``y`` and ``x``
        broadcast); ``to_netcdf`` lists them in each variable's ``coordinates``.

    Raises
    ------
    CoordinateError
        When there is no grid mapping with ``crs_wkt``, or x/y are missing.
    """
    if crs_var not in ds.coords and not (isinstance(ds, xr.Dataset) and crs_var in ds):
        raise CoordinateError(
            f"no grid-mapping variable {crs_var!r}: open the data with xnowcast.open_radar, or "
            "name the variable holding crs_wkt with crs_var="
        )
    wkt = ds[crs_var].attrs.get("crs_wkt")
    if not wkt or "x" not in ds.coords or "y" not in ds.coords:
        raise CoordinateError(
            f"{crs_var!r} has no crs_wkt attribute or the data have no x/y coordinates"
        )
    import pyproj  # here, not at module level: ``import xnowcast`` does not import it

    crs = pyproj.CRS.from_wkt(wkt)
    xx, yy = np.meshgrid(ds["x"].values, ds["y"].values)
    if crs.is_geographic:
        lon, lat = xx, yy
    else:
        to_lonlat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        lon, lat = to_lonlat.transform(xx, yy)
    return ds.assign_coords(
        lat=(("y", "x"), np.asarray(lat), {"standard_name": "latitude", "units": "degrees_north"}),
        lon=(("y", "x"), np.asarray(lon), {"standard_name": "longitude", "units": "degrees_east"}),
    )

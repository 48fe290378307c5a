"""Match each forecast field to the observation at its valid time, on the forecast's grid.

A nowcast's fields are valid at ``valid_time`` (``init_time + lead_time``); a field
with a plain time axis (a downscaled series, an analysis) is valid at its times.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pandas as pd
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import CoordinateError, TimeAxisError

__all__ = ["align_observations", "find_axes", "lead_step"]


def find_axes(da: xr.DataArray, *, require_time: bool = True) -> cv.Axes:
    """:func:`xnowcast.conventions.find_axes` read from a 2-cell view of ``da``.

    The axes depend on names, coordinates and attributes only; a small view
    keeps cf-xarray from formatting the whole field in messages it builds
    (e.g. about a ``grid_mapping`` variable the DataArray does not carry),
    which cost ~0.2 s per call on a 6 x 18 x 640 x 710 forecast.
    """
    view = da.isel({d: slice(0, 2) for d in da.dims})
    return cv.find_axes(view, require_time=require_time)


def align_observations(
    forecast: xr.DataArray, observations: xr.DataArray | xr.Dataset, var: str | None = None
) -> xr.DataArray:
    """The observations at the forecast's valid times, on the forecast's grid.

    Returns a DataArray with the forecast's dims less ``member`` (e.g.
    ``(init_time, lead_time, y, x)``, or ``(time, y, x)`` for a field with a time
    axis such as a downscaled series), NaN where a valid time is not among the
    observation times.  Lazy on dask input.

    Raises
    ------
    TimeAxisError
        When none of the valid times is observed, or observation times repeat.
    CoordinateError
        When the forecast has no ``valid_time`` (nor ``init_time`` and
        ``lead_time``), or the grids do not match.
    """
    obs = cv.find_precipitation(observations, var)
    valid = _valid_time(forecast)
    obs_axes = find_axes(obs)
    fc_axes = find_axes(forecast, require_time=False)
    obs = obs.rename(
        {o: f for o, f in ((obs_axes.y, fc_axes.y), (obs_axes.x, fc_axes.x)) if o != f}
    )
    obs = _on_grid(obs, forecast, (fc_axes.y, fc_axes.x))
    tdim = obs_axes.time
    times = obs[tdim].values.astype("datetime64[ns]")
    if np.unique(times).size != times.size:
        raise TimeAxisError(
            f"The observations repeat time stamps: drop them with obs.drop_duplicates({tdim!r})."
        )
    wanted = np.unique(valid.values.astype("datetime64[ns]").ravel())
    found = np.isin(wanted, times)
    if not found.any():
        raise TimeAxisError(
            "No valid time of the forecast is in the observations: the forecast is valid "
            f"from {_fmt(wanted[0])} to {_fmt(wanted[-1])}, the observations cover "
            f"{_fmt(times.min())} to {_fmt(times.max())}."
        )
    obs = obs.assign_coords({tdim: times})
    index = valid.astype("datetime64[ns]").variable
    if obs.chunks is None:
        obs = obs.reindex({tdim: wanted})
    picked = _pick(obs, tdim, index)
    for name in (cv.INIT_TIME, cv.LEAD_TIME, cv.VALID_TIME, *valid.dims):
        if name in forecast.coords and name not in picked.coords:
            picked = picked.assign_coords({name: forecast[name]})
    dims = [d for d in forecast.dims if d != cv.MEMBER]
    return picked.transpose(*dims)


def _pick(obs: xr.DataArray, tdim: Hashable, index: xr.Variable) -> xr.DataArray:
    """``obs`` at the times ``index`` (any dims), which replace the time dim.

    On dask, each row of the index (the lead times of one init time) that is a
    run of consecutive observation times is a slice, so that every output
    chunk reads only the observation chunks it needs (fancy indexing would
    shuffle the whole time axis); other rows are taken by label.
    """
    if obs.chunks is None or index.ndim not in (1, 2):
        return obs.sel({tdim: index}).drop_vars([tdim], errors="ignore")
    positions = pd.Index(obs[tdim].values).get_indexer(index.values.ravel())
    positions = positions.reshape(index.shape)
    if index.ndim == 1:
        return _row(obs, tdim, positions, index.dims[0])
    rows = [_row(obs, tdim, row, index.dims[1]) for row in positions]
    return xr.concat(rows, dim=index.dims[0], coords="minimal", compat="override")


def _row(obs: xr.DataArray, tdim: Hashable, positions: np.ndarray, dim: Hashable) -> xr.DataArray:
    if positions.size and (positions >= 0).all() and (np.diff(positions) == 1).all():
        part = obs.isel({tdim: slice(int(positions[0]), int(positions[-1]) + 1)})
    else:
        part = obs.isel({tdim: np.maximum(positions, 0)})
        part = part.where(xr.DataArray(positions >= 0, dims=tdim))
    # one chunk per row: rows of different chunks would be re-cut to a common grid,
    # which ties every output chunk to the whole time axis
    return part.drop_vars([tdim], errors="ignore").rename({tdim: dim}).chunk({dim: -1})


def lead_step(fc: xr.DataArray) -> np.timedelta64 | None:
    """The step between lead times, or between the times of a field with a time axis
    (None for a single time)."""
    if cv.LEAD_TIME in fc.coords and fc[cv.LEAD_TIME].size > 1:
        lead = np.sort(fc[cv.LEAD_TIME].values.ravel())
        return (lead[1] - lead[0]).astype("timedelta64[ns]")
    time = _time_axis(fc)
    if cv.LEAD_TIME not in fc.coords and time is not None and fc[time].size > 1:
        times = np.sort(fc[time].values.astype("datetime64[ns]"))
        return (times[1] - times[0]).astype("timedelta64[ns]")
    return None


def _time_axis(fc: xr.DataArray) -> Hashable | None:
    """The time dim of a field that is not a nowcast (None when it has none)."""
    if cv.VALID_TIME in fc.coords or cv.LEAD_TIME in fc.coords:
        return None
    axes = find_axes(fc, require_time=False)
    time = axes.time
    if time is None or time not in fc.dims:
        return None
    if not np.issubdtype(fc[time].dtype, np.datetime64):
        return None
    return time


def _valid_time(forecast: xr.DataArray) -> xr.DataArray:
    """``valid_time`` as numpy values (from ``init_time + lead_time`` when lazy)."""
    coords = forecast.coords
    if cv.VALID_TIME in coords and coords[cv.VALID_TIME].chunks is None:
        return coords[cv.VALID_TIME]
    if cv.INIT_TIME in coords and cv.LEAD_TIME in coords:
        init, lead = coords[cv.INIT_TIME], coords[cv.LEAD_TIME]
        if init.chunks is None and lead.chunks is None:
            return (init + lead).rename(cv.VALID_TIME)
    if cv.VALID_TIME in coords:
        return coords[cv.VALID_TIME].compute()  # a small coordinate, not the data
    time = _time_axis(forecast)
    if time is not None:  # a downscaled series: each field is valid at its time
        return coords[time].compute()
    raise CoordinateError(
        f"The forecast has no {cv.VALID_TIME!r} coordinate (nor {cv.INIT_TIME!r} and "
        f"{cv.LEAD_TIME!r}, nor a time axis): it is needed to match each field to its "
        "observation."
    )


def _on_grid(obs: xr.DataArray, fc: xr.DataArray, space: tuple[Hashable, Hashable]) -> xr.DataArray:
    for d in space:
        if d not in fc.coords or d not in obs.coords:
            if obs.sizes.get(d) != fc.sizes.get(d):
                raise CoordinateError(
                    f"The forecast and observations differ along {d!r} "
                    f"({fc.sizes.get(d)} vs {obs.sizes.get(d)} cells) and have no coordinates "
                    "to match them by."
                )
            continue
        f_vals, o_vals = fc[d].values, obs[d].values
        same = f_vals.shape == o_vals.shape
        if same and np.allclose(f_vals, o_vals, rtol=0, atol=1e-6 * _step(f_vals)):
            obs = obs.assign_coords({d: fc[d]})
            continue
        try:
            obs = obs.sel({d: f_vals}, method="nearest", tolerance=1e-3 * _step(f_vals))
        except KeyError:
            raise CoordinateError(
                f"The observations' {d!r} coordinates do not contain the forecast grid: "
                "regrid one onto the other first."
            ) from None
        obs = obs.assign_coords({d: fc[d]})
    return obs


def _step(values: np.ndarray) -> float:
    return float(np.abs(np.diff(values)).min()) if values.size > 1 else 1.0


def _fmt(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t, unit="m"))

"""CF conventions: axis discovery, time-step and grid checks, output attributes.

Axes are found through cf-xarray (``.cf.axes``/``.cf.coordinates``) and fall back to
dims named ``time``/``y``/``x`` (or ``lat``/``lon``).  A regular time step and a
regular grid are checked, never assumed.  This module never imports torch.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import xarray as xr

from xnowcast.errors import CoordinateError, DatasetError, TimeAxisError

__all__ = [
    "INIT_TIME",
    "LEAD_TIME",
    "MEMBER",
    "PRECIPITATION_STANDARD_NAMES",
    "VALID_TIME",
    "Axes",
    "append_history",
    "check_regular_grid",
    "check_time_jitter",
    "check_time_values",
    "find_axes",
    "find_precipitation",
    "flip_axes",
    "forecast_coord_attrs",
    "grid_spacing",
    "orientation_flips",
    "time_step",
]

LEAD_TIME = "lead_time"
MEMBER = "member"
INIT_TIME = "init_time"
VALID_TIME = "valid_time"

PRECIPITATION_STANDARD_NAMES = (
    "rainfall_rate",
    "precipitation_flux",
    "lwe_precipitation_rate",
    "rainfall_flux",
    "lwe_thickness_of_precipitation_amount",
    "precipitation_amount",
    "equivalent_reflectivity_factor",
)
_PRECIPITATION_NAMES = (
    "precipitation",
    "precip",
    "rainfall_rate",
    "rain_rate",
    "reflectivity",
    "dbz",
)

_TIME_FALLBACK = ("time", "t")
_Y_FALLBACK = ("y", "lat", "latitude", "rlat", "projection_y_coordinate")
_X_FALLBACK = ("x", "lon", "longitude", "rlon", "projection_x_coordinate")


class Axes(NamedTuple):
    """The names of a field's time, Y and X dims (``time`` is None when absent)."""

    time: str | None
    y: str
    x: str


def _cf_names(obj: xr.DataArray) -> dict[str, list[Hashable]]:
    """cf-xarray's axis and coordinate mappings, merged (read once: they are costly)."""
    names: dict[str, list[Hashable]] = {}
    for mapping in (obj.cf.axes, obj.cf.coordinates):
        for key, values in mapping.items():
            names.setdefault(key, []).extend(values)
    return names


def _dim_of(obj: xr.DataArray, names: dict[str, list[Hashable]], key: str) -> str | None:
    """The dim cf-xarray associates with an axis/coordinate key, if it is a dim."""
    for name in names.get(key, []):
        if name in obj.dims:
            return str(name)
        if name in obj.coords and obj[name].ndim == 1 and obj[name].dims[0] in obj.dims:
            return str(obj[name].dims[0])
    return None


def _fallback(obj: xr.DataArray, candidates: tuple[str, ...]) -> str | None:
    lowered = {str(d).lower(): str(d) for d in obj.dims}
    for cand in candidates:
        if cand in lowered:
            return lowered[cand]
    return None


def find_axes(da: xr.DataArray, *, require_time: bool = True) -> Axes:
    """Find the time, Y and X dims of ``da``.

    Parameters
    ----------
    da
        A field with a time axis (unless ``require_time=False``) and two spatial axes.
    require_time
        Raise when no time axis is found.

    Raises
    ------
    CoordinateError
        When a spatial axis cannot be found.
    TimeAxisError
        When the time axis is required and cannot be found.
    """
    names = _cf_names(da)
    time = _dim_of(da, names, "T") or _dim_of(da, names, "time") or _fallback(da, _TIME_FALLBACK)
    y = _dim_of(da, names, "Y") or _dim_of(da, names, "latitude") or _fallback(da, _Y_FALLBACK)
    x = _dim_of(da, names, "X") or _dim_of(da, names, "longitude") or _fallback(da, _X_FALLBACK)
    if y is None or x is None or y == x:
        raise CoordinateError(
            f"Cannot find the spatial axes among dims {tuple(da.dims)}: name them 'y' and 'x' "
            "(or 'lat'/'lon'), or give the coordinates CF attributes (axis='Y'/'X' or "
            "standard_name='projection_y_coordinate'/'projection_x_coordinate')."
        )
    if time is None and require_time:
        raise TimeAxisError(
            f"Cannot find a time axis among dims {tuple(da.dims)}: name it 'time' or set "
            "attrs axis='T' / standard_name='time' on its coordinate."
        )
    return Axes(time, y, x)


def find_precipitation(obj: xr.Dataset | xr.DataArray, var: str | None = None) -> xr.DataArray:
    """The precipitation field of a Dataset (or the DataArray itself).

    Looked up by ``var`` when given, else by CF ``standard_name`` (rainfall_rate,
    precipitation_flux, equivalent_reflectivity_factor, ...), else by a usual name.

    Raises
    ------
    DatasetError
        When no (or more than one) candidate variable is found.
    """
    if isinstance(obj, xr.DataArray):
        return obj
    if var is not None:
        if var not in obj.data_vars:
            raise DatasetError(
                f"The Dataset has no variable {var!r}; its variables are {list(obj.data_vars)}."
            )
        return obj[var]
    found = [
        name
        for name, v in obj.data_vars.items()
        if v.attrs.get("standard_name") in PRECIPITATION_STANDARD_NAMES
    ]
    if not found:
        found = [name for name in obj.data_vars if str(name).lower() in _PRECIPITATION_NAMES]
    if len(found) == 1:
        return obj[found[0]]
    if not found:
        raise DatasetError(
            f"No precipitation variable in the Dataset (variables: {list(obj.data_vars)}). "
            "Give it a CF standard_name such as 'rainfall_rate' or "
            "'equivalent_reflectivity_factor', or pass var='name'."
        )
    raise DatasetError(f"Several precipitation variables {found}: choose one with var='name'.")


def _fmt_time(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="s"))


def time_step(da: xr.DataArray, time_dim: str | None = None) -> np.timedelta64:
    """The regular time step of ``da``.

    Raises
    ------
    TimeAxisError
        When there are fewer than two times, or times are not datetimes, are
        duplicated, not increasing, or irregularly spaced (the gaps are listed).
    """
    dim = time_dim or find_axes(da).time
    if dim not in da.coords:
        raise TimeAxisError(
            f"The time dim {dim!r} has no coordinate values: assign them with "
            f"da.assign_coords({dim}=...)."
        )
    check_time_values(da, dim)
    times = da[dim].values
    if times.dtype == object and times.size and hasattr(times.flat[0], "calendar"):
        raise TimeAxisError(
            f"The time coordinate {dim!r} holds cftime dates (calendar "
            f"{times.flat[0].calendar!r}): convert them to numpy datetimes, e.g. "
            f"da.convert_calendar('standard', dim={dim!r}, use_cftime=False)."
        )
    if not np.issubdtype(times.dtype, np.datetime64):
        raise TimeAxisError(
            f"The time coordinate {dim!r} holds {times.dtype}, not datetimes: decode it "
            "(xr.decode_cf) or assign numpy datetime64 values."
        )
    if times.size < 2:
        raise TimeAxisError(f"Need at least two times to know the time step; got {times.size}.")
    diffs = np.diff(times)
    zero = np.timedelta64(0, "ns")
    if np.any(diffs == zero):
        dup = [_fmt_time(t) for t in times[1:][diffs == zero]]
        raise TimeAxisError(
            f"Duplicate times {dup[:5]}: drop them, e.g. da.drop_duplicates('{dim}')."
        )
    if np.any(diffs < zero):
        raise TimeAxisError(f"The time axis is not increasing: sort it with da.sortby('{dim}').")
    check_time_jitter(times, dim)
    step = np.min(diffs)
    irregular = np.nonzero(diffs != step)[0]
    if irregular.size:
        gaps = [f"{_fmt_time(times[i])} -> {_fmt_time(times[i + 1])}" for i in irregular[:5]]
        raise TimeAxisError(
            f"Irregular time axis: the step is {_minutes(step)} but {irregular.size} interval(s) "
            f"differ, e.g. {gaps}. Select a gap-free period or resample/reindex to a regular step."
        )
    return step.astype("timedelta64[ns]")


def check_time_values(da: xr.DataArray, dim: str) -> None:
    """Refuse timezone-aware times with the recipe that makes them naive UTC.

    Raises
    ------
    TimeAxisError
        When the time coordinate holds timezone-aware times (pandas ``datetime64[ns, tz]``
        or tz-aware ``datetime`` objects): numpy datetimes, as CF and xnowcast use, are UTC
        without a timezone.
    """
    tz = getattr(da[dim].dtype, "tz", None)
    if tz is None and da[dim].dtype == object and da[dim].size:
        tz = getattr(da[dim].values.flat[0], "tzinfo", None)
    if tz is not None:
        raise TimeAxisError(
            f"The time coordinate {dim!r} holds timezone-aware times ({tz}): convert to UTC "
            f"and drop the tz (e.g. da = da.assign_coords({dim}=da.indexes[{dim!r}]"
            ".tz_convert('UTC').tz_localize(None)))."
        )


def check_time_jitter(times: np.ndarray, dim: str) -> None:
    """Name the times that are off the regular grid of the others by a fraction of a step.

    The step is the most common interval; a time whose offset from the first time is not
    a whole number of steps (while most times' offsets are) is off the grid.  Whole
    missing steps (gaps) are not jitter and pass.

    Raises
    ------
    TimeAxisError
        Naming each time that is off (up to five) and by how much, and how to round them.
    """
    times = np.asarray(times).astype("datetime64[ns]")
    if times.size < 3:
        return
    diffs = np.diff(times).astype(np.int64)
    if np.any(diffs <= 0):
        return  # duplicates / disorder: their own messages
    values, counts = np.unique(diffs, return_counts=True)
    step = int(values[np.argmax(counts)])
    residues = (times - times[0]).astype(np.int64) % step
    if not np.any(residues):
        return
    values, counts = np.unique(residues, return_counts=True)
    grid = int(values[np.argmax(counts)])
    offsets = (residues - grid + step // 2) % step - step // 2
    off = np.nonzero(offsets)[0]
    if off.size == 0 or off.size * 2 > times.size:
        return  # no single grid most times sit on: an irregular axis, not jitter
    step_text = _minutes(np.timedelta64(step, "ns"))
    shown = [
        f"{_fmt_time(times[i])} is {_duration(abs(int(offsets[i])))} "
        f"{'late' if offsets[i] > 0 else 'early'}"
        for i in off[:5]
    ]
    freq = f"{step // 60_000_000_000}min" if step % 60_000_000_000 == 0 else f"{step}ns"
    raise TimeAxisError(
        f"Irregular time axis: {off.size} time(s) are off the regular {step_text} grid of "
        "the others: "
        f"{'; '.join(shown)}. Round the times to the step, e.g. "
        f"da = da.assign_coords({dim}=da['{dim}'].dt.round('{freq}')), or drop them."
    )


def _duration(ns: int) -> str:
    seconds = ns / 1e9
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _minutes(step: np.timedelta64) -> str:
    seconds = step / np.timedelta64(1, "s")
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"


def check_regular_grid(da: xr.DataArray, axes: Axes | None = None, *, rtol: float = 1e-3) -> None:
    """Check that both spatial coordinates are 1-D and evenly spaced.

    Raises
    ------
    CoordinateError
        When a coordinate is missing, not 1-D, not monotonic or unevenly spaced.
    """
    axes = axes or find_axes(da, require_time=False)
    for dim in (axes.y, axes.x):
        if dim not in da.coords:
            raise CoordinateError(
                f"The spatial dim {dim!r} has no coordinate: assign projection coordinates "
                f"(cell centres, metres) with da.assign_coords({dim}=...)."
            )
        values = np.asarray(da[dim].values, dtype=np.float64)
        if values.size < 2:
            continue
        diffs = np.diff(values)
        if not (np.all(diffs > 0) or np.all(diffs < 0)):
            raise CoordinateError(
                f"The coordinate {dim!r} is not monotonic: sort it with da.sortby({dim!r})."
            )
        if not np.allclose(diffs, diffs[0], rtol=rtol, atol=0):
            raise CoordinateError(
                f"The coordinate {dim!r} is not evenly spaced (steps from {diffs.min():g} to "
                f"{diffs.max():g}): regrid to a regular grid first."
            )


def orientation_flips(da: xr.DataArray, axes: Axes) -> tuple[str, ...]:
    """The spatial dims to reverse to put ``da`` in the models' canonical orientation.

    Canonical is north up and x east: the first row has the largest y (y descending
    along the rows) and x increases along a row.  Every model runs on that orientation
    (:func:`xnowcast.nowcast`, :func:`xnowcast.downscale`), so flipping the input gives
    the flipped output.  Axes of a single cell or without coordinate values are left
    as they are.
    """
    flips = []
    for dim, descending in ((axes.y, True), (axes.x, False)):
        if dim in da.coords and da.sizes[dim] > 1:
            values = np.asarray(da[dim].values)
            if bool(values[0] < values[-1]) == descending:
                flips.append(dim)
    return tuple(flips)


def flip_axes(obj: Any, dims: tuple[str, ...]) -> Any:
    """``obj`` (DataArray or Dataset) reversed along ``dims``, coordinates included (lazy on dask).

    Reversing twice gives ``obj`` back, which is how a result returns to the caller's
    orientation.
    """
    present = {dim: slice(None, None, -1) for dim in dims if dim in obj.dims}
    return obj.isel(present) if present else obj


def grid_spacing(da: xr.DataArray, axes: Axes | None = None) -> tuple[float, float]:
    """``(dy, dx)``: the absolute grid spacing in metres (degrees for lat/lon grids).

    Coordinates in km are converted through their ``units`` attribute.
    """
    axes = axes or find_axes(da, require_time=False)
    check_regular_grid(da, axes)
    out = []
    for dim in (axes.y, axes.x):
        values = np.asarray(da[dim].values, dtype=np.float64)
        if values.size < 2:
            raise CoordinateError(
                f"The coordinate {dim!r} has a single value: the spacing is unknown."
            )
        spacing = abs(values[1] - values[0])
        if da[dim].attrs.get("units") in ("km", "kilometre", "kilometer", "kilometres"):
            spacing *= 1000.0
        out.append(float(spacing))
    return out[0], out[1]


def append_history(attrs: Mapping[str, Any], line: str) -> dict[str, Any]:
    """A copy of ``attrs`` with a time-stamped ``line`` appended to ``history``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = f"{stamp}: {line}"
    out = dict(attrs)
    previous = out.get("history")
    out["history"] = f"{previous}\n{entry}" if previous else entry
    return out


def forecast_coord_attrs() -> dict[str, dict[str, str]]:
    """CF attributes of the forecast coordinates (lead_time, init_time, valid_time, member)."""
    return {
        LEAD_TIME: {"standard_name": "forecast_period", "long_name": "lead time"},
        INIT_TIME: {"standard_name": "forecast_reference_time", "long_name": "initialisation time"},
        VALID_TIME: {"standard_name": "time", "long_name": "valid time"},
        MEMBER: {"standard_name": "realization", "long_name": "ensemble member", "units": "1"},
    }

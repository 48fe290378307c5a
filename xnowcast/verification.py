"""Score forecasts against observations: the xarray-in, tidy-Dataset-out ``verify``.

:func:`verify` finds the precipitation variable and the axes (CF conventions),
matches each forecast field to the observation at its ``valid_time`` (no manual
slicing), converts the observations to the forecast's units, turns thresholds
and scales with units into the data's units and grid cells, and computes the
scores of :mod:`xnowcast.metrics`, reduced over space (and ``init_time``).  The
result is one variable per metric with dims among ``lead_time``, ``threshold``,
``window`` (FSS) and ``scale`` (pooled scores), and CF-style attributes.

Missing observations (NaN, or valid times the observations do not have) and
missing forecast pixels are left out of every score: they never count as "no
rain".  Dask-backed input gives a lazy result.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import pint
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import CoordinateError, TimeAxisError
from xnowcast.metrics import (
    CATEGORICAL_SCORES,
    MetricError,
    categorical_scores,
    crps,
    fss_from_terms,
    fss_terms,
    metric_info,
    pool,
    rapsd,
    rapsd_wavenumbers,
    ssim_terms_array,
)
from xnowcast.metrics._common import as_dims, mask_pair
from xnowcast.units import convert_dataarray, to_data_units, units_of, ureg

__all__ = ["align_observations", "power_spectrum", "verify"]

Threshold = float | int | str | pint.Quantity
Length = int | str | pint.Quantity
THRESHOLD, SCALE, WINDOW = "threshold", "scale", "window"
_CONTINUOUS = ("mse", "mae", "rmse", "bias")


def verify(
    forecast: xr.DataArray | xr.Dataset,
    observations: xr.DataArray | xr.Dataset,
    metrics: str | Sequence[str] = ("csi", "hss", "fss", "crps"),
    thresholds: Threshold | Sequence[Threshold] = (1, 4, 8),
    scales: Length | Sequence[Length] = (1,),
    fss_window: Length | Sequence[Length] = 5,
    dim: str | Sequence[str] | None = None,
    var: str | None = None,
    *,
    pooling: Literal["avg", "max"] = "avg",
    fss_padding: Literal["valid", "zeros"] = "valid",
    ssim_window: int = 7,
    ssim_data_range: float | None = None,
) -> xr.Dataset:
    """Score a forecast against observations.

    Parameters
    ----------
    forecast
        A nowcast: dims ``(init_time?, lead_time, member?, y, x)`` with a
        ``valid_time`` coordinate (``init_time + lead_time``) and ``units``; or a
        Dataset holding one (found like the observations' variable).
    observations
        Observed fields with a time axis (dims ``(time, y, x)``) on the forecast's
        grid (or a larger grid that contains it), a DataArray or a Dataset whose
        precipitation variable is found by CF ``standard_name`` (or ``var``).
        They are converted to the forecast's units when these differ.
    metrics
        Names from :func:`xnowcast.metrics.available_metrics`: ``csi``, ``hss``,
        ``pod``, ``far``, ``fbias``, ``ets``, ``crps``, ``mse``, ``mae``,
        ``rmse``, ``bias``, ``fss``, ``ssim``.
    thresholds
        Event thresholds (events are values ``>= threshold``): numbers in the
        forecast's units, strings such as ``"1 mm/h"`` or pint quantities, which
        are converted (a dBZ forecast can be scored at ``"1 mm/h"``).
    scales
        Pooling scales for the categorical scores, CRPS and the point-wise errors:
        whole numbers of grid cells, or lengths (``"4 km"``) that are whole
        multiples of the grid spacing.  ``1`` is no pooling.
    fss_window
        FSS neighbourhood size(s): grid cells or lengths, as ``scales``.
    dim
        Dims to reduce.  Default: the spatial dims and ``init_time`` (when it is
        a dim).  The ``member`` dim is always reduced: it is the ensemble of
        CRPS and is pooled over for every other score (the skill of a randomly
        drawn member; pass ``forecast.mean("member")`` to score the ensemble mean).
    var
        Name of the variable in a Dataset forecast/observations.
    pooling
        ``"avg"`` or ``"max"``: how fields are pooled at ``scales > 1`` (DGMR
        reports CRPS with both).
    fss_padding
        ``"valid"`` (windows wholly inside the domain, as
        ``scores.spatial.fss_2d``) or ``"zeros"`` (as pysteps); see
        :mod:`xnowcast.metrics.spatial`.
    ssim_window, ssim_data_range
        SSIM window side (cells) and data range ``L``; by default ``L`` is the
        range (max - min) of the observations being scored.

    Returns
    -------
    xarray.Dataset
        One variable per metric with the forecast's ``lead_time`` (and other
        unreduced dims) plus ``threshold`` (threshold scores), ``window`` (FSS)
        and ``scale`` (pooled scores).  Attributes: ``long_name``, ``units``,
        ``better`` (``higher``/``lower``/``closer``) and ``perfect_score``.

    Raises
    ------
    MetricError
        Unknown metric names (the message lists the valid ones), bad scales or
        windows.
    TimeAxisError
        When no valid time of the forecast is among the observation times.
    CoordinateError
        When the grids differ, or ``dim`` leaves out a spatial dim that FSS or
        SSIM need.
    UnitsError
        Missing or unconvertible units.
    """
    infos = [metric_info(name) for name in _names(metrics)]
    fc = cv.find_precipitation(forecast, var)
    obs = cv.find_precipitation(observations, var)
    axes = cv.find_axes(fc, require_time=False)
    space = (axes.y, axes.x)
    units = units_of(fc)
    obs_units = units_of(obs)
    step = _lead_step(fc)
    aligned = align_observations(fc, obs)
    if obs_units != units:
        aligned = convert_dataarray(aligned, units, time_step=step)

    member = cv.MEMBER if cv.MEMBER in fc.dims else None
    reduce = _reduce_dims(fc, dim, space)
    deterministic = reduce + ([member] if member and member not in reduce else [])
    fc, aligned = mask_pair(fc, aligned, member)

    threshold_values = [to_data_units(t, units, time_step=step) for t in _listify(thresholds)]
    given_thresholds = _listify(thresholds)
    threshold_index = _index(THRESHOLD, threshold_values)
    spacing = _spacing(fc, axes)
    scale_cells = [_cells(s, spacing, "scale") for s in _listify(scales)]
    windows = [_cells(w, spacing, "fss_window") for w in _listify(fss_window)]

    wanted = {info.name for info in infos}
    out: dict[str, xr.DataArray] = {}
    categorical = [n for n in CATEGORICAL_SCORES if n in wanted]
    continuous = [n for n in _CONTINUOUS if n in wanted]
    if categorical or continuous or "crps" in wanted:
        per_scale: dict[str, list[xr.DataArray]] = {}
        for cells in scale_cells:
            fcs = pool(fc, cells, spatial_dims=space, how=pooling)
            obs_s = pool(aligned, cells, spatial_dims=space, how=pooling)
            found = _pointwise_scores(
                categorical, continuous, "crps" in wanted, fcs, obs_s, threshold_values,
                threshold_index, deterministic, reduce, member,
            )  # fmt: skip
            for name, value in found.items():
                per_scale.setdefault(name, []).append(value)
        for name, values in per_scale.items():
            out[name] = xr.concat(values, dim=_index(SCALE, scale_cells), coords="minimal")

    if "fss" in wanted:
        _need_space("fss", space, reduce)
        rows = []
        for value in threshold_values:
            cols = []
            for cells in windows:
                terms = fss_terms(
                    fc, aligned, value, cells, spatial_dims=space, padding=fss_padding
                )
                extra = [d for d in deterministic if d in terms.dims]
                cols.append(fss_from_terms(terms.sum(extra) if extra else terms))
            rows.append(xr.concat(cols, dim=_index(WINDOW, windows), coords="minimal"))
        out["fss"] = xr.concat(rows, dim=threshold_index, coords="minimal")

    if "ssim" in wanted:
        _need_space("ssim", space, reduce)
        out["ssim"] = _ssim(fc, aligned, space, deterministic, ssim_window, ssim_data_range)

    data_vars = {}
    for info in infos:
        da = out[info.name]
        da = da.transpose(*_order(da.dims))
        da.attrs = info.cf_attrs(units)
        if info.poolable:
            da.attrs["pooling"] = pooling
        if info.name == "fss":
            da.attrs["padding"] = fss_padding
        if info.name == "ssim":
            da.attrs["window"] = int(ssim_window)
        data_vars[info.name] = da
    result = xr.Dataset(data_vars)
    result = _label_coords(result, given_thresholds, units, pooling)
    for name in (cv.VALID_TIME,):
        if name in result.coords and name not in fc.coords:
            result = result.drop_vars(name)
    result.attrs = _dataset_attrs(forecast, fc, units, obs_units, reduce)
    return result


def align_observations(
    forecast: xr.DataArray, observations: xr.DataArray | xr.Dataset, var: str | None = None
) -> xr.DataArray:
    """The observations at the forecast's valid times, on the forecast's grid.

    Returns a DataArray with the forecast's dims less ``member`` (e.g.
    ``(init_time, lead_time, y, x)``), NaN where a valid time is not among the
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
    obs_axes = cv.find_axes(obs)
    fc_axes = cv.find_axes(forecast, require_time=False)
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
    obs = obs.assign_coords({tdim: times}).reindex({tdim: wanted})
    picked = obs.sel({tdim: valid.astype("datetime64[ns]").variable})
    picked = picked.drop_vars([tdim], errors="ignore")
    for name in (cv.INIT_TIME, cv.LEAD_TIME, cv.VALID_TIME):
        if name in forecast.coords:
            picked = picked.assign_coords({name: forecast[name]})
    dims = [d for d in forecast.dims if d != cv.MEMBER]
    return picked.transpose(*dims)


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
        if _is_degrees(da, axes):
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
        "units": _power_units(units) if units else "1",
        "comment": "|FFT|**2 / (ny nx), averaged over rings of equal wavenumber",
    }
    return out


# ---------------------------------------------------------------------------- helpers


def _pointwise_scores(
    categorical: list[str],
    continuous: list[str],
    want_crps: bool,
    fc: xr.DataArray,
    obs: xr.DataArray,
    thresholds: list[float],
    threshold_index: pd.Index,
    deterministic: list[Hashable],
    reduce: list[Hashable],
    member: Hashable | None,
) -> dict[str, xr.DataArray]:
    out: dict[str, xr.DataArray] = {}
    if categorical:
        per_threshold = [
            categorical_scores(categorical, fc, obs, value, deterministic) for value in thresholds
        ]
        for name in categorical:
            out[name] = xr.concat(
                [scores[name] for scores in per_threshold], dim=threshold_index, coords="minimal"
            )
    if continuous:
        error = fc.astype(np.float64) - obs
        dims = [d for d in deterministic if d in error.dims]
        squared = (error**2).mean(dims)
        values = {
            "mse": lambda: squared,
            "rmse": lambda: np.sqrt(squared),
            "mae": lambda: np.abs(error).mean(dims),
            "bias": lambda: error.mean(dims),
        }
        for name in continuous:
            out[name] = values[name]()
    if want_crps:
        dims = [d for d in reduce if d != member]
        out["crps"] = crps(fc, obs, dims, member_dim=member or cv.MEMBER)
    return out


def _ssim(
    fc: xr.DataArray,
    obs: xr.DataArray,
    space: tuple[Hashable, Hashable],
    deterministic: list[Hashable],
    window: int,
    data_range: float | None,
) -> xr.DataArray:
    span: Any = data_range
    if span is None:
        span = obs.max() - obs.min()
    ydim, xdim = space
    a, b = fc, obs
    if a.chunks is not None or b.chunks is not None:
        a = a.chunk({ydim: -1, xdim: -1})
        b = b.chunk({ydim: -1, xdim: -1})
    terms = xr.apply_ufunc(
        ssim_terms_array,
        a,
        b,
        span,
        input_core_dims=[[ydim, xdim], [ydim, xdim], []],
        output_core_dims=[["ssim_term"]],
        kwargs={"window": int(window)},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"ssim_term": 2}},
    )
    extra = [d for d in deterministic if d in terms.dims]
    if extra:
        terms = terms.sum(extra)
    count = terms.isel(ssim_term=1)
    return terms.isel(ssim_term=0) / count.where(count > 0)


def _names(metrics: str | Sequence[str]) -> list[str]:
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise MetricError("No metric asked for: pass e.g. metrics=['csi', 'fss'].")
    seen: list[str] = []
    for name in names:
        key = metric_info(name).name
        if key not in seen:
            seen.append(key)
    return seen


def _listify(value: Any) -> list[Any]:
    if isinstance(value, (str, pint.Quantity)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _lead_step(fc: xr.DataArray) -> np.timedelta64 | None:
    if cv.LEAD_TIME in fc.coords and fc[cv.LEAD_TIME].size > 1:
        lead = np.sort(fc[cv.LEAD_TIME].values.ravel())
        return (lead[1] - lead[0]).astype("timedelta64[ns]")
    return None


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
    raise CoordinateError(
        f"The forecast has no {cv.VALID_TIME!r} coordinate (nor {cv.INIT_TIME!r} and "
        f"{cv.LEAD_TIME!r}): it is needed to match each field to its observation."
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


def _reduce_dims(
    fc: xr.DataArray, dim: str | Sequence[str] | None, space: tuple[Hashable, Hashable]
) -> list[Hashable]:
    if dim is None:
        dims: list[Hashable] = list(space)
        if cv.INIT_TIME in fc.dims:
            dims.append(cv.INIT_TIME)
        return dims
    dims = as_dims(dim)
    missing = [d for d in dims if d not in fc.dims]
    if missing:
        raise CoordinateError(
            f"Cannot reduce over {missing}: the forecast's dims are {tuple(fc.dims)}."
        )
    return dims


def _need_space(name: str, space: tuple[Hashable, Hashable], reduce: list[Hashable]) -> None:
    if not all(d in reduce for d in space):
        raise CoordinateError(
            f"{name!r} is a score over whole fields: dim must include both spatial dims {space}."
        )


def _spacing(fc: xr.DataArray, axes: cv.Axes) -> tuple[float, float] | None:
    try:
        if _is_degrees(fc, axes):
            return None
        return cv.grid_spacing(fc, axes)
    except (CoordinateError, KeyError):
        return None


def _is_degrees(da: xr.DataArray, axes: cv.Axes) -> bool:
    for d in (axes.y, axes.x):
        units = str(da[d].attrs.get("units", "")) if d in da.coords else ""
        if "degree" in units or str(d).lower() in {"lat", "lon", "latitude", "longitude"}:
            return True
    return False


def _cells(value: Length, spacing: tuple[float, float] | None, what: str) -> int:
    """A length as a whole number of grid cells."""
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
    if not np.isclose(dy, dx, rtol=1e-3):
        raise MetricError(
            f"The grid cells are not square ({dy:g} m x {dx:g} m): give the {what} in cells."
        )
    cells = metres / dx
    if cells < 1 - 1e-6 or not np.isclose(cells, round(cells), rtol=1e-6, atol=1e-6):
        raise MetricError(
            f"The {what} {value!r} is {cells:g} grid cells of {dx:g} m: give a whole number of "
            f"cells, e.g. {max(1, round(cells))} or '{max(1, round(cells)) * dx / 1000:g} km'."
        )
    return round(cells)


def _index(name: str, values: list[Any]) -> pd.Index:
    return pd.Index(values, name=name)


def _label_coords(ds: xr.Dataset, given: list[Any], units: str, pooling: str) -> xr.Dataset:
    """CF attributes of the threshold/scale/window coordinates and threshold labels."""
    if THRESHOLD in ds.coords:
        labels = [
            f"{g:g} {units}" if isinstance(g, (int, float, np.integer, np.floating)) else str(g)
            for g in given
        ]
        ds = ds.assign_coords(threshold_label=(THRESHOLD, labels))
        ds[THRESHOLD].attrs = {
            "long_name": "event threshold",
            "units": units,
            "comment": "an event is a value >= threshold",
        }
        ds["threshold_label"].attrs = {"long_name": "event threshold as given"}
    if SCALE in ds.coords:
        ds[SCALE].attrs = {
            "long_name": f"side of the {pooling}-pooling blocks",
            "units": "1",
            "comment": "in grid cells; 1 = no pooling",
        }
    if WINDOW in ds.coords:
        ds[WINDOW].attrs = {
            "long_name": "side of the FSS neighbourhood",
            "units": "1",
            "comment": "in grid cells",
        }
    return ds


def _order(dims: Iterable[Hashable]) -> list[Hashable]:
    first = [cv.INIT_TIME, cv.LEAD_TIME, THRESHOLD, WINDOW, SCALE]
    dims = list(dims)
    return [d for d in first if d in dims] + [d for d in dims if d not in first]


def _power_units(units: str) -> str:
    from xnowcast.metrics.registry import METRICS

    return METRICS["mse"].result_units(units)


def _fmt(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t, unit="m"))


def _dataset_attrs(
    original: xr.DataArray | xr.Dataset,
    fc: xr.DataArray,
    units: str,
    obs_units: str,
    reduce: list[Hashable],
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "title": "forecast verification scores",
        "Conventions": "CF-1.10",
        "forecast_units": units,
        "observation_units": obs_units,
        "reduced_dims": " ".join(str(d) for d in reduce),
        "events": "values >= threshold",
        "missing_data": "pairs with a missing forecast or observation are excluded",
    }
    for key in ("model", "weights", "source"):
        value = fc.attrs.get(key, getattr(original, "attrs", {}).get(key))
        if value is not None:
            attrs[f"forecast_{key}"] = value
    return cv.append_history(attrs, "scores computed by xnowcast.verification.verify")

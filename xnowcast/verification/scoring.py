"""``verify``: score forecasts against observations and return a tidy Dataset."""

from __future__ import annotations

import functools
import operator
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import pint
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import CoordinateError
from xnowcast.metrics import (
    CATEGORICAL_SCORES,
    MetricError,
    atmodist_terms_array,
    categorical_scores,
    crps,
    metric_info,
    pool,
    ssim_terms_array,
)
from xnowcast.metrics._common import as_dims, mask_pair, whole_fields
from xnowcast.metrics.sums import SumsPlan, score_sums, scores_from_sums
from xnowcast.units import convert_dataarray, to_data_units, unit_kind, units_of
from xnowcast.verification.alignment import align_observations, find_axes, lead_step
from xnowcast.verification.lengths import grid_cells, metric_spacing
from xnowcast.verification.variogram import (
    DEFAULT_LAGS,
    LAG,
    RATIO_COMMENT,
    lag_cells,
    semivariogram_ratio,
)

__all__ = ["verify"]

Threshold = float | int | str | pint.Quantity
Length = int | str | pint.Quantity
Forecast = xr.DataArray | xr.Dataset
THRESHOLD, SCALE, WINDOW = "threshold", "scale", "window"
_CONTINUOUS = ("mse", "mae", "rmse", "bias")
_CRPS = ("crps", "crps_fair")
_WHOLE_FIELD = ("fss", "ssim", "atmodist", "semivariogram_ratio")
#: Reflectivity is scored in this rain rate by the amount scores (errors, CRPS).
RAIN_RATE = "mm h-1"
#: Provenance attributes of a forecast, as written by xnowcast's pipelines
#: (``xnowcast_model``) or by hand (``model``), recorded as ``forecast_<key>``.
_PROVENANCE = ("model", "weights", "weights_sha256", "version")


@overload
def verify(forecast: Forecast, observations: Forecast, *args: Any, **kwargs: Any) -> xr.Dataset: ...
@overload
def verify(
    forecast: Mapping[str, Forecast], observations: Forecast, *args: Any, **kwargs: Any
) -> dict[str, xr.Dataset]: ...
def verify(
    forecast: Forecast | Mapping[str, Forecast],
    observations: Forecast,
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
    variogram_lags: Length | Sequence[Length] = DEFAULT_LAGS,
    common_mask: bool | None = None,
    atmodist_weights: str | None = None,
) -> xr.Dataset | dict[str, xr.Dataset]:
    """Score a forecast (or several, side by side) against observations.

    Parameters
    ----------
    forecast
        A nowcast: dims ``(init_time?, lead_time, member?, y, x)`` with a
        ``valid_time`` coordinate (``init_time + lead_time``) and ``units``; or a
        Dataset holding one (found like the observations' variable).  Or a
        mapping ``{name: forecast}`` of several systems to compare: each is
        scored, by default on the pixels known in all of them (``common_mask``).
    observations
        Observed fields with a time axis (dims ``(time, y, x)``) on the forecast's
        grid (or a larger grid that contains it), a DataArray or a Dataset whose
        precipitation variable is found by CF ``standard_name`` (or ``var``).
        They are converted to the forecast's units when these differ.
    metrics
        Names from :func:`xnowcast.metrics.available_metrics`: ``csi``, ``hss``,
        ``pod``, ``far``, ``fbias``, ``ets``, ``crps``, ``crps_fair``, ``mse``, ``mae``,
        ``rmse``, ``bias``, ``fss``, ``ssim``, ``atmodist`` (the learned distance of a
        self-supervised radar encoder, computed in mm/h: 0 for identical fields, 1 for
        radar fields an hour apart; see :mod:`xnowcast.metrics.learned`),
        ``semivariogram_ratio`` (the forecast's empirical semivariogram of
        ``log(1 + R)`` over the observation's, by lag; 1 is perfect, below 1
        smoother; see :mod:`xnowcast.metrics.variogram`).
    thresholds
        Event thresholds (events are values ``>= threshold``): numbers in the
        forecast's units, strings such as ``"1 mm/h"`` or pint quantities, which
        are converted (a dBZ forecast can be scored at ``"1 mm/h"``).
    scales
        Pooling scales for the categorical scores, CRPS and the point-wise errors:
        whole numbers of grid cells, or lengths (``"4 km"``) that are whole
        multiples of the grid spacing to within 0.1 % (``"9 km"`` is 9 cells of
        a 999.674 m grid).  ``1`` is no pooling.
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
    variogram_lags
        Lags of ``semivariogram_ratio`` (a ``lag`` dim): grid cells or lengths.
    common_mask
        With several forecasts: score every system on the same pixels, those
        known (not NaN) in all of them (and cut to the init and lead times they
        share).  Default: on when several forecasts are passed.  ``False``
        scores each on its own known pixels.
    atmodist_weights
        Path of the encoder weights ``atmodist`` uses (e.g. written by ``xnowcast train
        atmodist``); default: the shipped ``atmodist-radar.safetensors``.

    Returns
    -------
    xarray.Dataset or dict of xarray.Dataset
        One variable per metric with the forecast's ``lead_time`` (and other
        unreduced dims) plus ``threshold`` (threshold scores), ``window`` (FSS)
        and ``scale`` (pooled scores).  Attributes: ``long_name``, ``units``,
        ``better`` (``higher``/``lower``/``closer``) and ``perfect_score``; the
        Dataset's attributes record the forecast's model and weights
        (``forecast_model``, ``forecast_weights``, ...).  A mapping of
        forecasts gives a dict of such Datasets (what
        :func:`xnowcast.plot.plot_scores` takes).

    Notes
    -----
    The error scores (MSE, MAE, RMSE, mean error) and CRPS of a reflectivity
    forecast (dBZ, or Z in mm6 m-3) are computed in rain rate (mm/h, through
    the forecast's Z-R relation, Marshall-Palmer by default): an error in dBZ
    is not defined where it does not rain (``-inf`` dBZ).  Their ``units`` say so.

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
    options = {
        "metrics": metrics,
        "thresholds": thresholds,
        "scales": scales,
        "fss_window": fss_window,
        "dim": dim,
        "var": var,
        "pooling": pooling,
        "fss_padding": fss_padding,
        "ssim_window": ssim_window,
        "ssim_data_range": ssim_data_range,
        "variogram_lags": variogram_lags,
        "atmodist_weights": None if atmodist_weights is None else str(atmodist_weights),
    }
    if isinstance(forecast, (xr.DataArray, xr.Dataset)) or not isinstance(forecast, Mapping):
        return _verify_one(forecast, observations, **options)
    if not forecast:
        raise MetricError("No forecast to score: pass {'name': forecast, ...}.")
    fields = {str(name): cv.find_precipitation(fc, var) for name, fc in forecast.items()}
    together = len(fields) > 1 if common_mask is None else bool(common_mask)
    if together:
        fields = _on_common_pixels(fields)
    out = {}
    for name, fc in fields.items():
        scores = _verify_one(fc, observations, original=forecast[name], **options)
        if together:
            scores.attrs["common_mask"] = (
                "scored on the pixels known in every forecast of: " + ", ".join(fields)
            )
        out[name] = scores
    return out


def _on_common_pixels(fields: dict[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    """Each forecast set to NaN wherever any forecast (any member) is missing."""
    known = [
        fc.notnull().all(cv.MEMBER) if cv.MEMBER in fc.dims else fc.notnull()
        for fc in fields.values()
    ]
    known = [k.reset_coords(drop=True) for k in xr.align(*known, join="inner")]
    everywhere = functools.reduce(operator.and_, known)
    out = {}
    for name, fc in fields.items():
        masked = fc.where(everywhere)
        masked.attrs = dict(fc.attrs)
        out[name] = masked
    return out


def _verify_one(
    forecast: Forecast,
    observations: Forecast,
    *,
    metrics: str | Sequence[str],
    thresholds: Threshold | Sequence[Threshold],
    scales: Length | Sequence[Length],
    fss_window: Length | Sequence[Length],
    dim: str | Sequence[str] | None,
    var: str | None,
    pooling: Literal["avg", "max"],
    fss_padding: Literal["valid", "zeros"],
    ssim_window: int,
    ssim_data_range: float | None,
    variogram_lags: Length | Sequence[Length],
    atmodist_weights: str | None,
    original: Forecast | None = None,
) -> xr.Dataset:
    infos = [metric_info(name) for name in _names(metrics)]
    fc = cv.find_precipitation(forecast, var)
    obs = cv.find_precipitation(observations, var)
    axes = find_axes(fc, require_time=False)
    space = (axes.y, axes.x)
    units = units_of(fc)
    obs_units = units_of(obs)
    step = lead_step(fc)
    aligned = align_observations(fc, obs)
    if obs_units != units:
        aligned = convert_dataarray(aligned, units, time_step=step)

    member = cv.MEMBER if cv.MEMBER in fc.dims else None
    reduce = _reduce_dims(fc, dim, space)
    deterministic = reduce + ([member] if member and member not in reduce else [])

    given_thresholds = _listify(thresholds)
    threshold_values = [to_data_units(t, units, time_step=step) for t in given_thresholds]
    spacing = metric_spacing(fc, axes)
    scale_cells = [grid_cells(s, spacing, "scale") for s in _listify(scales)]
    windows = [grid_cells(w, spacing, "fss_window") for w in _listify(fss_window)]
    coords = {
        THRESHOLD: pd.Index(threshold_values, name=THRESHOLD),
        SCALE: pd.Index(scale_cells, name=SCALE),
        WINDOW: pd.Index(windows, name=WINDOW),
    }

    wanted = [info.name for info in infos]
    categorical = [n for n in wanted if n in CATEGORICAL_SCORES]
    continuous = [n for n in wanted if n in _CONTINUOUS]
    for name in _WHOLE_FIELD:
        if name in wanted:
            _need_space(name, space, reduce)
    # errors and CRPS of reflectivity are computed in rain rate
    amount_units = units
    amount_fc, amount_obs = fc, aligned
    if (continuous or set(_CRPS) & set(wanted)) and unit_kind(units) in ("dbz", "linear_z"):
        amount_units = RAIN_RATE
        amount_fc = convert_dataarray(fc, RAIN_RATE, time_step=step)
        amount_obs = convert_dataarray(aligned, RAIN_RATE, time_step=step)

    out: dict[str, xr.DataArray] = {}
    if all(d in reduce for d in space):
        fss_windows = windows if "fss" in wanted else []
        same = amount_fc is fc
        plan = SumsPlan(
            tuple(threshold_values), tuple(scale_cells), tuple(fss_windows), pooling,
            fss_padding, events=bool(categorical), errors=bool(continuous) and same,
        )  # fmt: skip
        if categorical or fss_windows or plan.errors:
            sums = score_sums(fc, aligned, plan, spatial_dims=space, member_dim=member, dim=reduce)
            names = [
                *categorical,
                *(continuous if plan.errors else []),
                *(["fss"] if fss_windows else []),
            ]
            out.update(scores_from_sums(sums, plan, names))
        if continuous and not same:
            plan = SumsPlan(scales=tuple(scale_cells), pooling=pooling, errors=True)
            sums = score_sums(
                amount_fc, amount_obs, plan, spatial_dims=space, member_dim=member, dim=reduce
            )
            out.update(scores_from_sums(sums, plan, continuous))
        out = {
            name: value.assign_coords({d: coords[d] for d in value.dims if d in coords})
            for name, value in out.items()
        }
    else:
        fc_m, obs_m = mask_pair(fc, aligned, member)
        amount_m = (
            mask_pair(amount_fc, amount_obs, member) if amount_fc is not fc else (fc_m, obs_m)
        )
        out.update(
            _pointwise_scores(
                categorical, continuous, fc_m, obs_m, amount_m, threshold_values, coords, scale_cells,
                pooling, space, deterministic,
            )
        )  # fmt: skip
    crps_names = [n for n in _CRPS if n in wanted]
    if crps_names:
        fc_m, obs_m = mask_pair(amount_fc, amount_obs, member)
        dims = [d for d in reduce if d != member]
        values: dict[str, list[xr.DataArray]] = {n: [] for n in crps_names}
        for cells in scale_cells:  # pooled once for both estimators
            pooled_fc = pool(fc_m, cells, spatial_dims=space, how=pooling)
            pooled_obs = pool(obs_m, cells, spatial_dims=space, how=pooling)
            for name in crps_names:
                values[name].append(crps(pooled_fc, pooled_obs, dims, member_dim=member or
                                         cv.MEMBER, fair=name == "crps_fair"))  # fmt: skip
        for name, per_scale in values.items():
            out[name] = xr.concat(per_scale, dim=coords[SCALE], coords="minimal")
    if "ssim" in wanted:
        fc_m, obs_m = mask_pair(fc, aligned, member)
        out["ssim"] = _ssim(fc_m, obs_m, space, deterministic, ssim_window, ssim_data_range)
    if "atmodist" in wanted or "semivariogram_ratio" in wanted:  # scored in rain rate
        rate_fc, rate_obs = fc, aligned
        if units not in ("mm/h", "mm h-1"):
            rate_fc = convert_dataarray(fc, RAIN_RATE, time_step=step)
            rate_obs = convert_dataarray(aligned, RAIN_RATE, time_step=step)
        fc_m, obs_m = mask_pair(rate_fc, rate_obs, member)
        if "atmodist" in wanted:
            terms_of = functools.partial(atmodist_terms_array, weights=atmodist_weights)
            out["atmodist"] = _field_mean(terms_of, fc_m, obs_m, space, deterministic)
        if "semivariogram_ratio" in wanted:
            lags = lag_cells(variogram_lags, spacing)
            out["semivariogram_ratio"] = semivariogram_ratio(
                fc_m, obs_m, space, deterministic, lags, spacing
            )

    data_vars = {}
    for info in infos:
        da = out[info.name]
        da = da.transpose(*_order(da.dims))
        amount = info.name in _CONTINUOUS or info.name in _CRPS
        da.attrs = info.cf_attrs(amount_units if amount else units)
        if amount and amount_units != units:
            da.attrs["comment"] = (
                f"computed in rain rate from the {units} fields (Z-R relation Z = 200 R**1.6)"
            )
        if info.poolable:
            da.attrs["pooling"] = pooling
        if info.name == "fss":
            da.attrs["padding"] = fss_padding
        if info.name == "ssim":
            da.attrs["window"] = int(ssim_window)
        if info.name == "atmodist":
            da.attrs["comment"] = (
                "mean over fields of the distance between the representations of a "
                "self-supervised radar encoder (xnowcast.metrics.learned), in mm/h; "
                "0: identical, 1: radar fields 60 minutes apart"
            )
            da.attrs["encoder_weights"] = atmodist_weights or "atmodist-radar.safetensors"
        if info.name == "semivariogram_ratio":
            da.attrs["comment"] = RATIO_COMMENT
        data_vars[info.name] = da
    result = xr.Dataset(data_vars)
    result = _label_coords(result, given_thresholds, units, pooling)
    if cv.VALID_TIME in result.coords and cv.VALID_TIME not in fc.coords:
        result = result.drop_vars(cv.VALID_TIME)
    source = original if original is not None else forecast
    result.attrs = _dataset_attrs(source, fc, units, obs_units, reduce)
    return result


# ---------------------------------------------------------------------------- helpers


def _pointwise_scores(
    categorical: list[str],
    continuous: list[str],
    fc: xr.DataArray,
    obs: xr.DataArray,
    amounts: tuple[xr.DataArray, xr.DataArray],
    thresholds: list[float],
    coords: dict[str, pd.Index],
    scale_cells: list[int],
    pooling: Literal["avg", "max"],
    space: tuple[Hashable, Hashable],
    deterministic: list[Hashable],
) -> dict[str, xr.DataArray]:
    """Scores of fields not reduced over space (``dim`` without the spatial dims)."""
    per_scale: dict[str, list[xr.DataArray]] = {}
    for cells in scale_cells:
        fcs = pool(fc, cells, spatial_dims=space, how=pooling)
        obs_s = pool(obs, cells, spatial_dims=space, how=pooling)
        found: dict[str, xr.DataArray] = {}
        if categorical:
            per_threshold = [
                categorical_scores(categorical, fcs, obs_s, value, deterministic)
                for value in thresholds
            ]
            for name in categorical:
                found[name] = xr.concat(
                    [scores[name] for scores in per_threshold],
                    dim=coords[THRESHOLD],
                    coords="minimal",
                )
        if continuous:
            a_fc = pool(amounts[0], cells, spatial_dims=space, how=pooling)
            a_obs = pool(amounts[1], cells, spatial_dims=space, how=pooling)
            found.update(_mean_errors(a_fc.astype(np.float64) - a_obs, deterministic, continuous))
        for name, value in found.items():
            per_scale.setdefault(name, []).append(value)
    return {
        name: xr.concat(values, dim=coords[SCALE], coords="minimal")
        for name, values in per_scale.items()
    }


def _mean_errors(
    error: xr.DataArray, deterministic: list[Hashable], names: list[str]
) -> dict[str, xr.DataArray]:
    dims = [d for d in deterministic if d in error.dims]
    out = {}
    for name in names:
        if name in ("mse", "rmse"):
            squared = (error**2).mean(dims)
            out[name] = squared if name == "mse" else np.sqrt(squared)
        else:
            out[name] = (np.abs(error) if name == "mae" else error).mean(dims)
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
    a, b = whole_fields((fc, obs), space)
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


def _field_mean(
    terms_of: Any,
    fc: xr.DataArray,
    obs: xr.DataArray,
    space: tuple[Hashable, Hashable],
    deterministic: list[Hashable],
) -> xr.DataArray:
    """Mean over fields of a per-field score given as ``(..., [value sum, count])`` terms."""
    ydim, xdim = space
    a, b = whole_fields((fc, obs), space)
    terms = xr.apply_ufunc(
        terms_of,
        a,
        b,
        input_core_dims=[[ydim, xdim], [ydim, xdim]],
        output_core_dims=[["field_term"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"field_term": 2}},
    )
    extra = [d for d in deterministic if d in terms.dims]
    if extra:
        terms = terms.sum(extra)
    count = terms.isel(field_term=1)
    return terms.isel(field_term=0) / count.where(count > 0)


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
    first = [cv.INIT_TIME, cv.LEAD_TIME, THRESHOLD, WINDOW, SCALE, LAG]
    dims = list(dims)
    return [d for d in first if d in dims] + [d for d in dims if d not in first]


def _dataset_attrs(
    original: Forecast | Mapping[str, Any],
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
    sources = (fc.attrs, getattr(original, "attrs", {}))
    for key in _PROVENANCE:
        for found in sources:
            value = found.get(f"xnowcast_{key}", found.get(key))
            if value is not None:
                attrs[f"forecast_{key}"] = value
                break
    for found in sources:
        if found.get("source") is not None:
            attrs["forecast_source"] = found["source"]
            break
    return cv.append_history(attrs, "scores computed by xnowcast.verification.verify")

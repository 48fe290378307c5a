"""The nowcast pipeline: radar frames in, a CF forecast DataArray out."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import numpy as np
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.cf_output import without_coordinate_fill
from xnowcast.checks import check_precipitation_values
from xnowcast.errors import DataValueError, MissingDataWarning, ModelError, TimeAxisError
from xnowcast.fields import (
    check_run_options,
    is_dask,
    output_attrs,
    package_version,
    positive_int,
    prepare_field,
    restore_orientation,
    spatial_coords,
)
from xnowcast.options import OPTIONS
from xnowcast.registry import get_spec
from xnowcast.units import convert_values

__all__ = ["nowcast"]

_MODEL_UNITS = "mm/h"


def _init_times(times: np.ndarray, init_time: Any) -> tuple[np.ndarray, bool]:
    """The requested initialisation times and whether they form a dim (hindcast)."""
    if init_time is None:
        return times[-1:], False
    if isinstance(init_time, slice):
        index = xr.DataArray(times, dims="t", coords={"t": times})
        chosen = index.sel(t=init_time).values
        if chosen.size == 0:
            raise TimeAxisError(
                f"No data times fall in init_time={init_time}: the data cover "
                f"{times[0]} to {times[-1]}."
            )
        return chosen, True
    scalar = np.ndim(init_time) == 0
    try:
        chosen = np.atleast_1d(np.asarray(init_time, dtype="datetime64[ns]"))
    except (ValueError, TypeError):
        raise TimeAxisError(
            f"Cannot read init_time={init_time!r} as a time: pass a datetime, a string such as "
            f"'{np.datetime_as_string(times[-1], unit='m')}', a list of them or a slice; the data "
            f"cover {np.datetime_as_string(times[0], unit='m')} to "
            f"{np.datetime_as_string(times[-1], unit='m')}."
        ) from None
    return chosen, not scalar


def _window_indices(
    times: np.ndarray, inits: np.ndarray, frames: int, step: np.timedelta64, *, strict: bool
) -> tuple[np.ndarray, dict[int, str]]:
    """Indices ``(N, frames)`` of the input frames ending at each init time, and the windows
    that are incomplete (``{n: reason}``; their indices point at the init frame, never read).

    ``strict``: an incomplete window raises instead (a single init time, ``on_missing="raise"``).
    """
    position = {t: i for i, t in enumerate(times.astype("datetime64[ns]"))}
    out = np.empty((inits.size, frames), dtype=np.int64)
    incomplete: dict[int, str] = {}
    for n, init in enumerate(inits):
        if init not in position:
            raise TimeAxisError(
                f"init_time {np.datetime_as_string(init, unit='s')} is not a time of the data "
                f"({np.datetime_as_string(times[0], unit='s')} to "
                f"{np.datetime_as_string(times[-1], unit='s')}): choose one of da.time."
            )
        wanted = [init - k * step for k in range(frames - 1, -1, -1)]
        missing = [str(np.datetime_as_string(t, unit="s")) for t in wanted if t not in position]
        if missing:
            have = sum(t in position for t in wanted)
            reason = (
                "too few frames before it" if wanted[0] < times[0] else "a gap in the input window"
            )
            if strict:
                raise TimeAxisError(
                    f"The model needs {frames} input frames ending at "
                    f"{np.datetime_as_string(init, unit='s')} every "
                    f"{step / np.timedelta64(1, 'm'):g} min, but only {have} exist ({reason}; "
                    f"missing {missing}). Choose a later init_time or fill the gap."
                )
            incomplete[n] = f"{reason}: no frame at {', '.join(missing)}"
            out[n] = position[init]
            continue
        out[n] = [position[t] for t in wanted]
    return out, incomplete


def _empty_frames(windows: np.ndarray) -> np.ndarray:
    """``(N, T)`` True where a frame of a window is entirely NaN (a missing radar frame)."""
    return np.isnan(windows).all(axis=(-2, -1))


def _frame_times(inits: np.ndarray, frames: int, step: np.timedelta64) -> np.ndarray:
    """``(N, frames)`` the times of each window's frames."""
    offsets = (np.arange(frames - 1, -1, -1) * step).astype("timedelta64[ns]")
    return inits.astype("datetime64[ns]")[:, None] - offsets[None, :]


def _fmt(times: np.ndarray) -> str:
    return ", ".join(str(np.datetime_as_string(t, unit="s")) for t in np.ravel(times))


def _empty_frame_reasons(empty: np.ndarray, frame_times: np.ndarray) -> dict[int, str]:
    return {
        int(n): f"entirely NaN frame(s) at {_fmt(frame_times[n][empty[n]])}"
        for n in np.flatnonzero(empty.any(axis=1))
    }


def _raise_empty_frames(empty: np.ndarray, frame_times: np.ndarray) -> None:
    """A window with an entirely NaN frame, named by its init time (strict mode)."""
    rows = np.flatnonzero(empty.any(axis=1))
    if rows.size:
        n = rows[0]
        raise DataValueError(
            f"init_time {np.datetime_as_string(frame_times[n, -1], unit='s')}: "
            f"{int(empty[n].sum())} input frame(s) are entirely NaN ({_fmt(frame_times[n][empty[n]])}): "
            "a missing radar frame is a gap in the time series. Choose an init_time whose input "
            "frames all exist, or fill the gap (e.g. interpolate in time) first."
        )


def _warn_incomplete(inits: np.ndarray, reasons: dict[int, str], total: int) -> None:
    """One warning listing the init times whose forecasts are NaN."""
    if not reasons:
        return
    listed = [
        f"{np.datetime_as_string(inits[n], unit='s')} ({reasons[n]})" for n in sorted(reasons)
    ]
    more = f" and {len(listed) - 20} more" if len(listed) > 20 else ""
    warnings.warn(
        f"{len(listed)} of {total} init times have an incomplete input window and give NaN "
        f"forecasts: {'; '.join(listed[:20])}{more}. Fill the gaps, choose other init times, "
        "or pass on_missing='raise' to get an error instead.",
        MissingDataWarning,
        stacklevel=3,
    )


def _input_step(da: xr.DataArray, time_dim: str) -> np.timedelta64:
    """The data's time step (the smallest interval; gaps are found per window)."""
    times = da[time_dim].values
    if not np.issubdtype(times.dtype, np.datetime64):
        return cv.time_step(da, time_dim)  # raises the clear error
    cv.check_time_jitter(times, time_dim)  # a time a few seconds off: named, with the fix
    if times.size < 2:
        raise TimeAxisError(
            f"A single time ({times.size} frame) gives no time step: nowcasting needs "
            "several consecutive input frames."
        )
    diffs = np.diff(times)
    if np.any(diffs <= np.timedelta64(0, "ns")):
        return cv.time_step(da, time_dim)  # duplicate / non-monotonic: its clear error
    step = diffs.min().astype("timedelta64[ns]")
    off_grid = np.nonzero(diffs % step != np.timedelta64(0, "ns"))[0]
    if off_grid.size:
        shown = [
            f"{np.datetime_as_string(times[i], unit='s')} -> "
            f"{np.datetime_as_string(times[i + 1], unit='s')}"
            for i in off_grid[:5]
        ]
        raise TimeAxisError(
            f"Irregular time axis: the step is {step / np.timedelta64(1, 'm'):g} min but "
            f"{off_grid.size} interval(s) are not whole multiples of it, e.g. {shown}. "
            "Resample the data to a regular step first."
        )
    return step


def _grid_spacing_km(da: xr.DataArray, axes: cv.Axes) -> float | None:
    """Pixel size in km of a projected grid (the mean of dx and dy); None when unknown.

    Unknown: coordinates without length units (e.g. latitude/longitude in degrees,
    or bare indices).
    """
    lengths = {"m", "metre", "meter", "metres", "meters", "km", "kilometre", "kilometer"}
    lengths |= {"kilometres", "kilometers"}
    units = {str(da[dim].attrs.get("units", "")).strip().lower() for dim in (axes.y, axes.x)}
    if not units <= lengths:
        return None
    try:
        dy, dx = cv.grid_spacing(da, axes)
    except (ValueError, TypeError):
        return None
    return 0.5 * (dy + dx) / 1000.0


def _nowcast_block(
    windows: np.ndarray,
    *,
    request: Any,
    units: str,
    step: np.timedelta64,
    steps: int,
    members: int,
    seed: int | None,
    precision: str,
    batch_size: int | str,
    progress: bool,
    init_keys: np.ndarray,
    skip: np.ndarray,
    strict: bool,
    check_values: bool,
    geometry: dict[str, float | None] | None = None,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """Numpy in the data's units -> ``(N, steps, members, H, W)`` in the data's units.

    ``init_keys`` holds one key (init time in ns) per window of the whole request and
    ``skip`` whether its window is known to be incomplete; a dask block takes its
    slice through ``block_info``.  Windows with an entirely NaN frame raise (``strict``)
    or give NaN forecasts; the others are checked and run.
    """
    from xnowcast.runtime import run_nowcast

    total = init_keys.size
    if block_info is not None and 0 in block_info:
        start, stop = block_info[0]["array-location"][0]
        init_keys, skip = init_keys[start:stop], skip[start:stop]

    windows = np.asarray(windows)
    n, frames, h, w = windows.shape
    inits = init_keys.astype("datetime64[ns]")
    frame_times = _frame_times(inits, frames, step)
    if strict and np.isnan(windows).all():
        raise DataValueError(
            f"The input of init_time {_fmt(inits[:1])} is entirely NaN (no valid radar data): "
            "check the selection, or the masking of no-data values when the data were read."
        )
    # in memory, a hindcast's entirely NaN frames were found before (skip holds them)
    seen = strict or block_info is not None
    empty = _empty_frames(windows) if seen else np.zeros((n, frames), dtype=bool)
    if strict:
        _raise_empty_frames(empty, frame_times)
    found = _empty_frame_reasons(empty & ~skip[:, None], frame_times)
    if found and block_info is not None:  # lazy: seen only now, while computing
        _warn_incomplete(inits, found, total)
    run = ~(skip | empty.any(axis=1))
    out = np.full((n, steps, members, h, w), np.nan, dtype=np.float32)
    if not run.any():
        return out
    good = windows if run.all() else windows[run]
    check_precipitation_values(
        good,
        units,
        times=frame_times[run],
        time_step=step,
        require_data=False,
        check_values=check_values,
    )
    rate = convert_values(good, units, _MODEL_UNITS, time_step=step).astype(np.float32, copy=False)
    result = run_nowcast(
        rate,
        request,
        steps=steps,
        members=members,
        seed=seed,
        precision=precision,
        batch_size=batch_size,
        progress=progress,
        init_keys=init_keys[run],
        geometry=geometry,
    )
    result = np.moveaxis(result, 1, 2)
    if units not in ("mm/h", "mm h-1"):
        result = convert_values(result, _MODEL_UNITS, units, time_step=step).astype(
            np.float32, copy=False
        )
    out[run] = result
    return out


def nowcast(
    obj: xr.Dataset | xr.DataArray,
    model: str = "dgmr",
    steps: int = 18,
    members: int = 1,
    init_time: Any = None,
    *,
    var: str | None = None,
    units: str | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    precision: str = "auto",
    seed: int | None = None,
    progress: bool | None = None,
    weights: Any = "default",
    config: str | dict[str, Any] | None = None,
    on_missing: str = "nan",
    check_values: bool = True,
) -> xr.DataArray:
    """Nowcast precipitation with a registered model.

    Parameters
    ----------
    obj
        Radar field (DataArray) or a Dataset holding one (found by CF standard_name,
        or named with ``var``), with a regular time axis, regular projection grid
        and ``units`` (any rain rate, accumulation or reflectivity unit).
    model
        A nowcast model: ``"dgmr"``, ``"extrapolation"``, ``"persistence"``
        (see :func:`xnowcast.models.list_models`).
    steps
        Number of lead times, each one input time step apart.
    members
        Ensemble members (stochastic models only).
    init_time
        None: nowcast from the last time.  A time, a list of times or a slice: a
        hindcast with one forecast per initialisation time (dim ``init_time``).
    var, units
        The Dataset variable, and units overriding ``attrs["units"]``.
    device, batch_size, precision
        ``"auto"`` picks CUDA when available; batch size from the domain size;
        float32 (``"bf16"`` for bfloat16 autocast).
    seed
        Makes stochastic models reproducible: each initialisation time draws its
        members from a generator seeded by ``(seed, init_time)``, so the same forecast
        comes out eager or lazy, alone or in a hindcast (on the same device with the
        same ``batch_size``).
    progress
        Show a progress bar (default: the ``progress`` option).
    weights, config
        ``"default"`` shipped weights, a shipped name, a path, or None (untrained);
        the config when building without weights.
    on_missing
        What a hindcast (a list or slice of ``init_time``) does with an init time whose
        input window is incomplete (a time gap, too few frames before it, or an
        entirely NaN frame): ``"nan"`` (default) gives a NaN forecast for it, with one
        :class:`~xnowcast.MissingDataWarning` listing them and the attribute
        ``xnowcast_incomplete_init_times``; ``"raise"`` raises, naming the time.  A
        single init time always raises.  With dask input an entirely NaN frame is
        only seen when computed: its forecast is NaN (as in memory) and the warning
        comes at compute time.
    check_values
        Refuse implausible input values before any model runs: no-data codes,
        negative rain, rain rates above 500 mm/h (``xnowcast.checks.MAX_RAIN_RATE``;
        a few isolated pixels of float data below 10,000 mm/h pass as artefacts)
        and reflectivity outside -35 to 95 dBZ (``xnowcast.checks.DBZ_RANGE``); see
        :func:`xnowcast.checks.check_precipitation_values`.  ``False`` skips these checks (values that float32 cannot
        hold and ``+inf`` are always refused).

    Returns
    -------
    xarray.DataArray
        Dims (``init_time``,) ``lead_time``, (``member``,) y, x, in the input's units,
        with ``valid_time = init_time + lead_time``, the input's spatial coordinates,
        orientation and grid mapping, and CF attributes recording the model and its
        weights.  Lazy when the input is dask-backed.  Every model runs on the
        canonical orientation (north up, x east; see
        :func:`xnowcast.conventions.orientation_flips`), so flipping the input's y or
        x gives the flipped output.

    Raises
    ------
    ModelError, UnitsError, TimeAxisError, CoordinateError, DataValueError
        For bad requests and bad input, before any model runs.
    """
    from xnowcast.runtime import ModelRequest

    spec = get_spec(model, task="nowcast")
    check_run_options(device, batch_size, precision)
    steps = positive_int(steps, "steps")
    members = positive_int(members, "members")
    if members > 1 and not spec.stochastic:
        raise ModelError(
            f"Model {spec.name!r} is deterministic: every member would be identical. "
            "Use members=1, or a stochastic model such as 'dgmr' for an ensemble."
        )
    if on_missing not in ("nan", "raise"):
        raise ModelError(f"on_missing must be 'nan' or 'raise', not {on_missing!r}.")
    da, axes, src_units = prepare_field(obj, var=var, units=units)
    flips = cv.orientation_flips(da, axes)
    da = cv.flip_axes(da, flips)
    step = _input_step(da, axes.time)
    if spec.time_step_minutes is not None and step != np.timedelta64(
        int(spec.time_step_minutes * 60), "s"
    ):
        raise TimeAxisError(
            f"Model {spec.name!r} was trained on {spec.time_step_minutes:g}-min frames but the data "
            f"step is {step / np.timedelta64(1, 'm'):g} min. Resample the data to "
            f"{spec.time_step_minutes:g} min, or use 'extrapolation' (any step)."
        )
    request = ModelRequest.create(spec.registry_key, config=config, weights=weights, device=device)
    frames = int(request.load().input_frames)
    times = da[axes.time].values
    inits, as_dim = _init_times(times, init_time)
    strict = not as_dim or on_missing == "raise"
    index, incomplete = _window_indices(times, inits, frames, step, strict=strict)
    windows = da.isel({axes.time: xr.DataArray(index, dims=(cv.INIT_TIME, "window"))}).transpose(
        cv.INIT_TIME, "window", axes.y, axes.x
    )
    data = windows.data
    if not is_dask(data):
        data = np.asarray(data)
        if not strict:  # entirely NaN frames are known now: one warning for all
            empty = np.isnan(np.asarray(da.data)).all(axis=(-2, -1))[index]
            empty[list(incomplete)] = False
            incomplete.update(_empty_frame_reasons(empty, _frame_times(inits, frames, step)))
    skip = np.zeros(inits.size, dtype=bool)
    skip[list(incomplete)] = True
    _warn_incomplete(inits, incomplete, inits.size)
    show = OPTIONS["progress"] if progress is None else progress
    block = dict(
        request=request,
        units=src_units,
        step=step,
        steps=steps,
        members=members,
        seed=seed,
        precision=precision,
        batch_size=batch_size,
        progress=show,
        init_keys=inits.astype("datetime64[ns]").astype(np.int64),
        skip=skip,
        strict=strict,
        check_values=bool(check_values),
        geometry={
            "grid_spacing_km": _grid_spacing_km(da, axes),
            "time_step_minutes": float(step / np.timedelta64(1, "m")),
        },
    )
    if is_dask(data):
        import dask.array as dsa

        data = data.rechunk({0: data.chunks[0], 1: -1, 2: -1, 3: -1})
        values = dsa.map_blocks(
            partial(_nowcast_block, **block),
            data,
            drop_axis=1,
            new_axis=[1, 2],
            chunks=(data.chunks[0], (steps,), (members,), data.chunks[2], data.chunks[3]),
            dtype=np.float32,
            meta=np.empty((0, 0, 0, 0, 0), dtype=np.float32),
        )
    else:
        values = _nowcast_block(data, **block)
    lead = (np.arange(1, steps + 1) * step).astype("timedelta64[ns]")
    coords: dict[str, Any] = dict(spatial_coords(da, axes))
    attrs = cv.forecast_coord_attrs()
    coords[cv.INIT_TIME] = xr.Variable(cv.INIT_TIME, inits, attrs[cv.INIT_TIME])
    coords[cv.LEAD_TIME] = xr.Variable(cv.LEAD_TIME, lead, attrs[cv.LEAD_TIME])
    coords[cv.MEMBER] = xr.Variable(cv.MEMBER, np.arange(members), attrs[cv.MEMBER])
    out = xr.DataArray(
        values,
        dims=(cv.INIT_TIME, cv.LEAD_TIME, cv.MEMBER, axes.y, axes.x),
        coords=coords,
        name=da.name,
    )
    out = out.assign_coords(
        {cv.VALID_TIME: (out[cv.INIT_TIME] + out[cv.LEAD_TIME]).assign_attrs(attrs[cv.VALID_TIME])}
    )
    if members == 1:
        out = out.isel({cv.MEMBER: 0}, drop=True)
    if not as_dim:
        out = out.isel({cv.INIT_TIME: 0})
    out = restore_orientation(out, flips)
    line = f"xnowcast {package_version()}: {spec.name} nowcast, {steps} steps, {members} member(s)"
    out.attrs = output_attrs(da, spec, weights, line, src_units)
    if incomplete:
        out.attrs["xnowcast_incomplete_init_times"] = " ".join(
            str(np.datetime_as_string(inits[n], unit="s")) for n in sorted(incomplete)
        )
    return without_coordinate_fill(out)

"""The downscale pipeline: coarse, infrequent fields in, fine, frequent fields out.

The output grid's cells refine the input's (cell centres, so that a block mean
over ``factor x factor`` cells gives the input grid back); the time axis gets
``time_factor - 1`` frames inserted between input frames, so ``T`` inputs give
``(T - 1) * time_factor + 1`` outputs.  Long series are cut into overlapping
windows of the model's length, and dask-backed input is processed lazily in
blocks of whole windows, which gives exactly the eager result.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.cf_output import without_coordinate_fill
from xnowcast.checks import check_precipitation_values
from xnowcast.errors import CoordinateError, ModelError, TimeAxisError
from xnowcast.fields import (
    check_run_options,
    is_dask,
    output_attrs,
    package_version,
    positive_int,
    prepare_field,
    restore_orientation,
)
from xnowcast.grids import STATIC_NAMES, fine_centres, known_fine_cells, static_fields
from xnowcast.options import OPTIONS
from xnowcast.registry import ModelSpec, ResolvedModel, WeightsRecord, resolve_model
from xnowcast.units import convert_values

__all__ = ["AUTO_MODEL", "downscale", "fine_coordinate", "window_starts"]

#: What ``model="auto"`` runs: the best model measured on the held-out RMI event
#: (``benchmarks/downscale_skill_card.py``): the shipped FC-ZSM on the flow prior,
#: MSE 0.928 x ``flow`` there, 0.914 x on the inserted frames, 0.959 x at input times
#: (it falls back to ``flow``, with a warning, for inputs other than the 10-min /
#: 2-km ones it was trained on; its static fields are made from the input when none
#: are given).  ``model="flow"`` is much faster and within 8 % of it.
AUTO_MODEL = "fczsm"
_WINDOWS_PER_BLOCK = 4


def fine_coordinate(coord: xr.DataArray, factor: int) -> xr.DataArray:
    """Cell centres of a grid refined ``factor`` times (block means give ``coord`` back)."""
    if coord.size < 2:
        raise CoordinateError(f"Coordinate {coord.name!r} needs at least two cells to be refined.")
    fine = fine_centres(coord.values, factor)
    return xr.DataArray(fine, dims=coord.dims, attrs=coord.attrs, name=coord.name)


def window_starts(frames: int, window: int) -> list[int]:
    """Starts of windows of length ``window`` covering ``frames``, consecutive ones sharing a frame."""
    if frames <= window:
        return [0]
    starts = list(range(0, frames - window + 1, window - 1))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return starts


def _assemble(outputs: np.ndarray, starts: list[int], frames: int, time_factor: int) -> np.ndarray:
    """Place window outputs on the fine time axis; each frame comes from the first window holding it."""
    total = (frames - 1) * time_factor + 1
    result = np.empty((total, *outputs.shape[2:]), dtype=np.float32)
    filled = 0
    for out, start in zip(outputs, starts, strict=True):
        first = start * time_factor
        take = out[filled - first :] if filled > first else out
        result[max(first, filled) : max(first, filled) + take.shape[0]] = take
        filled = max(first, filled) + take.shape[0]
    return result[:total]


def _downscale_block(
    frames: np.ndarray,
    *,
    request: ResolvedModel,
    units: str,
    step: Any,
    factor: int,
    time_factor: int,
    window: int | None,
    static: np.ndarray | None,
    batch_size: int | str,
    progress: bool,
    times: np.ndarray,
    check_values: bool = True,
    require_data: bool = True,
) -> np.ndarray:
    """``(T, C, h, w)`` in the data's units -> ``((T-1)*tf+1, h*f, w*f)`` in the data's units.

    ``times`` are the ``T`` frames' times, named when a value check fails.
    """
    from xnowcast.runtime import run_downscale

    frames = np.asarray(frames)
    check_precipitation_values(
        frames[:, 0],
        units,
        times=times,
        time_step=step,
        require_data=require_data,
        check_values=check_values,
    )
    frames = frames.astype(np.float32, copy=False)
    precip = convert_values(frames[:, 0], units, request.units, time_step=step).astype(np.float32)
    valid = np.isfinite(precip)
    model_input = frames.copy()
    model_input[:, 0] = precip
    count = frames.shape[0]
    length = window or count
    if count < length:  # too short for the model: repeat the last frame, crop afterwards
        model_input = np.concatenate(
            [model_input, np.repeat(model_input[-1:], length - count, axis=0)]
        )
    starts = window_starts(model_input.shape[0], length)
    windows = np.stack([model_input[s : s + length] for s in starts])
    outputs = run_downscale(
        windows, request, static=static, batch_size=batch_size, progress=progress
    )
    fine = _assemble(outputs, starts, model_input.shape[0], time_factor)[
        : (count - 1) * time_factor + 1
    ]
    fine = np.where(known_fine_cells(valid, factor, time_factor), fine, np.float32(np.nan))
    if units != request.units:
        fine = convert_values(fine, request.units, units, time_step=step).astype(np.float32)
    return fine


def _stack_fields(
    fields: xr.DataArray | Sequence[xr.DataArray] | xr.Dataset | None,
    axes: cv.Axes,
    dims: tuple[str, ...],
    like: dict[str, np.ndarray],
    what: str,
) -> np.ndarray | None:
    """Static/dynamic fields as one array ``(n, *dims)`` in the canonical orientation,
    checked against the expected grid."""
    if fields is None:
        return None
    if isinstance(fields, xr.Dataset):
        fields = list(fields.data_vars.values())
    if isinstance(fields, xr.DataArray):
        fields = [fields]
    out = []
    for field in fields:
        name = field.name or what
        missing = [d for d in dims if d not in field.dims]
        if missing:
            raise CoordinateError(
                f"The {what} field {name!r} lacks dims {missing}; expected {dims}."
            )
        # in the canonical orientation, as the precipitation (its own coordinates say how)
        field = cv.flip_axes(field, cv.orientation_flips(field, axes))
        field = field.transpose(*dims)
        for dim in dims:
            if dim in like and not np.allclose(
                field[dim].values, like[dim], rtol=0, atol=1e-6 * (1 + np.abs(like[dim]).max())
            ):
                raise CoordinateError(
                    f"The {what} field {name!r} is not on the expected {dim} coordinate: "
                    f"regrid it first (e.g. field.interp_like(...))."
                )
        out.append(np.asarray(field.values, dtype=np.float32))
    return np.stack(out)


def _check_factors(spec: ModelSpec, weights: WeightsRecord, factor: int, time_factor: int) -> None:
    """Refuse factors the model (its spec) or its weights (their config) cannot do."""
    spec.check_factors(factor, time_factor)
    config = weights.metadata.get("config")
    if isinstance(config, dict) and "factors" in config:  # weights made for several (srgan)
        if factor not in config["factors"] or time_factor not in config["time_factors"]:
            raise ModelError(
                f"The {spec.name!r} weights do factor in {config['factors']} and time_factor "
                f"in {config['time_factors']}, not factor={factor}, time_factor={time_factor}."
            )
    elif isinstance(config, dict):
        trained = (int(config.get("factor", factor)), int(config.get("time_factor", time_factor)))
        if trained != (factor, time_factor):
            raise ModelError(
                f"The {spec.name!r} weights were trained for factor={trained[0]}, "
                f"time_factor={trained[1]}; you asked for factor={factor}, time_factor={time_factor}. "
                "Use those factors, pass weights=None for an untrained model (then train it), or "
                "use model='trilinear'."
            )


def _outside_training(
    weights: WeightsRecord, step: Any, spacing: tuple[float, float] | None
) -> str | None:
    """Why ``weights`` were not trained for this input (time step, grid spacing), or None.

    Read from the weights' ``training`` metadata (``time_steps_minutes``,
    ``grid_spacing_m``: the coarse input steps and spacings trained on); a value
    within 0.75 x the smallest .. 1.25 x the largest trained one counts as trained.
    """
    meta = weights.metadata
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    reasons = []
    minutes = None if step is None else float(step / np.timedelta64(1, "m"))
    for label, value, trained, unit in (
        ("time step", minutes, training.get("time_steps_minutes"), "min"),
        (
            "grid spacing",
            None if spacing is None else max(spacing),
            training.get("grid_spacing_m"),
            "m",
        ),
    ):
        if (
            value is not None
            and trained
            and not 0.75 * min(trained) <= value <= 1.25 * max(trained)
        ):
            reasons.append(f"{label} {value:g} {unit} (trained on {sorted(trained)} {unit})")
    return "; ".join(reasons) or None


def downscale(
    obj: xr.Dataset | xr.DataArray,
    factor: int = 2,
    time_factor: int = 2,
    model: str = "auto",
    static: xr.DataArray | Sequence[xr.DataArray] | xr.Dataset | None = None,
    dynamic: xr.DataArray | Sequence[xr.DataArray] | xr.Dataset | None = None,
    *,
    var: str | None = None,
    units: str | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    progress: bool | None = None,
    weights: Any = "default",
    config: str | dict[str, Any] | None = None,
    check_values: bool = True,
) -> xr.DataArray:
    """Downscale precipitation in space (``factor``) and time (``time_factor``).

    Parameters
    ----------
    obj
        Coarse field (DataArray, or a Dataset holding one) with a regular time axis,
        a regular projection grid and units.
    factor, time_factor
        Spatial refinement (2 or 4) and temporal refinement (1 or 2).
    model
        ``"auto"`` (:data:`AUTO_MODEL`, the best measured on held-out data; ``"fczsm"``
        when ``static`` is given), ``"flow"``, ``"zsm"``, ``"fczsm"``, ``"unet"``,
        ``"unet3d"`` or ``"trilinear"``.  A learned model whose weights were not
        trained for the input's time step or grid spacing falls back to ``"flow"``
        with a warning.
    static
        Static fields on the *fine* grid (terrain, land-sea mask, coverage ...), for
        ``fczsm``.
    dynamic
        Extra dynamic fields on the coarse grid and time axis, stacked as input channels.
    var, units, device, batch_size, progress, weights, config, check_values
        As in :func:`xnowcast.nowcast`.

    Returns
    -------
    xarray.DataArray
        On the refined grid and time axis, in the input's units and orientation, NaN
        where the input was missing; lazy when the input is dask-backed.  The model
        runs on the canonical orientation (north up, x east), static and dynamic
        fields included, so flipping the input's y or x gives the flipped output.
    """
    check_run_options(device, batch_size, "auto")
    da, axes, src_units = prepare_field(obj, var=var, units=units)
    flips = cv.orientation_flips(da, axes)
    da = cv.flip_axes(da, flips)
    name = ("fczsm" if static is not None else AUTO_MODEL) if model == "auto" else model
    factor = positive_int(factor, "factor")
    time_factor = positive_int(time_factor, "time_factor")
    count = da.sizes[axes.time]
    if count < 2 and time_factor > 1:
        raise TimeAxisError(f"Temporal downscaling needs at least 2 frames; got {count}.")
    step = cv.time_step(da, axes.time) if count > 1 else None
    try:
        spacing: tuple[float, float] | None = cv.grid_spacing(da, axes)
    except CoordinateError:  # a single cell: refused below, with its own message
        spacing = None
    # the model name is resolved once: this object goes to the workers and into the attrs
    sizes = {"factor": factor, "time_factor": time_factor}
    resolved = resolve_model(
        name, task="downscale", weights=weights, config=config, device=device, **sizes
    )
    spec = resolved.spec
    _check_factors(spec, resolved.weights, factor, time_factor)  # refused whatever the step
    reason = _outside_training(resolved.weights, step, spacing)
    if reason is not None:
        warnings.warn(
            f"The {spec.name!r} weights were not trained for this input's {reason}: using the "
            "'flow' downscaler (optical flow + consistent refinement, no weights) instead. "
            f"Pass model='flow' to silence this, or train {spec.name!r} on such data.",
            UserWarning,
            stacklevel=3,
        )
        resolved = resolve_model("flow", task="downscale", weights=None, device=device, **sizes)
        spec = resolved.spec
        _check_factors(spec, resolved.weights, factor, time_factor)
    window = resolved.window  # declared by the spec: no model is built here
    fine_y = fine_coordinate(da[axes.y], factor)
    fine_x = fine_coordinate(da[axes.x], factor)
    static_np = _stack_fields(
        static, axes, (axes.y, axes.x), {axes.y: fine_y.values, axes.x: fine_x.values}, "static"
    )
    needs_static = resolved.static_channels
    if needs_static and static_np is None:
        # the fields FC-ZSM was trained with: radar coverage over the whole series and the
        # fine cell centres scaled to [-1, 1] (xnowcast.grids.STATIC_NAMES)
        # (coverage is a streaming reduction over time: dask input is not loaded whole)
        covered = np.asarray(da.notnull().all(axes.time).values)
        coverage = np.where(covered, np.float32(1), np.float32(np.nan))[None]
        static_np = static_fields(coverage, factor, da[axes.x].values, da[axes.y].values)
    if static_np is not None and static_np.shape[0] != needs_static:
        raise ModelError(
            f"Model {spec.name!r} takes {needs_static} static field(s) on the fine grid, got "
            f"{static_np.shape[0]}. The shipped FC-ZSM weights use {list(STATIC_NAMES)}; train "
            "your own (xnowcast train fczsm) to use other fields such as terrain."
        )
    dyn_np = _stack_fields(
        dynamic,
        axes,
        (axes.time, axes.y, axes.x),
        {axes.y: da[axes.y].values, axes.x: da[axes.x].values},
        "dynamic",
    )
    channels = 1 + (0 if dyn_np is None else dyn_np.shape[0])
    if channels != resolved.in_channels:
        raise ModelError(
            f"Model {spec.name!r} takes {resolved.in_channels} input channel(s) (precipitation "
            f"+ {resolved.in_channels - 1} dynamic field(s)); got {channels}."
        )
    show = OPTIONS["progress"] if progress is None else progress
    block = dict(
        request=resolved,
        units=src_units,
        step=step,
        factor=factor,
        time_factor=time_factor,
        window=window,
        static=static_np,
        batch_size=batch_size,
        progress=show,
        check_values=bool(check_values),
    )
    data = da.data
    if dyn_np is not None:
        stacked = [data[:, None]] + [d[:, None] for d in dyn_np]
        data = np.concatenate(stacked, axis=1) if not is_dask(data) else _dask_concat(stacked)
    else:
        data = data[:, None]
    in_times = da[axes.time].values
    values = (
        _lazy_blocks(data, block, in_times)
        if is_dask(da.data)
        else _downscale_block(np.asarray(data), **block, times=in_times)
    )
    out_times = in_times
    if count > 1:
        fine_steps = np.arange((count - 1) * time_factor + 1) * (step / time_factor)
        out_times = (out_times[0] + fine_steps).astype(out_times.dtype)
    coords: dict[str, Any] = {
        axes.time: xr.Variable(axes.time, out_times, da[axes.time].attrs),
        axes.y: xr.Variable(axes.y, fine_y.values, fine_y.attrs),
        axes.x: xr.Variable(axes.x, fine_x.values, fine_x.attrs),
    }
    coords.update({k: v for k, v in da.coords.items() if v.ndim == 0})
    out = xr.DataArray(values, dims=(axes.time, axes.y, axes.x), coords=coords, name=da.name)
    out = restore_orientation(out, flips)
    line = (
        f"xnowcast {package_version()}: {spec.name} downscale, factor {factor}, "
        f"time_factor {time_factor}"
    )
    out.attrs = output_attrs(da, resolved, line, src_units)
    return without_coordinate_fill(out)


def _dask_concat(parts: list[Any]) -> Any:
    import dask.array as dsa

    return dsa.concatenate([dsa.asarray(p) for p in parts], axis=1)


def _lazy_blocks(data: Any, block: dict[str, Any], times: np.ndarray) -> Any:
    """Process a dask array in blocks of whole windows sharing one frame; same result as eager."""
    import dask
    import dask.array as dsa

    count = data.shape[0]
    window = block["window"] or 2
    length = (window - 1) * _WINDOWS_PER_BLOCK + 1
    tf, f = block["time_factor"], block["factor"]
    h, w = data.shape[-2:]
    starts = list(range(0, max(count - 1, 1), length - 1))
    pieces = []
    for i, start in enumerate(starts):
        stop = min(start + length, count)
        if i + 1 < len(starts) and count - (stop - 1) < window:
            stop = count  # a tail shorter than a window joins this block
        frames = stop - start
        n_out = (frames - 1) * tf + 1
        task = dask.delayed(_downscale_block)(
            data[start:stop], **block, times=times[start:stop], require_data=False
        )
        piece = dsa.from_delayed(task, shape=(n_out, h * f, w * f), dtype=np.float32)
        # the frame shared with the previous block comes from the previous block, as in eager
        pieces.append(piece if i == 0 else piece[1:])
        if stop >= count:
            break
    return dsa.concatenate(pieces, axis=0)

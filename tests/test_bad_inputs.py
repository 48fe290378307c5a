"""The bad-input catalogue of ``docs/bad_inputs.rst``: one test (or more) per row.

Through the public API only (``da.nowcast.predict``, ``da.downscale``).  A refused input
must raise an xnowcast exception (a ``ValueError``/``TypeError`` subclass) whose message
names the problem and the fix, before any model runs; an accepted one must give the right
values.  No call ever modifies its input: every call here goes through :func:`refuse` or
:func:`accept`, which deep-copy the input first and compare afterwards.

A gap found here in a file the suite's author does not own is first recorded as an
``xfail(strict=True)`` test whose reason names the file and the fix; when the fix lands
the test XPASSes, which fails the run, and the mark is removed.  The seven gaps found so
far (off-grid times, unreadable init_time, run options, units= on outputs, missing cells
leaking as no rain, lazy all-missing blocks, shared attrs) are fixed.
"""

from __future__ import annotations

import copy
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import xarray as xr

import xnowcast
from xnowcast import registry
from xnowcast.errors import (
    CoordinateError,
    DatasetError,
    DataValueError,
    ModelError,
    TimeAxisError,
    UnitsError,
    XnowcastError,
)
from xnowcast.registry import ModelSpec, specs
from xnowcast.testing import assert_identical_outputs, moving_storm, random_weights

Call = Callable[..., xr.DataArray]


# --- the three public calls -------------------------------------------------------------------------


def persist(obj: Any, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("steps", 3)
    return obj.nowcast.predict(model="persistence", progress=False, **kwargs)


def extrapolate(obj: Any, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("steps", 3)
    return obj.nowcast.predict(model="extrapolation", progress=False, **kwargs)


def trilinear(obj: Any, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("factor", 2)
    kwargs.setdefault("time_factor", 2)
    return obj.downscale(model="trilinear", progress=False, **kwargs)


ALL_CALLS = [
    pytest.param(persist, id="persistence"),
    pytest.param(extrapolate, id="extrapolation"),
    pytest.param(trilinear, id="trilinear"),
]
NOWCAST_CALLS = ALL_CALLS[:2]


# --- helpers: refused / accepted, input never modified -------------------------------------------


def assert_unchanged(obj: xr.DataArray | xr.Dataset, before: xr.DataArray | xr.Dataset) -> None:
    """Values, dtypes, attrs, coords (with their attrs) and name exactly as before."""
    xr.testing.assert_identical(obj, before)
    ds_now = obj.to_dataset(name="_") if isinstance(obj, xr.DataArray) else obj
    ds_before = before.to_dataset(name="_") if isinstance(before, xr.DataArray) else before
    for name, var in ds_before.variables.items():
        assert ds_now.variables[name].dtype == var.dtype, f"dtype of {name} changed"
        assert ds_now.variables[name].attrs == var.attrs, f"attrs of {name} changed"
    assert obj.attrs == before.attrs


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every model run (the runtime's run_nowcast / run_downscale)."""
    import xnowcast.runtime as runtime

    calls: list[str] = []
    for name in ("run_nowcast", "run_downscale"):
        real = getattr(runtime, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(runtime, name, spy)
    return calls


def refuse(
    obj: xr.DataArray | xr.Dataset,
    call: Call,
    exc: type[XnowcastError],
    *needles: str,
    runs: list[str],
    **kwargs: Any,
) -> str:
    """``call(obj, **kwargs)`` raises ``exc`` naming every needle; no model ran; obj unchanged."""
    before = copy.deepcopy(obj)
    with pytest.raises(exc) as info:
        call(obj, **kwargs)
    error = info.value
    assert isinstance(error, XnowcastError)
    assert isinstance(error, (ValueError, TypeError))
    message = str(error)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert runs == [], f"a model ran before the error: {runs}"
    assert_unchanged(obj, before)
    return message


def accept(obj: xr.DataArray | xr.Dataset, call: Call, **kwargs: Any) -> xr.DataArray:
    """``call(obj, **kwargs)`` works and leaves obj unchanged."""
    before = copy.deepcopy(obj)
    out = call(obj, **kwargs)
    assert_unchanged(obj, before)
    return out


@pytest.fixture
def storm() -> xr.DataArray:
    return moving_storm(frames=6, shape=(24, 24), velocity=(1.0, 1.0))


# --- test doubles: registered models with a fixed step, a spatial multiple, limited factors ------


class ToyNowcaster(torch.nn.Module):
    """Persistence plus seeded noise, with a spatial multiple and no mask (so it is tiled).

    ``seen`` records the shape of every input, to check padding and tiling.
    """

    input_frames = 2
    accepts_mask = False
    seen: ClassVar[list[tuple[int, ...]]] = []

    def __init__(self, spatial_multiple: int = 8, noise: float = 0.0) -> None:
        super().__init__()
        self.spatial_multiple = spatial_multiple
        self.noise = noise

    def forward(
        self, frames: torch.Tensor, steps: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        h, w = frames.shape[-2:]
        if h % self.spatial_multiple or w % self.spatial_multiple:
            raise RuntimeError(f"unpadded input {h}x{w}")
        ToyNowcaster.seen.append(tuple(frames.shape))
        out = frames[:, -1:].expand(-1, steps, -1, -1, -1)
        if self.noise:
            out = out + self.noise * torch.rand(out.shape, generator=generator)
        return out.clone()


def _build_toy(config: dict[str, Any] | None = None) -> ToyNowcaster:
    return ToyNowcaster(**(config or {}))


@pytest.fixture
def toy() -> Iterator[type[ToyNowcaster]]:
    """Register ``toy-nowcast`` (5-min step, multiple of 8, stochastic) and ``toy-factors``."""
    module = types.ModuleType("_xnowcast_toy_models")
    module.build = _build_toy  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    toys = [
        ModelSpec(
            name="toy-nowcast",
            task="nowcast",
            builder=f"{module.__name__}:build",
            summary="test double",
            reference="-",
            time_step_minutes=5.0,
            stochastic=True,
            input_frames=ToyNowcaster.input_frames,
        ),
        ModelSpec(
            name="toy-factors",
            task="downscale",
            builder="xnowcast.models.interpolation:build_trilinear",
            summary="trilinear, restricted to factors 2 and 4 and time factors 1 and 2",
            reference="-",
            default_config="default",
            factors=(2, 4),
            time_factors=(1, 2),
            window=4,
        ),
    ]
    for spec in toys:
        registry.register(spec)
    ToyNowcaster.seen = []
    try:
        yield ToyNowcaster
    finally:
        for spec in toys:
            registry.unregister(spec.name, spec.task)
        sys.modules.pop(module.__name__, None)


def toy_nowcast(obj: Any, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("steps", 2)
    return obj.nowcast.predict(model="toy-nowcast", progress=False, **kwargs)


# === units ===========================================================================================


@pytest.mark.parametrize("call", ALL_CALLS)
def test_no_units(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    del storm.attrs["units"]
    refuse(storm, call, UnitsError, "no units", "attrs['units']", "units=...", runs=runs)


@pytest.mark.parametrize("call", ALL_CALLS)
def test_unknown_units(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    storm.attrs["units"] = "bananas"
    refuse(storm, call, UnitsError, "Unknown units 'bananas'", "attrs['units']", runs=runs)


@pytest.mark.parametrize("call", ALL_CALLS)
def test_wrong_dimension_units(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    storm.attrs["units"] = "K"
    refuse(storm, call, UnitsError, "'K'", "not a precipitation quantity", runs=runs)
    storm.attrs["units"] = "mm/h"
    refuse(storm, call, UnitsError, "not a precipitation quantity", runs=runs, units="degC")


def test_units_keyword_supplies_missing_units(storm: xr.DataArray) -> None:
    bare = storm.copy()
    del bare.attrs["units"]
    out = accept(bare, persist, units="mm/h")
    np.testing.assert_array_equal(out.isel(lead_time=0).values, storm[-1].values)
    fine = accept(bare, trilinear, units="mm h-1", factor=1, time_factor=1)
    np.testing.assert_array_equal(fine.values, storm.values)


def test_units_keyword_is_recorded_on_the_output(storm: xr.DataArray) -> None:
    bare = storm.copy()
    del bare.attrs["units"]
    assert persist(bare, units="mm/h").attrs.get("units") == "mm/h"
    mislabelled = moving_storm(frames=6, shape=(24, 24), units="dBZ").assign_attrs(units="mm/h")
    assert persist(mislabelled, units="dBZ").attrs["units"] == "dBZ"
    assert trilinear(mislabelled, units="dBZ").attrs["units"] == "dBZ"


# === values ==========================================================================================


@pytest.mark.parametrize("call", ALL_CALLS)
def test_negative_rain(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    storm[-1, 3, 4] = -0.5
    refuse(
        storm,
        call,
        DataValueError,
        "1 negative rain values",
        "min -0.5 mm/h",
        "da.where(da >= 0)",
        "da.clip(min=0)",
        runs=runs,
    )


def test_negative_dbz_is_fine(runs: list[str]) -> None:
    dbz = moving_storm(frames=6, shape=(24, 24), units="dBZ")
    dbz[-1, :4, :4] = -10.0  # weak echo, legitimately negative
    out = accept(dbz, persist)
    np.testing.assert_allclose(out.isel(lead_time=0).values[:4, :4], -10.0, rtol=1e-5)


@pytest.mark.parametrize("call", ALL_CALLS)
def test_all_nan_input(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    storm[:] = np.nan
    refuse(storm, call, DataValueError, "entirely NaN", "masking of no-data", runs=runs)


def test_all_nan_frame_in_the_input_window(storm: xr.DataArray, runs: list[str]) -> None:
    storm[-2] = np.nan  # extrapolation uses the last 3 frames
    refuse(
        storm,
        extrapolate,
        DataValueError,
        "1 input frame(s) are entirely NaN",
        "gap",
        "init_time",
        runs=runs,
    )
    # persistence only reads the last frame: the missing one is outside its window
    out = accept(storm, persist)
    np.testing.assert_array_equal(out.isel(lead_time=0).values, storm[-1].values)


def test_all_nan_frame_is_missing_in_the_downscaled_output(storm: xr.DataArray) -> None:
    storm[2] = np.nan
    out = accept(storm, trilinear, factor=1, time_factor=2)
    # output frames 3, 4, 5 depend on input frame 2: unknown; the others are known
    assert np.isnan(out.values[3:6]).all()
    assert np.isfinite(out.values[:3]).all() and np.isfinite(out.values[6:]).all()


def test_nan_pixels_stay_nan_and_nothing_else_is_lost(storm: xr.DataArray) -> None:
    storm[-1, 5:9, 10:20] = np.nan
    storm[:-1, 0, :] = np.nan
    out = accept(storm, persist)
    last = storm[-1].values
    for lead in range(out.sizes["lead_time"]):
        frame = out.isel(lead_time=lead).values
        np.testing.assert_array_equal(np.isnan(frame), np.isnan(last))
        np.testing.assert_array_equal(frame[np.isfinite(last)], last[np.isfinite(last)])
    fine = accept(storm, trilinear, factor=2, time_factor=1)
    coarse_nan = np.isnan(storm.values).repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(np.isnan(fine.values), coarse_nan)


def test_missing_cells_do_not_leak_as_no_rain_into_neighbours(storm: xr.DataArray) -> None:
    storm[:] = 10.0
    storm[:, 10, 10] = np.nan
    fine = trilinear(storm, factor=2, time_factor=1)
    values = fine.values[np.isfinite(fine.values)]
    np.testing.assert_allclose(values, 10.0, rtol=1e-6)


@pytest.mark.parametrize("code", [-100.0, -200.0, -9999.0, -999.0, -32768.0])
@pytest.mark.parametrize("call", ALL_CALLS)
def test_missing_value_codes_left_in(
    storm: xr.DataArray, call: Call, code: float, runs: list[str]
) -> None:
    storm[-1, :3, :5] = code
    refuse(
        storm,
        call,
        DataValueError,
        f"15 values equal to {code:g}",
        "no-data code",
        f"da.where(da != {code:g})",
        runs=runs,
    )


def test_missing_value_code_in_integer_data(storm: xr.DataArray, runs: list[str]) -> None:
    raw = (storm * 10).astype(np.int16)
    raw[-1, 0, 0] = -9999
    refuse(raw, persist, DataValueError, "-9999", "no-data code", runs=runs)


def test_no_data_code_255_in_dbz(runs: list[str]) -> None:
    dbz = moving_storm(frames=6, shape=(24, 24), units="dBZ")
    dbz[-1, :2, :] = 255.0
    refuse(dbz, persist, DataValueError, "48 values equal to 255", "da.where(da != 255)", runs=runs)
    dbz[-1, :2, :] = 20.0
    dbz[-1, 5, 5] = 65535.0  # a single one is enough: no echo reaches 100 dBZ
    refuse(dbz, trilinear, DataValueError, "equal to 65535", runs=runs)


def test_frequent_positive_code_in_rain_rates(storm: xr.DataArray, runs: list[str]) -> None:
    storm[-1, :, :12] = 65535.0  # half a frame: not rain
    refuse(storm, persist, DataValueError, "equal to 65535", "no-data code", runs=runs)
    storm[-1, :, :12] = 1.0
    storm[-1, 0, 0] = 255.0  # one extreme value may be real: it is kept
    out = accept(storm, persist)
    assert out.isel(lead_time=0).values[0, 0] == 255.0


@pytest.mark.parametrize("call", ALL_CALLS)
def test_infinite_values(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    storm[-1, 1, 1] = np.inf
    refuse(storm, call, DataValueError, "infinite", "np.isfinite", runs=runs)


def test_zero_rain_in_dbz_is_minus_infinity_and_accepted() -> None:
    dbz = moving_storm(frames=6, shape=(24, 24), units="dBZ")
    dbz[-1] = -np.inf  # a dry frame: 0 mm/h
    out = accept(dbz, persist)
    assert np.isneginf(out.values).all()
    dbz[:] = -np.inf  # dry everywhere is a valid (boring) input, not "all missing"
    assert np.isneginf(accept(dbz, persist).values).all()


# === time axis =======================================================================================


def test_too_few_input_frames(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(
        storm.isel(time=slice(0, 2)),
        extrapolate,
        TimeAxisError,
        "needs 3 input frames",
        "only 2 exist",
        "too few frames before it",
        runs=runs,
    )
    refuse(storm.isel(time=[0]), persist, TimeAxisError, "single time", "several", runs=runs)
    refuse(storm.isel(time=[0]), trilinear, TimeAxisError, "at least 2 frames; got 1", runs=runs)


def test_too_few_frames_before_an_early_init_time(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(
        storm,
        extrapolate,
        TimeAxisError,
        "too few frames before it",
        "later init_time",
        runs=runs,
        init_time=storm.time.values[1],
    )


def test_time_gap_inside_the_input_window(storm: xr.DataArray, runs: list[str]) -> None:
    gappy = storm.drop_isel(time=4)  # 15:20 is missing; the last window needs it
    refuse(
        gappy,
        extrapolate,
        TimeAxisError,
        "a gap in the input window",
        "2021-07-04T15:20:00",
        "fill the gap",
        runs=runs,
    )
    # a hindcast whose windows avoid the gap works
    out = accept(gappy, extrapolate, init_time=[storm.time.values[3]], steps=1)
    assert out.sizes["init_time"] == 1


def test_irregular_time_is_refused_by_downscaling(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(
        storm.drop_isel(time=2),
        trilinear,
        TimeAxisError,
        "Irregular time axis",
        "2021-07-04T15:05:00 -> 2021-07-04T15:15:00",
        "resample",
        runs=runs,
    )


def _off_grid(storm: xr.DataArray) -> xr.DataArray:
    times = storm.time.values.copy()
    times[-1] += np.timedelta64(60, "s")  # 15:00, 15:05, ..., 15:20, 15:26
    return storm.assign_coords(time=times)


def test_irregular_time_inside_the_window(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(_off_grid(storm), extrapolate, TimeAxisError, "Irregular time axis", runs=runs)
    refuse(_off_grid(storm), trilinear, TimeAxisError, "Irregular time axis", runs=runs)


def test_off_grid_time_is_refused_by_persistence(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(
        _off_grid(storm),
        persist,
        TimeAxisError,
        "Irregular time axis",
        "off the regular 5 min grid",
        "2021-07-04T15:26:00 is 1 min late",
        "Round the times",
        runs=runs,
    )


@pytest.mark.parametrize("call", ALL_CALLS)
def test_non_monotonic_time(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    shuffled = storm.isel(time=[0, 2, 1, 3, 4, 5])
    refuse(shuffled, call, TimeAxisError, "not increasing", "da.sortby('time')", runs=runs)


@pytest.mark.parametrize("call", ALL_CALLS)
def test_duplicate_times(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    doubled = storm.isel(time=[0, 1, 2, 3, 4, 4, 5])
    refuse(
        doubled,
        call,
        TimeAxisError,
        "Duplicate times ['2021-07-04T15:20:00']",
        "drop_duplicates('time')",
        runs=runs,
    )


def test_time_step_different_from_the_models(toy: type[ToyNowcaster], runs: list[str]) -> None:
    ten = moving_storm(frames=6, shape=(16, 16), step="10min")
    refuse(
        ten,
        toy_nowcast,
        TimeAxisError,
        "trained on 5-min frames",
        "data step is 10 min",
        "Resample",
        runs=runs,
    )
    five = moving_storm(frames=6, shape=(16, 16))
    out = accept(five, toy_nowcast)
    np.testing.assert_array_equal(out.isel(lead_time=0).values, five[-1].values)


FIXED_STEP = sorted(spec.name for spec in specs("nowcast") if spec.time_step_minutes)


@pytest.mark.parametrize(
    "name",
    FIXED_STEP
    or [
        pytest.param(
            "dgmr",
            marks=pytest.mark.skip(reason="no registered model has a fixed time step yet"),
        )
    ],
)
def test_time_step_different_from_a_registered_models(
    name: str, runs: list[str], tmp_path: Any
) -> None:
    spec = registry.get_spec(name, "nowcast")
    minutes = spec.time_step_minutes
    assert minutes is not None
    other = moving_storm(frames=6, shape=(64, 64), step=f"{int(2 * minutes)}min")
    weights = random_weights(name, tmp_path) if spec.weights_required else "default"
    refuse(
        other,
        lambda obj: obj.nowcast.predict(model=name, steps=2, progress=False, weights=weights),
        TimeAxisError,
        f"trained on {minutes:g}-min frames",
        "Resample",
        runs=runs,
    )


@pytest.mark.parametrize("call", ALL_CALLS)
def test_time_that_is_not_datetimes(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    numbered = storm.assign_coords(time=np.arange(6) * 300)
    refuse(numbered, call, TimeAxisError, "not datetimes", "decode_cf", runs=runs)


@pytest.mark.parametrize("call", [ALL_CALLS[0], ALL_CALLS[2]])
def test_cftime_time(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    pytest.importorskip("cftime")
    times = xr.date_range("2021-07-04T15:00", periods=6, freq="5min", use_cftime=True)
    refuse(
        storm.assign_coords(time=times),
        call,
        TimeAxisError,
        "cftime",
        "convert_calendar",
        runs=runs,
    )


# === coordinates and dims =============================================================================


@pytest.mark.parametrize("call", ALL_CALLS)
def test_missing_time_coordinate(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    refuse(
        storm.drop_vars("time"),
        call,
        TimeAxisError,
        "'time' has no coordinate values",
        "assign_coords(time=...)",
        runs=runs,
    )


@pytest.mark.parametrize("dim", ["x", "y"])
@pytest.mark.parametrize("call", ALL_CALLS)
def test_missing_spatial_coordinate(
    storm: xr.DataArray, call: Call, dim: str, runs: list[str]
) -> None:
    refuse(
        storm.drop_vars(dim),
        call,
        CoordinateError,
        f"'{dim}' has no coordinate",
        f"assign_coords({dim}=...)",
        runs=runs,
    )


@pytest.mark.parametrize("call", ALL_CALLS)
def test_no_time_dim(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    renamed = storm.rename(time="frame")
    renamed.frame.attrs = {}
    refuse(renamed, call, TimeAxisError, "Cannot find a time axis", "axis='T'", runs=runs)


@pytest.mark.parametrize("call", ALL_CALLS)
def test_unknown_spatial_dims(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    renamed = storm.rename(y="row", x="col")
    renamed.row.attrs = {}
    renamed.col.attrs = {}
    refuse(renamed, call, CoordinateError, "Cannot find the spatial axes", "'y' and 'x'", runs=runs)


@pytest.mark.parametrize("call", ALL_CALLS)
def test_uneven_grid(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    x = storm.x.values.copy()
    x[-1] += 500.0
    refuse(
        storm.assign_coords(x=x),
        call,
        CoordinateError,
        "'x' is not evenly spaced",
        "regrid",
        runs=runs,
    )


@pytest.mark.parametrize("call", ALL_CALLS)
def test_non_monotonic_grid(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    x = storm.x.values.copy()
    x[[2, 3]] = x[[3, 2]]
    refuse(
        storm.assign_coords(x=x),
        call,
        CoordinateError,
        "'x' is not monotonic",
        "da.sortby('x')",
        runs=runs,
    )


def test_extra_dim_of_length_one_is_squeezed(storm: xr.DataArray) -> None:
    leveled = storm.expand_dims(level=[850.0], axis=1)
    out = accept(leveled, persist)
    xr.testing.assert_identical(out.drop_attrs(), persist(storm).drop_attrs())
    fine = accept(leveled, trilinear)
    np.testing.assert_array_equal(fine.values, trilinear(storm).values)


@pytest.mark.parametrize("call", ALL_CALLS)
def test_longer_extra_dim_is_an_error(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    leveled = xr.concat([storm, storm], dim=xr.DataArray([850.0, 700.0], dims="level"))
    refuse(
        leveled,
        call,
        CoordinateError,
        "Unexpected dims ['level'] (sizes [2])",
        "da.isel(level=0)",
        runs=runs,
    )


def test_any_dim_order_and_descending_y(storm: xr.DataArray) -> None:
    expected = persist(storm)
    out = accept(storm.transpose("x", "y", "time"), persist)
    assert out.dims == ("lead_time", "y", "x")
    xr.testing.assert_identical(out.drop_attrs(), expected.drop_attrs())
    flipped = storm.isel(y=slice(None, None, -1))
    out = accept(flipped, persist)
    np.testing.assert_array_equal(out.y.values, flipped.y.values)
    np.testing.assert_array_equal(out.isel(lead_time=0).values, flipped[-1].values)


# === dtypes ==========================================================================================


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float64])
def test_integer_and_float64_input_are_converted(storm: xr.DataArray, dtype: type) -> None:
    data = (storm * 4).astype(dtype)
    out = accept(data, persist)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.isel(lead_time=1).values, data[-1].values.astype(np.float32))
    fine = accept(data, trilinear, factor=1, time_factor=1)
    assert fine.dtype == np.float32
    np.testing.assert_array_equal(fine.values, data.values.astype(np.float32))


# === grid sizes ======================================================================================


def test_grid_not_a_multiple_is_padded(toy: type[ToyNowcaster]) -> None:
    field = moving_storm(frames=4, shape=(30, 45))
    out = accept(field, toy_nowcast)
    assert out.shape == (2, 30, 45)
    assert toy.seen and all(shape[-2:] == (32, 48) for shape in toy.seen)
    np.testing.assert_array_equal(out.isel(lead_time=1).values, field[-1].values)


def test_grid_smaller_than_the_model_is_padded(toy: type[ToyNowcaster]) -> None:
    field = moving_storm(frames=4, shape=(5, 3), cells=1)
    out = accept(field, toy_nowcast)
    assert toy.seen[-1][-2:] == (8, 8)
    np.testing.assert_array_equal(out.isel(lead_time=0).values, field[-1].values)


def test_single_cell_grid_cannot_be_refined(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(storm.isel(y=[3]), trilinear, CoordinateError, "'y' needs at least two cells", runs=runs)


@pytest.fixture
def trilinear_inputs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Shapes of every frame block the trilinear model is called with."""
    from xnowcast.models.interpolation import Trilinear

    seen: ClassVar[list[tuple[int, ...]]] = []
    real = Trilinear.forward

    def forward(self: Any, frames: torch.Tensor, static: Any = None) -> torch.Tensor:
        seen.append(tuple(frames.shape))
        return real(self, frames, static)

    monkeypatch.setattr(Trilinear, "forward", forward)
    return seen


def test_huge_domain_is_tiled(trilinear_inputs: list[tuple[int, ...]]) -> None:
    field = moving_storm(frames=3, shape=(150, 200), cells=10)
    field[:, 40:50, 60:90] = np.nan
    untiled = accept(field, trilinear)
    assert trilinear_inputs[-1][-2:] == (150, 200)
    with xnowcast.set_options(tile_size=64, tile_overlap=16):
        tiled = accept(field, trilinear)
    # 64 fine pixels at factor 2 = tiles of 32 coarse pixels
    assert len(trilinear_inputs) > 10
    assert all(shape[-2:] == (32, 32) for shape in trilinear_inputs[1:])
    assert tiled.shape == untiled.shape == (5, 300, 400)
    np.testing.assert_array_equal(np.isnan(tiled.values), np.isnan(untiled.values))
    scale = float(np.nanmax(untiled.values))
    np.testing.assert_allclose(tiled.values, untiled.values, rtol=0, atol=1e-3 * scale)
    assert float(np.nanmean(np.abs(tiled.values - untiled.values))) < 1e-5 * scale


def test_huge_domain_nowcast_is_tiled(toy: type[ToyNowcaster]) -> None:
    field = moving_storm(frames=3, shape=(70, 50))
    with xnowcast.set_options(tile_size=32, tile_overlap=8):
        out = accept(field, toy_nowcast)
    # padded to 72 x 56, then tiles of 32 with a stride of 24: 3 x 2 tiles
    assert len(toy.seen) == 6 and all(shape[-2:] == (32, 32) for shape in toy.seen)
    np.testing.assert_allclose(out.isel(lead_time=1).values, field[-1].values, rtol=1e-6)


# === Datasets ========================================================================================


@pytest.mark.parametrize("call", ALL_CALLS)
def test_dataset_without_precipitation(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    ds = xr.Dataset({"t2m": storm.assign_attrs(standard_name="air_temperature", units="K")})
    refuse(ds, call, DatasetError, "No precipitation variable", "['t2m']", "var='name'", runs=runs)


def test_dataset_with_several_precipitation_variables(storm: xr.DataArray, runs: list[str]) -> None:
    ds = xr.Dataset({"radar": storm, "gauges": storm * 2})
    refuse(ds, persist, DatasetError, "Several precipitation variables", "var='name'", runs=runs)
    refuse(ds, persist, DatasetError, "no variable 'rain'", runs=runs, var="rain")
    out = accept(ds, persist, var="gauges")
    np.testing.assert_array_equal(out.isel(lead_time=0).values, 2 * storm[-1].values)


def test_dataset_precipitation_found_by_standard_name(storm: xr.DataArray) -> None:
    ds = xr.Dataset(
        {
            "rr": storm,
            "t2m": storm.assign_attrs(standard_name="air_temperature", units="K"),
            "orography": storm.isel(time=0, drop=True).assign_attrs(
                standard_name="surface_altitude", units="m"
            ),
        }
    )
    out = accept(ds, persist)
    assert out.name == "rr"
    np.testing.assert_array_equal(out.isel(lead_time=0).values, storm[-1].values)
    assert accept(ds, trilinear).name == "rr"


# === requests ========================================================================================


@pytest.mark.parametrize("call", NOWCAST_CALLS)
def test_init_time_outside_the_data(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    refuse(
        storm,
        call,
        TimeAxisError,
        "init_time 2030-01-01T00:00:00 is not a time of the data",
        "2021-07-04T15:00:00 to 2021-07-04T15:25:00",
        runs=runs,
        init_time=np.datetime64("2030-01-01"),
    )
    refuse(
        storm,
        call,
        TimeAxisError,
        "No data times fall in init_time",
        runs=runs,
        init_time=slice("2030-01-01", "2030-01-02"),
    )
    refuse(
        storm,
        call,
        TimeAxisError,
        "not a time of the data",
        runs=runs,
        init_time="2021-07-04T15:22",  # between two frames
    )


def test_unreadable_init_time(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(
        storm,
        persist,
        TimeAxisError,
        "Cannot read init_time='yesterday' as a time",
        "2021-07-04T15:00 to 2021-07-04T15:25",
        runs=runs,
        init_time="yesterday",
    )


@pytest.mark.parametrize("steps", [0, -1, 2.5, True, "3"])
@pytest.mark.parametrize("call", NOWCAST_CALLS)
def test_steps_not_positive(storm: xr.DataArray, call: Call, steps: Any, runs: list[str]) -> None:
    refuse(
        storm,
        call,
        ModelError,
        f"steps must be a positive integer, not {steps!r}",
        runs=runs,
        steps=steps,
    )


@pytest.mark.parametrize("members", [0, -2])
def test_members_not_positive(storm: xr.DataArray, members: int, runs: list[str]) -> None:
    refuse(
        storm,
        persist,
        ModelError,
        f"members must be a positive integer, not {members}",
        runs=runs,
        members=members,
    )


@pytest.mark.parametrize("call", NOWCAST_CALLS)
def test_members_for_a_deterministic_model(
    storm: xr.DataArray, call: Call, runs: list[str]
) -> None:
    refuse(
        storm,
        call,
        ModelError,
        "is deterministic",
        "members=1",
        "stochastic model",
        runs=runs,
        members=4,
    )


def test_factor_the_model_does_not_support(
    storm: xr.DataArray, toy: type[ToyNowcaster], runs: list[str]
) -> None:
    def restricted(obj: Any, **kwargs: Any) -> xr.DataArray:
        return obj.downscale(model="toy-factors", progress=False, **kwargs)

    refuse(
        storm,
        restricted,
        ModelError,
        "supports factor in [2, 4], not 3",
        runs=runs,
        factor=3,
        time_factor=2,
    )
    refuse(
        storm,
        restricted,
        ModelError,
        "supports time_factor in [1, 2], not 4",
        runs=runs,
        factor=2,
        time_factor=4,
    )
    out = accept(storm, restricted, factor=4, time_factor=1)
    assert out.shape == (6, 96, 96)


@pytest.mark.parametrize("factor", [0, -2, 1.5, "2"])
def test_factor_not_positive(storm: xr.DataArray, factor: Any, runs: list[str]) -> None:
    refuse(
        storm,
        trilinear,
        ModelError,
        f"factor must be a positive integer, not {factor!r}",
        runs=runs,
        factor=factor,
    )
    refuse(
        storm,
        trilinear,
        ModelError,
        f"time_factor must be a positive integer, not {factor!r}",
        runs=runs,
        factor=2,
        time_factor=factor,
    )


LIMITED_FACTORS = sorted(spec.name for spec in specs("downscale") if spec.factors)


@pytest.mark.parametrize(
    "name",
    LIMITED_FACTORS
    or [
        pytest.param(
            "zsm",
            marks=pytest.mark.skip(reason="no registered downscale model limits its factors yet"),
        )
    ],
)
def test_factor_a_registered_model_does_not_support(
    storm: xr.DataArray, name: str, runs: list[str]
) -> None:
    bad = max(registry.get_spec(name, "downscale").factors) + 1
    refuse(
        storm,
        lambda obj: obj.downscale(model=name, factor=bad, time_factor=1, progress=False),
        ModelError,
        f"not {bad}",
        runs=runs,
    )


def test_unknown_model_or_wrong_task(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(
        storm,
        lambda obj: obj.nowcast.predict(model="dgmr2"),
        ModelError,
        "Unknown nowcast model 'dgmr2'",
        "persistence",
        runs=runs,
    )
    refuse(
        storm,
        lambda obj: obj.downscale(model="persistence"),
        ModelError,
        "Unknown downscale model 'persistence'",
        "trilinear",
        runs=runs,
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"batch_size": 0}, "batch_size must be 'auto' or a positive integer, not 0"),
        ({"batch_size": "big"}, "batch_size must be 'auto' or a positive integer, not 'big'"),
        ({"batch_size": True}, "batch_size must be 'auto' or a positive integer, not True"),
        ({"precision": "fp16"}, "precision must be 'auto', 'float32' or 'bf16', not 'fp16'"),
        ({"device": "tpu9"}, "Unknown device 'tpu9': use 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ],
    ids=["batch_size=0", "batch_size=big", "batch_size=True", "precision=fp16", "device=tpu9"],
)
def test_invalid_runtime_settings(
    storm: xr.DataArray, kwargs: dict[str, Any], needle: str, runs: list[str]
) -> None:
    refuse(storm, persist, ModelError, needle, runs=runs, **kwargs)
    if "precision" not in kwargs:  # downscale() has no precision argument
        refuse(storm, trilinear, ModelError, needle, runs=runs, **kwargs)


# === dask-backed input ===============================================================================


def test_dask_input_structure_checked_at_call_values_at_compute(
    storm: xr.DataArray, runs: list[str]
) -> None:
    lazy = storm.chunk({"time": 2})
    bare = lazy.copy()
    del bare.attrs["units"]
    refuse(bare, persist, UnitsError, "no units", runs=runs)
    refuse(lazy.isel(time=[0, 1, 1, 2]), persist, TimeAxisError, "Duplicate", runs=runs)
    # value checks need the values: they run when the result is computed, before the model
    coded = lazy.where(lazy.x != lazy.x[0], -9999.0)
    for call in (persist, trilinear):
        out = accept(coded, call)
        assert out.chunks is not None
        with pytest.raises(DataValueError, match="-9999"):
            out.compute()
    assert runs == []


def test_dask_downscale_with_an_all_missing_block_equals_eager() -> None:
    field = moving_storm(frames=30, shape=(16, 16))
    field[:15] = np.nan
    eager = trilinear(field, factor=1, time_factor=1)
    lazy = trilinear(field.chunk({"time": 10}), factor=1, time_factor=1).compute()
    assert_identical_outputs(lazy, eager)  # history is stamped to the second: not compared


# === outputs are new objects ==========================================================================


def test_changing_the_output_never_changes_the_input(storm: xr.DataArray) -> None:
    before = copy.deepcopy(storm)
    for out in (persist(storm), trilinear(storm)):
        out.attrs["units"] = "changed"
        for name in out.coords:
            out[name].attrs["changed"] = True
        out.values[...] = -1.0
    assert_unchanged(storm, before)


@pytest.mark.parametrize("call", [ALL_CALLS[0], ALL_CALLS[2]])
def test_mutable_attribute_values_are_not_shared(storm: xr.DataArray, call: Call) -> None:
    out = call(storm)
    out.attrs["velocity_cells_per_step"].append(99.0)
    assert storm.attrs["velocity_cells_per_step"] == [1.0, 1.0]


# === stochastic models: seeds ========================================================================


def test_same_seed_same_forecast(toy: type[ToyNowcaster]) -> None:
    field = moving_storm(frames=4, shape=(16, 16))
    noisy = {"config": {"noise": 1.0}, "members": 3}
    first = accept(field, toy_nowcast, seed=7, **noisy)
    again = toy_nowcast(field, seed=7, **noisy)
    other = toy_nowcast(field, seed=8, **noisy)
    np.testing.assert_array_equal(first.values, again.values)
    assert not np.array_equal(first.values, other.values)
    # members differ from each other, and the noise is on top of persistence
    assert not np.array_equal(first.isel(member=0).values, first.isel(member=1).values)
    excess = first.values - field[-1].values
    assert excess.min() >= 0.0 and excess.max() <= 1.0

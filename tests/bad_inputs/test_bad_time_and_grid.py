"""The bad-input catalogue of ``docs/bad_inputs.rst``: time axis, coordinates and grid sizes.

One test (or more) per row; the rules every test follows are in
:mod:`bad_input_calls`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import xarray as xr
from bad_input_calls import (
    ALL_CALLS,
    Call,
    ToyNowcaster,
    accept,
    extrapolate,
    persist,
    refuse,
    toy_nowcast,
    trilinear,
)

import xnowcast
from xnowcast import registry
from xnowcast.errors import (
    CoordinateError,
    TimeAxisError,
)
from xnowcast.registry import specs
from xnowcast.testing import moving_storm, random_weights

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

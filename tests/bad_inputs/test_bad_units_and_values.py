"""The bad-input catalogue of ``docs/bad_inputs.rst``: units, values and dtypes.

One test (or more) per row; the rules every test follows are in
:mod:`bad_input_calls`.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from bad_input_calls import (
    ALL_CALLS,
    Call,
    accept,
    extrapolate,
    persist,
    refuse,
    trilinear,
)

from xnowcast.errors import (
    DataValueError,
    UnitsError,
)
from xnowcast.testing import moving_storm

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

"""CF conventions: axis discovery, time-step and grid checks, the precipitation variable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import CoordinateError, DatasetError, TimeAxisError
from xnowcast.testing import moving_storm


@pytest.fixture
def da() -> xr.DataArray:
    return moving_storm(frames=5, shape=(6, 8))


def _strip_attrs(obj: xr.DataArray) -> xr.DataArray:
    obj = obj.copy()
    for name in obj.coords:
        obj[name].attrs = {}
    return obj


# --- axes -----------------------------------------------------------------------------------------


def test_standard_field(da: xr.DataArray) -> None:
    assert cv.find_axes(da) == cv.Axes("time", "y", "x")


def test_cf_axis_attributes_find_unusual_names(da: xr.DataArray) -> None:
    odd = da.rename(time="valid", y="northing", x="easting")
    assert cv.find_axes(odd) == cv.Axes("valid", "northing", "easting")


def test_cf_standard_names_alone_find_the_axes(da: xr.DataArray) -> None:
    odd = da.rename(time="valid", y="northing", x="easting")
    for name in odd.coords:
        odd[name].attrs.pop("axis", None)
    assert "axis" not in odd.northing.attrs
    assert cv.find_axes(odd) == cv.Axes("valid", "northing", "easting")


def test_cf_units_find_latitude_longitude(da: xr.DataArray) -> None:
    odd = _strip_attrs(da.rename(y="j", x="i"))
    odd.j.attrs["units"] = "degrees_north"
    odd.i.attrs["units"] = "degrees_east"
    assert cv.find_axes(odd) == cv.Axes("time", "j", "i")


def test_fallback_to_dim_names_without_attributes(da: xr.DataArray) -> None:
    assert cv.find_axes(_strip_attrs(da)) == cv.Axes("time", "y", "x")
    bare = xr.DataArray(np.zeros((2, 3, 4)), dims=("time", "y", "x"))  # no coords at all
    assert cv.find_axes(bare) == cv.Axes("time", "y", "x")


def test_fallback_to_lat_lon(da: xr.DataArray) -> None:
    geo = _strip_attrs(da.rename(y="lat", x="lon"))
    assert cv.find_axes(geo) == cv.Axes("time", "lat", "lon")
    geo = geo.assign_coords(lat=np.linspace(50.0, 51.0, 6), lon=np.linspace(4.0, 5.4, 8))
    dy, dx = cv.grid_spacing(geo)
    assert dy == pytest.approx(0.2) and dx == pytest.approx(0.2)


def test_unknown_spatial_axes_are_an_error_that_says_how(da: xr.DataArray) -> None:
    odd = _strip_attrs(da.rename(y="row", x="col"))
    with pytest.raises(CoordinateError, match="Cannot find the spatial axes") as info:
        cv.find_axes(odd)
    assert "axis='Y'/'X'" in str(info.value) and "'row'" in str(info.value)


def test_missing_time_axis(da: xr.DataArray) -> None:
    still = da.isel(time=0, drop=True)
    with pytest.raises(TimeAxisError, match="Cannot find a time axis") as info:
        cv.find_axes(still)
    assert "axis='T'" in str(info.value)
    assert cv.find_axes(still, require_time=False) == cv.Axes(None, "y", "x")


# --- time step -------------------------------------------------------------------------------------


def test_regular_time_step(da: xr.DataArray) -> None:
    assert cv.time_step(da) == np.timedelta64(5, "m")
    assert cv.time_step(da).dtype == np.dtype("timedelta64[ns]")
    ten = moving_storm(frames=3, shape=(4, 4), step="10min")
    assert cv.time_step(ten) == np.timedelta64(10, "m")


def test_irregular_time_lists_the_gaps(da: xr.DataArray) -> None:
    gappy = da.isel(time=[0, 1, 3, 4])
    with pytest.raises(TimeAxisError, match="Irregular time axis") as info:
        cv.time_step(gappy)
    message = str(info.value)
    assert "the step is 5 min" in message
    assert "2021-07-04T15:05:00 -> 2021-07-04T15:15:00" in message
    assert "resample" in message


def test_irregular_time_off_the_grid(da: xr.DataArray) -> None:
    times = da.time.values.copy()
    times[-1] += np.timedelta64(60, "s")
    with pytest.raises(TimeAxisError, match="T15:21:00 is 1 min late"):
        cv.time_step(da.assign_coords(time=times))


def test_duplicate_times(da: xr.DataArray) -> None:
    dup = da.isel(time=[0, 1, 1, 2])
    with pytest.raises(TimeAxisError, match="Duplicate times") as info:
        cv.time_step(dup)
    assert "2021-07-04T15:05:00" in str(info.value)
    assert "drop_duplicates('time')" in str(info.value)


def test_non_monotonic_time(da: xr.DataArray) -> None:
    with pytest.raises(TimeAxisError, match="not increasing") as info:
        cv.time_step(da.isel(time=[0, 2, 1, 3]))
    assert "sortby('time')" in str(info.value)
    with pytest.raises(TimeAxisError, match="not increasing"):
        cv.time_step(da.isel(time=slice(None, None, -1)))


def test_too_few_times_and_non_datetime_times(da: xr.DataArray) -> None:
    with pytest.raises(TimeAxisError, match="at least two times"):
        cv.time_step(da.isel(time=[0]))
    with pytest.raises(TimeAxisError, match="not datetimes"):
        cv.time_step(da.assign_coords(time=np.arange(5)))
    with pytest.raises(TimeAxisError, match="no coordinate values") as info:
        cv.time_step(da.drop_vars("time"))
    assert "assign_coords(time=...)" in str(info.value)


def test_cftime_times_say_how_to_convert(da: xr.DataArray) -> None:
    pytest.importorskip("cftime")
    times = xr.date_range("2000-01-01", periods=5, freq="5min", calendar="noleap", use_cftime=True)
    odd = da.assign_coords(time=times)
    with pytest.raises(TimeAxisError, match="cftime") as info:
        cv.time_step(odd)
    assert "convert_calendar" in str(info.value) and "'noleap'" in str(info.value)
    fixed = odd.convert_calendar("standard", dim="time", use_cftime=False)
    assert cv.time_step(fixed) == np.timedelta64(5, "m")


# --- grid ------------------------------------------------------------------------------------------------


def test_descending_y_is_regular(da: xr.DataArray) -> None:
    flipped = da.isel(y=slice(None, None, -1))
    cv.check_regular_grid(flipped)
    assert cv.grid_spacing(flipped) == (1000.0, 1000.0)


def test_uneven_grid(da: xr.DataArray) -> None:
    y = da.y.values.copy()
    y[-1] += 700.0
    with pytest.raises(CoordinateError, match="'y' is not evenly spaced") as info:
        cv.check_regular_grid(da.assign_coords(y=y))
    assert "regrid" in str(info.value)


def test_float_jitter_within_tolerance_is_regular(da: xr.DataArray) -> None:
    x = da.x.values + np.random.default_rng(0).normal(0.0, 1e-3, da.sizes["x"])
    cv.check_regular_grid(da.assign_coords(x=x))


def test_non_monotonic_grid(da: xr.DataArray) -> None:
    x = da.x.values.copy()
    x[[2, 3]] = x[[3, 2]]
    with pytest.raises(CoordinateError, match="'x' is not monotonic") as info:
        cv.check_regular_grid(da.assign_coords(x=x))
    assert "sortby('x')" in str(info.value)


@pytest.mark.parametrize("dim", ["x", "y"])
def test_missing_spatial_coordinate(da: xr.DataArray, dim: str) -> None:
    with pytest.raises(CoordinateError, match=f"'{dim}' has no coordinate") as info:
        cv.check_regular_grid(da.drop_vars(dim))
    assert f"assign_coords({dim}=...)" in str(info.value)


def test_grid_spacing_in_metres(da: xr.DataArray) -> None:
    assert cv.grid_spacing(da) == (1000.0, 1000.0)
    km = da.assign_coords(y=da.y / 1000, x=da.x / 1000)
    km.y.attrs["units"] = "km"
    km.x.attrs["units"] = "km"
    assert cv.grid_spacing(km) == pytest.approx((1000.0, 1000.0))
    with pytest.raises(CoordinateError, match="single value"):
        cv.grid_spacing(da.isel(x=[0]))


# --- the precipitation variable ---------------------------------------------------------------------------


def test_dataarray_is_its_own_precipitation(da: xr.DataArray) -> None:
    assert cv.find_precipitation(da) is da


def test_found_by_standard_name(da: xr.DataArray) -> None:
    ds = xr.Dataset(
        {
            "rr": da,
            "orography": da.isel(time=0, drop=True).assign_attrs(
                standard_name="surface_altitude", units="m"
            ),
        }
    )
    assert cv.find_precipitation(ds).name == "rr"
    refl = moving_storm(frames=2, shape=(4, 4), units="dBZ", name="DBZH")
    assert refl.attrs["standard_name"] == "equivalent_reflectivity_factor"
    assert cv.find_precipitation(refl.to_dataset()).name == "DBZH"


def test_found_by_usual_name_without_standard_name(da: xr.DataArray) -> None:
    plain = da.copy()
    del plain.attrs["standard_name"]
    ds = xr.Dataset({"precipitation": plain, "quality": plain * 0})
    assert cv.find_precipitation(ds).name == "precipitation"


def test_found_by_var(da: xr.DataArray) -> None:
    ds = xr.Dataset({"a": da, "b": da * 2})
    xr.testing.assert_identical(cv.find_precipitation(ds, var="b"), ds["b"])
    with pytest.raises(DatasetError, match="no variable 'c'") as info:
        cv.find_precipitation(ds, var="c")
    assert "['a', 'b']" in str(info.value)


def test_no_precipitation_variable(da: xr.DataArray) -> None:
    temp = da.assign_attrs(standard_name="air_temperature", units="K")
    ds = xr.Dataset({"t2m": temp})
    with pytest.raises(DatasetError, match="No precipitation variable") as info:
        cv.find_precipitation(ds)
    assert "['t2m']" in str(info.value) and "var='name'" in str(info.value)


def test_several_precipitation_variables(da: xr.DataArray) -> None:
    ds = xr.Dataset({"radar": da, "gauges": da * 1.1})
    with pytest.raises(DatasetError, match="Several precipitation variables") as info:
        cv.find_precipitation(ds)
    assert "'radar'" in str(info.value) and "var='name'" in str(info.value)


# --- output attributes --------------------------------------------------------------------------------------


def test_append_history_keeps_previous_lines() -> None:
    attrs = {"history": "created by the radar", "units": "mm/h"}
    out = cv.append_history(attrs, "xnowcast: persistence nowcast")
    assert attrs["history"] == "created by the radar"  # not modified
    lines = out["history"].split("\n")
    assert lines[0] == "created by the radar"
    assert lines[1].endswith(": xnowcast: persistence nowcast")
    pd.Timestamp(lines[1].split(": ")[0])  # starts with a parseable time stamp
    assert out["units"] == "mm/h"
    assert cv.append_history({}, "x")["history"].endswith(": x")


def test_forecast_coordinate_attributes() -> None:
    attrs = cv.forecast_coord_attrs()
    assert attrs[cv.LEAD_TIME]["standard_name"] == "forecast_period"
    assert attrs[cv.INIT_TIME]["standard_name"] == "forecast_reference_time"
    assert attrs[cv.VALID_TIME]["standard_name"] == "time"
    assert attrs[cv.MEMBER]["standard_name"] == "realization"

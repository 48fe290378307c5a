"""Units: rain rate <-> mass flux <-> reflectivity, accumulations, thresholds, errors."""

from __future__ import annotations

import copy

import numpy as np
import pint
import pytest
import xarray as xr

from xnowcast.errors import UnitsError
from xnowcast.testing import moving_storm
from xnowcast.units import (
    MARSHALL_PALMER,
    ZRRelation,
    convert_dataarray,
    convert_values,
    dbz_to_rain_rate,
    parse_units,
    rain_rate_to_dbz,
    to_data_units,
    unit_kind,
    units_of,
    ureg,
)

RATES = np.array([0.01, 0.1, 0.5, 1.0, 4.0, 12.3, 52.0, 80.0, 250.0])
FIVE_MIN = np.timedelta64(5, "m")


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "units",
    ["kg m-2 s-1", "dBZ", "mm6 m-3", "mm h-1", "m s-1", "mm/(5 min)", "kg/m^2/s", "mm/hr"],
)
def test_round_trip_through_every_unit(units: str) -> None:
    there = convert_values(RATES, "mm/h", units)
    back = convert_values(there, units, "mm/h")
    np.testing.assert_allclose(back, RATES, rtol=1e-6)


def test_chain_mm_h_flux_dbz_linear_z_and_back() -> None:
    flux = convert_values(RATES, "mm/h", "kg m-2 s-1")
    dbz = convert_values(flux, "kg m-2 s-1", "dBZ")
    linear = convert_values(dbz, "dBZ", "mm6 m-3")
    rate = convert_values(linear, "mm6 m-3", "mm/h")
    np.testing.assert_allclose(rate, RATES, rtol=1e-6)
    # and the other way round
    linear = convert_values(RATES, "mm/h", "mm6 m-3")
    dbz = convert_values(linear, "mm6 m-3", "dBZ")
    flux = convert_values(dbz, "dBZ", "kg m-2 s-1")
    np.testing.assert_allclose(convert_values(flux, "kg m-2 s-1", "mm/h"), RATES, rtol=1e-6)


def test_known_values() -> None:
    # 1 mm of water over 1 m2 weighs 1 kg: 1 mm/h = 1/3600 kg m-2 s-1
    np.testing.assert_allclose(convert_values(1.0, "mm/h", "kg m-2 s-1"), 1 / 3600, rtol=1e-12)
    np.testing.assert_allclose(convert_values(1.0, "m s-1", "mm/h"), 3.6e6, rtol=1e-12)
    # dBZ = 10 log10(Z / 1 mm6 m-3)
    np.testing.assert_allclose(convert_values([0.0, 10.0, 20.0], "dBZ", "mm6 m-3"), [1, 10, 100])
    np.testing.assert_allclose(convert_values([1.0, 1e3], "mm6 m-3", "dBZ"), [0.0, 30.0])
    np.testing.assert_allclose(convert_values(1e-18, "m6 m-3", "mm6 m-3"), 1.0, rtol=1e-9)
    # 1 mm in 5 min is 12 mm/h, written as a rate
    np.testing.assert_allclose(convert_values(1.0, "mm/(5 min)", "mm/h"), 12.0, rtol=1e-12)
    np.testing.assert_allclose(convert_values(12.0, "mm/h", "mm/(5 min)"), 1.0, rtol=1e-12)


def test_nan_stays_nan_and_zero_rain_is_minus_infinity_dbz() -> None:
    dbz = convert_values([np.nan, 0.0, 1.0], "mm/h", "dBZ")
    assert np.isnan(dbz[0]) and np.isneginf(dbz[1])
    back = convert_values(dbz, "dBZ", "mm/h")
    assert np.isnan(back[0]) and back[1] == 0.0
    np.testing.assert_allclose(back[2], 1.0, rtol=1e-9)


def test_integer_input_becomes_float() -> None:
    out = convert_values(np.array([0, 12, 24], dtype=np.int16), "mm/(5 min)", "mm/h")
    assert np.issubdtype(out.dtype, np.floating)
    np.testing.assert_allclose(out, [0.0, 144.0, 288.0])


# --- accumulations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (np.timedelta64(5, "m"), 12.0),
        (np.timedelta64(10, "m"), 6.0),
        (np.timedelta64(300, "s"), 12.0),
        (ureg.Quantity(5, "min"), 12.0),
        (ureg.Quantity(1, "h"), 1.0),
    ],
)
def test_accumulation_with_a_time_step(step: object, expected: float) -> None:
    np.testing.assert_allclose(convert_values(1.0, "mm", "mm/h", time_step=step), expected)
    np.testing.assert_allclose(convert_values(expected, "mm/h", "mm", time_step=step), 1.0)


def test_accumulation_to_reflectivity_and_back() -> None:
    dbz = convert_values(RATES / 12, "mm", "dBZ", time_step=FIVE_MIN)
    np.testing.assert_allclose(dbz, rain_rate_to_dbz(RATES), rtol=1e-9)
    np.testing.assert_allclose(convert_values(dbz, "dBZ", "mm", time_step=FIVE_MIN), RATES / 12)


def test_accumulation_without_time_step_says_how_to_give_it() -> None:
    with pytest.raises(UnitsError, match="time_step=") as info:
        convert_values(1.0, "mm", "mm/h")
    assert "mm/(5 min)" in str(info.value)


def test_accumulation_to_accumulation_needs_no_time_step() -> None:
    np.testing.assert_allclose(convert_values([1.0, 25.0], "mm", "cm"), [0.1, 2.5])
    np.testing.assert_allclose(convert_values(1.0, "m", "mm"), 1000.0)


# --- reflectivity through pint --------------------------------------------------------------------


def test_pint_quantity_dbz_to_linear_z_and_back() -> None:
    z = ureg.Quantity(23.0103, "dBZ").to("mm6 m-3")
    assert z.units == parse_units("mm6 m-3").units
    np.testing.assert_allclose(z.magnitude, 200.0, rtol=1e-5)
    dbz = ureg.Quantity(200.0, "mm6 m-3").to("dBZ")
    np.testing.assert_allclose(dbz.magnitude, 10 * np.log10(200.0), rtol=1e-12)
    np.testing.assert_allclose(ureg.Quantity(30.0, "dBZ").to("Zmm").magnitude, 1000.0)


# --- Z-R relation -----------------------------------------------------------------------------------


def test_marshall_palmer_values() -> None:
    assert MARSHALL_PALMER == ZRRelation(200.0, 1.6)
    np.testing.assert_allclose(rain_rate_to_dbz(1.0), 23.0103, atol=5e-5)
    np.testing.assert_allclose(rain_rate_to_dbz(10.0), 39.0103, atol=5e-5)
    np.testing.assert_allclose(dbz_to_rain_rate(23.0103), 1.0, rtol=1e-5)
    # Z = 200 R^1.6 -> at 35 dBZ, R = (10^3.5 / 200)^(1/1.6)
    np.testing.assert_allclose(dbz_to_rain_rate(35.0), (10**3.5 / 200) ** (1 / 1.6))
    np.testing.assert_allclose(convert_values(1.0, "mm/h", "mm6 m-3"), 200.0)


def test_custom_zr_relation() -> None:
    zr = ZRRelation(a=300.0, b=1.4)  # WSR-88D convective
    expected = 10 * np.log10(300.0 * RATES**1.4)
    np.testing.assert_allclose(rain_rate_to_dbz(RATES, zr), expected)
    np.testing.assert_allclose(convert_values(RATES, "mm/h", "dBZ", zr=zr), expected)
    np.testing.assert_allclose(dbz_to_rain_rate(expected, zr), RATES, rtol=1e-9)
    np.testing.assert_allclose(convert_values(expected, "dBZ", "mm/h", zr=zr), RATES, rtol=1e-9)
    # a different relation gives a different answer
    assert not np.allclose(convert_values(RATES, "mm/h", "dBZ"), expected)


# --- classification and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "kind"),
    [
        ("mm/h", "rate"),
        ("mm h-1", "rate"),
        ("m s-1", "rate"),
        ("mm/(5 min)", "rate"),
        ("kg m-2 s-1", "flux"),
        ("mm", "depth"),
        ("m", "depth"),
        ("mm6 m-3", "linear_z"),
        ("mm^6/m^3", "linear_z"),
        ("dBZ", "dbz"),
        ("DBZH", "dbz"),
        ("dbz", "dbz"),
    ],
)
def test_unit_kind(units: str, kind: str) -> None:
    assert unit_kind(units) == kind


@pytest.mark.parametrize("units", [None, "", "   "])
def test_missing_units_say_how_to_set_them(units: str | None) -> None:
    with pytest.raises(UnitsError, match="no units") as info:
        unit_kind(units)
    assert "attrs['units']" in str(info.value)


def test_unknown_units_say_how_to_set_them() -> None:
    with pytest.raises(UnitsError, match="Unknown units 'bananas'") as info:
        unit_kind("bananas")
    assert "attrs['units']" in str(info.value)


@pytest.mark.parametrize("units", ["K", "degC", "m2", "1", "Pa", "mm/h/h"])
def test_wrong_dimension_units_are_refused(units: str) -> None:
    with pytest.raises(UnitsError, match="not a precipitation quantity") as info:
        convert_values(1.0, units, "mm/h")
    assert "attrs['units']" in str(info.value)
    with pytest.raises(UnitsError):
        convert_values(1.0, "mm/h", units)


def test_units_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_units("bananas")


def test_units_of() -> None:
    da = moving_storm(frames=2, shape=(4, 4))
    assert units_of(da) == "mm/h"
    assert units_of(da, "dBZ") == "dBZ"  # the override wins
    bare = da.copy()
    del bare.attrs["units"]
    with pytest.raises(UnitsError, match="'precipitation' have no units") as info:
        units_of(bare)
    assert "units=" not in str(info.value)  # the caller names its own option, if it has one
    with pytest.raises(UnitsError, match=r"attrs\[.units.\].* Or pass units=\.\.\."):
        units_of(bare, advice="Or pass units=... to the call.")
    assert units_of(bare, "mm h-1") == "mm h-1"
    with pytest.raises(UnitsError, match="not a precipitation quantity"):
        units_of(da.assign_attrs(units="K"))


# --- thresholds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "data_units", "expected"),
    [
        (5, "dBZ", 5.0),
        (2.5, "mm/h", 2.5),
        (np.float32(2.0), "mm/h", 2.0),
        (np.int64(3), "mm/h", 3.0),
        ("5", "dBZ", 5.0),
        ("1 mm/h", "dBZ", 10 * np.log10(200.0)),
        ("1mm/h", "mm/h", 1.0),
        ("1 mm h-1", "kg m-2 s-1", 1 / 3600),
        ("35 dBZ", "mm/h", (10**3.5 / 200) ** (1 / 1.6)),
        ("-5 dBZ", "dBZ", -5.0),
        ("1e-3 m/h", "mm/h", 1.0),
        ("12 mm/h", "mm/(5 min)", 1.0),
        (ureg.Quantity(1.0, "mm/h"), "kg m-2 s-1", 1 / 3600),
        (ureg.Quantity(23.0103, "dBZ"), "mm/h", 1.0),
        (ureg.Quantity(200.0, "mm6 m-3"), "dBZ", 10 * np.log10(200.0)),
    ],
)
def test_to_data_units(value: object, data_units: str, expected: float) -> None:
    out = to_data_units(value, data_units)
    assert isinstance(out, float)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_to_data_units_accumulation_uses_the_time_step() -> None:
    assert to_data_units("1 mm", "mm/h", time_step=FIVE_MIN) == pytest.approx(12.0)
    assert to_data_units("12 mm/h", "mm", time_step=FIVE_MIN) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("abc", "write a number and units"),
        ("mm/h 1", "write a number and units"),
        ([1.0], "must be a number"),
        ("1 K", "not a precipitation quantity"),
        ("1 bananas", "Unknown units"),
        (ureg.Quantity(2.0, ""), "not a precipitation quantity"),
    ],
)
def test_to_data_units_errors(value: object, needle: str) -> None:
    with pytest.raises(UnitsError, match=needle):
        to_data_units(value, "mm/h")


# --- DataArrays ---------------------------------------------------------------------------------------------


def test_convert_dataarray_keeps_coords_and_attrs() -> None:
    da = moving_storm(frames=3, shape=(8, 10))
    da.x.attrs["comment"] = "cell centres"
    before = copy.deepcopy(da)
    out = convert_dataarray(da, "m s-1")  # the same quantity: only the units change
    xr.testing.assert_identical(da, before)  # the input is untouched
    assert out.attrs["units"] == "m s-1"
    assert {k: v for k, v in out.attrs.items() if k != "units"} == {
        k: v for k, v in da.attrs.items() if k != "units"
    }
    assert out.name == da.name and out.dims == da.dims
    for name, coord in da.coords.items():
        xr.testing.assert_identical(out[name], coord)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.values, da.values / 3.6e6, rtol=1e-6)


@pytest.mark.parametrize(
    ("to_units", "standard_name", "long_name"),
    [
        ("dBZ", "equivalent_reflectivity_factor", "equivalent radar reflectivity factor"),
        ("kg m-2 s-1", "precipitation_flux", "precipitation flux"),
        ("mm", "lwe_thickness_of_precipitation_amount", "precipitation amount over the time step"),
        ("kg m-2", "precipitation_amount", "precipitation amount over the time step"),
        ("Zmm", None, "equivalent radar reflectivity factor (linear)"),
    ],
)
def test_convert_dataarray_names_the_new_quantity(
    to_units: str, standard_name: str | None, long_name: str
) -> None:
    rain = moving_storm(frames=3, shape=(6, 6))
    assert rain.attrs["standard_name"] == "rainfall_rate"
    out = convert_dataarray(rain, to_units)
    assert out.attrs.get("standard_name") == standard_name
    assert out.attrs["long_name"] == long_name
    assert f"converted from {rain.attrs['units']} to {to_units}" in out.attrs["comment"]
    back = convert_dataarray(out, "mm/h")
    assert (back.attrs["standard_name"], back.attrs["long_name"]) == ("rainfall_rate", "rain rate")


def test_convert_dataarray_drops_ranges_in_the_old_units() -> None:
    rain = moving_storm(frames=2, shape=(4, 4)).assign_attrs(
        valid_range=[0.0, 200.0], valid_min=0.0, valid_max=200.0, actual_range=[0.0, 9.0]
    )
    out = convert_dataarray(rain, "m s-1")
    assert not {"valid_range", "valid_min", "valid_max", "actual_range"} & set(out.attrs)
    assert rain.attrs["valid_max"] == 200.0  # the input keeps them


def test_reflectivity_read_from_radar_becomes_a_cf_rain_rate(shared_data) -> None:
    """FMI gives dBZ: in mm/h it is a rainfall_rate, and says which Z-R made it."""
    from xnowcast.io import open_radar

    fmi_reflectivity = open_radar(shared_data / "radar/fmi/pgm/20160928")["reflectivity"]
    rate = convert_dataarray(fmi_reflectivity, "mm/h")
    assert rate.attrs["standard_name"] == "rainfall_rate"
    assert fmi_reflectivity.attrs["comment"] in rate.attrs["comment"]  # the reader's note stays
    assert "Z = 200 R^1.6" in rate.attrs["comment"]
    custom = convert_dataarray(fmi_reflectivity, "mm/h", zr=ZRRelation(300.0, 1.4))
    assert "Z = 300 R^1.4" in custom.attrs["comment"]


def test_convert_dataarray_stays_lazy_on_dask() -> None:
    dask = pytest.importorskip("dask")
    da = moving_storm(frames=4, shape=(8, 8), chunks={"time": 1})
    out = convert_dataarray(da, "dBZ")
    assert dask.is_dask_collection(out)
    assert out.chunks == da.chunks
    eager = convert_dataarray(da.compute(), "dBZ")
    xr.testing.assert_allclose(out.compute(), eager)
    np.testing.assert_allclose(
        out.values, rain_rate_to_dbz(da.values.astype(np.float64)), rtol=1e-6
    )


def test_convert_dataarray_accumulation_reads_the_time_step_from_time() -> None:
    rate = moving_storm(frames=3, shape=(6, 6), step="10min")
    depth = rate.copy(data=rate.values / 6).assign_attrs(units="mm")
    back = convert_dataarray(depth, "mm/h")
    np.testing.assert_allclose(back.values, rate.values, rtol=1e-6)
    assert back.attrs["units"] == "mm/h"
    # a single frame has no time step: a clear error, unless it is given
    with pytest.raises(UnitsError, match="time_step="):
        convert_dataarray(depth.isel(time=0), "mm/h")
    one = convert_dataarray(depth.isel(time=0), "mm/h", time_step=np.timedelta64(10, "m"))
    np.testing.assert_allclose(one.values, rate.values[0], rtol=1e-6)


def test_convert_dataarray_units_override_and_errors() -> None:
    da = moving_storm(frames=2, shape=(4, 4))
    bare = da.copy()
    del bare.attrs["units"]
    with pytest.raises(UnitsError, match="no units"):
        convert_dataarray(bare, "dBZ")
    out = convert_dataarray(bare, "mm/(5 min)", units="mm/h")
    np.testing.assert_allclose(out.values, da.values / 12, rtol=1e-6)
    with pytest.raises(UnitsError, match="not a precipitation quantity"):
        convert_dataarray(da, "K")


def test_parse_units_keeps_scale_factors() -> None:
    q = parse_units("mm/(5 min)")
    assert isinstance(q, pint.Quantity)
    np.testing.assert_allclose(q.to("mm/h").magnitude, 12.0)

"""Implausible input values are refused before any model runs, naming the fill code, the
time and the fix (or ``check_values=False``); real radar data all pass.

Through the public API (``da.nowcast.predict``, ``da.downscale``, the ``xnowcast`` command)
on the real RMI sample packaged with xnowcast, converted to the units under test, and on
the real archives of ``XNOWCAST_TEST_DATA``.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import xnowcast
from xnowcast.checks import DBZ_RANGE, MAX_RAIN_RATE
from xnowcast.cli import main
from xnowcast.errors import DataValueError
from xnowcast.units import convert_dataarray

SKIP_HINT = "check_values=False"


@pytest.fixture(scope="module")
def rain() -> xr.DataArray:
    """Real RMI rain rates (mm/h), 6 frames of a rainy 48 x 48 km crop."""
    da = xnowcast.open_dataset("sample").precipitation
    return da.isel(time=slice(-6, None), y=slice(64, 112), x=slice(96, 144)).load()


@pytest.fixture(scope="module")
def dbz(rain: xr.DataArray) -> xr.DataArray:
    return convert_dataarray(rain, "dBZ")


def persist(da: xr.DataArray, **kwargs: Any) -> xr.DataArray:
    return da.nowcast.predict(model="persistence", steps=1, progress=False, **kwargs)


def trilinear(da: xr.DataArray, **kwargs: Any) -> xr.DataArray:
    return da.downscale(model="trilinear", factor=2, time_factor=2, progress=False, **kwargs)


def stamp(value: Any) -> str:
    return str(np.datetime_as_string(np.datetime64(value, "s"), unit="s"))


def with_patch(da: xr.DataArray, value: float, frame: int = -1, dtype: Any = None) -> xr.DataArray:
    out = da.copy(deep=True) if dtype is None else da.astype(dtype)
    out[frame, :3, :4] = value
    return out


@pytest.mark.parametrize("code", [-99.0, -327.68, -10000.0, -9999.0])
@pytest.mark.parametrize("call", [persist, trilinear])
def test_dbz_fill_codes_are_named(dbz: xr.DataArray, code: float, call: Any) -> None:
    bad = with_patch(dbz, code)
    with pytest.raises(DataValueError) as info:
        call(bad)
    message = str(info.value)
    for needle in (
        f"12 values equal to {code:g}",
        f"first at {stamp(dbz.time.values[-1])}",
        "no-data code",
        f"da.where(da != {code:g})",
        "-inf dBZ",
        SKIP_HINT,
    ):
        assert needle in message, (needle, message)


def test_dbz_out_of_range(dbz: xr.DataArray) -> None:
    low, high = DBZ_RANGE
    for value in (low - 5, high + 5):
        with pytest.raises(DataValueError, match="outside the plausible range -35 to 95 dBZ"):
            persist(with_patch(dbz, value))
    # the edges, weak echoes and no rain (-inf dBZ) are data
    ok = with_patch(with_patch(dbz, low, frame=-1), high, frame=-3)
    ok[-1, 20, :3] = high
    ok[-1, 10, 10] = -np.inf
    out = persist(ok)
    assert float(out.min()) == -np.inf and float(out.max()) <= high


@pytest.mark.parametrize("code", [10000.0, 9999.0, 65535.0])
def test_rain_fill_codes_are_named(rain: xr.DataArray, code: float) -> None:
    with pytest.raises(DataValueError, match=f"values equal to {code:g}.*no-data code"):
        persist(with_patch(rain, code))


def test_raw_counts_above_the_maximum_rain_rate(rain: xr.DataArray) -> None:
    """uint16 counts (the rate x 30, up to 569 here) look like rain but are not."""
    counts = (rain * 30).astype(np.uint16)
    assert int(counts.max()) > MAX_RAIN_RATE
    with pytest.raises(DataValueError) as info:
        trilinear(counts)
    message = str(info.value)
    for needle in (
        "8 integer values (raw counts?) above 500 mm h-1, the largest plausible rain rate",
        "raw counts",
        "gain",
    ):
        assert needle in message, (needle, message)
    assert SKIP_HINT in message and "da.where(da <= 500)" in message


def test_isolated_extreme_pixels_of_real_composites_pass(rain: xr.DataArray) -> None:
    """OPERA's real 2018-08-24 composite has single pixels up to 8647 mm/h (clutter, hail):
    a few such pixels pass, a patch of them does not, nor anything from 10,000 mm/h."""
    spiky = rain.copy(deep=True)
    spiky[-1, 5, 5], spiky[-1, 30, 40] = 8646.8, 1205.2
    out = persist(spiky)
    assert float(out.max()) == pytest.approx(8646.8)
    with pytest.raises(DataValueError, match="12 values above 500 mm h-1"):
        persist(with_patch(rain, 2000.0))
    spiky[-1, 5, 5] = 1e6
    with pytest.raises(DataValueError, match=r"2 values above 500 mm h-1, .* up to 1e\+06"):
        persist(spiky)


def test_the_maximum_follows_the_units(rain: xr.DataArray) -> None:
    """500 mm/h is 41.67 mm per 5-min frame and 0.139 kg m-2 s-1."""
    depth = convert_dataarray(rain, "mm", time_step=np.timedelta64(5, "m"))
    persist(with_patch(depth, 40.0))
    with pytest.raises(DataValueError, match=r"above 41\.6667 mm \(= 500 mm/h\)"):
        persist(with_patch(depth, 45.0))
    flux = convert_dataarray(rain, "kg m-2 s-1")
    with pytest.raises(DataValueError, match=r"above 0\.138889 kg m-2 s-1"):
        persist(with_patch(flux, 0.2))


def test_values_lost_in_the_float32_cast(rain: xr.DataArray) -> None:
    for call in (persist, trilinear):
        for kwargs in ({}, {"check_values": False}):  # never skipped: they would become inf
            with pytest.raises(DataValueError, match=r"too large for float32.*1e\+300"):
                call(with_patch(rain, 1e300, dtype=np.float64), **kwargs)


def test_check_values_false_skips_the_plausibility_checks(
    rain: xr.DataArray, dbz: xr.DataArray
) -> None:
    huge = with_patch(rain, 1e4, frame=-1)
    out = persist(huge, check_values=False)
    assert float(out.max()) == 1e4
    fine = trilinear(with_patch(dbz, -99.0), check_values=False)
    assert float(fine.min()) < DBZ_RANGE[0]


def test_lazy_input_is_checked_per_block_and_names_the_time(dbz: xr.DataArray) -> None:
    bad = with_patch(dbz, -99.0, frame=-3).chunk({"time": 1})
    fc = bad.nowcast.predict(
        model="persistence", steps=1, init_time=bad.time.values[-4:], progress=False
    )  # the check needs the values: it runs when computed, on the blocks that hold them
    # the init times whose window avoids the bad frame compute fine on their own
    assert np.isfinite(fc.isel(init_time=0).values).any()
    with pytest.raises(DataValueError, match=f"-99.*first at {stamp(dbz.time.values[-3])}"):
        fc.compute()
    fine = trilinear(bad)
    with pytest.raises(DataValueError, match=f"-99.*first at {stamp(dbz.time.values[-3])}"):
        fine.compute()


def test_command_line_refuses_with_one_line_and_can_skip(
    dbz: xr.DataArray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "coded.nc"
    with_patch(dbz, -99.0).to_dataset().to_netcdf(path)
    for command in (
        ["predict", str(path), "--model", "persistence", "--steps", "1"],
        ["downscale", str(path), "--model", "trilinear"],
    ):
        out = tmp_path / f"{command[0]}.nc"
        assert main([*command, "-o", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "-99" in error and "--no-check-values" in error
        assert not out.exists()
        assert main([*command, "--no-check-values", "-o", str(out)]) == 0
        assert out.exists()


EVENTS = {
    "rmi-20210704": "radar/rmi/radqpe/20210704/*",
    "mch-20150515": "radar/mch/20150515/*",
    "mch-20160711": "radar/mch/20160711/*",
    "fmi-20160928": "radar/fmi/pgm/20160928/*",
    "knmi-20100826": "radar/KNMI/2010/08/*",
}


@pytest.mark.parametrize("event", list(EVENTS))
def test_real_radar_events_pass(shared_data: Path, event: str) -> None:
    """The rainiest frames of every 5-min event (RMI peaks at ~84 mm/h, MeteoSwiss at
    ~116 mm/h, FMI spans -32 to 57.5 dBZ) pass the checks, on the whole domain."""
    files = sorted(glob.glob(str(shared_data / EVENTS[event])))
    middle = len(files) // 2
    ds = xnowcast.open_radar(files[middle - 1 : middle + 1])
    out = ds.nowcast.predict(model="persistence", steps=1, progress=False)
    assert np.isfinite(out.values).any()

"""Units that used to be refused or misread, and messages that used to mislead: each
through the public API, with the message a user reads."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xnowcast import cli, units
from xnowcast.errors import DatasetError, TimeAxisError, UnitsError
from xnowcast.testing import assert_identical_outputs, moving_storm


@pytest.fixture
def storm() -> xr.DataArray:
    return moving_storm(frames=6, shape=(16, 16))


def _as_amount(rate: xr.DataArray, unit: str) -> xr.DataArray:
    """The 5-min accumulations of a rain rate in mm/h: 1 mm = 1 kg m-2 of water."""
    return (rate / 12.0).astype(np.float32).assign_attrs(rate.attrs, units=unit)


# === amounts: kg m-2 (CF's precipitation_amount) and mm, with the time step ===========


@pytest.mark.parametrize("unit", ["kg m-2", "mm", "kg/m^2"])
def test_amounts_over_the_time_step_are_rain(storm: xr.DataArray, unit: str) -> None:
    amount = _as_amount(storm, unit).assign_attrs(standard_name="precipitation_amount")
    fc = amount.nowcast.predict(model="extrapolation", steps=2, progress=False)
    expected = storm.nowcast.predict(model="extrapolation", steps=2, progress=False)
    assert fc.attrs["units"] == unit
    np.testing.assert_allclose(fc.values * 12.0, expected.values, rtol=1e-5, atol=1e-5)
    fine = amount.downscale(factor=2, time_factor=1, model="trilinear", progress=False)
    assert fine.attrs["units"] == unit and float(fine.max()) > 0


def test_kg_m2_converts_through_the_density_of_water() -> None:
    step = np.timedelta64(5, "m")
    assert units.convert_values(1.0, "kg m-2", "mm/h", time_step=step) == pytest.approx(12.0)
    assert units.convert_values(3.0, "kg m-2", "mm") == pytest.approx(3.0)
    assert units.convert_values(1.0, "kg m-2", "kg m-2 s-1", time_step=step) == pytest.approx(
        1 / 300
    )
    with pytest.raises(UnitsError, match=r"'kg m-2'.*needs the time step"):
        units.convert_values(1.0, "kg m-2", "mm/h")


# === case and spelling: suggestions, never silent re-interpretation ===================


@pytest.mark.parametrize(
    ("written", "suggested"),
    [("MM/H", "'mm/h'"), ("MM h-1", "'mm h-1'"), ("KG M-2 S-1", "'kg m-2 s-1'"), ("MM", "'mm'")],
)
def test_unit_case_variants_get_a_did_you_mean(
    storm: xr.DataArray, written: str, suggested: str
) -> None:
    with pytest.raises(UnitsError, match="Did you mean") as info:
        storm.assign_attrs(units=written).nowcast.predict(model="persistence", progress=False)
    message = str(info.value)
    assert suggested in message and "case-sensitive" in message
    assert "Or pass units=" in message  # nowcast takes units=


def test_valid_case_sensitive_units_keep_their_meaning() -> None:
    assert units.unit_kind("Mm/h") == "rate"  # megametre per hour: odd, but valid
    assert units.convert_values(1.0, "Mm/h", "mm/h") == pytest.approx(1e9)
    assert units.unit_kind("mm/h") == "rate" and units.unit_kind("DBZ") == "dbz"
    with pytest.raises(UnitsError) as info:
        units.unit_kind("bananas")
    assert "Did you mean" not in str(info.value)


# === "pass units=" only where such an option exists =====================================


def test_units_advice_names_options_that_exist(storm: xr.DataArray, tmp_path: Path) -> None:
    bare = storm.copy()
    del bare.attrs["units"]
    with pytest.raises(UnitsError, match=r"Or pass units=\.\.\. to the call"):
        bare.nowcast.predict(model="persistence", progress=False)
    fc = storm.nowcast.predict(model="persistence", steps=1, progress=False)
    with pytest.raises(UnitsError) as info:
        fc.nowcast.verify(bare, metrics=["mae"])  # verify has no units= option
    assert "units=" not in str(info.value) and "attrs['units']" in str(info.value)

    # the command line has --units for predict and downscale, and says so
    radar = tmp_path / "radar.nc"
    bare.to_dataset().to_netcdf(radar)
    code = cli.main(["predict", str(radar), "--model", "persistence", "-o", str(tmp_path / "f.nc")])
    assert code == 2 and not (tmp_path / "f.nc").exists()
    out = tmp_path / "fc.nc"
    assert cli.main(
        ["predict", str(radar), "--model", "persistence", "--steps", "1", "--units", "mm/h",
         "-o", str(out)]
    ) == 0  # fmt: skip
    with xr.open_dataset(out) as written:
        assert written["precipitation"].attrs["units"] == "mm/h"


def test_cli_units_message_names_the_option(
    storm: xr.DataArray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = storm.copy()
    del bare.attrs["units"]
    radar = tmp_path / "radar.nc"
    bare.to_dataset().to_netcdf(radar)
    out = str(tmp_path / "fine.nc")
    assert cli.main(["downscale", str(radar), "--model", "trilinear", "-o", out]) == 2
    assert "--units" in capsys.readouterr().err


# === time axis messages ===============================================================


def test_a_jittered_timestamp_is_named_with_its_offset(storm: xr.DataArray) -> None:
    times = storm.time.values.copy()
    times[3] += np.timedelta64(7, "s")
    jittered = storm.assign_coords(time=times)
    for call in (
        lambda da: da.nowcast.predict(model="persistence", steps=1, progress=False),
        lambda da: da.nowcast.predict(model="extrapolation", steps=1, progress=False),
        lambda da: da.downscale(model="trilinear", progress=False),
    ):
        with pytest.raises(TimeAxisError) as info:
            call(jittered)
        message = str(info.value)
        assert "2021-07-04T15:15:07 is 7 s late" in message, message
        assert "5 min grid" in message and "4.88" not in message and "293 s" not in message
        assert ".dt.round('5min')" in message
    rounded = jittered.assign_coords(time=jittered["time"].dt.round("5min"))  # the advice works
    assert rounded.nowcast.predict(model="persistence", steps=1, progress=False).notnull().all()


def test_a_gap_is_not_called_jitter(storm: xr.DataArray) -> None:
    with pytest.raises(TimeAxisError, match="Irregular time axis: the step is 5 min") as info:
        storm.drop_isel(time=2).downscale(model="trilinear", progress=False)
    assert "late" not in str(info.value)


def test_timezone_aware_times_say_so(storm: xr.DataArray) -> None:
    local = pd.DatetimeIndex(storm.time.values).tz_localize("UTC").tz_convert("Europe/Brussels")
    aware = storm.assign_coords(time=local)
    for call in (
        lambda da: da.nowcast.predict(model="persistence", steps=1, progress=False),
        lambda da: da.downscale(model="trilinear", progress=False),
    ):
        with pytest.raises(TimeAxisError, match="timezone-aware times") as info:
            call(aware)
        assert "convert to UTC and drop the tz" in str(info.value)
        assert "holds object" not in str(info.value)
    naive = aware.assign_coords(time=aware.indexes["time"].tz_convert("UTC").tz_localize(None))
    fc = naive.nowcast.predict(model="persistence", steps=1, progress=False)  # the advice works
    assert fc.init_time.values == storm.time.values[-1]


# === a file:// data URL is a local mirror, not a "failed sha256 check" ================


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_a_file_url_reads_a_local_mirror_and_checks_it(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    from xnowcast import datasets

    name = datasets.registry_files("rmi-20210704")[0]
    monkeypatch.setenv("XNOWCAST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XNOWCAST_DATA_URL", shared_data.as_uri())
    (path,) = datasets.fetch("rmi-20210704", files=[name])
    assert path.read_bytes() == (shared_data / name).read_bytes()

    tampered = tmp_path / "mirror"
    (tampered / name).parent.mkdir(parents=True)
    (tampered / name).write_bytes(b"not the radar file")
    monkeypatch.setenv("XNOWCAST_CACHE_DIR", str(tmp_path / "cache2"))
    monkeypatch.setenv("XNOWCAST_DATA_URL", tampered.as_uri())
    with pytest.raises(DatasetError, match="sha256"):  # a local mirror is checked too
        datasets.fetch("rmi-20210704", files=[name])


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("file:///no/such/mirror", "local mirror folder '/no/such/mirror', which does not exist"),
        ("EMPTY", "has no file 'radar/"),
        ("s3://bucket/data", "must be an http(s)/ftp URL, a file:// URL or the path"),
    ],
)
def test_bad_data_urls_say_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None, url: str, needle: str
) -> None:
    from xnowcast import datasets

    monkeypatch.setenv("XNOWCAST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XNOWCAST_DATA_URL", tmp_path.as_uri() if url == "EMPTY" else url)
    name = datasets.registry_files("rmi-20210704")[0]
    with pytest.raises(DatasetError) as info:
        datasets.fetch("rmi-20210704", files=[name])
    assert needle in str(info.value) and "sha256" not in str(info.value)
    assert not any((tmp_path / "cache").rglob("*.hdf"))


# === outputs compared without their history time stamps =============================


def test_identical_outputs_ignore_only_the_history_time_stamps(storm: xr.DataArray) -> None:
    first = storm.nowcast.predict(model="persistence", steps=1, progress=False)
    second = first.assign_attrs(history=first.attrs["history"].replace(":", "-", 1))
    stamp = first.attrs["history"].splitlines()[-1][:20]
    later = first.assign_attrs(
        history=first.attrs["history"].replace(stamp, "2099-01-01T00:00:00Z")
    )
    assert_identical_outputs(first, later)
    with pytest.raises(AssertionError):
        assert_identical_outputs(first, first + 1)
    with pytest.raises(AssertionError):
        assert_identical_outputs(first, first.assign_attrs(history=first.attrs["history"] + "x"))
    with pytest.raises(AssertionError):
        assert_identical_outputs(first, second)  # a damaged stamp is not a stamp

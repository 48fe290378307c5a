"""Hindcasts survive gaps: incomplete init times become NaN forecasts, listed once.

Through the public API on the real RMI radar sample packaged with xnowcast (a 48 x 48 km
crop, 5-min frames) with ``extrapolation`` (3 input frames): a time gap or an entirely
missing frame in the input window of some init times of a hindcast gives NaN forecasts
for exactly those, one :class:`~xnowcast.errors.MissingDataWarning` that lists them, and
the output attribute ``xnowcast_incomplete_init_times``; ``on_missing="raise"`` and a
single init time raise, naming the time; eager and dask-backed input agree.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import xarray as xr

import xnowcast
from xnowcast.errors import DataValueError, MissingDataWarning, ModelError, TimeAxisError


@pytest.fixture(scope="module")
def sample() -> xr.DataArray:
    da = xnowcast.open_dataset("sample").precipitation
    return da.isel(time=slice(0, 14), y=slice(64, 112), x=slice(96, 144)).load()


def hindcast(da: xr.DataArray, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("init_time", slice(None))
    return da.nowcast.predict(model="extrapolation", steps=2, progress=False, **kwargs)


def stamp(value: Any) -> str:
    return str(np.datetime_as_string(np.datetime64(value, "s"), unit="s"))


def only_warning(record: list[warnings.WarningMessage]) -> str:
    ours = [w for w in record if issubclass(w.category, MissingDataWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    return str(ours[0].message)


def assert_nan_exactly_at(fc: xr.DataArray, bad: list[Any]) -> None:
    bad = [np.datetime64(t, "ns") for t in bad]
    nan_inits = [t for t in fc.init_time.values if bool(fc.sel(init_time=t).isnull().all())]
    assert nan_inits == bad
    good = fc.drop_sel(init_time=bad)
    assert bool(good.notnull().any(["y", "x"]).all())


def test_a_time_gap_gives_nan_forecasts_and_one_warning(sample: xr.DataArray) -> None:
    times = sample.time.values
    gappy = sample.drop_isel(time=6)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fc = hindcast(gappy)
    # inits 0, 1: too few frames before them; 7, 8: their window needs the missing 6
    bad = [times[0], times[1], times[7], times[8]]
    message = only_warning(record)
    assert "4 of 13 init times" in message and "on_missing='raise'" in message
    for t in bad:
        assert stamp(t) in message
    assert f"no frame at {stamp(times[6])}" in message
    assert fc.attrs["xnowcast_incomplete_init_times"] == " ".join(stamp(t) for t in bad)
    assert_nan_exactly_at(fc, bad)
    # the complete windows give exactly the forecast of a single init time
    single = hindcast(gappy, init_time=times[10])
    xr.testing.assert_allclose(
        fc.sel(init_time=times[10]).drop_vars("init_time"), single.drop_vars("init_time")
    )


def test_an_entirely_missing_frame_gives_nan_forecasts_and_one_warning(
    sample: xr.DataArray,
) -> None:
    times = sample.time.values
    holed = sample.copy()
    holed[6] = np.nan
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fc = hindcast(holed, init_time=list(times[4:12]))
    bad = [times[6], times[7], times[8]]  # the windows holding frame 6
    message = only_warning(record)
    assert "3 of 8 init times" in message
    assert f"entirely NaN frame(s) at {stamp(times[6])}" in message
    assert fc.attrs["xnowcast_incomplete_init_times"] == " ".join(stamp(t) for t in bad)
    assert_nan_exactly_at(fc, bad)


def test_on_missing_raise_names_the_time(sample: xr.DataArray) -> None:
    times = sample.time.values
    with pytest.raises(TimeAxisError, match=f"ending at {stamp(times[7])}.*a gap"):
        hindcast(sample.drop_isel(time=6), init_time=list(times[7:10]), on_missing="raise")
    holed = sample.copy()
    holed[6] = np.nan
    with pytest.raises(DataValueError, match=f"init_time {stamp(times[6])}: 1 input frame"):
        hindcast(holed, init_time=slice(times[4], None), on_missing="raise")
    with pytest.raises(ModelError, match="on_missing must be 'nan' or 'raise'"):
        hindcast(sample, on_missing="skip")


def test_a_single_init_time_still_raises(sample: xr.DataArray) -> None:
    times = sample.time.values
    with pytest.raises(TimeAxisError, match=stamp(times[6])):
        hindcast(sample.drop_isel(time=6), init_time=times[7])
    holed = sample.copy()
    holed[6] = np.nan
    with pytest.raises(DataValueError, match=f"init_time {stamp(times[7])}.*{stamp(times[6])}"):
        hindcast(holed, init_time=times[7])
    # lazily: the error comes at compute time and names the time too
    lazy = hindcast(holed.chunk({"time": 4}), init_time=times[7])
    with pytest.raises(DataValueError, match=f"init_time {stamp(times[7])}.*{stamp(times[6])}"):
        lazy.compute()


def test_eager_and_lazy_hindcasts_agree(sample: xr.DataArray) -> None:
    times = sample.time.values
    data = sample.copy()
    data[6] = np.nan  # an entirely missing frame: seen by dask only when computed
    data = data.drop_isel(time=10)  # a time gap: seen at call time by both
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        eager = hindcast(data, init_time=slice(times[3], None))
    assert "on_missing" in only_warning(record)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        lazy = hindcast(data.chunk({"time": 3}), init_time=slice(times[3], None))
    assert lazy.chunks is not None
    message = only_warning(record)  # the gap: at call time, as eager
    assert all(stamp(t) in message for t in times[11:13])
    assert lazy.attrs["xnowcast_incomplete_init_times"] == " ".join(stamp(t) for t in times[11:13])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        computed = lazy.compute()
    found = [str(w.message) for w in record if issubclass(w.category, MissingDataWarning)]
    assert found and all(stamp(times[6]) in m for m in found)
    np.testing.assert_array_equal(computed.values, eager.values)
    assert_nan_exactly_at(computed, [times[6], times[7], times[8], times[11], times[12]])


def test_raise_mode_names_the_time_of_an_all_missing_block(sample: xr.DataArray) -> None:
    times = sample.time.values
    holed = sample.copy()
    holed[7:11] = np.nan  # every frame of the windows of init times 9 and 10
    for init_time in (list(times[9:11]), times[10]):
        lazy = hindcast(holed.chunk({"time": 2}), init_time=init_time, on_missing="raise")
        with pytest.raises(DataValueError, match=r"init_time 2021-07-04T16:(35|40):00 is entirely"):
            lazy.compute()

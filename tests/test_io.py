"""Radar readers on the real shared events: grids, time stamps, values, missing data."""

from __future__ import annotations

import numpy as np
import pytest

from xnowcast.io import open_radar

EVENTS = {
    # name: (glob under radar/, variable, frames, first time, last time, shape)
    "rmi": (
        "rmi/radqpe/20210704/*.hdf",
        "precipitation",
        39,
        "2021-07-04T15:50",
        "2021-07-04T19:00",
        (700, 700),
    ),
    "knmi": (
        "KNMI/2010/08/*.h5",
        "precipitation",
        92,
        "2010-08-26T00:00",
        "2010-08-26T07:35",
        (765, 700),
    ),
    "fmi": (
        "fmi/pgm/20160928/*.pgm.gz",
        "reflectivity",
        40,
        "2016-09-28T14:45",
        "2016-09-28T18:00",
        (1226, 760),
    ),
    "mch-2015": (
        "mch/20150515/*.gif",
        "precipitation",
        40,
        "2015-05-15T15:45",
        "2015-05-15T19:00",
        (640, 710),
    ),
    "mch-2016": (
        "mch/20160711/*.gif",
        "precipitation",
        40,
        "2016-07-11T20:45",
        "2016-07-12T00:00",
        (640, 710),
    ),
}


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_open_radar_real_event(shared_data, event):
    pattern, var, frames, first, last, shape = EVENTS[event]
    ds = open_radar(str(shared_data / "radar" / pattern), chunks={})
    assert ds[var].dims == ("time", "y", "x")
    assert ds.sizes["time"] == frames
    assert (ds.sizes["y"], ds.sizes["x"]) == shape
    assert ds.time.values[0] == np.datetime64(first)
    assert ds.time.values[-1] == np.datetime64(last)
    assert (np.diff(ds.time.values) == np.timedelta64(5, "m")).all()
    assert ds[var].attrs["grid_mapping"] == "crs"
    frame = ds[var].isel(time=frames // 2).values
    assert frame.dtype == np.float32
    assert np.isnan(frame).any()  # outside radar range stays missing
    assert np.nanmax(frame) > 1.0

"""Radar readers on the real shared events: grids, time stamps, values, missing data.

Decoded values are checked against pysteps' importers (an independent decoder,
a test-only dependency) and the grids against the files' own geographic corners.
"""

from __future__ import annotations

import gzip
import re
import types
from dataclasses import dataclass
from pathlib import Path

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import h5py
import numpy as np
import pyproj
import pytest
import xarray as xr

from xnowcast.errors import RadarFormatError, TimeAxisError
from xnowcast.io import detect_format, open_radar
from xnowcast.io._crs import crs_from_proj4


@dataclass(frozen=True)
class Event:
    pattern: str  # glob under radar/
    format: str
    variable: str
    frames: int
    first: str
    last: str
    shape: tuple[int, int]
    spacing: tuple[float, float]  # (dx, dy) in metres
    grid_mapping: str
    value_range: tuple[float, float]  # plausible bounds of the decoded values
    no_rain: float  # the value of "observed, no rain"
    name_time: str  # regex capturing the time stamp in the file name
    name_format: str  # its strptime-like layout for numpy


EVENTS = {
    "rmi": Event(
        "rmi/radqpe/20210704/*.hdf",
        "odim_hdf5",
        "precipitation",
        39,
        "2021-07-04T15:50",
        "2021-07-04T19:00",
        (700, 700),
        (1000.0, 1000.0),
        "lambert_conformal_conic",
        (0.0, 200.0),
        0.0,
        r"^(\d{12})00\.rad",
        "%Y%m%d%H%M",
    ),
    "knmi": Event(
        "KNMI/2010/08/*.h5",
        "knmi_hdf5",
        "precipitation",
        92,
        "2010-08-26T00:00",
        "2010-08-26T07:35",
        (765, 700),
        (1000.0, 1000.0),
        "polar_stereographic",
        (0.0, 200.0),
        0.0,
        r"_(\d{12})\.h5$",
        "%Y%m%d%H%M",
    ),
    "fmi": Event(
        "fmi/pgm/20160928/*.pgm.gz",
        "fmi_pgm",
        "reflectivity",
        40,
        "2016-09-28T14:45",
        "2016-09-28T18:00",
        (1226, 760),
        (999.674053, 999.62859),
        "polar_stereographic",
        (-32.0, 95.5),
        -32.0,
        r"^(\d{12})_fmi",
        "%Y%m%d%H%M",
    ),
    "mch-20150515": Event(
        "mch/20150515/*.gif",
        "mch_gif",
        "precipitation",
        40,
        "2015-05-15T15:45",
        "2015-05-15T19:00",
        (640, 710),
        (1000.0, 1000.0),
        "oblique_mercator",
        (0.0, 200.0),
        0.0,
        r"^AQC(\d{9})",
        "%y%j%H%M",
    ),
    "mch-20160711": Event(
        "mch/20160711/*.gif",
        "mch_gif",
        "precipitation",
        40,
        "2016-07-11T20:45",
        "2016-07-12T00:00",
        (640, 710),
        (1000.0, 1000.0),
        "oblique_mercator",
        (0.0, 200.0),
        0.0,
        r"^AQC(\d{9})",
        "%y%j%H%M",
    ),
}


def _files(shared_data: Path, event: Event) -> list[Path]:
    return sorted((shared_data / "radar").glob(event.pattern))


@pytest.fixture(scope="module", params=sorted(EVENTS))
def opened(request, shared_data):
    """(event, Dataset) for each shared event, decoded once per module."""
    event = EVENTS[request.param]
    ds = open_radar(str(shared_data / "radar" / event.pattern))
    yield event, ds
    ds.close()


def test_import_xnowcast_does_not_import_pyproj_until_a_crs_is_made(fresh_python) -> None:
    """Like torch (``test_import_xnowcast_imports_neither_torch_nor_lightning``), pyproj is
    imported on first use: reading a file with a projection, not ``import xnowcast``."""
    code = (
        "import sys, xnowcast; before = 'pyproj' in sys.modules; "
        "from xnowcast.io._crs import cf_attributes, crs_from_proj4; "
        "crs, _ = crs_from_proj4('+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378.137 "
        "+b=6356.752', 'km'); "
        "print(before, 'pyproj' in sys.modules, cf_attributes(crs)['grid_mapping_name'])"
    )
    assert fresh_python(code).split() == ["False", "True", "polar_stereographic"]


def test_frames_times_and_grid_shape(opened):
    event, ds = opened
    var = ds[event.variable]
    assert var.dims == ("time", "y", "x")
    assert var.shape == (event.frames, *event.shape)
    assert ds.time.dtype == np.dtype("datetime64[ns]")
    assert ds.time.values[0] == np.datetime64(event.first)
    assert ds.time.values[-1] == np.datetime64(event.last)
    assert (np.diff(ds.time.values) == np.timedelta64(5, "m")).all()


def test_time_stamps_agree_with_file_names(opened, shared_data):
    event, ds = opened
    from datetime import datetime

    expected = []
    for path in _files(shared_data, event):
        stamp = re.search(event.name_time, path.name).group(1)
        expected.append(np.datetime64(datetime.strptime(stamp, event.name_format), "ns"))
    np.testing.assert_array_equal(ds.time.values, np.array(sorted(expected)))


def test_coordinates_are_cf_projection_metres(opened):
    event, ds = opened
    dx, dy = event.spacing
    np.testing.assert_allclose(np.diff(ds.x.values), dx, rtol=0, atol=1e-6)
    # rows keep the file order (north first); y carries each row's northing
    np.testing.assert_allclose(np.diff(ds.y.values), -dy, rtol=0, atol=1e-6)
    for name, axis in (("x", "X"), ("y", "Y")):
        attrs = ds[name].attrs
        assert attrs["standard_name"] == f"projection_{name}_coordinate"
        assert attrs["units"] == "m"
        assert attrs["axis"] == axis
    assert ds.time.attrs["standard_name"] == "time"
    assert ds.time.attrs["axis"] == "T"
    assert ds.cf.axes["X"] == ["x"] and ds.cf.axes["Y"] == ["y"] and ds.cf.axes["T"] == ["time"]


def test_crs_and_variable_attributes(opened):
    event, ds = opened
    crs = ds["crs"]
    assert crs.ndim == 0
    assert crs.attrs["grid_mapping_name"] == event.grid_mapping
    assert crs.attrs["proj4_params"].startswith("+proj=")
    assert "+units=m" in crs.attrs["proj4_params"]
    var = ds[event.variable]
    assert var.dtype == np.float32
    assert var.attrs["grid_mapping"] == "crs"
    if event.variable == "precipitation":
        assert var.attrs["units"] == "mm h-1"
        assert var.attrs["standard_name"] == "rainfall_rate"
    else:
        assert var.attrs["units"] == "dBZ"
        assert var.attrs["standard_name"] == "equivalent_reflectivity_factor"
    assert var.attrs["long_name"]
    assert ds.attrs["Conventions"] == "CF-1.10"
    for key in ("institution", "source", "title", "history"):
        assert ds.attrs[key], key
    assert "open_radar" in ds.attrs["history"]
    assert ds.cf[var.attrs["standard_name"]].name == event.variable


def test_values_missing_and_no_rain(opened):
    event, ds = opened
    values = ds[event.variable].values
    low, high = event.value_range
    assert low <= np.nanmin(values) and np.nanmax(values) <= high
    always_missing = np.isnan(values).all(axis=0)
    # the radar does not see the grid's corners: missing, not zero
    assert always_missing[[0, 0, -1, -1], [0, -1, 0, -1]].all()
    assert 0.05 < always_missing.mean() < 0.8
    # where it sees, much of the grid is observed without rain
    seen = values[:, ~always_missing]
    assert (seen == event.no_rain).mean() > 0.3
    # and every event has real rain (or echo) somewhere
    assert np.nanmax(values) > (20.0 if event.variable == "precipitation" else 45.0)


def test_precipitation_units_conversion_is_recorded(opened):
    event, ds = opened
    attrs = ds[event.variable].attrs
    if event.format in ("knmi_hdf5", "mch_gif"):
        assert attrs["cell_methods"] == "time: mean (interval: 5 minutes)"
        assert "x 12" in attrs["comment"]
        assert attrs["source_units"] == "mm per 5 min"
    else:
        assert "cell_methods" not in attrs


def test_round_trips_through_netcdf(opened, tmp_path):
    event, ds = opened
    path = tmp_path / "radar.nc"
    ds.isel(time=slice(0, 2)).to_netcdf(path)
    with xr.open_dataset(path) as back:
        np.testing.assert_array_equal(back[event.variable].values, ds[event.variable][:2].values)
        assert back.crs.attrs["grid_mapping_name"] == event.grid_mapping
        assert back.time.values[0] == ds.time.values[0]


def test_lazy_open_has_one_chunk_per_file(shared_data):
    event = EVENTS["mch-20160711"]
    pattern = str(shared_data / "radar" / event.pattern)
    lazy = open_radar(pattern, chunks={})
    assert lazy.precipitation.chunks[0] == (1,) * event.frames
    eager = open_radar(_files(shared_data, event)[10:13])
    np.testing.assert_array_equal(
        lazy.precipitation.sel(time=eager.time).values, eager.precipitation.values
    )
    rechunked = open_radar(pattern, chunks={"time": 8})
    assert rechunked.precipitation.chunks[0] == (8,) * 5


# --- independent decode: pysteps' importers -------------------------------------------


class _NoProjection:
    """Stands in for pyproj.Proj (not installed): pysteps then decodes values, not geodata."""

    def __init__(self, definition: str) -> None:
        self.definition = definition

    def __call__(self, lon, lat):
        return np.nan, np.nan


@pytest.fixture
def pysteps_importers(monkeypatch):
    importers = pytest.importorskip("pysteps.io.importers")
    if not importers.PYPROJ_IMPORTED:
        monkeypatch.setattr(
            importers, "pyproj", types.SimpleNamespace(Proj=_NoProjection), raising=False
        )
        monkeypatch.setattr(importers, "PYPROJ_IMPORTED", True)
    return importers


def _pysteps_values(importers, fmt: str, path: Path) -> np.ndarray:
    """pysteps' decode of one file, in xnowcast's units (mm h-1 or dBZ, NaN missing)."""
    if fmt == "odim_hdf5":
        values, _, meta = importers.import_odim_hdf5(str(path), qty="RATE")
    elif fmt == "knmi_hdf5":
        values, _, meta = importers.import_knmi_hdf5(str(path), qty="ACRR", accutime=5.0)
    elif fmt == "fmi_pgm":
        values, _, meta = importers.import_fmi_pgm(str(path), gzipped=True)
    else:
        values, _, meta = importers.import_mch_gif(str(path), "AQC", "mm", 5.0)
    if meta["unit"] == "mm":  # 5-minute accumulations -> mean rate
        values = values * 60.0 / meta["accutime"]
    return values


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_values_agree_with_pysteps(shared_data, pysteps_importers, name):
    event = EVENTS[name]
    files = _files(shared_data, event)
    picks = [files[0], files[len(files) // 2], files[-1]]
    ours = open_radar(picks)[event.variable].values
    for index, path in enumerate(picks):
        ref = _pysteps_values(pysteps_importers, event.format, path)
        assert ref.shape == ours[index].shape
        np.testing.assert_array_equal(np.isnan(ours[index]), np.isnan(ref))
        np.testing.assert_allclose(ours[index], ref, rtol=1e-6, atol=1e-5, equal_nan=True)
        assert np.nanmax(ref) > 0  # the check compares real values, not empty fields


def test_grid_edges_agree_with_pysteps_metadata(shared_data, pysteps_importers):
    """KNMI and MeteoSwiss grids need no projection in pysteps: compare the edges."""
    for name, scale in (("knmi", 1000.0), ("mch-20150515", 1.0)):
        event = EVENTS[name]
        path = _files(shared_data, event)[0]
        if event.format == "knmi_hdf5":
            _, _, meta = pysteps_importers.import_knmi_hdf5(str(path))
        else:
            _, _, meta = pysteps_importers.import_mch_gif(str(path), "AQC", "mm", 5.0)
        ds = open_radar(path)
        dx, dy = event.spacing
        np.testing.assert_allclose(ds.x.values[0] - dx / 2, meta["x1"] * scale, atol=1e-6)
        np.testing.assert_allclose(ds.x.values[-1] + dx / 2, meta["x2"] * scale, atol=1e-6)
        np.testing.assert_allclose(ds.y.values[-1] - dy / 2, meta["y1"] * scale, atol=1e-6)
        np.testing.assert_allclose(ds.y.values[0] + dy / 2, meta["y2"] * scale, atol=1e-6)


# --- grids against the files' own geographic corners ----------------------------------


def _pyproj_xy(ds: xr.Dataset, lon, lat):
    """Project lon/lat with pyproj directly, from the WKT the Dataset's ``crs`` carries."""
    crs = pyproj.CRS.from_wkt(ds.crs.attrs["crs_wkt"])
    transformer = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    return transformer.transform(np.asarray(lon, float), np.asarray(lat, float))


def test_rmi_grid_matches_its_corner_latitudes_longitudes(shared_data):
    path = _files(shared_data, EVENTS["rmi"])[0]
    ds = open_radar(path)
    with h5py.File(path) as f:
        where = dict(f["where"].attrs)
    left, top = ds.x.values[0] - 500.0, ds.y.values[0] + 500.0
    right, bottom = ds.x.values[-1] + 500.0, ds.y.values[-1] - 500.0
    for corner, (ex, ey) in {
        "UL": (left, top),
        "UR": (right, top),
        "LL": (left, bottom),
        "LR": (right, bottom),
    }.items():
        x, y = _pyproj_xy(ds, where[f"{corner}_lon"], where[f"{corner}_lat"])
        assert abs(x - ex) < 1.0 and abs(y - ey) < 1.0, corner


def test_knmi_grid_matches_its_product_corners(shared_data):
    path = _files(shared_data, EVENTS["knmi"])[0]
    ds = open_radar(path)
    with h5py.File(path) as f:
        corners = f["geographic"].attrs["geo_product_corners"].reshape(4, 2)
    x, y = _pyproj_xy(ds, corners[:, 0], corners[:, 1])
    left, right = ds.x.values[0] - 500.0, ds.x.values[-1] + 500.0
    top, bottom = ds.y.values[0] + 500.0, ds.y.values[-1] - 500.0
    # corners are given as LL, UL, UR, LR to 0.001 degree (about 100 m)
    np.testing.assert_allclose(x, [left, left, right, right], atol=100.0)
    np.testing.assert_allclose(y, [bottom, top, top, bottom], atol=100.0)


def test_fmi_grid_matches_the_known_suomi1_false_origin(shared_data):
    """pysteps places FMI's bottom-left corner at x_0=380886.310, y_0=3395677.920 on R=6371288."""
    ds = open_radar(_files(shared_data, EVENTS["fmi"])[0])
    dx, dy = EVENTS["fmi"].spacing
    assert ds.crs.attrs["earth_radius"] == 6371288.0
    assert abs((ds.x.values[0] - dx / 2) - (-380886.310)) < 1.0
    assert abs((ds.y.values[-1] - dy / 2) - (-3395677.920)) < 1.0


def test_kilometre_proj4_definitions_become_metres():
    crs, proj4 = crs_from_proj4(
        "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378.137 +b=6356.752", "km"
    )
    assert "+a=6378137" in proj4 and "+b=6356752" in proj4 and "+units=m" in proj4
    assert crs.ellipsoid.semi_major_metre == 6378137.0
    assert crs.ellipsoid.semi_minor_metre == 6356752.0
    with pytest.raises(RadarFormatError, match="PROJ cannot read"):
        crs_from_proj4("+proj=nonsense +lon_0=0")


# --- format dispatch and errors ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_detect_format_from_content(shared_data, name):
    event = EVENTS[name]
    assert detect_format(_files(shared_data, event)[0]) == event.format


def test_unknown_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a radar file\n")
    with pytest.raises(RadarFormatError, match="not a radar file"):
        open_radar(path)


def test_empty_glob_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no radar files match"):
        open_radar(str(tmp_path / "*.h5"))
    with pytest.raises(FileNotFoundError):
        open_radar(tmp_path / "absent.h5")
    with pytest.raises(FileNotFoundError):
        open_radar([])


def test_wrong_or_mixed_formats(shared_data):
    rmi = _files(shared_data, EVENTS["rmi"])[0]
    knmi = _files(shared_data, EVENTS["knmi"])[0]
    with pytest.raises(RadarFormatError, match="not a knmi_hdf5 file"):
        open_radar(rmi, format="knmi")
    with pytest.raises(RadarFormatError, match="unknown radar format"):
        open_radar(rmi, format="radolan")
    with pytest.raises(RadarFormatError, match="different formats"):
        open_radar([rmi, knmi])
    with pytest.raises(TimeAxisError, match="the time stamp"):
        open_radar([rmi, rmi])
    assert open_radar(rmi, format="odim").sizes["time"] == 1


# --- coding rules on small synthetic files built from the format documentation ---------


def test_odim_gain_offset_nodata_undetect(shared_data, tmp_path):
    """An 8-bit ODIM DBZH/RATE file: value = offset + gain * raw, nodata -> NaN, undetect -> 0."""
    template = _files(shared_data, EVENTS["rmi"])[0]
    raw = np.arange(700 * 700, dtype=np.uint16).reshape(700, 700) % 256
    raw = raw.astype(np.uint8)
    path = tmp_path / "coded.h5"
    with h5py.File(template) as src, h5py.File(path, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for group in ("what", "where", "how"):
            src.copy(group, dst)
        src.copy("dataset1/where", dst.create_group("dataset1"), name="where")
        src.copy("dataset1/what", dst["dataset1"], name="what")
        data = dst.create_group("dataset1/data1")
        data.create_dataset("data", data=raw)
        what = data.create_group("what")
        what.attrs.update(
            {
                "quantity": np.bytes_(b"RATE"),
                "gain": 0.1,
                "offset": -1.0,
                "nodata": 255.0,
                "undetect": 0.0,
            }
        )
    values = open_radar(path).precipitation.values[0]
    expected = raw * 0.1 - 1.0
    expected[raw == 255] = np.nan
    expected[raw == 0] = 0.0
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)
    assert np.isnan(values[raw == 255]).all() and (values[raw == 0] == 0).all()


def test_fmi_header_gain_offset_are_used(shared_data, tmp_path):
    """A plain (not gzipped) PGM whose header gives its own coding."""
    source = _files(shared_data, EVENTS["fmi"])[0]
    content = gzip.decompress(source.read_bytes())
    marker = b"# param CorrectedReflectivity\n"
    coded = content.replace(marker, marker + b"# gain 0.25\n# offset -10\n# nodata 254\n", 1)
    path = tmp_path / "201609281445_custom.pgm"
    path.write_bytes(coded)
    ours = open_radar(path).reflectivity.values[0]
    width, height = 760, 1226
    raw = np.frombuffer(content[-width * height :], dtype=np.uint8).reshape(height, width)
    expected = raw * 0.25 - 10.0
    expected[raw == 254] = np.nan
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    assert not np.isnan(ours[raw == 255]).any()  # 255 is data under this header

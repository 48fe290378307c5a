"""The readers of BOM Rainfields 3, OPERA (2 km and CIRRUS), MRMS GRIB2 and FMI GeoTIFF.

Values are compared with an independent decoder on first/middle/last files
(pysteps' importers for ODIM and BOM; for MRMS and the GeoTIFF, where pysteps
needs pygrib or GDAL, the documented coding read with Pillow in
``reference_decoders``), NaN masks must be identical; grids and CRSs are
checked with pyproj directly.  The big grids are read once or cropped, to keep
the file fast.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import h5py
import numpy as np
import pyproj
import pytest
import xarray as xr
from reference_decoders import geotiff_pil, grib2_png_field, netcdf_h5py, odim_raw

from xnowcast.io import add_lat_lon, detect_format, open_radar

BOM = "radar/bom/prcp-c10/66/2020/10/31"
OPERA = "radar/OPERA/20180824"
CIRRUS = "radar/OPERA/20241126/CIRRUS"
MRMS = "mrms/2019/06/10"
GEOTIFF = "radar/fmi/geotiff/20160928"


def _files(shared_data: Path, folder: str) -> list[Path]:
    return sorted(p for p in (shared_data / folder).iterdir() if p.is_file())


def _picks(files: list[Path]) -> list[Path]:
    return [files[0], files[len(files) // 2], files[-1]]


def _name_times(files: list[Path], pattern: str, layout: str) -> np.ndarray:
    stamps = [re.search(pattern, p.name).group(1) for p in files]
    return np.array([np.datetime64(datetime.strptime(s, layout), "ns") for s in stamps])


def _crs(ds: xr.Dataset) -> pyproj.CRS:
    return pyproj.CRS.from_wkt(ds.crs.attrs["crs_wkt"])


@pytest.fixture(scope="module")
def importers():
    return pytest.importorskip("pysteps.io.importers")


def _assert_same(ours: np.ndarray, ref: np.ndarray, atol: float) -> None:
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=atol, equal_nan=True)


# --- BOM Rainfields 3 ------------------------------------------------------------------


def test_bom_values_times_and_grid(shared_data, importers):
    files = _files(shared_data, BOM)
    picks = _picks(files)
    ds = open_radar(picks)
    rate = ds.precipitation
    assert rate.attrs["units"] == "mm h-1" and rate.attrs["source_units"] == "kg m-2 per 10 min"
    assert rate.attrs["cell_methods"] == "time: mean (interval: 10 minutes)"
    for index, path in enumerate(picks):
        amount, _, meta = importers.import_bom_rf3(str(path))
        assert meta["unit"] == "mm" and meta["accutime"] == 10
        ref = np.ma.filled(amount.astype(float), np.nan) * 6.0  # 10-min amount -> mm h-1
        _assert_same(rate.values[index], ref, atol=1e-5)
        by_hand, _ = netcdf_h5py(path, "precipitation")
        _assert_same(rate.values[index], by_hand * 6.0, atol=1e-5)
        with h5py.File(path) as f:  # valid time = end of the accumulation
            end, start = int(f["valid_time"][()]), int(f["start_time"][()])
        assert ds.time.values[index] == np.datetime64(end, "s")
        assert end - start == 600
    assert np.nanmax(rate.values) > 10.0
    # file names carry the end of the accumulation too; cell centres as the file's x/y in km
    np.testing.assert_array_equal(
        ds.time.values, _name_times(picks, r"_(\d{8}_\d{6})\.", "%Y%m%d_%H%M%S")
    )
    with h5py.File(picks[0]) as f:
        np.testing.assert_allclose(ds.x.values, f["x"][...] * 1000.0)
        np.testing.assert_allclose(ds.y.values, f["y"][...] * 1000.0)
        mapping = {
            k: v.decode() if isinstance(v, bytes) else np.ravel(v).tolist()
            for k, v in f["proj"].attrs.items()
            if not k.startswith("_")
        }
    mapping = {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in mapping.items()}
    assert ds.crs.attrs["grid_mapping_name"] == "albers_conical_equal_area"
    assert _crs(ds).equals(pyproj.CRS.from_cf(mapping))
    assert np.diff(ds.x.values)[0] == 500.0 and np.diff(ds.y.values)[0] == -500.0


def test_lat_lon_on_demand(shared_data):
    """BOM's projection origin is the radar (Mt Stapylton); OPERA's corners are in its file."""
    bom = add_lat_lon(open_radar(_files(shared_data, BOM)[0]).isel(y=slice(250, 262)))
    row, col = np.unravel_index(np.argmin(np.hypot(*np.meshgrid(bom.x, bom.y))), bom.lat.shape)
    assert abs(float(bom.lat[row, col]) + 27.7178) < 0.005
    assert abs(float(bom.lon[row, col]) - 153.24) < 0.005
    assert bom.lat.attrs["units"] == "degrees_north"
    path = _files(shared_data, OPERA)[0]
    opera = add_lat_lon(open_radar(path).isel(y=[0, -1], x=[0, -1]))
    with h5py.File(path) as f:
        where = dict(f["where"].attrs)
    # cell centres lie within one 2 km cell (< 0.04 degree) of the outer corners
    np.testing.assert_allclose(opera.lat.values[0, 0], where["UL_lat"], atol=0.04)
    np.testing.assert_allclose(opera.lon.values[-1, -1], where["LR_lon"], atol=0.04)
    mrms = add_lat_lon(
        xr.Dataset(coords={"x": [-100.0, -99.99], "y": [40.0, 39.99]}).assign(
            crs=((), 0, {"crs_wkt": pyproj.CRS("EPSG:4326").to_wkt()})
        )
    )
    np.testing.assert_array_equal(mrms.lon.values[0], [-100.0, -99.99])


def test_bom_downscales_with_trilinear(shared_data):
    """10-minute, 500 m input: downscalers take any step (nowcasters refuse it)."""
    ds = open_radar(_files(shared_data, BOM)[70:73]).isel(y=slice(200, 264), x=slice(200, 264))
    fine = ds.precipitation.downscale(model="trilinear", factor=2, time_factor=2)
    assert fine.sizes["time"] == 5 and fine.sizes["y"] == 128 and fine.sizes["x"] == 128
    assert fine.attrs["units"] == "mm h-1"
    assert np.diff(fine.time.values)[0] == np.timedelta64(5, "m")
    np.testing.assert_allclose(np.diff(fine.x.values), 250.0)
    assert np.isfinite(fine.values).all() and float(fine.max()) > 0


# --- OPERA ODIM composites ------------------------------------------------------------


def _odim_edges_with_pyproj(ds: xr.Dataset, path: Path) -> None:
    """The four corners' longitude/latitude in the file, projected with pyproj, are our edges."""
    with h5py.File(path) as f:
        where = dict(f["where"].attrs)
    crs = _crs(ds)
    to_xy = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    dx = float(ds.x[1] - ds.x[0])
    left, right = ds.x.values[0] - dx / 2, ds.x.values[-1] + dx / 2
    top, bottom = ds.y.values[0] + dx / 2, ds.y.values[-1] - dx / 2
    for corner, expected in {
        "UL": (left, top),
        "UR": (right, top),
        "LL": (left, bottom),
        "LR": (right, bottom),
    }.items():
        x, y = to_xy.transform(where[f"{corner}_lon"], where[f"{corner}_lat"])
        np.testing.assert_allclose((x, y), expected, atol=1.0, err_msg=corner)


def test_opera_2km_rate_and_quality_agree_with_pysteps(shared_data, importers):
    files = _files(shared_data, OPERA)
    picks = _picks(files)
    ds = open_radar(picks)
    assert ds.precipitation.attrs["ancillary_variables"] == "quality"
    for index, path in enumerate(picks):
        rate, quality, _ = importers.import_odim_hdf5(str(path), qty="RATE")
        _assert_same(ds.precipitation.values[index], rate, atol=1e-4)
        _assert_same(ds.quality.values[index], quality, atol=1e-6)
    assert np.nanmax(ds.precipitation.values) > 20
    np.testing.assert_array_equal(
        ds.time.values, _name_times(picks, r"_(\d{14})\.hdf", "%Y%m%d%H%M%S")
    )
    assert ds.crs.attrs["grid_mapping_name"] == "lambert_azimuthal_equal_area"
    with h5py.File(picks[0]) as f:
        projdef = f["where"].attrs["projdef"].decode()
    assert _crs(ds).equals(pyproj.CRS(projdef))
    np.testing.assert_allclose(np.diff(ds.x.values), 2000.0)
    np.testing.assert_allclose(np.diff(ds.y.values), -2000.0)
    _odim_edges_with_pyproj(ds, picks[0])


def test_opera_cirrus_reflectivity_agrees_with_pysteps_and_the_odim_coding(shared_data, importers):
    files = _files(shared_data, CIRRUS)
    middle = files[len(files) // 2]
    ds = open_radar(middle)
    ours = ds.reflectivity.values[0]
    dbzh, quality, _ = importers.import_odim_hdf5(str(middle), qty="DBZH")
    raw, what = odim_raw(middle, "/dataset1/data1")
    undetect = raw == what["undetect"]
    # pysteps puts undetect at -30 dBZ; xnowcast at the scale floor, -32 dBZ (documented)
    _assert_same(ours, np.where(undetect, -32.0, dbzh), atol=1e-5)
    # the quality group has no undetect: pysteps' default (0) turns quality 0 into NaN; 0 is a
    # valid quality here and stays 0
    raw_quality, _ = odim_raw(middle, "/dataset1/data1/quality1")
    assert (raw_quality == 0).any()
    _assert_same(ds.quality.values[0], np.where(raw_quality == 0, 0.0, quality), atol=1e-6)
    assert ds.reflectivity.attrs["units"] == "dBZ" and np.nanmax(ours) > 50
    # first and last frames, cropped, against the ODIM coding applied by hand
    lazy = open_radar([files[0], files[-1]], chunks="auto")
    window = (slice(1900, 2300), slice(1500, 2100))
    for index, path in enumerate([files[0], files[-1]]):
        raw, what = odim_raw(path, "/dataset1/data1")
        raw = raw[window]
        ref = np.where(raw == what["nodata"], np.nan, raw * what["gain"] + what["offset"])
        ref = np.where(raw == what["undetect"], -32.0, ref)
        _assert_same(lazy.reflectivity[index][window].values, ref, atol=1e-5)
        assert np.isfinite(ref).any() and (ref > 0).any()
    np.testing.assert_allclose(np.diff(ds.x.values), 1000.0)
    assert ds.time.values[0] == np.datetime64("2024-11-26T01:30")
    _odim_edges_with_pyproj(ds, middle)


def test_cirrus_opens_lazily_and_reads_only_what_is_asked(shared_data):
    ds = open_radar(shared_data / CIRRUS, chunks="auto")
    var = ds.reflectivity
    assert var.shape == (13, 4400, 3800)
    assert var.chunks[0] == (1,) * 13 and var.data.chunksize == (1, 760, 880)  # HDF5 chunks
    assert (np.diff(ds.time.values) == np.timedelta64(5, "m")).all()
    crop = var.isel(y=slice(2000, 2064), x=slice(2000, 2064))
    # 13 files x 1 HDF5 chunk, not 13 x 130 MB
    assert len(crop.data.__dask_graph__().layers) <= 3 and crop.data.npartitions == 13
    values = crop.values
    eager = open_radar(_files(shared_data, CIRRUS)[6]).reflectivity[0, 2000:2064, 2000:2064]
    np.testing.assert_array_equal(values[6], eager.values)


def test_nowcast_on_a_lazy_cirrus_crop_stays_lazy_and_equals_eager(shared_data):
    lazy = open_radar(shared_data / CIRRUS, chunks="auto").reflectivity
    lazy = lazy.isel(time=slice(0, 4), y=slice(2130, 2194), x=slice(1650, 1714))
    eager = lazy.compute()
    assert np.isfinite(eager.values).all() and float(eager.max()) > 20
    forecast = lazy.nowcast.predict(model="extrapolation", steps=3)
    assert forecast.chunks is not None  # still dask
    reference = eager.nowcast.predict(model="extrapolation", steps=3)
    assert forecast.attrs["units"] == "dBZ"
    np.testing.assert_allclose(forecast.values, reference.values, atol=1e-4, equal_nan=True)


# --- MRMS GRIB2 ------------------------------------------------------------------------


def test_mrms_values_grid_and_time(shared_data):
    files = _files(shared_data, MRMS)
    middle = files[len(files) // 2]
    ds = open_radar(middle)
    ours = ds.precipitation.values[0]
    values, grid = grib2_png_field(middle)
    assert (values < 0).any()  # the codes exist and must be missing, not rain
    _assert_same(ours, np.where(values < 0, np.nan, values), atol=1e-4)
    assert ds.precipitation.attrs["units"] == "mm h-1" and np.nanmax(ours) > 50
    assert ds.time.values[0] == np.datetime64("2019-06-10T00:36")
    assert ds.crs.attrs["grid_mapping_name"] == "latitude_longitude"
    assert ds.x.attrs["units"] == "degrees_east" and ds.y.attrs["units"] == "degrees_north"
    np.testing.assert_allclose(ds.x.values[[0, -1]], [grid["lon1"] - 360, grid["lon2"] - 360])
    np.testing.assert_allclose(ds.y.values[[0, -1]], [grid["lat1"], grid["lat2"]])
    np.testing.assert_allclose(np.diff(ds.x.values), 0.01, atol=1e-9)
    assert _crs(ds).ellipsoid.semi_major_metre == 6378160.0  # GRIB2 shape of the earth 2
    lazy = open_radar(files[:3], chunks={})
    np.testing.assert_array_equal(
        lazy.time.values, _name_times(files[:3], r"_(\d{8}-\d{6})\.", "%Y%m%d-%H%M%S")
    )
    assert lazy.precipitation.data.npartitions == 3


# --- FMI GeoTIFF -----------------------------------------------------------------------


def test_geotiff_values_grid_and_time_against_pillow(shared_data):
    files = _files(shared_data, GEOTIFF)
    picks = _picks(files)
    ds = open_radar(picks, chunks="auto")
    assert ds.reflectivity.data.chunksize == (1, 1024, 1024)  # 4 x 4 TIFF tiles
    window = (slice(3000, 4100), slice(1500, 2700))  # first/last: a window read tile by tile
    for index, path in enumerate(picks):
        dn, tie, scale = geotiff_pil(path)
        ref = np.where(dn == 255, np.nan, (dn - 64.0) / 2.0)  # FMI: dBZ = DN/2 - 32
        whole = index == 1
        ours = ds.reflectivity[index] if whole else ds.reflectivity[index][window]
        _assert_same(ours.values, ref if whole else ref[window], atol=1e-6)
        assert np.nanmax(ref if whole else ref[window]) > 30
    left, top = tie[3], tie[4]
    np.testing.assert_allclose(ds.x.values[0] - scale[0] / 2, left, atol=1e-6)
    np.testing.assert_allclose(ds.y.values[0] + scale[1] / 2, top, atol=1e-6)
    np.testing.assert_allclose(np.diff(ds.x.values), scale[0])
    assert _crs(ds).equals(pyproj.CRS.from_epsg(3067))
    np.testing.assert_array_equal(ds.time.values, _name_times(picks, r"^(\d{12})_", "%Y%m%d%H%M"))
    # same event as the PGM files: same time stamps, a finer grid of the same area
    pgm = open_radar(_files(shared_data, "radar/fmi/pgm/20160928")[0])
    assert pgm.time.values[0] == ds.time.values[0]


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        (BOM, "bom_netcdf"),
        (OPERA, "odim_hdf5"),
        (CIRRUS, "odim_hdf5"),
        (MRMS, "mrms_grib2"),
        (GEOTIFF, "fmi_geotiff"),
    ],
)
def test_detect_new_formats(shared_data, folder, name):
    assert detect_format(_files(shared_data, folder)[0]) == name

"""Readers on damaged and foreign files, and the reader protocol for third-party formats.

Corrupt or truncated files raise a RadarFormatError (a ValueError) naming the
file, eagerly or when lazy data are computed; files that are not radar files
but match a pattern are skipped with a warning; a reader registered through
the protocol (or an entry point) is used by ``open_radar``.
"""

from __future__ import annotations

import gzip
import re
import shutil
import sys
import types
import warnings
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np
import pytest

from xnowcast.errors import RadarFormatError, XnowcastError
from xnowcast.io import FrameInfo, Grid, open_radar, protocol, register_reader
from xnowcast.io._crs import cf_attributes, to_crs

RMI = "radar/rmi/radqpe/20210704"
CIRRUS = "radar/OPERA/20241126/CIRRUS"


def _first(shared_data: Path, folder: str, count: int = 1) -> list[Path]:
    return sorted((shared_data / folder).iterdir())[:count]


def _truncated(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


# --- damaged files ---------------------------------------------------------------------


def test_truncated_hdf5_is_named_and_not_called_foreign(shared_data, tmp_path):
    path = _truncated(_first(shared_data, RMI)[0], tmp_path / "cut.hdf", 0.3)
    with pytest.raises(RadarFormatError, match="corrupt or truncated") as info:
        open_radar(path)
    assert str(path) in str(info.value)
    assert "not a radar file" not in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, XnowcastError)


def test_corrupt_data_fails_when_read_naming_the_file(shared_data, tmp_path):
    """Metadata intact, compressed chunks overwritten: the error comes with the values."""
    files = _first(shared_data, CIRRUS, 2)
    good = tmp_path / files[0].name
    shutil.copy(files[0], good)
    cut = tmp_path / files[1].name
    content = bytearray(files[1].read_bytes())
    middle = len(content) // 2
    content[middle : middle + 400_000] = bytes(400_000)  # zeros over many gzip chunks
    cut.write_bytes(bytes(content))
    lazy = open_radar([good, cut], chunks={})  # headers read fine
    with pytest.raises(RadarFormatError, match="corrupt or truncated") as info:
        _ = lazy.reflectivity.isel(time=1).values
    assert cut.name in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(RadarFormatError, match=re.escape(cut.name)):
        open_radar([good, cut])


def test_corrupt_gzip_pgm_is_named(shared_data, tmp_path):
    source = sorted((shared_data / "radar/fmi/pgm/20160928").iterdir())[0]
    path = _truncated(source, tmp_path / source.name, 0.5)
    with pytest.raises(RadarFormatError, match="corrupt or truncated") as info:
        open_radar(path)
    assert source.name in str(info.value)


def test_non_radar_files_in_a_folder_are_skipped_with_a_warning(shared_data, tmp_path):
    for path in _first(shared_data, RMI, 3):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "README.txt").write_text("radar files of 2021-07-04\n")
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\).*README\.txt"):
        ds = open_radar(tmp_path)
    assert ds.sizes["time"] == 3
    with pytest.warns(UserWarning, match="README.txt"):
        assert open_radar(str(tmp_path / "*")).sizes["time"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_radar(str(tmp_path / "*.hdf")).sizes["time"] == 3
    # a file named explicitly is read or refused, never skipped
    with pytest.raises(RadarFormatError, match="not a radar file"):
        open_radar([tmp_path / "README.txt", *sorted(tmp_path.glob("*.hdf"))])
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "README.txt").write_text("nothing here\n")
    with pytest.raises(RadarFormatError, match="none of the 1 files"):
        open_radar(only_text)


def test_a_damaged_radar_file_in_a_folder_is_not_skipped(shared_data, tmp_path):
    for path in _first(shared_data, RMI, 2):
        shutil.copy(path, tmp_path / path.name)
    _truncated(_first(shared_data, RMI, 3)[2], tmp_path / "zz_cut.hdf", 0.2)
    with pytest.raises(RadarFormatError, match=r"zz_cut\.hdf"):
        open_radar(tmp_path)


# --- ODIM coding rules on synthetic files ----------------------------------------------


def _odim_like(template: Path, path: Path, quantity: str, raw: np.ndarray, what: dict) -> Path:
    with h5py.File(template) as src, h5py.File(path, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for group in ("what", "where", "how"):
            src.copy(group, dst)
        dst.create_group("dataset1")
        src.copy("dataset1/where", dst["dataset1"], name="where")
        src.copy("dataset1/what", dst["dataset1"], name="what")
        dst["dataset1/what"].attrs.update(what)
        data = dst.create_group("dataset1/data1")
        data.create_dataset("data", data=raw, chunks=(100, 100))
        data.create_group("what").attrs.update({"quantity": np.bytes_(quantity.encode())})
        quality = data.create_group("quality1")
        quality.create_dataset("data", data=(raw % 11) / 10.0)
        quality.create_group("what").attrs.update({"gain": 1.0, "offset": 0.0})
    return path


def test_odim_acrr_becomes_a_rate_with_its_interval(shared_data, tmp_path):
    template = _first(shared_data, RMI)[0]
    raw = (np.arange(700 * 700) % 200).reshape(700, 700).astype(np.uint8)
    what = {
        "gain": 0.1,
        "offset": 0.0,
        "nodata": 199.0,
        "undetect": 0.0,
        "startdate": np.bytes_(b"20210704"),
        "starttime": np.bytes_(b"145000"),
        "enddate": np.bytes_(b"20210704"),
        "endtime": np.bytes_(b"155000"),
    }
    path = _odim_like(template, tmp_path / "acrr.h5", "ACRR", raw, what)
    ds = open_radar(path, chunks={"y": 300, "x": 250})
    assert ds.precipitation.data.chunksize == (1, 300, 250)
    rate = ds.precipitation.values[0]
    expected = np.where(raw == 199, np.nan, raw * 0.1)  # mm per hour over a 60-minute ACRR
    np.testing.assert_allclose(rate, expected, atol=1e-5)
    assert ds.precipitation.attrs["cell_methods"] == "time: mean (interval: 60 minutes)"
    np.testing.assert_allclose(ds.quality.values[0], (raw % 11) / 10.0, atol=1e-6)
    assert ds.quality.attrs["units"] == "1"


def test_odim_dbzh_undetect_is_the_scale_floor(shared_data, tmp_path):
    template = _first(shared_data, RMI)[0]
    raw = (np.arange(700 * 700) % 256).reshape(700, 700).astype(np.uint8)
    what = {"gain": 0.5, "offset": -32.0, "nodata": 255.0, "undetect": 0.0}
    path = _odim_like(template, tmp_path / "dbzh.h5", "DBZH", raw, what)
    dbz = open_radar(path).reflectivity.values[0]
    assert (dbz[raw == 0] == -32.0).all() and np.isnan(dbz[raw == 255]).all()
    np.testing.assert_allclose(dbz[raw == 100], 18.0)


# --- the reader protocol ---------------------------------------------------------------


def _ascii_reader() -> types.ModuleType:
    """A toy format: a text header line 'XNOW <yyyymmddhhmm> <ny> <nx>' and rows of numbers."""
    module = types.ModuleType("ascii_radar")
    module.FORMAT = "ascii_radar"

    def sniff(path, head):
        return head.startswith(b"XNOW ")

    def read_header(path):
        _, stamp, ny, nx = Path(path).read_text().splitlines()[0].split()
        crs = to_crs("EPSG:3035")
        grid = Grid.from_upper_left_corner(
            nx=int(nx), ny=int(ny), left=0.0, top=0.0, dx=1000.0, dy=1000.0, crs=cf_attributes(crs)
        )
        time = np.datetime64(f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:]}")
        return FrameInfo(str(path), module.FORMAT, time, grid, "precipitation")

    def read_data(info):
        return np.loadtxt(info.path, skiprows=1, ndmin=2).astype(np.float32)

    module.sniff, module.read_header, module.read_data = sniff, read_header, read_data
    return module


def _write_ascii(folder: Path) -> list[Path]:
    paths = []
    for minute in (0, 5, 10):
        path = folder / f"frame_{minute:02d}.txt"
        values = np.full((3, 4), float(minute))
        values[0, 0] = np.nan
        lines = [f"XNOW 2024010100{minute:02d} 3 4"] + [" ".join(map(str, r)) for r in values]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(protocol, "FORMATS", dict(protocol.FORMATS))
    monkeypatch.setattr(protocol, "ALIASES", dict(protocol.ALIASES))
    import xnowcast.io._open as opener

    monkeypatch.setattr(opener, "FORMATS", protocol.FORMATS)
    monkeypatch.setattr(opener, "ALIASES", protocol.ALIASES)
    monkeypatch.setattr(protocol, "_loaded_entry_points", False)


def test_a_registered_reader_opens_eagerly_and_lazily(tmp_path, clean_registry):
    paths = _write_ascii(tmp_path)
    with pytest.raises(RadarFormatError, match="not a radar file"):
        open_radar(paths[0])
    register_reader(_ascii_reader(), aliases=("ascii",))
    ds = open_radar(str(tmp_path / "*.txt"))
    assert ds.precipitation.shape == (3, 3, 4)
    assert np.isnan(ds.precipitation.values[:, 0, 0]).all()
    assert ds.precipitation.values[2, 1, 1] == 10.0
    assert ds.crs.attrs["grid_mapping_name"] == "lambert_azimuthal_equal_area"
    lazy = open_radar(paths, format="ascii", chunks={"y": 2})
    assert lazy.precipitation.chunks == ((1, 1, 1), (2, 1), (4,))
    np.testing.assert_array_equal(lazy.precipitation.values, ds.precipitation.values)
    with pytest.raises(RadarFormatError, match="lacks sniff, read_header"):
        register_reader(types.SimpleNamespace(FORMAT="bad", read_data=None))
    with pytest.raises(RadarFormatError, match="already registered"):
        register_reader(_ascii_reader())


def test_readers_plug_in_through_entry_points(tmp_path, clean_registry, monkeypatch):
    paths = _write_ascii(tmp_path)
    module = _ascii_reader()
    monkeypatch.setitem(sys.modules, "ascii_radar_plugin", module)
    good = metadata.EntryPoint("ascii", "ascii_radar_plugin", protocol.ENTRY_POINT_GROUP)
    broken = metadata.EntryPoint("broken", "no_such_module_xyz", protocol.ENTRY_POINT_GROUP)

    def entry_points(group=None, **kwargs):
        return [good, broken] if group == protocol.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(protocol.metadata, "entry_points", entry_points)
    with pytest.warns(RuntimeWarning, match="'broken'.*skipped"):
        ds = open_radar(paths)
    assert ds.sizes["time"] == 3 and protocol.FORMATS["ascii_radar"] is module


def test_gzip_content_is_sniffed_not_the_name(shared_data, tmp_path):
    """A gzipped PGM under another name still opens (formats come from content)."""
    source = sorted((shared_data / "radar/fmi/pgm/20160928").iterdir())[0]
    path = tmp_path / "frame.bin"
    path.write_bytes(gzip.compress(gzip.decompress(source.read_bytes())))
    assert open_radar(path).sizes["time"] == 1

"""Datasets: the real pooch download-verify-cache path against a loopback HTTP server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import xnowcast.datasets as xd
from xnowcast.errors import DatasetError
from xnowcast.io import open_radar

EVENT = "rmi-20210704"


class _Server:
    """A loopback ``http.server`` in a thread that counts the files it serves."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@contextlib.contextmanager
def _serving(directory: Path) -> Iterator[_Server]:
    server = _Server(directory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mirror(shared_data, tmp_path, monkeypatch) -> Iterator[_Server]:
    """``shared_data`` served on 127.0.0.1 (random port); env points xnowcast at it."""
    with _serving(shared_data) as server:
        monkeypatch.setenv("XNOWCAST_DATA_URL", server.url)
        monkeypatch.setenv("XNOWCAST_CACHE_DIR", str(tmp_path / "cache"))
        yield server


def _dead_url() -> str:
    """A loopback URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.mark.network
def test_open_dataset_downloads_verifies_caches_and_works_offline(mirror, shared_data, tmp_path):
    files = xd.registry_files(EVENT)
    ds = xd.open_dataset(EVENT, chunks={})
    assert sorted(p.lstrip("/") for p in mirror.requests) == files
    cached = sorted(p.relative_to(tmp_path / "cache").as_posix() for p in xd.fetch(EVENT))
    assert cached == files
    assert ds.sizes == {"time": 39, "y": 700, "x": 700}
    assert ds.attrs["xnowcast_dataset"] == EVENT
    assert "no commercial use" in ds.attrs["license"]
    direct = open_radar(sorted((shared_data / "radar/rmi/radqpe/20210704").iterdir())[20])
    np.testing.assert_array_equal(
        ds.precipitation.sel(time=direct.time).values, direct.precipitation.values
    )

    mirror.stop()
    served = len(mirror.requests)
    again = xd.open_dataset(EVENT, chunks={})
    assert len(mirror.requests) == served  # nothing was asked of the (stopped) server
    np.testing.assert_array_equal(again.time.values, ds.time.values)
    assert float(again.precipitation.isel(time=-1).max()) == float(
        ds.precipitation.isel(time=-1).max()
    )


@pytest.mark.network
def test_new_formats_download_and_open_through_the_mirror(mirror, shared_data):
    """The GeoTIFF event (6 files) fetched, verified and opened lazily; a BOM day file by file."""
    ds = xd.open_dataset("fmi-geotiff-20160928", chunks="auto")
    assert sorted(p.lstrip("/") for p in mirror.requests) == xd.registry_files(
        "fmi-geotiff-20160928"
    )
    assert ds.reflectivity.chunks is not None and ds.sizes["time"] == 6
    assert ds.attrs["xnowcast_dataset"] == "fmi-geotiff-20160928"
    crop = ds.reflectivity.isel(time=2, y=slice(4000, 4100), x=slice(2000, 2100)).values
    direct = open_radar(shared_data / xd.registry_files("fmi-geotiff-20160928")[2])
    np.testing.assert_array_equal(
        crop, direct.reflectivity.isel(time=0, y=slice(4000, 4100), x=slice(2000, 2100)).values
    )
    bom = xd.registry_files("bom-20201031")
    assert len(bom) == 144
    (first,) = xd.fetch("bom-20201031", files=[bom[0]])
    assert open_radar(first).precipitation.attrs["source_units"] == "kg m-2 per 10 min"


@pytest.mark.network
def test_corrupted_download_raises_a_hash_error_and_is_not_kept(shared_data, tmp_path, monkeypatch):
    name = xd.registry_files(EVENT)[0]
    bad_root = tmp_path / "bad"
    (bad_root / name).parent.mkdir(parents=True)
    content = bytearray((shared_data / name).read_bytes())
    content[len(content) // 2] ^= 0xFF
    (bad_root / name).write_bytes(bytes(content))
    cache = tmp_path / "cache"
    monkeypatch.setenv("XNOWCAST_CACHE_DIR", str(cache))
    with _serving(bad_root) as server:
        monkeypatch.setenv("XNOWCAST_DATA_URL", server.url)
        with pytest.raises(DatasetError, match="sha256") as info:
            xd.fetch(EVENT, files=[name])
    assert isinstance(info.value, ValueError)
    assert not (cache / name).exists()


@pytest.mark.network
def test_corrupted_cache_is_not_used(shared_data, tmp_path, monkeypatch):
    name = xd.registry_files(EVENT)[-1]
    cache = tmp_path / "cache"
    monkeypatch.setenv("XNOWCAST_CACHE_DIR", str(cache))
    with _serving(shared_data) as server:
        monkeypatch.setenv("XNOWCAST_DATA_URL", server.url)
        (path,) = xd.fetch(EVENT, files=[name])
        path.write_bytes(b"tampered")
        (again,) = xd.fetch(EVENT, files=[name])  # hash mismatch -> fetched anew
        assert again.read_bytes() == (shared_data / name).read_bytes()
        assert len(server.requests) == 2
        again.write_bytes(b"tampered")
    monkeypatch.setenv("XNOWCAST_DATA_URL", _dead_url())
    with pytest.raises(DatasetError, match="could not fetch"):
        xd.fetch(EVENT, files=[name])


def test_sample_opens_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("XNOWCAST_DATA_URL", _dead_url())
    monkeypatch.setenv("XNOWCAST_CACHE_DIR", str(tmp_path / "cache"))
    ds = xd.open_dataset("sample")
    precip = ds.precipitation
    assert precip.dims == ("time", "y", "x")
    assert precip.shape == (24, 256, 256)
    assert precip.dtype == np.float32
    assert precip.attrs["units"] == "mm h-1"
    assert precip.attrs["standard_name"] == "rainfall_rate"
    assert precip.attrs["grid_mapping"] == "crs"
    assert ds.crs.attrs["grid_mapping_name"] == "lambert_conformal_conic"
    assert (np.diff(ds.time.values) == np.timedelta64(5, "m")).all()
    np.testing.assert_allclose(np.diff(ds.x.values), 1000.0)
    np.testing.assert_allclose(np.diff(ds.y.values), -1000.0)
    values = precip.values
    assert not np.isnan(values).any()
    assert values.min() == 0.0 and values.max() > 50.0
    np.testing.assert_allclose(values * 100, np.round(values * 100), atol=1e-3)  # 0.01 steps
    assert "no commercial use" in ds.attrs["license"]
    assert ds.attrs["source_dataset"] == EVENT
    assert not (tmp_path / "cache").exists()
    # the rain of the last frame lies well inside the window (4 inputs + 18 leads)
    last = values[-1]
    assert last[32:-32, 32:-32].sum() > 0.9 * last.sum() > 0


def test_sample_is_the_documented_crop_of_the_rmi_event(shared_data):
    sample = xd.open_dataset("sample")
    crop = open_radar(sorted((shared_data / "radar/rmi/radqpe/20210704").iterdir())[:24])
    crop = crop.isel(y=slice(344, 600), x=slice(148, 404))
    np.testing.assert_array_equal(sample.time.values, crop.time.values)
    np.testing.assert_array_equal(sample.x.values, crop.x.values)
    np.testing.assert_array_equal(sample.y.values, crop.y.values)
    np.testing.assert_allclose(sample.precipitation.values, crop.precipitation.values, atol=0.0051)
    assert "rows 344:600" in sample.attrs["crop"]


def test_sample_file_is_small():
    assert xd._sample_path().stat().st_size < 3e6


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(DatasetError, match="valid names: sample, mch-20150515") as info:
        xd.open_dataset("rmi-2099")
    for name in xd.EVENTS:
        assert name in str(info.value)


def test_list_datasets_describes_every_dataset():
    described = xd.list_datasets()
    assert [d["name"] for d in described] == [
        "sample",
        "mch-20150515",
        "mch-20160711",
        "fmi-20160928",
        "knmi-20100826",
        "rmi-20210704",
        "bom-20201031",
        "opera-20180824",
        "opera-cirrus-20241126",
        "mrms-20190610",
        "fmi-geotiff-20160928",
    ]
    keys = {"name", "source", "format", "grid", "step", "frames", "quantity", "licence"}
    steps = {"bom-20201031": "10 min", "opera-20180824": "15 min", "mrms-20190610": "2 min"}
    for entry in described:
        assert keys <= set(entry)
        assert entry["step"] == steps.get(entry["name"], "5 min")
    for name, info in xd.EVENTS.items():
        assert len(xd.registry_files(name)) == info.frames


def test_registry_matches_the_archive_checksums(shared_data):
    sums = {}
    for line in (shared_data / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        sums[path] = digest
    every = [path for name in xd.EVENTS for path in xd.registry_files(name)]
    assert len(every) == len(set(every)) == 474  # every file of the archive
    for path in every:
        assert xd._registry()[path] == f"sha256:{sums[path]}"
        assert (shared_data / path).is_file()


def test_upstream_url_and_cache_defaults(monkeypatch):
    import pooch

    monkeypatch.delenv("XNOWCAST_DATA_URL", raising=False)
    monkeypatch.delenv("XNOWCAST_CACHE_DIR", raising=False)
    assert xd._base_url() == (
        "https://github.com/pySTEPS/pysteps-data/raw/eaa59fb8f39205a3b1a0b44724ad8cd4a86d107e/"
    )
    assert xd.cache_dir() == Path(pooch.os_cache("xnowcast"))
    monkeypatch.setenv("XNOWCAST_DATA_URL", "http://mirror.example/data")
    assert xd._base_url() == "http://mirror.example/data/"
    with pytest.raises(DatasetError, match="packaged"):
        xd.registry_files("sample")
    with pytest.raises(DatasetError, match="not a file of"):
        xd.fetch(EVENT, files=["radar/KNMI/2010/08/RAD_NL25_RAP_5min_201008260000.h5"])


def test_import_touches_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access at import time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    module = importlib.reload(xd)
    assert len(module.EVENTS) == 10

"""CF-complete outputs: the IOOS compliance checker (CF 1.10) finds no high- or
medium-priority failure in the files of ``xnowcast predict / downscale / verify`` or in
a forecast written with ``to_netcdf``; the grid mapping, coordinate encodings, units and
the input's licence travel to every output, eager or lazy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

import xnowcast
from xnowcast import testing
from xnowcast.cli import main

pytest.importorskip("compliance_checker", reason="compliance-checker is in the dev extra")

RMI_LICENCE_WORDS = "no commercial use"


# The checker runs in a fresh interpreter, as ``cchecker.py`` would: its pyproj must not
# share a process with libraries loaded by other tests (pyproj and eccodes, which xarray's
# engine guessing imports when cfgrib is installed, corrupt each other's heap), and the
# network is cut there before anything is imported.
_CHECKER = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access is blocked: the checker must work offline")

socket.socket.connect = refuse
socket.create_connection = refuse

from compliance_checker.cf.cf_1_10 import CF1_10Check
from compliance_checker.suite import CheckSuite


class CFSuite(CheckSuite):
    checkers = {"cf:1.10": CF1_10Check}


suite = CFSuite()
report = {}
for path in sys.argv[1:]:
    results, errors = suite.run_all(suite.load_dataset(path), ["cf:1.10"], skip_checks=[])[
        "cf:1.10"
    ]
    failed = [f"{name}: {error}" for name, error in errors.items()]
    for result in results:
        value = result.value
        passed = value if isinstance(value, bool) else value[0] == value[1]
        if not passed and result.weight >= 2:  # BaseCheck.HIGH = 3, MEDIUM = 2
            failed.append(f"{result.name}: {result.msgs}")
    report[path] = failed
print(json.dumps(report))
"""


def cf_failures(*paths: Path) -> dict[str, list[str]]:
    """High- and medium-priority failures of the CF 1.10 check, by file name."""
    done = subprocess.run(
        [sys.executable, "-c", _CHECKER, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {Path(path).name: failed for path, failed in report.items()}


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 x 64 km, 8-frame crop of the bundled RMI sample, as a NetCDF file whose ``crs``
    is a data variable, as in most CF files."""
    sample = xnowcast.open_dataset("sample").reset_coords("crs")
    path = tmp_path_factory.mktemp("cf") / "radar.nc"
    sample.isel(time=slice(0, 8), y=slice(64, 128), x=slice(64, 128)).to_netcdf(path)
    return path


def test_cli_files_pass_the_cf_checker(small_sample: Path, tmp_path: Path) -> None:
    forecast, fine, scores = tmp_path / "fc.nc", tmp_path / "fine.nc", tmp_path / "scores.nc"
    coarse = tmp_path / "coarse.nc"
    radar = xr.open_dataset(small_sample)
    radar.coarsen(y=2, x=2).mean(keep_attrs=True).isel(time=slice(0, 8, 2)).to_netcdf(coarse)

    init = str(radar.time.values[4])
    assert main(["predict", str(small_sample), "--model", "persistence", "--steps", "3",
                 "--init-time", init, "-o", str(forecast)]) == 0  # fmt: skip
    assert main(["downscale", str(coarse), "--model", "trilinear", "-o", str(fine)]) == 0
    assert main(["verify", str(forecast), str(small_sample), "--metrics", "csi", "mae",
                 "--thresholds", "0.5", "-o", str(scores)]) == 0  # fmt: skip

    assert cf_failures(forecast, fine, scores) == {"fc.nc": [], "fine.nc": [], "scores.nc": []}
    for path in (forecast, fine, scores):
        written = xr.open_dataset(path)
        assert written.attrs["Conventions"] == "CF-1.10"
        assert RMI_LICENCE_WORDS in written.attrs["license"], path.name
        assert written.attrs["institution"] == radar.attrs["institution"]
        for key in ("title", "history", "source"):
            assert written.attrs[key].strip(), f"{path.name}: empty {key}"
    for path in (forecast, fine):
        written = xr.open_dataset(path)
        assert written["crs"].variable.identical(radar["crs"].variable), path.name
        assert written["precipitation"].attrs["grid_mapping"] == "crs"
        assert written.attrs["source"] == radar.attrs["source"]  # where the data came from
        assert "xnowcast" in written.attrs["history"].splitlines()[-1]  # what made the file


def test_dataset_forecasts_written_with_to_netcdf_pass(small_sample: Path, tmp_path: Path) -> None:
    """Eager and lazy.  By default xarray opens ``crs`` as a data variable; with
    ``decode_coords="all"`` as a coordinate, and ``grid_mapping`` moves to the encoding:
    both keep the grid mapping."""
    paths = []
    for name, decode_coords, chunks in [
        ("eager", True, None),
        ("lazy", True, {"time": 4}),
        ("decoded", "all", None),
    ]:
        radar = xr.open_dataset(small_sample, decode_coords=decode_coords)
        radar = radar.chunk(chunks) if chunks else radar
        assert ("crs" in radar.coords) == (decode_coords == "all")
        fc = radar.nowcast.predict(model="persistence", steps=2, progress=False)
        assert fc["crs"].variable.identical(radar["crs"].variable), name
        assert fc.attrs["grid_mapping"] == "crs"
        assert RMI_LICENCE_WORDS in fc.attrs["license"]
        paths.append(tmp_path / f"{name}.nc")
        xnowcast.to_cf_dataset(fc).to_netcdf(paths[-1])
        back = xr.open_dataset(paths[-1])
        assert "_FillValue" not in back["x"].encoding and "_FillValue" not in back["y"].encoding
        assert RMI_LICENCE_WORDS in back.attrs["license"]
    assert cf_failures(*paths) == {path.name: [] for path in paths}


def test_dataarray_outputs_keep_crs_member_units_and_no_coordinate_fill(tmp_path: Path) -> None:
    """A DataArray with a ``crs`` coordinate keeps it, even through DataArray.to_netcdf;
    ``member`` has units; no coordinate is written with a _FillValue; the input is unchanged."""
    storm = testing.moving_storm(frames=6, shape=(32, 32))
    before = storm.copy(deep=True)
    ensemble = storm.nowcast.predict(model="dgmr", steps=2, members=2, seed=0, progress=False)
    assert ensemble["member"].attrs["units"] == "1"
    fine = storm.chunk(time=3).downscale(factor=2, time_factor=2, model="trilinear", progress=False)
    for name, out in (("ensemble", ensemble), ("fine", fine)):
        path = tmp_path / f"{name}.nc"
        out.to_netcdf(path)
        with xr.open_dataset(path) as back:
            assert back["crs"].variable.identical(storm["crs"].variable), name
            assert back[out.name].attrs["grid_mapping"] == "crs"
            for coord in back.coords:
                assert "_FillValue" not in back[coord].encoding, f"{name}: {coord}"
        xnowcast.to_cf_dataset(out).to_netcdf(tmp_path / f"{name}-cf.nc")
    files = [tmp_path / "ensemble-cf.nc", tmp_path / "fine-cf.nc"]
    assert cf_failures(*files) == {path.name: [] for path in files}
    xr.testing.assert_identical(storm, before)
    assert all("_FillValue" not in storm[c].encoding for c in storm.coords)


def test_a_field_without_its_grid_mapping_is_written_without_the_dangling_reference(
    small_sample: Path, tmp_path: Path
) -> None:
    field = xr.open_dataset(small_sample)["precipitation"]  # crs stays in the Dataset
    fc = field.nowcast.predict(model="persistence", steps=2, progress=False)
    with pytest.warns(UserWarning, match=r"ds.set_coords\('crs'\)"):
        ds = xnowcast.to_cf_dataset(fc)
    assert "grid_mapping" not in ds["precipitation"].attrs
    assert fc.attrs["grid_mapping"] == "crs"  # the forecast itself is not modified
    path = tmp_path / "fc.nc"
    ds.to_netcdf(path)
    assert cf_failures(path) == {"fc.nc": []}


def test_scores_name_the_grid_mapping_only_when_they_are_maps() -> None:
    storm = testing.moving_storm(frames=8, shape=(16, 16))
    fc = storm.nowcast.predict(
        model="persistence", steps=2, init_time=storm.time.values[4], progress=False
    )
    pooled = xnowcast.verify(fc, storm, metrics=["mae"])
    assert "crs" not in pooled.coords  # reduced over space: no grid to map
    maps = xnowcast.verify(fc, storm, metrics=["mae"], dim=["lead_time"])
    assert maps["mae"].attrs["grid_mapping"] == "crs"
    assert maps["crs"].variable.identical(storm["crs"].variable)

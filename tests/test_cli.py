"""The ``xnowcast`` command on the bundled real sample, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xnowcast


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xnowcast.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def test_predict_writes_cf_forecast(tmp_path: Path) -> None:
    out = tmp_path / "fc.nc"
    result = run("predict", "sample", "--model", "extrapolation", "--steps", "6", "-o", str(out))
    assert result.returncode == 0, result.stderr
    fc = xr.open_dataset(out)["precipitation"]
    sample = xnowcast.open_dataset("sample")
    assert fc.dims == ("lead_time", "y", "x")
    assert fc.attrs["units"] == "mm h-1"
    assert fc.attrs["xnowcast_model"] == "extrapolation"
    assert fc.lead_time.values[-1] == np.timedelta64(30, "m")
    assert fc.init_time.values == sample.time.values[-1]
    np.testing.assert_array_equal(fc.x.values, sample.x.values)


def test_downscale_and_verify(tmp_path: Path) -> None:
    sample = xnowcast.open_dataset("sample")
    coarse = sample.coarsen(x=2, y=2).mean().isel(time=slice(0, 8, 2))
    coarse["precipitation"].attrs = sample["precipitation"].attrs
    coarse_path = tmp_path / "coarse.nc"
    coarse.to_netcdf(coarse_path)
    fine_path = tmp_path / "fine.nc"
    result = run(
        "downscale",
        str(coarse_path),
        "--model",
        "trilinear",
        "--factor",
        "2",
        "--time-factor",
        "2",
        "-o",
        str(fine_path),
    )
    assert result.returncode == 0, result.stderr
    fine = xr.open_dataset(fine_path)["precipitation"]
    assert fine.sizes == {"time": 7, "y": 256, "x": 256}
    np.testing.assert_allclose(fine.x.values, sample.x.values)

    fc_path = tmp_path / "fc.nc"
    assert (
        run(
            "predict",
            "sample",
            "--model",
            "persistence",
            "--steps",
            "3",
            "--init-time",
            str(sample.time.values[10]),
            "-o",
            str(fc_path),
        ).returncode
        == 0
    )
    scores_path = tmp_path / "scores.nc"
    result = run(
        "verify",
        str(fc_path),
        "sample",
        "--metrics",
        "csi",
        "mae",
        "--thresholds",
        "1",
        "-o",
        str(scores_path),
    )
    assert result.returncode == 0, result.stderr
    scores = xr.open_dataset(scores_path)
    assert scores["csi"].sizes["lead_time"] == 3
    assert 0 < float(scores["csi"].isel(lead_time=0).squeeze()) <= 1


def test_listing_commands() -> None:
    models = run("models", "list")
    assert models.returncode == 0 and "extrapolation" in models.stdout
    datasets = run("datasets", "list")
    assert datasets.returncode == 0 and "rmi-20210704" in datasets.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("predict", "no-such-file.nc", "-o", "x.nc"), "cannot open"),
        (("predict", "sample", "--model", "nope", "-o", "x.nc"), "Valid nowcast models"),
        (
            ("predict", "sample", "--model", "persistence", "--steps", "0", "-o", "x.nc"),
            "steps must",
        ),
        (("downscale", "sample", "--model", "trilinear", "--factor", "0", "-o", "x.nc"), "factor"),
    ],
)
def test_bad_arguments_one_line_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_help_has_examples() -> None:
    for command in ("predict", "downscale", "verify", "train", "datasets", "models", "demo"):
        result = run(command, "--help")
        assert result.returncode == 0
        assert "examples:" in result.stdout


def test_demo_main_job(tmp_path: Path) -> None:
    result = run("demo", "--out", str(tmp_path / "out"), "--members", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    forecast = xr.open_dataset(tmp_path / "out" / "forecast.nc")["precipitation"]
    downscaled = xr.open_dataset(tmp_path / "out" / "downscaled.nc")["precipitation"]
    assert forecast.sizes["lead_time"] == 18
    assert forecast.attrs["xnowcast_model"] == "dgmr"
    assert forecast.attrs["xnowcast_weights_sha256"]
    assert forecast.sizes.get("member") == 2
    from xnowcast.demo import pick_models

    downscaler = pick_models()[1]
    assert downscaled.attrs["xnowcast_model"] == downscaler
    assert downscaled.sizes == {"time": 23, "y": 256, "x": 256}
    assert (tmp_path / "out" / "demo.png").stat().st_size > 10_000
    # the score table names every model it ran
    for name in ("dgmr", "extrapolation", "persistence", downscaler, "trilinear"):
        assert name in result.stdout

"""The command line writes whole files or nothing: the output path is checked before any
model runs, and a failure or Ctrl-C while writing leaves the previous file intact and no
partial file behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xarray as xr

import xnowcast
from xnowcast import cli

PREDICT = ["predict", "sample", "--model", "persistence", "--steps", "2"]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any model run (the path checks must come first)."""
    ran: list[str] = []

    def record(*args: object, **kwargs: object) -> None:
        ran.append("model")
        raise AssertionError("a model ran before the output path was checked")

    monkeypatch.setattr(xnowcast, "nowcast", record)
    monkeypatch.setattr(xnowcast, "downscale", record)
    monkeypatch.setattr(xnowcast, "verify", record)
    return ran


@pytest.mark.parametrize(
    ("output", "needle"),
    [
        ("missing-folder/fc.nc", "does not exist"),
        (".", "is a folder"),
        ("", "empty"),
        ("a-file.txt/fc.nc", "is not a folder"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [PREDICT, ["downscale", "sample", "--model", "trilinear"], ["verify", "sample", "sample"]],
    ids=["predict", "downscale", "verify"],
)
def test_a_bad_output_path_is_one_line_exit_2_before_any_model(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_model: list[str],
    command: list[str],
    output: str,
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file.txt").write_text("not a folder")
    assert cli.main([*command, "-o", output]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err
    assert no_model == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file.txt"]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write in any folder"
)
def test_a_read_only_folder_is_refused_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: list[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    assert cli.main([*PREDICT, "-o", str(folder / "fc.nc")]) == 2
    assert "permission" in capsys.readouterr().err and no_model == []


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError], ids=["ctrl-c", "disk-full"])
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_a_failure_while_writing_keeps_the_previous_file_and_leaves_no_partial_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failure: type[BaseException],
    suffix: str,
) -> None:
    target = tmp_path / f"fc{suffix}"
    assert cli.main([*PREDICT, "-o", str(target)]) == 0
    previous = xr.open_dataset(target, engine="zarr" if suffix == ".zarr" else None).load()
    before = sorted(p.name for p in tmp_path.iterdir())

    def write_half_then_fail(self: xr.Dataset, path: object, *args: object, **kw: object) -> None:
        Path(str(path)).parent.mkdir(exist_ok=True)
        if suffix == ".zarr":
            (Path(str(path)) / "zarr.json").write_text("{")  # half a store
        else:
            Path(str(path)).write_bytes(b"CDF\x01 half a file")
        raise failure("interrupted while writing")

    monkeypatch.setattr(
        xr.Dataset, "to_zarr" if suffix == ".zarr" else "to_netcdf", write_half_then_fail
    )
    code = cli.main([*PREDICT, "--steps", "3", "-o", str(target)])
    assert code == (130 if failure is KeyboardInterrupt else 1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial file
    monkeypatch.undo()
    kept = xr.open_dataset(target, engine="zarr" if suffix == ".zarr" else None).load()
    xr.testing.assert_identical(kept, previous)  # the previous forecast survived
    assert kept.sizes["lead_time"] == 2


def test_a_successful_write_replaces_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "fc.nc"
    target.write_text("an old, unrelated file")
    assert cli.main([*PREDICT, "-o", str(target)]) == 0
    with xr.open_dataset(target) as fc:
        assert fc.sizes["lead_time"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["fc.nc"]


def test_ctrl_c_during_the_model_run_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "fc.nc"
    target.write_bytes(b"the previous forecast")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(xnowcast, "nowcast", interrupted)
    assert cli.main([*PREDICT, "-o", str(target)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["fc.nc"]
    assert target.read_bytes() == b"the previous forecast"


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_written_outputs_get_the_usual_permissions(tmp_path: Path, suffix: str) -> None:
    """The private temporary (0600) does not leak into the result: others may read it."""
    target = tmp_path / f"fc{suffix}"
    old = os.umask(0o022)
    try:
        assert cli.main([*PREDICT, "-o", str(target)]) == 0
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == (0o755 if suffix == ".zarr" else 0o644)

"""Training on PyTorch Lightning: ``xnowcast train`` / ``xnowcast.train`` on real radar in zarr.

The 2-process CPU DDP run (gloo) of a tiny ZSM, resumed to step 5, is the CI check of
data-parallel training; the other tests run in this process on one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning", reason="the train extra (lightning) is not installed")

import torch
import xarray as xr

import xnowcast
from xnowcast.errors import DataValueError, ModelError, TrainingError
from xnowcast.training.lightning.sources import open_sources, split_holdout
from xnowcast.weights import load_state_dict, read_metadata

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def events_zarr(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 real MeteoSwiss frames (5 min, 1 km), the rainiest 160 x 160 km, as a zarr store."""
    from xnowcast.io import open_radar

    files = sorted((shared_data / "radar/mch/20150515").glob("*"))[:24]
    da = open_radar(files)["precipitation"]
    total = np.nan_to_num(da.values).sum(0)
    _, y, x = max(
        (total[y : y + 160, x : x + 160].sum(), y, x)
        for y in range(0, total.shape[0] - 160, 32)
        for x in range(0, total.shape[1] - 160, 32)
    )
    path = tmp_path_factory.mktemp("lightning") / "events.zarr"
    ds = da.isel(y=slice(y, y + 160), x=slice(x, x + 160)).to_dataset(name="precipitation")
    ds.chunk({"time": 1}).to_zarr(path, mode="w", consolidated=False)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "xnowcast.cli", "train", *args, "--quiet"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


#: Two data-parallel CPU processes (gloo), as the issue's done-when runs them.
DDP = ("--devices", "2", "--accelerator", "cpu", "--strategy", "ddp")


def _ddp_three_steps(model: str, data: Path, run: Path) -> None:
    """``xnowcast train MODEL --config tiny`` on 2 CPU processes, 3 steps, into ``run``."""
    done = _cli(
        model, "--data", str(data), "--config", "tiny", *DDP, "--max-steps", "3", "--out", str(run)
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_cli_ddp_two_processes_resume_and_load(events_zarr: Path, tmp_path: Path) -> None:
    """The issue's done-when: 2-process CPU DDP, 3 steps, resumed to 5, weights load."""
    run = tmp_path / "D"
    common = list(DDP)
    _ddp_three_steps("zsm", events_zarr, run)
    weights = run / "zsm-tiny.safetensors"
    assert read_metadata(weights)["training"]["steps"] == 3
    second = _cli(
        "zsm", "--data", str(events_zarr), "--config", "tiny", *common,
        "--resume", str(run), "--max-steps", "5",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restored all states from the checkpoint" in second.stderr + second.stdout
    meta = read_metadata(weights)
    training = meta["training"]
    assert training["steps"] == 5
    assert training["world_size"] == 2
    assert training["replicas_in_sync"] is True  # DDP averaged the gradients of both ranks
    assert training["resumed_at"] == [3]
    assert training["model"] == "zsm" and training["config"] == "tiny"
    assert training["precision"] == "32" and training["seed"] == 0
    assert training["global_batch_size"] == 2 * training["batch_size_per_device"]
    held = training["heldout_scores"]
    assert held == meta["scores"] and np.isfinite(held["model"]["mse"])
    # two CSV logs: one per call
    assert len(list((run / "logs" / "csv").glob("version_*/metrics.csv"))) == 2

    fine = (
        xr.open_zarr(events_zarr, consolidated=False)["precipitation"].isel(time=slice(0, 5)).load()
    )
    coarse = fine.coarsen(y=2, x=2).mean()[::2]
    out = xnowcast.downscale(coarse, factor=2, time_factor=2, model="zsm", weights=str(weights))
    assert out.sizes["time"] == 5 and out.sizes["y"] == 160
    assert out.attrs["xnowcast_model"] == "zsm"
    assert np.isfinite(out.values).mean() > 0.9 and np.nanmin(out.values) >= 0
    assert out.attrs["xnowcast_weights"] == weights.name


def test_exact_resume_equals_an_uninterrupted_run(events_zarr: Path, tmp_path: Path) -> None:
    """3 steps + resume to 5 gives bit for bit the weights of 5 steps in one go."""
    kwargs = {"data": str(events_zarr), "config": "tiny", "accelerator": "cpu", "progress": False}
    straight = xnowcast.train("zsm", out=tmp_path / "a", max_steps=5, **kwargs)
    three = xnowcast.train("zsm", out=tmp_path / "b", max_steps=3, **kwargs)
    assert straight is not None and three is not None
    after_three, _ = load_state_dict(three)
    resumed = xnowcast.train(resume=tmp_path / "b", max_steps=5, progress=False)
    assert resumed is not None
    a, _ = load_state_dict(straight)
    b, _ = load_state_dict(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], after_three[k]) for k in a), "steps 4-5 changed nothing"


def test_dgmr_adversarial_training_and_predict(events_zarr: Path, tmp_path: Path) -> None:
    """DGMR's GAN steps under Lightning (bf16); the weights load with predict(..., weights=path)."""
    path = xnowcast.train(
        "dgmr",
        data=str(events_zarr),
        out=tmp_path / "g",
        config="tiny",
        max_steps=2,
        accelerator="cpu",
        precision="bf16-mixed",  # bfloat16 autocast (emulated where the CPU lacks it)
        progress=False,
    )
    assert path is not None
    meta = read_metadata(path)
    training = meta["training"]
    assert training["steps"] == 2 and training["family"] == "adversarial"
    assert training["precision"] == "bf16-mixed"
    assert meta["config"]["context_channels"] == 16
    held = training["heldout_scores"]
    assert {"model", "persistence", "extrapolation"} <= set(held)
    assert np.isfinite(held["model"]["crps"])
    # the held-out frames are the last ones of the stream: never in a training window
    split = training["data"]["split"]
    assert "held out" in split
    radar = (
        xr.open_zarr(events_zarr, consolidated=False)["precipitation"].isel(time=slice(0, 4)).load()
    )
    fc = xnowcast.nowcast(radar, model="dgmr", steps=3, weights=str(path), seed=0)
    assert fc.sizes["lead_time"] == 3
    assert np.isfinite(fc.values[..., np.isfinite(radar.values[-1])]).all()


def test_holdout_day_never_reaches_training() -> None:
    """Frames on 2021-07-04 (the RMI validation event) go to validation, wherever they are."""
    from xnowcast.testing import moving_storm

    before = moving_storm(frames=6, start="2021-07-03T23:40")  # crosses midnight
    streams = open_sources([before])
    train, val, how = split_holdout(streams)
    train_days = train[0].data["time"].values.astype("datetime64[D]")
    assert (train_days == np.datetime64("2021-07-03")).all()
    assert (val[0].data["time"].values.astype("datetime64[D]") == np.datetime64("2021-07-04")).all()
    assert "2021-07-04" in how
    with pytest.raises(DataValueError, match="held-out day"):
        split_holdout(open_sources("sample"))  # the packaged sample is cut from that event


def test_sources_netcdf_radar_glob_and_fsspec_zarr(shared_data: Path, tmp_path: Path) -> None:
    """NetCDF, radar file globs and zarr behind an fsspec URL open lazily as mm/h."""
    from xnowcast.testing import moving_storm

    storm = moving_storm(frames=4, start="2020-01-01", units="dBZ")
    storm.to_dataset(name="reflectivity").to_netcdf(tmp_path / "storm.nc")
    storm.to_dataset(name="reflectivity").to_zarr("memory://xnowcast-test/storm.zarr", mode="w")
    glob = str(shared_data / "radar/mch/20150515/*")
    nc, url, gifs = open_sources(
        [str(tmp_path / "storm.nc"), "memory://xnowcast-test/storm.zarr", glob]
    )
    for stream in (nc, url, gifs):
        assert stream.data.attrs["units"] == "mm/h"
        assert stream.data.chunks is not None  # still lazy
    np.testing.assert_allclose(nc.data.values, url.data.values)
    in_mm_h = moving_storm(frames=4, start="2020-01-01", units="mm/h")
    assert float(nc.data.max()) == pytest.approx(float(in_mm_h.max()), rel=1e-3)
    assert gifs.data.sizes["time"] == 40
    with pytest.raises(DataValueError, match="neither a registered dataset"):
        open_sources(str(tmp_path / "missing-*.nc"))


def test_windows_are_importance_sampled_and_keyed(events_zarr: Path) -> None:
    """A drawn window has the DGMR acceptance of its values; draws depend on the key only."""
    from xnowcast.training.data import acceptance_probability
    from xnowcast.training.lightning.windows import WindowSampler, key_rng

    streams = open_sources(str(events_zarr))
    sampler = WindowSampler(streams, frames=6, crop=64, stride=16)
    w = sampler.draw(key_rng(0, 7, 0, 0))
    seg = next(s for s in sampler.segments if s.stream == w.stream)
    q = seg.acceptance[w.t0 - seg.start, w.y0 // 16, w.x0 // 16]
    assert q == pytest.approx(acceptance_probability(w.values))
    expected = streams[0].data.isel(time=slice(w.t0, w.t0 + 6), y=slice(w.y0, w.y0 + 64))
    np.testing.assert_array_equal(w.values, expected.isel(x=slice(w.x0, w.x0 + 64)).values)
    again = sampler.draw(key_rng(0, 7, 0, 0))
    assert (again.t0, again.y0, again.x0) == (w.t0, w.y0, w.x0)
    others = {(v.t0, v.y0, v.x0) for v in (sampler.draw(key_rng(0, 7, r, 0)) for r in range(8))}
    assert len(others) > 1
    # wet windows are drawn far more often than dry ones
    draws = [sampler.draw(key_rng(1, k, 0, 0)) for k in range(64)]
    wet = np.mean([acceptance_probability(d.values) for d in draws])
    flat = np.concatenate([s.acceptance.ravel() for s in sampler.segments])
    assert wet > flat[flat > 0].mean()


def test_loader_workers_keep_the_step_order(events_zarr: Path) -> None:
    """With loader processes, batches still come in step order (exact resume needs it)."""
    from torch.utils.data import DataLoader

    from xnowcast.training.lightning.datamodule import DownscaleTask, RadarDataModule

    dm = RadarDataModule(str(events_zarr), DownscaleTask(4, 2, 2), crop=32, batch_size=1)
    ds = dm.dataset(start_step=5)
    loader = iter(DataLoader(ds, batch_size=None, num_workers=2))
    for step in range(5, 9):
        got, want = next(loader), ds.batch(step)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_bad_requests_are_clear_errors(events_zarr: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no trainable parameters"):
        xnowcast.train("extrapolation", data=str(events_zarr), out=tmp_path, max_steps=1)
    with pytest.raises(TrainingError, match="max-steps"):
        xnowcast.train("zsm", data=str(events_zarr), out=tmp_path)
    with pytest.raises(TrainingError, match="HH:MM:SS"):
        xnowcast.train("zsm", data=str(events_zarr), out=tmp_path, max_time="soon")
    with pytest.raises(TrainingError, match="not a training run folder"):
        xnowcast.train(resume=tmp_path, max_steps=2)
    from xnowcast.cli import main

    assert (
        main(["train", "downscale/unet", "--data", str(events_zarr), "--out", str(tmp_path)]) == 2
    )
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="gpu"):
            xnowcast.train(
                "downscale/unet",
                data=str(events_zarr),
                out=tmp_path,
                max_steps=1,
                accelerator="gpu",
            )


def test_import_xnowcast_imports_neither_torch_nor_lightning(fresh_python) -> None:
    code = "import sys, xnowcast; print('torch' in sys.modules, 'lightning' in sys.modules)"
    assert fresh_python(code).split() == ["False", "False"]


def test_run_json_records_the_options_and_max_time_stops(events_zarr: Path, tmp_path: Path) -> None:
    xnowcast.train(
        "downscale/unet", data=str(events_zarr), out=tmp_path, config="tiny", max_time="00:00:02",
        accelerator="cpu", progress=False, crop=64,
    )  # fmt: skip
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["options"]["model"] == "downscale/unet" and saved["recipe"]["crop"] == 64
    training = read_metadata(tmp_path / "unet-tiny.safetensors")["training"]
    assert training["stopped_by"] == "max_time" and training["steps"] >= 1
    assert saved["training"]["steps"] == training["steps"]
    # the coarse inputs trained on: 10 min, 2 km (xnowcast.downscale reads them)
    assert training["time_steps_minutes"] == [10.0]
    assert training["grid_spacing_m"] == [2000.0]


class _GainNowcaster(torch.nn.Module):
    """Persistence times a learned gain: the answer on a stationary storm is a gain of 1."""

    input_frames = 2
    spatial_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, frames: torch.Tensor, steps: int, generator: object = None) -> torch.Tensor:
        return self.gain * frames[:, -1:].expand(-1, steps, -1, -1, -1)


def test_supervised_nowcaster_learns_the_known_answer() -> None:
    """The supervised family trains a deterministic nowcaster (log1p masked MSE)."""
    import lightning as L

    from xnowcast.testing import moving_storm
    from xnowcast.training.lightning.datamodule import NowcastTask, RadarDataModule
    from xnowcast.training.lightning.modules import SupervisedModule

    storm = moving_storm(frames=8, shape=(32, 32), velocity=(0.0, 0.0), start="2020-05-01")
    dm = RadarDataModule(storm, NowcastTask(2, 3), crop=16, batch_size=4, val_fraction=0)
    model = _GainNowcaster()
    module = SupervisedModule(model, "nowcast", lr=0.05, lead_steps=3, decay_steps=10_000)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=40, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert abs(float(model.gain.detach()) - 1.0) < 0.1 < abs(0.5 - 1.0)


def test_atmodist_ddp_two_processes_resume_and_verify(events_zarr: Path, tmp_path: Path) -> None:
    """The self-supervised encoder's family: 2-process DDP, 3 steps, resumed to 5, verify loads it."""
    from xnowcast.metrics import atmodist_terms_array
    from xnowcast.testing import moving_storm

    run = tmp_path / "D"
    _ddp_three_steps("atmodist", events_zarr, run)
    weights = run / "atmodist-tiny.safetensors"
    after_three, _ = load_state_dict(weights)
    second = _cli("--resume", str(run), "--max-steps", "5", *DDP)
    assert second.returncode == 0, second.stderr[-3000:]
    state, meta = load_state_dict(weights)
    training = meta["training"]
    assert (training["steps"], training["world_size"], training["resumed_at"]) == (5, 2, [3])
    assert training["replicas_in_sync"] is True
    assert training["task"] == training["family"] == "representation"
    assert training["data"]["train"]["max_missing"] == 0.0  # fully observed windows only
    assert meta["format"] == "xnowcast-representation-1" and meta["config"]["lags"] == [1, 2, 4]
    held = meta["scores"]
    assert held == training["heldout_scores"] and held["pairs"] >= 8
    assert 0 <= held["lag_accuracy"]["accuracy"] <= 1 and held["lag_accuracy"]["chance"] == 1 / 3
    assert set(held["distance_by_lag_minutes"]) == {"5", "10", "20"}
    assert any(not torch.equal(state[k], after_three[k]) for k in state), "steps 4-5 did nothing"
    # the distance is calibrated on training windows (the largest lag's pairs)
    assert float(state["encoder.distance_scale"]) not in (0.0, 1.0)

    storm = moving_storm(frames=8, shape=(48, 48))
    fc = xnowcast.nowcast(storm.isel(time=slice(0, 4)), model="persistence", steps=4)
    trained = xnowcast.verify(fc, storm, metrics=["atmodist"], atmodist_weights=str(weights))
    shipped = xnowcast.verify(fc, storm, metrics=["atmodist"])
    assert trained.atmodist.attrs["encoder_weights"] == str(weights)
    assert np.isfinite(trained.atmodist.values).all() and (trained.atmodist.values > 0).all()
    assert not np.allclose(trained.atmodist.values, shipped.atmodist.values)
    field = storm.values[:1]
    assert atmodist_terms_array(field, field, weights=str(weights))[0, 0] == 0.0


def test_atmodist_learns_the_lag_of_a_moving_storm(tmp_path: Path) -> None:
    """Cells moving at a constant speed: the lag is the displacement, which the encoder learns."""
    from xnowcast.testing import moving_storm

    storm = moving_storm(frames=100, shape=(96, 96), cells=12, start="2020-05-01T12:00")
    weights = xnowcast.train(
        "atmodist", data=storm, config="tiny", max_steps=300, batch_size=8, lr=3e-3,
        out=tmp_path / "L", accelerator="cpu", progress=False,
    )  # fmt: skip
    assert weights is not None
    held = read_metadata(weights)["scores"]
    assert held["pairs"] >= 48  # the last 10 % of the frames: held out
    # chance is 1/3: 0.55 on >= 48 pairs is > 3 standard errors above it
    assert held["lag_accuracy"]["accuracy"] >= 0.55, held
    distance = held["distance_by_lag_frames"]
    assert distance["1"] < distance["2"] < distance["4"]

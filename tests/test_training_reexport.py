"""``xnowcast train MODEL --reexport W``: weights of the older trainers through the Lightning path.

Tiny models of each task and family are saved as an older trainer saves them
(config, training record, scores; no Lightning keys), re-exported on the packaged
real sample (a crop of the held-out RMI event), and checked: same tensors bit for
bit, Lightning metadata beside the untouched original record, and the same
forecasts through ``nowcast``/``downscale(..., weights=path)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lightning", reason="the train extra (lightning) is not installed")

import torch

import xnowcast
from xnowcast.cli import main
from xnowcast.errors import DataValueError, WeightsError
from xnowcast.training.lightning.models import build_trainable
from xnowcast.training.lightning.reexport import LIGHTNING_EXPORT, comparable_scores, reexport
from xnowcast.weights import file_sha256, load_state_dict, read_metadata, save_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: What an older trainer wrote (keys the Lightning record also uses, with their meanings).
OLD_RECORD = {
    "steps": 17,
    "events": ["mch-20150515"],
    "holdout": "rmi-20210704",
    "recipe": {"lr": 1e-3, "note": "an older loop"},
    "curve": [[5, 0.5], [17, 0.25]],
}


def _old_weights(
    tmp_path: Path, name: str, scores: dict[str, Any], seed: int = 3, **extra: Any
) -> tuple[Path, Any]:
    """A tiny model saved as an older trainer saves it (random weights, its own record)."""
    torch.manual_seed(seed)
    trainable = build_trainable(name, "tiny")
    model = trainable.model
    with torch.no_grad():  # no zero-initialised head: the output depends on every tensor
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / f"old-{trainable.name}-{seed}.safetensors"
    record = {**OLD_RECORD, "config": "tiny", **extra}
    meta = {"model": trainable.name, "config": dict(model.config), "training": record}
    save_weights(model.state_dict(), path, {**meta, "scores": scores})
    return path, trainable


def _check_export(old: Path, new: Path, task: str, family: str) -> dict[str, Any]:
    """Same tensors; Lightning schema; the original record and scores kept."""
    a, before = load_state_dict(old)
    b, after = load_state_dict(new)
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    assert set(after) == {"model", "config", "training", "scores", "format"}
    assert after["config"] == before["config"]
    training = after["training"]
    assert {k: training[k] for k in before["training"]} == before["training"]
    assert training["exported_by"] == LIGHTNING_EXPORT
    assert training["reexported_from_sha256"] == file_sha256(old)
    assert training["task"] == task and training["family"] == family
    held = training["heldout_scores"]
    assert after["scores"] == {**before["scores"], "lightning_heldout": held}
    assert "2021-07-04" in training["reexport"]["heldout_data"]["split"]
    return held


def test_downscaler_round_trip_same_tensors_and_output(tmp_path: Path) -> None:
    """A tiny downscaling U-Net: re-exported, it downscales exactly as before."""
    scores = {"model": {"mse": 0.9, "ssim": 0.5}, "trilinear": {"mse": 1.0, "ssim": 0.5}}
    old, _ = _old_weights(tmp_path, "downscale/unet", scores, time_steps_minutes=[10.0])
    old.chmod(0o644)
    done = reexport("downscale/unet", old, tmp_path / "new", data="sample")
    assert done.path == tmp_path / "new" / old.name and done.sha256 == file_sha256(done.path)
    assert done.path.stat().st_mode == old.stat().st_mode  # not safetensors' 0600
    held = _check_export(old, done.path, "downscale", "supervised")
    assert held["windows"] >= 1 and np.isfinite(held["model"]["mse"])
    assert held["model"]["mse"] != held["trilinear"]["mse"]  # the model is not the baseline
    # the runtime still reads the trained time steps (kept in the record)
    assert read_metadata(done.path)["training"]["time_steps_minutes"] == [10.0]
    rows = {r["metric"]: r for r in comparable_scores(done.stored_scores, held)}
    assert rows["MSE (mm/h)^2"]["stored"] == 0.9
    assert rows["MSE / trilinear MSE"]["lightning"] == pytest.approx(
        held["model"]["mse"] / held["trilinear"]["mse"]
    )

    fine = xnowcast.open_dataset("sample")["precipitation"].isel(time=slice(0, 5))
    coarse = fine.coarsen(y=2, x=2).mean()[::2]
    outs = [
        xnowcast.downscale(
            coarse, factor=2, time_factor=2, model="unet", weights=str(w), progress=False
        )
        for w in (old, done.path)
    ]
    assert outs[1].attrs["xnowcast_weights_sha256"] == done.sha256
    np.testing.assert_array_equal(outs[0].values, outs[1].values)


def test_nowcasters_round_trip_supervised_and_adversarial(tmp_path: Path) -> None:
    """A tiny ConvLSTM (supervised) and a tiny DGMR (adversarial) forecast as before."""
    radar = xnowcast.open_dataset("sample")["precipitation"].isel(time=slice(0, 4))
    stored = {"mse_model": 2.0, "mse_ratio": 0.9, "mse_persistence": 3.0, "crps": 0.3}
    for name, family, scores in (
        ("convlstm", "supervised", stored),
        ("dgmr", "adversarial", {"crps": 0.3, "crps_persistence": 0.4, "csi_mean_1": 0.2}),
    ):
        old, _ = _old_weights(tmp_path, name, scores)
        done = reexport(name, old, tmp_path / f"{name}.safetensors", data="sample")
        held = _check_export(old, done.path, "nowcast", family)
        assert {"model", "persistence", "extrapolation"} <= set(held)
        assert np.isfinite(held["model"]["mse_of_mean"])
        metrics = {r["metric"] for r in comparable_scores(done.stored_scores, held)}
        assert ("MSE / extrapolation MSE" in metrics) == (name == "convlstm")
        assert ("CRPS / persistence CRPS" in metrics) == (name == "dgmr")
        fcs = [
            xnowcast.nowcast(radar, model=name, steps=2, weights=str(w), seed=1, progress=False)
            for w in (old, done.path)
        ]
        assert fcs[1].attrs["xnowcast_weights"] == done.path.name
        np.testing.assert_array_equal(fcs[0].values, fcs[1].values)


def test_refused_cases_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Weights of another model or config, a second re-export, data without the held-out day."""
    old, _ = _old_weights(tmp_path, "downscale/unet", {})
    with pytest.raises(WeightsError, match="holds weights of 'unet', not 'zsm'"):
        reexport("zsm", old, tmp_path / "x.safetensors", data="sample")
    state, meta = load_state_dict(old)
    bigger = {**meta["config"], "nf": 2 * int(meta["config"]["nf"])}
    save_weights(state, tmp_path / "lies.safetensors", {**meta, "config": bigger})
    with pytest.raises(WeightsError, match="does not fit 'unet' built from its stored config"):
        reexport("downscale/unet", tmp_path / "lies.safetensors", tmp_path / "y", data="sample")
    done = reexport("downscale/unet", old, tmp_path / "z.safetensors", data="sample")
    other, _ = _old_weights(tmp_path, "downscale/unet", {}, seed=4)  # same target, same process
    again = reexport("downscale/unet", other, tmp_path / "z.safetensors", data="sample")
    assert again.heldout_scores != done.heldout_scores
    done = reexport("downscale/unet", old, tmp_path / "z.safetensors", data="sample")
    with pytest.raises(WeightsError, match="written by the Lightning path already"):
        reexport("downscale/unet", done.path, tmp_path / "again.safetensors", data="sample")
    # a writer that changed a tensor: caught, nothing written
    import xnowcast.training.lightning.reexport as module

    def nudged(trainable: Any, model: Any, path: Path, training: dict, scores: dict) -> str:
        state = {k: v + 1e-7 if v.is_floating_point() else v for k, v in model.state_dict().items()}
        return save_weights(state, path, {"training": training, "scores": scores})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "export_weights", nudged)
        with pytest.raises(WeightsError, match="differ from those of"):
            reexport("downscale/unet", old, tmp_path / "v.safetensors", data="sample")
    assert not (tmp_path / "v.safetensors").exists()
    from xnowcast.testing import moving_storm

    elsewhere = moving_storm(frames=10, start="2020-01-01")
    with pytest.raises(DataValueError, match="no frame on the held-out day"):
        reexport("downscale/unet", old, tmp_path / "w.safetensors", data=elsewhere)
    assert not list(tmp_path.glob(".*reexport*")) and not (tmp_path / "w.safetensors").exists()
    # the command refuses training options, and re-exports in place by default
    assert main(["train", "downscale/unet", "--reexport", str(old), "--max-steps", "3"]) != 0
    assert "--max-steps" in capsys.readouterr().err
    before = file_sha256(old)
    assert main(["train", "downscale/unet", "--reexport", str(old), "--data", "sample"]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {before[:12]}" in out and "MSE (mm/h)^2" not in out  # no stored MSE
    assert read_metadata(old)["training"]["reexported_from_sha256"] == before


def test_encoder_round_trip_same_tensors_and_distance(tmp_path: Path) -> None:
    """A tiny AtmoDist encoder as the old trainer saves it: same tensors, same verify scores."""
    stored = {
        "heldout_lag_accuracy": {"accuracy": 0.5, "within_one_class": 0.9, "chance": 1 / 3},
        "heldout_distance_by_lag_minutes": {"5": 0.3, "10": 0.6, "20": 1.1},
    }
    old, _ = _old_weights(tmp_path, "atmodist", stored)
    done = reexport("atmodist", old, tmp_path / "new", data="sample")
    held = _check_export(old, done.path, "representation", "representation")
    accuracy = held["lag_accuracy"]
    assert held["pairs"] >= 16 and accuracy["chance"] == pytest.approx(1 / 3)
    assert 0 <= accuracy["accuracy"] <= accuracy["within_one_class"] <= 1
    assert read_metadata(done.path)["format"] == "xnowcast-representation-1"
    assert done.path.name == old.name
    rows = {r["metric"]: r for r in comparable_scores(done.stored_scores, held)}
    assert rows["lag accuracy"]["stored"] == 0.5
    assert rows["lag accuracy"]["lightning"] == accuracy["accuracy"]
    assert rows["distance at 20 min"]["lightning"] == held["distance_by_lag_minutes"]["20"]

    radar = xnowcast.open_dataset("sample")["precipitation"]
    fc = xnowcast.nowcast(radar.isel(time=slice(0, 4)), model="extrapolation", steps=3)
    scores = [
        xnowcast.verify(fc, radar, metrics=["atmodist"], atmodist_weights=str(w)).atmodist
        for w in (old, done.path)
    ]
    assert np.isfinite(scores[0].values).all()
    np.testing.assert_array_equal(scores[0].values, scores[1].values)


def test_encoder_refuses_other_weights(tmp_path: Path) -> None:
    """Weights of another model, or of another config, are refused with the reason."""
    other, _ = _old_weights(tmp_path, "convlstm", {})
    with pytest.raises(WeightsError, match="holds weights of 'convlstm', not 'atmodist'"):
        reexport("atmodist", other, tmp_path / "x.safetensors", data="sample")
    radar = xnowcast.open_dataset("sample")["precipitation"]
    fc = xnowcast.nowcast(radar.isel(time=slice(0, 4)), model="persistence", steps=1)
    with pytest.raises(WeightsError, match="not of the AtmoDist encoder"):
        xnowcast.verify(fc, radar, metrics=["atmodist"], atmodist_weights=str(other))
    old, _ = _old_weights(tmp_path, "atmodist", {})
    state, meta = load_state_dict(old)
    wider = {**meta["config"], "width": 2 * int(meta["config"]["width"])}
    save_weights(state, tmp_path / "lies.safetensors", {**meta, "config": wider})
    with pytest.raises(WeightsError, match="does not fit 'atmodist' built from its stored config"):
        reexport("atmodist", tmp_path / "lies.safetensors", tmp_path / "y", data="sample")
    with pytest.raises(WeightsError, match="does not fit the AtmoDist encoder"):
        xnowcast.verify(
            fc, radar, metrics=["atmodist"], atmodist_weights=str(tmp_path / "lies.safetensors")
        )

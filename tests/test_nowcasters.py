"""The deterministic deep nowcasters ``convlstm`` and ``unet`` (issue 15).

Through the public API on a rainy, complete 96 x 96 km crop of the real RMI sample
packaged with xnowcast: an untrained model *is* the extrapolation nowcast
(Lagrangian frame) or persistence (Eulerian frame), the output has the input's
units and the nowcast coordinates, dask input gives the same numbers lazily, tiles
work, missing data stays missing; the per-lead advection moves fields as far as the
motion says; the trainer resumes bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xnowcast
from xnowcast.errors import ModelError
from xnowcast.registry import MODELS, ModelSpec, get_spec, list_models, register
from xnowcast.weights import save_weights

torch = pytest.importorskip("torch")

NETS = ["convlstm", "unet"]
TINY = {"config": "tiny", "weights": None}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread."""


@pytest.fixture(scope="module")
def radar() -> xr.DataArray:
    """8 frames of the real RMI sample, 96 x 96 km, no missing pixel, raining."""
    da = xnowcast.open_dataset("sample").precipitation
    crop = da.isel(time=slice(-8, None), y=slice(64, 160), x=slice(80, 176)).load()
    assert not bool(crop.isnull().any())
    assert float((crop.isel(time=-1) > 1).mean()) > 0.2
    return crop


def predict(da: xr.DataArray, model: str, **kwargs) -> xr.DataArray:
    return da.nowcast.predict(model=model, steps=4, progress=False, **{**TINY, **kwargs})


def test_unet_names_a_nowcaster_and_a_downscaler() -> None:
    assert {"convlstm", "unet"} <= set(list_models("nowcast"))
    assert "unet" in list_models("downscale")
    assert get_spec("unet", task="nowcast").builder != get_spec("unet", task="downscale").builder
    spec = get_spec("convlstm")
    assert MODELS["nowcast", "convlstm"] is spec and MODELS["nowcast", "unet"].name == "unet"
    with pytest.raises(ModelError, match="already registered"):
        register(ModelSpec(name="convlstm", task="nowcast", builder="m:f", summary="",
                           reference="", input_frames=4))  # fmt: skip


@pytest.mark.parametrize("model", NETS)
def test_untrained_model_is_the_extrapolation_nowcast(radar: xr.DataArray, model: str) -> None:
    fc = predict(radar, model)
    ext = radar.nowcast.predict(model="extrapolation", steps=4, progress=False)
    assert fc.dims == ext.dims == ("lead_time", "y", "x")
    for name in ("lead_time", "valid_time", "y", "x"):
        np.testing.assert_array_equal(fc[name].values, ext[name].values)
    assert fc.attrs["units"] == radar.attrs["units"]
    assert fc.attrs["xnowcast_model"] == model
    known = np.isfinite(ext.values)
    assert known.mean() > 0.8
    np.testing.assert_allclose(fc.values[known], ext.values[known], rtol=1e-5, atol=1e-4)
    # where extrapolation does not know (rain flowing in across the edge): no rain, not NaN
    assert np.isfinite(fc.values).all()
    assert float(np.abs(fc.values[~known]).max(initial=0.0)) == 0.0


@pytest.mark.parametrize("model", NETS)
def test_untrained_eulerian_variant_is_persistence(radar: xr.DataArray, model: str) -> None:
    config = {**get_spec(model, task="nowcast").build("tiny").config, "frame": "eulerian"}
    fc = predict(radar, model, config=config)
    last = radar.isel(time=-1).values
    np.testing.assert_allclose(fc.values, np.broadcast_to(last, fc.shape), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("model", NETS)
def test_dask_input_gives_the_same_forecasts_lazily(
    radar: xr.DataArray, model: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net = get_spec(model, task="nowcast").build("tiny")
    torch.nn.init.normal_(net.network.out.weight, std=0.05)  # a non-zero learned part
    path = tmp_path / f"{model}.safetensors"
    save_weights(net.state_dict(), path, {"config": net.config})
    inits = radar.time.values[4:6]
    eager = predict(radar, model, weights=path, config=None, init_time=inits)
    lazy = predict(radar.chunk({"time": 3}), model, weights=path, config=None, init_time=inits)
    assert lazy.chunks is not None and eager.dims == ("init_time", "lead_time", "y", "x")
    np.testing.assert_allclose(lazy.compute().values, eager.values, atol=1e-4)
    ext = radar.nowcast.predict(model="extrapolation", steps=4, init_time=inits, progress=False)
    assert float(np.nanmax(np.abs(eager.values - ext.values))) > 0.01  # the network acts
    with xnowcast.set_options(tile_size=48, tile_overlap=16):
        tiled = predict(radar, model, weights=path, config=None, init_time=inits)
    assert tiled.shape == eager.shape and np.isfinite(tiled.values).all()


def test_missing_pixels_stay_missing(radar: xr.DataArray) -> None:
    gappy = radar.copy(data=radar.values.copy())
    gappy[-1, :10, :10] = np.nan
    fc = predict(gappy, "convlstm")
    assert np.isnan(fc.values[:, :10, :10]).all()
    assert np.isfinite(fc.values[:, 20:, 20:]).all()


def test_bad_settings_are_named() -> None:
    from xnowcast.models.convlstm import build_convlstm
    from xnowcast.models.unet_nowcast import build_unet_nowcast

    with pytest.raises(ModelError, match="unknown settings \\['chanels'\\]"):
        build_convlstm({"chanels": 8})
    with pytest.raises(ModelError, match="frame must be one of"):
        build_unet_nowcast({"frame": "lagrange"})


def test_unet_holds_the_last_change_beyond_its_lead_frames() -> None:
    from xnowcast.models.unet_nowcast import build_unet_nowcast

    torch.manual_seed(0)
    net = build_unet_nowcast({"nf": 4, "depth": 2, "lead_frames": 3, "frame": "eulerian"})
    torch.nn.init.normal_(net.network.out.weight, std=0.1)
    x = torch.rand(1, 4, 1, 16, 16) * 4
    with torch.no_grad():
        y = net(x, 5)
    torch.testing.assert_close(y[:, 2:3].expand(-1, 3, -1, -1, -1), y[:, 2:])
    assert not torch.allclose(y[:, 0], y[:, 2])


def test_advect_per_lead_moves_each_field_its_own_number_of_steps() -> None:
    from xnowcast.models.advection import advect_per_lead

    fields = torch.zeros(1, 3, 1, 32, 32)
    for k in range(3):
        fields[0, k, 0, 8, 8 + k] = 1.0  # a different field per lead
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0] = 2.0  # 2 pixels per step towards larger x
    moved = advect_per_lead(fields, flow, trajectory_scale=1)
    for k in range(3):
        peak = divmod(int(moved[0, k, 0].argmax()), 32)
        assert peak == (8, 8 + k + 2 * (k + 1))
        assert float(moved[0, k, 0].sum()) == pytest.approx(1.0)


def test_training_resumes_bit_for_bit(tmp_path: Path) -> None:
    from xnowcast.testing import moving_storm
    from xnowcast.training.nowcasters import NowcastRun, build_samplers, export, train_nowcaster
    from xnowcast.weights import load_state_dict

    train = {"storm": moving_storm(frames=14, shape=(48, 48), velocity=(1.0, 1.5), seed=1)}
    val = {"held-out": moving_storm(frames=10, shape=(48, 48), velocity=(-1.0, 0.5), seed=2)}
    sampler, val_batch = build_samplers(train, val, lead_frames=4, crop=32, val_crop=32,
                                        val_crops=2)  # fmt: skip

    def run(steps: int) -> NowcastRun:
        return NowcastRun(model="unet", config="tiny", steps=steps, val_every=2,
                          checkpoint_every=2, lr=1e-2)  # fmt: skip

    straight = train_nowcaster(run(4), sampler, val_batch, tmp_path / "straight", progress=False)
    train_nowcaster(run(2), sampler, val_batch, tmp_path / "resumed", progress=False)
    resumed = train_nowcaster(run(4), sampler, val_batch, tmp_path / "resumed", progress=False)
    assert resumed["steps"] == straight["steps"] == 4
    assert resumed["history"] == straight["history"]
    a, meta = load_state_dict(tmp_path / "straight" / "best.safetensors")
    b, _ = load_state_dict(tmp_path / "resumed" / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert meta["training"]["model"] == "unet" and meta["scores"]["mse_baseline"] > 0
    losses = [h["loss"] for h in straight["history"] if "loss" in h]
    assert len(losses) == 4 and len(set(losses)) == 4  # it trained on different crops
    from xnowcast.training.nowcasters import main as train_main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "straight").rename(run_dir / "unet")  # the layout of the command line's runs
    exported = tmp_path / "cli.safetensors"
    assert train_main(["--models", "unet", "--out", str(run_dir), "--export", str(exported)]) == 0
    assert load_state_dict(exported)[1]["training"]["model"] == "unet"
    for last in (False, True):  # the kept and the last model, with the run's record
        path = tmp_path / f"unet-{last}.safetensors"
        export(run_dir / "unet", path, last=last)
        fc = xnowcast.open_dataset("sample").precipitation.isel(y=slice(0, 32), x=slice(0, 32))
        out = fc.nowcast.predict(model="unet", steps=2, weights=path, progress=False)
        assert out.attrs["xnowcast_weights"] == path.name
        training = load_state_dict(path)[1]["training"]
        assert training["steps_trained"] == 4 and len(training["curve"]) == 3
        assert training["selected_step"] == (4 if last else straight["best"]["step"])

"""The ``flow`` downscaler: consistency, motion, real-data skill, fallback, and ZSM on top of it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from xnowcast.models.flow import build_flow, consistent_upsample, enforce_block_mean
from xnowcast.models.interpolation import build_trilinear
from xnowcast.registry import build_model


def _blob_sequence(t: int, size: int, velocity: tuple[float, float], step: float = 1.0):
    """A Gaussian rain cell (max 20 mm/h) moving at ``velocity`` (x, y) fine px per unit time."""
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float64) + 0.5,
        torch.arange(size, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    frames = []
    for k in range(t):
        cx = size * 0.3 + velocity[0] * k * step
        cy = size * 0.4 + velocity[1] * k * step
        frames.append(20 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0**2)))
    return torch.stack(frames)  # (t, size, size), fine grid


@pytest.mark.parametrize(("factor", "time_factor"), [(2, 2), (3, 3), (4, 1), (1, 2)])
def test_output_frames_at_input_times_coarsen_back_to_the_input(factor, time_factor):
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 1, 12, 15, generator=gen) * 30
    coarse = torch.where(coarse > 12, coarse, torch.zeros_like(coarse))
    out = build_flow(factor=factor, time_factor=time_factor)(coarse)
    assert out.shape == (2, 2 * time_factor + 1, 1, 12 * factor, 15 * factor)
    assert (out >= 0).all()
    back = F.avg_pool2d(out[:, ::time_factor].flatten(0, 1), factor).view_as(coarse)
    torch.testing.assert_close(back, coarse, rtol=1e-5, atol=1e-5)


def test_consistent_upsample_is_smooth_and_exact():
    coarse = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    coarse[..., 6:10, 6:10] = 8.0
    fine = consistent_upsample(coarse, 2)
    torch.testing.assert_close(F.avg_pool2d(fine, 2), coarse)
    # zero blocks stay zero (no rain is invented where the coarse cell is dry)
    assert float(fine[..., :8, :].abs().max()) == 0.0
    zero = enforce_block_mean(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 2, 2), 3.0), 2)
    torch.testing.assert_close(zero, torch.full((1, 1, 4, 4), 3.0))


def test_inserted_frame_follows_a_moving_cell():
    """A cell moving 8 fine px per input step: the inserted frame is the cell half way."""
    fine = _blob_sequence(5, 96, (8.0, 4.0), step=0.5)  # fine truth every half step
    coarse = F.avg_pool2d(fine[::2].unsqueeze(1).float(), 2).unsqueeze(0)  # (1, 3, 1, 48, 48)
    truth = fine.float()
    errors = {}
    for name, model in (("trilinear", build_trilinear()), ("flow", build_flow())):
        out = model(coarse)[0, :, 0]
        errors[name] = float(((out[1::2] - truth[1::2]) ** 2).mean())
    assert errors["flow"] < 0.1 * errors["trilinear"], errors
    out = build_flow()(coarse)[0, 1, 0]
    # the maximum of the inserted frame sits where the cell is half way (within 1.5 px)
    iy, ix = divmod(int(out.argmax()), out.shape[-1])
    assert math.hypot(ix + 0.5 - (96 * 0.3 + 4), iy + 0.5 - (96 * 0.4 + 2)) < 1.5


def test_flow_is_batched_and_any_time_step():
    """The same sequence alone or in a batch gives the same result; the time step is not an input."""
    fine = _blob_sequence(5, 64, (6.0, 0.0), step=0.5).float()
    coarse = F.avg_pool2d(fine[::2].unsqueeze(1), 2).unsqueeze(0)
    model = build_flow()
    single = model(coarse)
    batched = model(torch.cat([coarse, coarse.flip(-1)]))
    torch.testing.assert_close(batched[:1], single)


def test_untrained_zsm_and_fczsm_are_the_flow_baseline():
    """Zero-initialised residual and offsets: before training both models equal ``flow``."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    frames = torch.rand(2, 4, 1, 16, 16, generator=gen) * 20
    base = build_flow()(frames)
    for name in ("zsm", "fczsm"):
        model = build_model(name, "flow-tiny").eval()
        static = torch.rand(2, 3, 32, 32) if model.static_channels else None
        with torch.no_grad():
            out = model(frames, static)
        torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-5)


def test_trained_zsm_keeps_block_means_at_input_times():
    torch.manual_seed(0)
    model = build_model("zsm", "flow-tiny").eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    frames = torch.rand(1, 4, 1, 16, 16) * 20
    with torch.no_grad():
        out = model(frames)
        base = build_flow()(frames)
    assert not torch.allclose(out, base)  # the residual acts ...
    back = F.avg_pool2d(out[:, ::2].flatten(0, 1), 2).view_as(frames)
    torch.testing.assert_close(back, frames, rtol=1e-4, atol=1e-4)  # ... within the constraint


def test_fczsm_warm_started_from_zsm_weights_computes_what_zsm_does():
    """ZSM weights fit FC-ZSM (static inputs zero-weighted): the warm model equals the ZSM."""
    from xnowcast.training.longrun import warm_start

    torch.manual_seed(0)
    zsm = build_model("zsm", "flow-tiny").eval()
    for p in zsm.parameters():  # a "trained" ZSM, far from the flow baseline
        torch.nn.init.normal_(p, std=0.05)
    fczsm = build_model("fczsm", "flow-tiny").eval()
    loaded = warm_start(fczsm, zsm.state_dict())
    assert loaded["padded"] and all(k.startswith("static_extractor") for k in loaded["kept"])
    frames = torch.rand(1, 4, 1, 16, 16) * 20
    static = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = zsm(frames)
        torch.testing.assert_close(fczsm(frames, static), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(expected, build_flow()(frames))


def test_old_weights_configs_are_refused():
    """Configs of the retired trilinear-residual ZSM (preset "compact") do not build."""
    from xnowcast.errors import ModelError

    with pytest.raises(ModelError, match=r"no config 'compact'.*flow-compact"):
        build_model("zsm", {"preset": "compact", "nf": 16})


def _coarse_event(shared_data, crop: int = 128):
    from xnowcast.training.pairs import block_mean, load_rain_rate

    da = load_rain_rate(str(shared_data / "radar/mch/20150515/*"))
    fine = np.asarray(da.values[:9, 352 : 352 + crop, 448 : 448 + crop], dtype=np.float32)
    return fine, block_mean(fine[::2], 2)


def test_flow_beats_trilinear_on_real_moving_convection(shared_data):
    """MeteoSwiss 2015-05-15 (moving convection), 2 km / 10 min -> 1 km / 5 min."""
    fine, coarse = _coarse_event(shared_data)
    x = torch.from_numpy(np.nan_to_num(coarse))[None, :, None]
    known = np.isfinite(fine)
    scores = {}
    for name, model in (("trilinear", build_trilinear()), ("flow", build_flow())):
        out = model(x)[0, :, 0].numpy()
        scores[name] = float(((out - np.nan_to_num(fine)) ** 2)[known].mean())
    assert scores["flow"] < 0.6 * scores["trilinear"], scores


def test_tiled_flow_keeps_block_means_across_tile_seams(shared_data):
    """Real radar on a domain of several tiles: block means at input times equal the input."""
    import xnowcast
    from xnowcast.training.pairs import block_mean

    _, coarse = _coarse_event(shared_data)  # 5 frames of 64 x 64 coarse cells
    n, h, w = coarse.shape
    da = xr.DataArray(
        coarse,
        dims=("time", "y", "x"),
        coords={
            "time": np.datetime64("2015-05-15T12:00") + np.arange(n) * np.timedelta64(10, "m"),
            "y": 2000.0 * np.arange(h)[::-1],
            "x": 2000.0 * np.arange(w),
        },
        attrs={"units": "mm/h", "standard_name": "rainfall_rate"},
    )
    with xnowcast.set_options(tile_size=48, tile_overlap=16):  # 24-cell tiles, 8 overlapping
        out = da.downscale(model="flow", progress=False).values
    assert np.nanmax(coarse) > 10  # heavy rain crosses the seams
    known = np.isfinite(coarse)
    means = block_mean(out[::2], 2)
    np.testing.assert_allclose(means[known], coarse[known], rtol=1e-5, atol=1e-5)


def test_downscale_falls_back_to_flow_outside_the_trained_time_steps(tmp_path):
    """Weights trained on 10-40 min steps, a 60-min input: a warning and the flow result."""
    import xnowcast  # noqa: F401  (registers the .downscale accessor)
    from xnowcast.training.supervised import save_checkpoint

    torch.manual_seed(0)
    model = build_model("zsm", "flow-tiny")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "zsm-test.safetensors"
    training = {"time_steps_minutes": [10, 20, 30, 40], "grid_spacing_m": [2000.0]}
    save_checkpoint(model, path, training, {})
    values = np.random.default_rng(0).gamma(0.5, 4.0, size=(4, 16, 16)).astype(np.float32)
    da = xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={
            "time": np.datetime64("2021-07-04T16:00") + np.arange(4) * np.timedelta64(60, "m"),
            "y": 2000.0 * np.arange(16)[::-1],
            "x": 2000.0 * np.arange(16),
        },
        attrs={"units": "mm/h", "standard_name": "rainfall_rate"},
    )
    with pytest.warns(UserWarning, match=r"time step 60 min .*'flow'"):
        out = da.downscale(model="zsm", weights=str(path))
    expected = da.downscale(model="flow")
    np.testing.assert_allclose(out.values, expected.values)
    inside = da.assign_coords(time=da.time.values[0] + np.arange(4) * np.timedelta64(20, "m"))
    fine = inside.downscale(model="zsm", weights=str(path))  # trained for 20 min: no fallback
    assert not np.allclose(fine.values, inside.downscale(model="flow").values)


@pytest.mark.parametrize(("k", "flip"), [(1, False), (2, False), (3, True), (0, True)])
def test_dihedral_augmentation_turns_the_motion_with_the_grid(k, flip):
    """The flow measured on rotated / flipped frames is the rotated / flipped flow."""
    from xnowcast.training.pairs import _rotate_vectors

    fine = _blob_sequence(3, 64, (6.0, 3.0)).float()
    coarse = F.avg_pool2d(fine.unsqueeze(1), 2).unsqueeze(0)  # (1, 3, 1, 32, 32)
    model = build_flow()

    def turn(x):
        x = torch.rot90(x, k, dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if flip else x

    def dense(frames):
        flow = model.motion(frames)[0]
        return F.interpolate(flow, size=(32, 32), mode="bilinear", align_corners=False)

    expected = _rotate_vectors(dense(coarse), k, flip)
    measured = dense(turn(coarse))
    centre = turn(fine[0] > 5)[::2, ::2]  # where the cell is
    assert torch.allclose(measured[..., centre], expected[..., centre], atol=0.3)


@pytest.mark.parametrize("model_name", ["zsm", "fczsm"])
def test_long_run_resumes_exactly(tmp_path, model_name):
    """Stopping after 2 steps and running again gives the same weights as 4 steps at once."""
    from xnowcast.training.longrun import RunConfig, run
    from xnowcast.training.pairs import make_pairs

    rng = np.random.default_rng(0)
    values = rng.gamma(0.5, 4.0, size=(9, 32, 32)).astype(np.float32)
    da = xr.DataArray(values, dims=("time", "y", "x"))
    pairs = make_pairs(da, crop=8, max_pairs=6, motion=True, min_rain_fraction=0.0)
    assert pairs.motion.shape == (len(pairs), 3, 2, 8, 8)
    cfg = RunConfig(
        steps=4,
        batch_size=2,
        val_every=2,
        checkpoint_every=1,
        log_every=1,
        head_lr_mult=3.0,
        sample_power=0.5,
    )
    states = {}
    for label, stops in (("straight", [None]), ("resumed", [2, None])):
        work = tmp_path / label
        work.mkdir()
        for name in ("train-pairs.pt", "val-pairs.pt"):
            torch.save(pairs.__dict__, work / name)
        for stop in stops:
            record = run(
                model_name,
                data_root=tmp_path,
                workdir=work,
                config="flow-tiny",
                run_config=cfg,
                stop_after=stop,
            )
        states[label] = torch.load(work / "state.pt", weights_only=False)
        assert record["steps"] == 4 and (work / "best.safetensors").is_file()
        assert [s for s, *_ in record["val_history"]] == [2, 4]
    for key, value in states["straight"]["model"].items():
        torch.testing.assert_close(states["resumed"]["model"][key], value, rtol=0, atol=0)
    assert (
        states["straight"]["record"]["loss_history"] == states["resumed"]["record"]["loss_history"]
    )
    # a longer schedule on resume is recorded: the step and what the recipe said before
    longer = RunConfig(**{**cfg.__dict__, "steps": 5})
    record = run(
        model_name, data_root=tmp_path, workdir=tmp_path / "straight", config="flow-tiny",
        run_config=longer,
    )  # fmt: skip
    assert record["steps"] == 5 and record["recipe_changes"] == [
        {"step": 4, "before": {"steps": 4}}
    ]
    # the best model exported as weights, with its curve and held-out scores
    from xnowcast.training.longrun import export
    from xnowcast.training.supervised import load_checkpoint, save_checkpoint
    from xnowcast.weights import read_metadata

    result = export(tmp_path / "resumed", tmp_path / "zsm-export.safetensors")
    meta = read_metadata(tmp_path / "zsm-export.safetensors")
    assert meta["model"] == model_name and meta["config"]["preset"] == "flow-tiny"
    assert [s for s, *_ in meta["training"]["run"]["val_history"]] == [2, 4]
    assert set(meta["scores"]["holdout_pairs"]) >= {"model", "flow", "trilinear"}
    assert result["scores"]["holdout_pairs"]["flow"]["mse"] > 0
    # or the last checkpoint (the end of the schedule: no choice made on held-out pairs)
    export(tmp_path / "resumed", tmp_path / "last.safetensors", step="last")
    last = load_checkpoint(tmp_path / "last.safetensors")
    assert last.metadata["training"]["exported_step"] == "last"
    assert last.metadata["training"]["steps"] == 4
    for key, value in states["resumed"]["model"].items():
        torch.testing.assert_close(last.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="best"):
        export(tmp_path / "resumed", tmp_path / "x.safetensors", step="middle")
    # a new run warm-started from those weights starts from them and says so
    warm = tmp_path / "warm"
    warm.mkdir()
    for name in ("train-pairs.pt", "val-pairs.pt"):
        torch.save(pairs.__dict__, warm / name)
    cfg_warm = RunConfig(
        steps=1, batch_size=2, lr=0.0, init_from=str(tmp_path / "zsm-export.safetensors")
    )
    record = run(
        model_name, data_root=tmp_path, workdir=warm, config="flow-tiny", run_config=cfg_warm
    )
    assert record["warm_start"]["steps"] == 4
    # the CPU time behind exported weights counts the warm start's, also for a run
    # recorded before the warm start's CPU time was (taken then from the weights file)
    warm_cpu = meta["training"]["cpu_s"]
    assert record["warm_start"]["cpu_s"] == pytest.approx(warm_cpu)
    export(warm, tmp_path / "warm-export.safetensors")
    total = read_metadata(tmp_path / "warm-export.safetensors")["training"]
    assert total["cpu_s_total"] == pytest.approx(total["cpu_s"] + warm_cpu)
    best = load_checkpoint(warm / "best.safetensors")
    legacy = dict(best.metadata["training"])
    legacy["warm_start"] = {k: v for k, v in legacy["warm_start"].items() if "cpu" not in k}
    save_checkpoint(best, warm / "best.safetensors", legacy, {})
    export(warm, tmp_path / "legacy.safetensors", warm_from=tmp_path / "zsm-export.safetensors")
    redone = read_metadata(tmp_path / "legacy.safetensors")["training"]
    assert redone["cpu_s_total"] == pytest.approx(total["cpu_s_total"])
    exported = torch.load(tmp_path / "resumed" / "state.pt", weights_only=False)["model"]
    best_step = meta["training"]["best"]["step"]
    if best_step == 4:  # lr 0: one step leaves the warm-started weights as they were
        for key, value in torch.load(warm / "state.pt", weights_only=False)["model"].items():
            torch.testing.assert_close(value, exported[key], rtol=0, atol=0)


@pytest.mark.parametrize("model_name", ["zsm", "fczsm"])
def test_shipped_zsm_weights_record_their_training_and_scores(model_name):
    """The shipped ZSM / FC-ZSM weights say what they were trained on and how they scored."""
    from xnowcast.registry import get_spec, weights_metadata

    meta = weights_metadata(get_spec(model_name))
    assert meta["model"] == model_name
    training, held_out = meta["training"], meta["scores"]["holdout_pairs"]
    assert meta["config"]["preset"] == "flow-compact"
    assert training["holdout"] == "rmi-20210704" == held_out["event"]
    assert not any(event.startswith("rmi") for event in training["events"])
    assert training["time_steps_minutes"] == [10] and training["grid_spacing_m"] == [2000.0]
    steps = [step for step, *_ in training["run"]["val_history"]]
    assert steps == sorted(steps) and training["best"]["step"] in steps
    # the recorded scores agree with the recorded curve: at the best step (model selection
    # on held-out pairs) or at the last one (the end of the schedule)
    if training.get("exported_step") == "last":
        assert training["steps"] == steps[-1]
        assert held_out["model"]["mse"] == pytest.approx(training["run"]["val_history"][-1][1])
    else:
        assert held_out["model"]["mse"] == pytest.approx(training["best"]["scores"]["mse"])
    assert held_out["trilinear"]["mse"] > held_out["flow"]["mse"]
    if model_name == "fczsm":  # warm-started from the shipped ZSM: its CPU time counts too
        warm = meta["training"]["warm_start"]
        assert warm["model"] == "zsm" and warm["cpu_s"] > 0
        assert training["cpu_s_total"] == pytest.approx(training["cpu_s"] + warm["cpu_s"])

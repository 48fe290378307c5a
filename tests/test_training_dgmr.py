"""DGMR training: crop sampling, losses, one GAN step, overfitting a real batch, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

from xnowcast.models import dgmr  # noqa: E402
from xnowcast.training import data as tdata  # noqa: E402
from xnowcast.training import gan, gan_checkpoint, gan_validation, losses  # noqa: E402

TINY = {"context_channels": 16, "latent_channels": 32, "discriminator_channels": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def field(frames: int = 26, size: int = 64, wet_corner: bool = True) -> xr.DataArray:
    """A field that rains (10 mm/h) in its top-left quadrant only, with a NaN bottom-right."""
    values = np.zeros((frames, size, size), dtype=np.float32)
    if wet_corner:
        values[:, : size // 2, : size // 2] = 10.0
    values[:, size // 2 :, size // 2 :] = np.nan
    time = pd.date_range("2021-07-04 15:00", periods=frames, freq="5min")
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={"time": time, "y": np.arange(size) * 1000.0, "x": np.arange(size) * 1000.0},
        attrs={"units": "mm/h"},
        name="precipitation",
    )


# ------------------------------------------------------------------------- sampling


def test_acceptance_probability_follows_the_paper() -> None:
    dry = np.zeros((4, 8, 8))
    assert tdata.acceptance_probability(dry) == pytest.approx(2e-4)
    wet = np.full((4, 8, 8), 50.0)
    assert tdata.acceptance_probability(wet) == pytest.approx(2e-4 + 0.1, rel=1e-6)
    half = np.zeros((4, 8, 8))
    half[:, :4] = 1.0
    expected = 2e-4 + 0.1 * 0.5 * (1 - np.exp(-1.0))
    assert tdata.acceptance_probability(half) == pytest.approx(expected)
    # missing pixels are left out of the mean
    half[:, 4:] = np.nan
    assert tdata.acceptance_probability(half) == pytest.approx(2e-4 + 0.1 * (1 - np.exp(-1.0)))


def test_sampler_prefers_wet_crops_and_drops_missing_ones() -> None:
    s = tdata.SequenceCropSampler(
        field(), input_frames=4, lead_frames=6, crop=16, stride=8, max_missing=0.05, seed=0
    )
    # candidate acceptances equal the direct computation on the crop
    for j in range(0, len(s.acceptance), 7):
        values, _ = s._window(s.owner[j], s.local[j])
        direct = tdata.acceptance_probability(values)
        if np.isnan(values).mean() > 0.05:
            assert s.acceptance[j] == 0
        else:
            assert s.acceptance[j] == pytest.approx(direct, rel=1e-6)
    batch = s.sample(64)
    assert batch.inputs.shape == (64, 4, 1, 16, 16)
    assert batch.targets.shape == (64, 6, 1, 16, 16)
    assert batch.valid.dtype == torch.bool
    assert torch.isfinite(batch.targets).all()
    usable = s.acceptance[s.acceptance > 0]
    dry_candidates = np.mean(np.isclose(usable, 2e-4))
    assert dry_candidates > 0.2
    dry_drawn = (batch.targets.amax(dim=(1, 2, 3, 4)) == 0).float().mean()
    assert dry_drawn < 0.05  # a dry crop is hundreds of times less likely than a wet one
    assert (~batch.valid).float().mean() <= 0.05


def test_sampler_clips_rates_converts_dbz_and_skips_time_gaps() -> None:
    da = field(frames=30)
    da[:, 0, 0] = 500.0
    da = da.drop_isel(time=[12])  # a gap: 11 frames before, 18 after
    s = tdata.SequenceCropSampler(da, input_frames=4, lead_frames=6, crop=16, max_rate=128.0)
    windows = sum(len(g) for g in s.generators)
    per_window = len(s.generators[0]) // (12 - 10 + 1)
    assert windows == per_window * ((12 - 10 + 1) + (17 - 10 + 1))
    assert s.sample(16).targets.max() <= 128.0
    dbz = field()
    dbz.values[:] = np.where(np.isnan(dbz.values), np.nan, 23.0)
    dbz.attrs["units"] = "dBZ"
    rate = tdata.as_rain_rate(dbz)
    assert rate.attrs["units"] == "mm/h"
    assert float(rate[0, 0, 0]) == pytest.approx((10**2.3 / 200) ** (1 / 1.6), rel=1e-3)


def test_sampler_rejects_data_that_cannot_give_a_crop() -> None:
    from xnowcast.errors import DataValueError, TimeAxisError

    with pytest.raises(TimeAxisError):
        tdata.SequenceCropSampler(field(frames=8), input_frames=4, lead_frames=6, crop=16)
    nan = field()
    nan.values[:] = np.nan
    with pytest.raises(DataValueError):
        tdata.SequenceCropSampler(nan, input_frames=4, lead_frames=6, crop=16)


# --------------------------------------------------------------------------- losses


def test_hinge_losses() -> None:
    real = torch.tensor([[2.0], [0.5]])
    fake = torch.tensor([[-2.0], [0.0]])
    # relu(1 - real) = [0, 0.5] ; relu(1 + fake) = [0, 1]
    assert losses.hinge_discriminator_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert losses.hinge_generator_loss(fake).item() == pytest.approx(1.0)


def test_grid_cell_regularizer_weights_and_mask() -> None:
    target = torch.tensor([0.0, 2.0, 30.0, 5.0]).reshape(1, 1, 1, 1, 4)
    samples = torch.stack([target + 1.0, target + 3.0])  # mean = target + 2
    valid = torch.tensor([True, True, True, False]).reshape(1, 1, 1, 1, 4)
    # clip weights [0, 2, 24, 5]; |err| = 2; masked mean over 3 pixels
    got = losses.grid_cell_regularizer(samples, target, valid)
    assert got.item() == pytest.approx(2 * (0 + 2 + 24) / 3)
    got = losses.grid_cell_regularizer(samples, target, valid, mode="plus_one")
    assert got.item() == pytest.approx(2 * (1 + 3 + 24) / 3)
    got = losses.grid_cell_regularizer(samples, target, valid, mode="none")
    assert got.item() == pytest.approx(2.0)
    assert losses.grid_cell_regularizer(samples, target).item() == pytest.approx(
        2 * (0 + 2 + 24 + 5) / 4
    )


def test_volume_regularizer_compares_mean_rates_per_lead() -> None:
    target = torch.zeros(1, 2, 1, 4, 4)
    target[..., :2, :] = 2.0  # mean rate 1 mm/h at both leads
    # members that disagree on the pattern but whose mean has the observed volume cost nothing
    assert losses.volume_regularizer(torch.stack([1.5 * target, 0.5 * target]), target) == 0.0
    shifted = torch.roll(target, 2, dims=-2)  # rain moved: the volume is right
    assert losses.volume_regularizer(shifted[None], target).item() == pytest.approx(0.0)
    doubled = losses.volume_regularizer((2 * target)[None], target)
    assert doubled.item() == pytest.approx(np.log(2.1 / 1.1))
    halved = losses.volume_regularizer((0.5 * target)[None], target)
    assert halved.item() == pytest.approx(np.log(1.1 / 0.6))
    # only the valid pixels count: rain over missing pixels is neither too much nor too little
    valid = torch.zeros_like(target, dtype=torch.bool)
    valid[..., :2, :] = True
    wet_where_missing = target + 5.0 * (~valid).float()
    assert losses.volume_regularizer(wet_where_missing[None], target, valid).item() == 0.0


def test_crps_of_an_ensemble() -> None:
    members = np.array([[1.0], [3.0]])
    obs = np.array([2.0])
    # E|X-y| = 1, E|X-X'| = (0 + 2 + 2 + 0)/4 = 1 -> CRPS = 1 - 0.5
    assert gan_validation.crps_ensemble(members, obs)[0] == pytest.approx(0.5)
    assert gan_validation.crps_ensemble(np.array([[4.0]]), obs)[0] == pytest.approx(2.0)
    # fair: E|X-X'| over the 2 distinct pairs = 2 -> CRPS = 1 - 1; one member: its error
    assert gan_validation.crps_ensemble(members, obs, fair=True)[0] == pytest.approx(0.0)
    assert gan_validation.crps_ensemble(np.array([[4.0]]), obs, fair=True)[0] == pytest.approx(2.0)


def test_validation_scores_of_known_forecasts() -> None:
    rng = np.random.default_rng(0)
    obs = (rng.gamma(0.5, 2.0, size=(2, 18, 32, 32))).astype(np.float32)
    valid = np.ones(obs.shape, dtype=bool)
    valid[:, :, :2] = False
    last = obs[:, 0]
    perfect = gan_validation.ensemble_scores(np.stack([obs, obs]), obs, valid, last, obs)
    assert perfect["crps"] == pytest.approx(0.0, abs=1e-7)
    assert perfect["crps_60"] == pytest.approx(0.0, abs=1e-7)
    assert perfect["mae_extrapolation_90"] == pytest.approx(0.0, abs=1e-7)
    for key in ("volume_ratio", "area_ratio_1", "power_ratio_2_4km"):
        assert perfect[key] == pytest.approx(1.0, rel=1e-5), key
    assert perfect["member_std_60"] == 0.0
    # twice the rain: twice the volume, 4x the power; two members 1 apart: std 0.5
    double = gan_validation.ensemble_scores(np.stack([2 * obs, 2 * obs + 1]), obs, valid, last, obs)
    window = valid[:, 5:18]  # leads 30 ... 90 min
    total, count = obs[:, 5:18][window].sum(), window.sum()
    assert double["volume_ratio"] == pytest.approx(2.0 + 0.5 * count / total, rel=1e-4)
    assert double["member_std_60"] == pytest.approx(0.5)
    assert double["first_step_jump"] == pytest.approx((2 * obs[:, 0].mean() + 0.5) / last.mean())
    assert double["power_ratio_2_4km"] > 3.0
    assert 0.0 < double["spread_skill"] < 1.0


def test_dihedral_augmentation_turns_every_tensor_alike() -> None:
    x = torch.arange(2 * 16.0).reshape(1, 2, 1, 4, 4).repeat(16, 1, 1, 1, 1)
    batch = tdata.CropBatch(x[:, :1], x, x > 5, x[:, :1] > 5, [{}] * 16)
    out = gan.dihedral(batch, torch.Generator().manual_seed(0))
    codes = [o["dihedral"] for o in out.origins]
    assert len(set(codes)) > 4  # several of the 8 symmetries drawn
    seen = set()
    for i in range(16):
        torch.testing.assert_close(out.inputs[i], out.targets[i, :1])
        assert torch.equal(out.valid[i], out.targets[i] > 5)
        assert sorted(out.targets[i].flatten().tolist()) == sorted(x[i].flatten().tolist())
        seen.add(tuple(out.targets[i, 0, 0].flatten().tolist()))
    assert len(seen) == len(set(codes))  # distinct codes give distinct images
    with pytest.raises(ValueError, match="square"):
        gan.dihedral(tdata.CropBatch(x[..., :3], x[..., :3], x[..., :3], x[..., :3], [{}] * 16))


# ------------------------------------------------------------------- GAN training


def real_batch(shared_data: Path, crop: int = 128) -> tdata.CropBatch:
    from xnowcast.io import open_radar

    da = open_radar(shared_data / "radar" / "mch" / "20150515")
    s = tdata.SequenceCropSampler(
        {"mch-20150515": da}, input_frames=4, lead_frames=6, crop=crop, stride=32, seed=1
    )
    return s.rainiest(1)


def make_models(seed: int = 0):
    torch.manual_seed(seed)
    g = dgmr.build_generator(TINY)
    d = dgmr.build_discriminator(TINY)
    opt_g = torch.optim.Adam(g.parameters(), lr=5e-5, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.999))
    return g, d, opt_g, opt_d


def test_one_gan_step_updates_both_networks(shared_data: Path) -> None:
    batch = real_batch(shared_data)
    g, d, opt_g, opt_d = make_models()
    before_g = {k: v.clone() for k, v in g.state_dict().items()}
    before_d = {k: v.clone() for k, v in d.state_dict().items()}
    out = gan.gan_step(
        g,
        d,
        opt_g,
        opt_d,
        batch,
        lead_steps=6,
        grid_samples=2,
        rng=torch.Generator().manual_seed(0),
        crps_weight=5.0,
    )
    assert set(out) == {"d_loss", "g_hinge", "grid", "volume", "crps", "g_loss", "scored"}
    assert 0.3 < out["scored"] <= 1.0  # the share of target pixels the losses see
    assert all(np.isfinite(v) for v in out.values())
    assert out["crps"] > 0
    assert out["g_loss"] == pytest.approx(
        out["g_hinge"] + 20 * out["grid"] + 5 * out["crps"], rel=1e-5
    )
    changed_g = [k for k, v in g.state_dict().items() if not torch.equal(v, before_g[k])]
    changed_d = [k for k, v in d.state_dict().items() if not torch.equal(v, before_d[k])]
    # the residual head starts at zero and moves first; the layers behind it follow
    assert "sampler.out_conv.weight" in changed_g
    gan.gan_step(g, d, opt_g, opt_d, batch, lead_steps=6, grid_samples=2)
    changed_g = [k for k, v in g.state_dict().items() if not torch.equal(v, before_g[k])]
    assert any("original" in k for k in changed_g)  # a spectrally normalised weight moved
    assert any(k.startswith("spatial.") for k in changed_d)
    assert any(k.startswith("temporal.") for k in changed_d)


@pytest.mark.slow
def test_tiny_config_learns_on_a_real_batch(shared_data: Path) -> None:
    """Training moves the forecast away from its starting point (extrapolation) towards the radar."""
    batch = real_batch(shared_data)
    torch.manual_seed(0)
    cfg = {**TINY, "context_channels": 32, "latent_channels": 64}
    g, d = dgmr.build_generator(cfg), dgmr.build_discriminator(cfg)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.999))
    rng = torch.Generator().manual_seed(0)
    grid = []
    for _ in range(30):
        out = gan.gan_step(
            g, d, opt_g, opt_d, batch, lead_steps=6, grid_samples=2, disc_steps=1, rng=rng
        )
        grid.append(out["grid"])
    first, last = np.mean(grid[:3]), np.mean(grid[-3:])
    assert last < 0.9 * first, grid


def test_train_dgmr_checkpoints_resume_and_weights(tmp_path: Path) -> None:
    from safetensors import safe_open

    da = field(frames=30, size=128)
    da.values[:, :, :] = np.where(np.isnan(da.values), 0.0, da.values)
    kwargs = dict(
        config=TINY,
        crop=128,
        batch_size=1,
        lead_steps=4,
        grid_samples=2,
        seed=3,
        checkpoint_every=1,
        val_every=2,
        val_crops=1,
        val_crop=128,
        val_members=2,
        progress=False,
        bn_batches=1,
        ema_decay=0.5,
    )
    full = gan.train_dgmr(da, steps=2, out_dir=tmp_path / "full", val_data=da, **kwargs)
    gan.train_dgmr(da, steps=1, out_dir=tmp_path / "half", val_data=da, **kwargs)
    resumed = gan.train_dgmr(
        da, steps=2, out_dir=tmp_path / "half", resume=tmp_path / "half", val_data=da, **kwargs
    )
    assert full.steps == resumed.steps == 2

    def losses_by_step(result):
        return {h["step"]: h["g_loss"] for h in result.history if "g_loss" in h}

    # the resumed run took exactly the same second step
    assert losses_by_step(resumed) == losses_by_step(full)
    # the same training state (the weights file holds the best validated generator)
    full_state, full_meta = gan.load_checkpoint(tmp_path / "full")
    resumed_state, _ = gan.load_checkpoint(tmp_path / "half")
    for k, v in full_state.items():
        torch.testing.assert_close(resumed_state[k], v, msg=k)
    assert full_meta["best"]["step"] in (1, 2)
    # the weights: safetensors with DGMR metadata, loadable into a fresh generator
    with safe_open(str(full.weights), framework="pt") as f:
        meta = f.metadata()
    assert meta["model"] == "dgmr"
    config = json.loads(meta["config"])
    training = json.loads(meta["training"])
    scores = json.loads(meta["scores"])
    assert config["context_channels"] == 16
    assert training["steps"] == 2 and training["crop"] == 128 and training["seed"] == 3
    assert training["augment"] == "dihedral"
    assert [c["step"] for c in training["curve"]] == [0, 2]  # step 0 is the extrapolation
    assert {"csi_mean_1", "csi_mean_4", "csi_mean_8", "crps", "volume_ratio"} <= set(scores)
    from xnowcast.weights import load_state_dict

    state, _ = load_state_dict(full.weights, sha256=full.sha256)
    fresh = dgmr.build_generator(config)
    fresh.load_state_dict(state)
    x = torch.rand(1, 4, 1, 64, 64)
    with torch.inference_mode():
        a = fresh.eval()(x, 2, generator=torch.Generator().manual_seed(0))
        b = full.generator.eval()(x, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    # a run's best generator exported with its progress and curve (as the shipped weights are)
    sha = gan_checkpoint.export_best_weights(
        tmp_path / "full", tmp_path / "exported.safetensors", curve_keys=gan.CURVE_KEYS
    )
    state, meta = load_state_dict(tmp_path / "exported.safetensors", sha256=sha)
    assert meta["training"]["steps_trained"] == 2
    assert meta["training"]["selected_step"] == full_meta["best"]["step"]
    assert [c["step"] for c in meta["training"]["curve"]] == [0, 2]
    assert meta["scores"]["crps"] == pytest.approx(full_meta["best"]["crps"])
    # resumed with another validation set: validated again where it resumed, the kept one
    # chosen afresh, and the exported curve can start there
    revalidated = gan.train_dgmr(
        da,
        steps=2,
        out_dir=tmp_path / "reval",
        resume=tmp_path / "full",
        val_data=da,
        **{**kwargs, "val_members": 3},
    )
    assert [h["step"] for h in revalidated.history if "val" in h] == [0, 2, 2]
    # the change of recipe on resume is on record, and CPU time is counted
    assert revalidated.training["recipe_changes"] == [
        {"step": 2, "changed": {"val_members": [2, 3]}}
    ]
    assert full.training["cpu_time_s"] > 0
    assert revalidated.training["selected_step"] == 2
    gan_checkpoint.export_best_weights(
        tmp_path / "reval",
        tmp_path / "since.safetensors",
        curve_keys=gan.CURVE_KEYS,
        curve_since=2,
    )
    _, meta = load_state_dict(tmp_path / "since.safetensors")
    assert [c["step"] for c in meta["training"]["curve"]] == [2]
    assert meta["training"]["curve"][0]["crps"] == revalidated.history[-1]["val"]["crps"]
    # a new run can start from a weights file (fine-tuning with another recipe)
    tuned = gan.train_dgmr(
        da, steps=0, out_dir=tmp_path / "tuned", init_weights=full.weights, **kwargs
    )
    assert tuned.training["initialised_from"]["weights"] == str(full.weights)
    # the parent's training time travels with the lineage
    parent = full.training
    assert tuned.training["initialised_from"]["wall_time_s"] == parent["wall_time_s"]
    assert tuned.training["initialised_from"]["cpu_time_s"] == parent["cpu_time_s"] > 0
    tuned_parameters = dict(tuned.generator.named_parameters())
    for k, v in full.generator.named_parameters():  # (buffers move in batch-norm refreshes)
        torch.testing.assert_close(tuned_parameters[k], v, msg=k)
    # checkpoints hold no pickles: both files open as safetensors
    for name in (gan_checkpoint.CHECKPOINT, gan_checkpoint.OPTIMISER):
        with safe_open(str(tmp_path / "full" / name), framework="pt") as f:
            assert len(list(f.keys())) > 0


def test_moving_average_of_the_generator(tmp_path: Path) -> None:
    da = field(frames=30, size=128)
    da.values[:, :, :] = np.where(np.isnan(da.values), 0.0, da.values)
    kwargs = dict(config=TINY, crop=128, batch_size=1, lead_steps=4, grid_samples=2, seed=5)
    run = gan.train_dgmr(
        da, steps=1, out_dir=tmp_path, progress=False, bn_batches=1, ema_decay=0.25, **kwargs
    )
    torch.manual_seed(5)  # the generator as train_dgmr built it, before its one step
    start = dict(dgmr.build_generator(run.config).named_parameters())
    tensors, meta = gan.load_checkpoint(tmp_path)
    after = gan_checkpoint.strip_prefix(tensors, "generator")
    ema = gan_checkpoint.strip_prefix(tensors, "ema")
    assert meta["args"]["ema_decay"] == 0.25
    moved = 0
    for name, p0 in start.items():
        torch.testing.assert_close(ema[name], 0.25 * p0 + 0.75 * after[name], msg=name)
        moved += int(not torch.equal(after[name], p0))
    assert moved > 0  # the step changed the generator, and the average followed


def test_ensemble_crps_loss_rewards_spread_that_matches_the_error() -> None:
    from xnowcast.training.losses import ensemble_crps_loss

    y = torch.zeros(1, 1, 1, 8, 8)
    same = torch.ones(2, 1, 1, 1, 8, 8)  # two identical members: CRPS = MAE = 1
    assert ensemble_crps_loss(same, y, pool=1).item() == pytest.approx(1.0)
    # members 0 and 2 around a truth of 1: fair CRPS = 1 - 2 / 2 = 0, below the collapsed 1
    spread = torch.stack([torch.zeros(1, 1, 1, 8, 8), 2 * torch.ones(1, 1, 1, 8, 8)])
    assert ensemble_crps_loss(spread, y + 1, pool=1).item() == pytest.approx(0.0)
    assert ensemble_crps_loss(spread, y + 1).item() == pytest.approx(0.0)  # pooled as well
    # missing pixels do not count, and a block with a missing pixel leaves the pooled term
    valid = torch.ones(1, 1, 1, 8, 8, dtype=torch.bool)
    valid[..., :4, :4] = False
    bad = same.clone()
    bad[..., :4, :4] = 100.0
    assert ensemble_crps_loss(bad, y, valid).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        ensemble_crps_loss(same[:1], y)


def test_selection_penalises_members_that_do_not_differ() -> None:
    from xnowcast.training.gan_validation import MEMBER_STD_MIN, selection_score

    base = {"crps": 0.2, "volume_ratio": 1.0, "area_ratio_1": 1.0}
    assert selection_score({**base, "member_std_60": MEMBER_STD_MIN}) == pytest.approx(0.2)
    collapsed = selection_score({**base, "member_std_60": MEMBER_STD_MIN / 10})
    assert collapsed == pytest.approx(2.0)  # a tenth of the spread: 10x the CRPS
    assert selection_score({**base, "member_std_60": 0.0}) > 1e6


def test_selection_prefers_unbiased_volume_and_area_then_lower_crps() -> None:
    from xnowcast.training.gan_validation import selection_score

    def scores(crps: float, vol: float, area: float = 1.0) -> dict[str, float]:
        out = {"crps": crps}
        for t in (30, 60, 90):
            out[f"volume_ratio_{t}"], out[f"area_ratio_1_{t}"] = vol, area
        return out

    dry, fair, fairer = scores(0.29, 0.6), scores(0.33, 0.9), scores(0.31, 1.1)
    assert selection_score(fair) == pytest.approx(0.33)  # on target: CRPS alone
    assert selection_score(fair) < selection_score(dry)  # a worse CRPS, but the volume is right
    assert selection_score(fairer) < selection_score(fair)
    assert selection_score(scores(0.31, 1.1, area=2.0)) > selection_score(fair)  # area counts
    wet_at_90 = {**scores(0.30, 1.0), "volume_ratio_90": 2.5}
    assert selection_score(wet_at_90) == pytest.approx(0.30 * 2.5 / 1.25)
    # earlier runs' scores: the pooled ratios
    assert selection_score({"crps": 0.3, "volume_ratio": 1.0, "area_ratio_1": 1.0}) == 0.3
    assert selection_score({"crps": 0.3, "volume_ratio": float("nan")}) > 1e6

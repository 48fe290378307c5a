"""STEPS in torch: its parts against theory and pysteps, the model on known motion and real radar."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xnowcast  # noqa: E402
from xnowcast.errors import ModelError  # noqa: E402
from xnowcast.models.motion_perturbation import MotionPerturbation  # noqa: E402
from xnowcast.models.steps import build_steps  # noqa: E402
from xnowcast.models.steps.autoregression import (  # noqa: E402
    adjust_lag2,
    ar2_autocorrelation,
    ar2_parameters,
    ar2_step,
)
from xnowcast.models.steps.cascade import BandpassCascade, spectral_mean_std  # noqa: E402
from xnowcast.models.steps.noise import noise_filter  # noqa: E402
from xnowcast.models.steps.nowcaster import to_db  # noqa: E402
from xnowcast.models.steps.probability_matching import (  # noqa: E402
    cdf_match,
    incremental_mask,
)
from xnowcast.testing import moving_storm  # noqa: E402

WIND = (1.0, 2.0)  # (vy, vx) pixels per step


def storm_frames(shape=(96, 96), frames=3, wind=WIND, seed=0) -> torch.Tensor:
    """Rain (mm/h) moved by a known uniform wind, ``(T, H, W)`` float32."""
    da = moving_storm(frames=frames, shape=shape, velocity=wind, cells=6, seed=seed)
    return torch.from_numpy(da.values.astype(np.float32))


def run(model, frames: torch.Tensor, members: int, steps: int, seed: int = 0, valid=None):
    x = frames[None, :, None].expand(members, -1, -1, -1, -1)
    if valid is not None:
        valid = valid[None, :, None].expand(members, -1, -1, -1, -1)
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        return model(x, steps, valid=valid, generator=generator)[:, :, 0]


# --------------------------------------------------------------------------- the parts


def test_cascade_levels_add_up_and_parseval_statistics_are_the_grid_statistics():
    field = torch.randn(2, 48, 80, dtype=torch.float64).cumsum(-1)
    cascade = BandpassCascade(48, 80, levels=5)
    levels, mean, std = cascade.decompose(torch.fft.rfft2(field))
    back = cascade.recompose(levels, mean, std)
    torch.testing.assert_close(back, field, rtol=0, atol=1e-4 * float(field.abs().max()))
    spatial = torch.fft.irfft2(torch.fft.rfft2(field)[:, None] * cascade.weights, s=(48, 80))
    parseval_mean, parseval_std = spectral_mean_std(torch.fft.rfft2(spatial), 48, 80)
    torch.testing.assert_close(parseval_mean, spatial.mean(dim=(-2, -1)))
    torch.testing.assert_close(parseval_std, spatial.std(dim=(-2, -1), unbiased=False))
    assert cascade.wavelengths_km(2.0)[0] > cascade.wavelengths_km(2.0)[-1] >= 4.0


def test_cascade_filters_and_noise_filter_equal_pysteps_on_a_square_grid():
    bandpass = pytest.importorskip("pysteps.cascade.bandpass_filters")
    fftgenerators = pytest.importorskip("pysteps.noise.fftgenerators")
    reference = bandpass.filter_gaussian((64, 64), 6)["weights_2d"]
    ours = BandpassCascade(64, 64, levels=6).weights.numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-6)

    db = to_db(storm_frames((64, 64)), 0.1, -15.0)
    theirs = fftgenerators.initialize_nonparam_2d_fft_filter(db.numpy().astype(np.float64))
    np.testing.assert_allclose(
        noise_filter(db).numpy(), theirs["field"], rtol=1e-4, atol=1e-3 * theirs["field"].max()
    )


def test_lag2_adjustment_and_yule_walker_reproduce_the_correlations():
    gamma1 = torch.tensor([0.99, 0.9, 0.6, 0.3])
    gamma2 = adjust_lag2(gamma1, torch.tensor([0.97, 0.5, 0.1, -0.5]))
    assert torch.all(gamma2 >= 2 * gamma1**2 - 1)
    phi = ar2_parameters(gamma1, gamma2)
    rho = ar2_autocorrelation(phi, 2)
    torch.testing.assert_close(rho[:, 1], gamma1)
    torch.testing.assert_close(rho[:, 2], gamma2)
    autoregression = pytest.importorskip("pysteps.timeseries.autoregression")
    for g1, g2, ours in zip(gamma1.tolist(), gamma2.tolist(), phi.tolist(), strict=True):
        theirs = autoregression.estimate_ar_params_yw([g1, g2])
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_yule_walker_keeps_the_correlations_of_the_slowest_levels():
    # the largest cascade level of steady rain (MeteoSwiss 2015-05-15): lag-1
    # correlations above 0.999; the AR(2) must still reproduce both correlations
    # (clamping g1 alone once tripled phi0 and worsened the 90 min CRPS)
    gamma1 = torch.tensor([0.9993, 0.9991, 0.99995])
    gamma2 = adjust_lag2(gamma1, torch.tensor([0.9970, 0.9974, 0.9998]))
    phi = ar2_parameters(gamma1, gamma2)
    rho = ar2_autocorrelation(phi, 2)
    torch.testing.assert_close(rho[:, 1], gamma1, rtol=0, atol=2e-5)
    torch.testing.assert_close(rho[:, 2], gamma2, rtol=0, atol=2e-5)
    assert float(phi[0, 2]) < 0.02  # innovation scale of the slow level stays small
    autoregression = pytest.importorskip("pysteps.timeseries.autoregression")
    for g1, g2, ours in zip(gamma1.tolist(), gamma2.tolist(), phi.tolist(), strict=True):
        theirs = autoregression.estimate_ar_params_yw([g1, g2])
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


def test_a_long_ar2_run_has_the_variance_and_correlations_of_its_parameters():
    gamma1, gamma2 = torch.tensor([0.95, 0.7]), torch.tensor([0.85, 0.35])
    phi = ar2_parameters(gamma1, adjust_lag2(gamma1, gamma2))
    generator = torch.Generator().manual_seed(1)
    series = 4000
    previous = torch.randn(series, 2, 1, 1, generator=generator)
    current = torch.randn(series, 2, 1, 1, generator=generator)
    kept = []
    for step in range(400):
        noise = torch.randn(series, 2, 1, 1, generator=generator)
        current, previous = ar2_step(current, previous, phi, noise), current
        if step >= 100:  # after the start-up
            kept.append(current[:, :, 0, 0])
    x = torch.stack(kept)  # (time, series, level)
    rho = ar2_autocorrelation(phi, 2)
    torch.testing.assert_close(x.var(dim=(0, 1)), torch.ones(2), atol=0.03, rtol=0)
    for lag in (1, 2):
        empirical = (x[lag:] * x[:-lag]).mean(dim=(0, 1)) / x.var(dim=(0, 1))
        torch.testing.assert_close(empirical, rho[:, lag], atol=0.01, rtol=0)


def test_motion_perturbations_are_unit_laplace_draws_scaled_like_pysteps_bps():
    # The draws: two per member, Laplace with unit variance (kurtosis 6), independent.
    flow = torch.zeros((1, 2, 8, 8))
    flow[:, 0], flow[:, 1] = 3.0, -4.0  # x, y pixels per step: speed 5
    generator = torch.Generator().manual_seed(0)
    draws = MotionPerturbation(flow, 40_000, generator, 1.0, 5.0).draws.double()
    zeros, ones = torch.zeros(2, dtype=draws.dtype), torch.ones(2, dtype=draws.dtype)
    assert torch.allclose(draws.mean(0), zeros, atol=0.02)
    assert torch.allclose(draws.var(0), ones, atol=0.04)
    kurtosis = (draws**4).mean(0) / draws.var(0) ** 2
    assert torch.all((kurtosis > 5.3) & (kurtosis < 6.7)), kurtosis
    assert abs(float(torch.corrcoef(draws.T)[0, 1])) < 0.02
    # With the same draws, the perturbation at every lead is pysteps' BPS (km/h -> pixels
    # per step from the grid spacing and the time step), along and across the motion.
    motion = pytest.importorskip("pysteps.noise.motion")
    spacing, minutes = 2.0, 10.0
    velocity = torch.randn((1, 2, 8, 8), generator=generator, dtype=torch.float64)
    ours = MotionPerturbation(velocity, 3, generator, spacing, minutes)
    for member in range(3):
        theirs = motion.initialize_bps(
            velocity[0].numpy(), 1.0 / spacing, minutes, randstate=np.random.RandomState(member)
        )
        ours.draws[member] = torch.tensor([theirs["eps_par"], theirs["eps_perp"]])
        for step in (1, 6, 18):
            expected = motion.generate_bps(theirs, step * minutes)
            np.testing.assert_allclose(ours(step)[member].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_stratified_motion_draws_span_the_laplace_distribution_in_every_forecast():
    # The default: each component's draws are the same rescaled Laplace quantiles in a
    # random order, so every forecast's set of draws has mean 0 and mean square 7/9
    # (8 independent draws: 7/8 about their own mean on average, but 0.03-3.9 over
    # seeds, and a mean that is not 0); members still differ and are paired at random
    # between the components.
    flow = torch.ones((1, 2, 4, 4))
    members = 8
    levels = (np.arange(members) + 0.5) / members
    expected = np.where(levels < 0.5, np.log(2 * levels), -np.log(2 * (1 - levels)))
    expected *= np.sqrt((members - 1) / (members + 1) / np.mean(expected**2))
    spread_independent, pairs = [], []
    for seed in range(300):
        generator = torch.Generator().manual_seed(seed)
        draws = MotionPerturbation(flow, members, generator, 1.0, 5.0, sampling="stratified").draws
        for component in range(2):
            np.testing.assert_allclose(
                np.sort(draws[:, component].numpy()), expected, rtol=1e-5, atol=1e-6
            )
        pairs.append(draws)
        generator = torch.Generator().manual_seed(seed)
        independent = MotionPerturbation(flow, members, generator, 1.0, 5.0).draws
        spread_independent.append(independent.var(0, unbiased=False))
    spread_independent = torch.stack(spread_independent)
    assert abs(float(spread_independent.mean()) - (members - 1) / members) < 0.05
    assert float(spread_independent.min()) < 0.3 and float(spread_independent.max()) > 2.0
    pooled = torch.cat(pairs).double()
    assert abs(float(torch.corrcoef(pooled.T)[0, 1])) < 0.05
    assert not torch.equal(pairs[0], pairs[1])  # the order is random, seeded
    generator = torch.Generator().manual_seed(0)
    single = MotionPerturbation(flow, 1, generator, 1.0, 5.0, sampling="stratified").draws
    assert bool((single != 0).all())  # one member: a random draw, not the median
    assert build_steps().config["motion_draws"] == "stratified"
    with pytest.raises(ModelError, match="motion_draws"):
        build_steps({"motion_draws": "sobol"})


def test_centred_motion_draws_have_no_mean_and_a_random_spread():
    # "centred": independent draws less their mean, times sqrt(n / (n + 1)): the ensemble
    # mean is never displaced, the mean square about it is 7/9 on average for 8 members
    # (as the stratified draws), and it still varies from forecast to forecast as that of
    # a random sample (which keeps the rank histogram's outer bins as pysteps' draws).
    flow = torch.ones((1, 2, 4, 4))
    members = 8
    spreads = []
    for seed in range(400):
        generator = torch.Generator().manual_seed(seed)
        draws = MotionPerturbation(flow, members, generator, 1.0, 5.0, sampling="centred").draws
        np.testing.assert_allclose(draws.mean(0).numpy(), 0.0, atol=1e-6)
        spreads.append(draws.square().mean(0))
        generator = torch.Generator().manual_seed(seed)
        independent = MotionPerturbation(flow, members, generator, 1.0, 5.0).draws
        centred = (independent - independent.mean(0)) * np.sqrt(members / (members + 1))
        np.testing.assert_allclose(draws.numpy(), centred.numpy(), rtol=1e-5, atol=1e-6)
    spreads = torch.stack(spreads)
    assert abs(float(spreads.mean()) - (members - 1) / (members + 1)) < 0.05
    assert float(spreads.min()) < 0.3 and float(spreads.max()) > 1.5
    generator = torch.Generator().manual_seed(0)
    single = MotionPerturbation(flow, 1, generator, 1.0, 5.0, sampling="centred").draws
    assert bool((single != 0).all())  # one member: a random draw, not zero
    with pytest.raises(ValueError, match="sampling"):
        MotionPerturbation(flow, members, generator, 1.0, 5.0, sampling="sobol")


def test_probability_matching_and_mask_equal_pysteps():
    probmatching = pytest.importorskip("pysteps.postprocessing.probmatching")
    nowcast_utils = pytest.importorskip("pysteps.nowcasts.utils")
    morphology = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    target = np.where(rng.random((40, 50)) < 0.4, rng.gamma(2.0, 5.0, (40, 50)) - 10.0, -15.0)
    forecast = np.where(rng.random((2, 40, 50)) < 0.3, rng.normal(0, 4, (2, 40, 50)), -20.0)
    ranked = torch.sort(torch.from_numpy(target).flatten()).values
    ours = cdf_match(torch.from_numpy(forecast), ranked).numpy()
    for member in range(2):
        theirs = probmatching.nonparam_match_empirical_cdf(forecast[member], target)
        # the counting sort gives pixels whose values differ by less than 1/2**15 of the
        # range their mean rank: a few pixels get the mean of two neighbouring values (dB)
        np.testing.assert_allclose(ours[member], theirs, atol=0.5)
        assert np.mean(np.isclose(ours[member], theirs, rtol=0, atol=1e-6)) > 0.97

    wet = rng.random((2, 40, 50)) > 0.99
    structure = morphology.iterate_structure(morphology.generate_binary_structure(2, 1), 2)
    mask = incremental_mask(torch.from_numpy(wet), radius=2, rim=10).numpy()
    for member in range(2):
        theirs = nowcast_utils.compute_dilated_mask(wet[member], structure, 10)
        np.testing.assert_allclose(mask[member], theirs, atol=1e-6)


# --------------------------------------------------------------------------- the model


def _centroid(field: torch.Tensor) -> np.ndarray:
    field = torch.nan_to_num(field)
    yy, xx = torch.meshgrid(
        torch.arange(field.shape[-2], dtype=field.dtype),
        torch.arange(field.shape[-1], dtype=field.dtype),
        indexing="ij",
    )
    return np.array([float((c * field).sum() / field.sum()) for c in (yy, xx)])


def test_a_field_moved_by_a_known_wind_keeps_its_motion_and_cascade_statistics():
    frames = storm_frames((96, 96), frames=3)
    steps = 6
    # where the rain goes: with the motion unperturbed, every member moves with the wind
    out = run(build_steps({"motion_perturbation": False}), frames, members=3, steps=steps)
    assert out.shape == (3, steps, 96, 96)
    truth = storm_frames((96, 96), frames=3 + steps)[3:]
    inside = (slice(None), slice(16, -16), slice(16, -16))  # what crosses the edges differs
    for lead in (2, steps):
        expected = _centroid(truth[lead - 1][inside[1:]])
        for member in range(3):
            centre = _centroid(out[member, lead - 1][inside[1:]])
            assert np.allclose(centre, expected, atol=1.5), (lead, centre, expected)
    # what the rain looks like: the members of the full model keep the variability of the
    # observed field at the two largest scales, which carry most of it, and the smallest
    # scales of these smooth cells get rougher, as in pysteps' STEPS (1.4-2.4 on this
    # input).  Over 8 seeds x 4 members, so that no single lucky draw decides.
    cascade = BandpassCascade(96, 96, levels=6)
    _, _, observed_std = cascade.decompose(torch.fft.rfft2(to_db(frames[-1], 0.1, -15.0)))
    ratios = []
    for seed in range(8):
        members = run(build_steps(), frames, members=4, steps=steps, seed=seed)
        member_db = to_db(torch.nan_to_num(members[:, -1]), 0.1, -15.0)
        ratios.append(cascade.decompose(torch.fft.rfft2(member_db))[2] / observed_std)
    ratio = torch.stack(ratios)  # (seed, member, level)
    assert torch.all(ratio > 0.6), ratio
    assert torch.all((ratio[..., :2] > 0.85) & (ratio[..., :2] < 1.15)), ratio[..., :2]
    mean = ratio.mean(dim=(0, 1))
    assert 1.0 < float(mean[2]) < 1.4, mean
    assert torch.all((mean[3:] > 1.2) & (mean[3:] < 2.4)), mean
    out = run(build_steps(), frames, members=4, steps=steps)
    # the perturbed motions spread the members around the wind's displacement
    centres = np.stack([_centroid(member[inside[1:]]) for member in out[:, -1]])
    assert centres.std(axis=0).max() > 0.3
    assert np.allclose(centres.mean(axis=0), _centroid(truth[-1][inside[1:]]), atol=6)


def test_members_differ_and_a_seed_reproduces_the_forecast():
    model = build_steps()
    frames = storm_frames((64, 64))
    first = run(model, frames, members=3, steps=3, seed=5)
    again = run(model, frames, members=3, steps=3, seed=5)
    other = run(model, frames, members=3, steps=3, seed=6)
    torch.testing.assert_close(first, again, equal_nan=True, rtol=0, atol=0)
    assert not torch.allclose(first[0], first[1], equal_nan=True)
    assert not torch.allclose(first, other, equal_nan=True)
    assert bool((torch.nan_to_num(first) >= 0).all())


def test_missing_input_stays_missing_and_is_never_rain():
    model = build_steps({"motion_perturbation": False})
    frames = storm_frames((64, 64))
    frames[:, :, :20] = float("nan")  # west of the radar: not observed
    out = run(model, frames, members=2, steps=3)
    # pixels whose trajectory starts in the unobserved strip are NaN ...
    assert bool(out[:, :, :, :18].isnan().all())
    # ... and those reached from observed pixels are known (rain comes in from the north
    # and west edges: 3 steps of the wind away from them the departure points are inside)
    rows, columns = 3 * int(WIND[0]) + 2, 20 + 3 * int(WIND[1]) + 2
    assert not bool(out[:, :, rows:, columns:].isnan().any())
    # a field entirely missing in the last frame gives NaN everywhere, not zeros
    frames[-1] = float("nan")
    assert bool(run(model, frames, members=1, steps=2).isnan().all())


def test_no_rain_gives_a_dry_forecast():
    out = run(build_steps(), torch.zeros(3, 32, 32), members=2, steps=2)
    assert bool((out == 0).all())


def test_bad_settings_are_refused_with_the_valid_choices():
    with pytest.raises(ModelError, match="unknown settings"):
        build_steps({"levls": 6})
    with pytest.raises(ModelError, match="probability_matching"):
        build_steps({"probability_matching": "quantile"})
    with pytest.raises(ModelError, match="unknown steps config"):
        build_steps("paper")


@pytest.mark.parametrize("variant", [{"noise": "parametric", "probability_matching": "mean"}])
def test_other_noise_and_matching_variants_run(variant):
    out = run(build_steps(variant), storm_frames((64, 64)), members=2, steps=2)
    assert torch.isfinite(out[:, :, 10:-10, 10:-10]).all()
    assert float(out.nanmean()) > 0


# --------------------------------------------------------------------------- public API


def test_dbz_in_gives_dbz_out_through_the_accessor():
    storm = moving_storm(frames=4, shape=(48, 48), velocity=WIND, units="dBZ")
    fc = storm.nowcast.predict(model="steps", steps=2, members=2, seed=0, progress=False)
    assert fc.attrs["units"] == storm.attrs["units"]
    assert fc.dims == ("lead_time", "member", "y", "x")
    values = fc.values[np.isfinite(fc.values)]
    assert values.max() > 30.0  # reflectivity of the storm cores, not mm/h
    rate = xnowcast.nowcast(
        storm, model="steps", steps=2, members=2, seed=0, units="dBZ", progress=False
    )
    assert rate.attrs["units"] == storm.attrs["units"]


def test_predict_on_the_bundled_radar_sample():
    ds = xnowcast.open_dataset("sample").isel(x=slice(64, 160), y=slice(64, 160))
    ds["precipitation"][:, :24, :] = np.nan  # a strip outside radar range
    fc = ds.nowcast.predict(
        model="steps", steps=3, members=3, seed=1, init_time=ds.time[10], progress=False
    )
    assert fc.dims == ("lead_time", "member", "y", "x")
    assert fc.attrs["xnowcast_model"] == "steps"
    assert fc.attrs["units"] == ds.precipitation.attrs["units"]
    # rain moves less than 16 pixels in 5 minutes: the first lead time is unknown there
    assert bool(fc.isel(lead_time=0, y=slice(0, 8)).isnull().all())
    inside = fc.isel(y=slice(30, -30), x=slice(30, -30))
    assert not bool(inside.isnull().any())
    assert not np.array_equal(inside.sel(member=0).values, inside.sel(member=1).values)
    again = ds.nowcast.predict(
        model="steps", steps=3, members=3, seed=1, init_time=ds.time[10], progress=False
    )
    np.testing.assert_array_equal(fc.values, again.values)
    # a lazy hindcast gives the same forecast for the same init time
    lazy = ds.chunk({"time": 6}).nowcast.predict(
        model="steps", steps=3, members=3, seed=1, init_time=ds.time[9:11], progress=False
    )
    np.testing.assert_array_equal(lazy.sel(init_time=ds.time[10]).values, fc.values)
    # rain amounts stay in the observed range
    observed = float(ds.precipitation.isel(time=10).max())
    assert 0.0 <= float(fc.min()) and float(fc.max()) <= observed * 1.01
    assert math.isfinite(float(fc.mean()))

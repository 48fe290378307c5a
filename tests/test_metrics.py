"""Array-level scores against hand-computed tables and formulas, and against `scores`/pysteps."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from xnowcast import metrics as m

# events are >= 1: pairs (obs, fc) give a=3 hits, b=2 false alarms, c=1 miss,
# d=4 correct negatives; the last two pairs have a missing value and are left out
OBS = [1.0, 5, 2, 0, 0, 3, 0, 0, 0, 0.5, np.nan, 7]
FC = [1.0, 2, 9, 4, 1, 0, 0, 0, 0.2, 0, 3, np.nan]
A, B, C, D = 3, 2, 1, 4
N = A + B + C + D


def _pair(obs=OBS, fc=FC):
    return xr.DataArray(np.array(fc), dims="i"), xr.DataArray(np.array(obs), dims="i")


def _raise_if_computed(*args, **kwargs):
    raise AssertionError("a dask graph was computed before .compute()")


def test_contingency_counts_and_equality_is_an_event():
    fc, obs = _pair()
    table = m.contingency(fc, obs, 1.0, "i")
    assert int(table.hits()) == A
    assert int(table.false_alarms()) == B
    assert int(table.misses()) == C
    assert int(table.correct_negatives()) == D


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("csi", A / (A + B + C)),
        ("pod", A / (A + C)),
        ("far", B / (A + B)),
        ("fbias", (A + B) / (A + C)),
        ("ets", (A - (A + B) * (A + C) / N) / (A + B + C - (A + B) * (A + C) / N)),
        ("hss", 2 * (A * D - B * C) / ((A + C) * (C + D) + (A + B) * (B + D))),
    ],
)
def test_categorical_scores_match_the_hand_table(name, expected):
    fc, obs = _pair()
    assert float(m.categorical_score(name, fc, obs, 1.0, "i")) == pytest.approx(expected)
    assert float(getattr(m, name)(fc, obs, 1.0, "i")) == pytest.approx(expected)


def test_hand_values_are_what_the_formulas_say():
    # guard against a table typo: the numbers the parametrised test relies on
    fc, obs = _pair()
    assert float(m.csi(fc, obs, 1.0, "i")) == pytest.approx(0.5)
    assert float(m.hss(fc, obs, 1.0, "i")) == pytest.approx(0.4)
    assert float(m.ets(fc, obs, 1.0, "i")) == pytest.approx(0.25)


def test_perfect_forecast_scores_perfectly():
    rng = np.random.default_rng(1)
    obs = xr.DataArray(rng.gamma(0.4, 2.0, (30, 40)), dims=("y", "x"))
    for name, info in m.METRICS.items():
        if info.kind == "categorical":
            assert float(m.categorical_score(name, obs, obs, 1.0, ("y", "x"))) == info.perfect


def test_always_yes_forecast():
    rng = np.random.default_rng(2)
    obs = xr.DataArray(rng.gamma(0.4, 2.0, 5000), dims="i")
    base_rate = float((obs >= 1).mean())
    always = xr.full_like(obs, 50.0)
    assert float(m.hss(always, obs, 1.0, "i")) == pytest.approx(0.0, abs=1e-12)
    assert float(m.ets(always, obs, 1.0, "i")) == pytest.approx(0.0, abs=1e-12)
    assert float(m.pod(always, obs, 1.0, "i")) == 1.0
    assert float(m.csi(always, obs, 1.0, "i")) == pytest.approx(base_rate)
    assert float(m.far(always, obs, 1.0, "i")) == pytest.approx(1 - base_rate)
    assert float(m.fbias(always, obs, 1.0, "i")) == pytest.approx(1 / base_rate)


def test_random_forecast_has_no_skill():
    rng = np.random.default_rng(3)
    n, p, q = 400_000, 0.2, 0.3  # observed and forecast event rates, independent
    obs = xr.DataArray((rng.random(n) < p).astype(float), dims="i")
    fc = xr.DataArray((rng.random(n) < q).astype(float), dims="i")
    assert float(m.hss(fc, obs, 1.0, "i")) == pytest.approx(0.0, abs=0.01)
    assert float(m.ets(fc, obs, 1.0, "i")) == pytest.approx(0.0, abs=0.01)
    # expected CSI of independent events: pq / (p + q - pq)
    assert float(m.csi(fc, obs, 1.0, "i")) == pytest.approx(p * q / (p + q - p * q), abs=0.005)


def test_undefined_scores_are_nan():
    obs = xr.DataArray(np.zeros(10), dims="i")
    assert np.isnan(float(m.csi(obs, obs, 1.0, "i")))


def test_continuous_errors_by_hand():
    fc, obs = _pair()
    keep = np.isfinite(np.array(OBS)) & np.isfinite(np.array(FC))
    err = np.array(FC)[keep] - np.array(OBS)[keep]
    assert float(m.mse(fc, obs, "i")) == pytest.approx(np.mean(err**2))
    assert float(m.rmse(fc, obs, "i")) == pytest.approx(np.sqrt(np.mean(err**2)))
    assert float(m.mae(fc, obs, "i")) == pytest.approx(np.mean(np.abs(err)))
    assert float(m.mean_error(fc, obs, "i")) == pytest.approx(np.mean(err))
    # and the hand numbers: errors 0,-3,7,4,1,-3,0,0,0.2,-0.5
    assert float(m.mean_error(fc, obs, "i")) == pytest.approx(5.7 / 10)


def test_crps_matches_scores_and_skips_missing():
    from scores.probability import crps_for_ensemble

    rng = np.random.default_rng(4)
    fc = xr.DataArray(rng.gamma(0.5, 2.0, (6, 20, 30)), dims=("member", "y", "x"))
    obs = xr.DataArray(rng.gamma(0.5, 2.0, (20, 30)), dims=("y", "x"))
    ours = m.crps(fc, obs, ("y", "x"))
    ref = crps_for_ensemble(fc, obs, "member", method="ecdf")
    assert float(ours) == pytest.approx(float(ref), rel=1e-10)

    holes = obs.where(obs.x > 4)  # missing observations
    fc_holes = fc.where(~((fc.y == 3) & (fc.member == 2)))  # one member missing on a row
    ours = m.crps(fc_holes, holes, ("y", "x"))
    keep = (obs.x > 4) & (obs.y != 3)
    ref = crps_for_ensemble(
        fc.where(keep).stack(p=("y", "x")).dropna("p"),
        obs.where(keep).stack(p=("y", "x")).dropna("p"),
        "member",
        method="ecdf",
    )
    assert float(ours) == pytest.approx(float(ref), rel=1e-10)


def test_crps_by_hand_with_ties():
    # E|X - y| - E|X - X'| / 2 for members (0, 0, 1, 2) and y = 0: 3/4 - 14/16/2
    fc = xr.DataArray([[0.0, 0.0, 1.0, 2.0]], dims=("i", "member"))
    obs = xr.DataArray([0.0], dims="i")
    assert float(m.crps(fc, obs, "i")) == pytest.approx(0.3125)


def test_fair_crps_matches_scores_on_numpy_and_dask_and_skips_missing():
    from scores.probability import crps_for_ensemble

    rng = np.random.default_rng(6)
    fc = xr.DataArray(rng.gamma(0.5, 2.0, (20, 30, 4)), dims=("y", "x", "member"))
    obs = xr.DataArray(rng.gamma(0.5, 2.0, (20, 30)), dims=("y", "x"))
    ref = crps_for_ensemble(fc, obs, "member", method="fair")
    assert float(m.crps(fc, obs, ("y", "x"), fair=True)) == pytest.approx(float(ref), rel=1e-10)
    lazy = m.crps(fc.chunk({"y": 7}), obs.chunk({"y": 7}), ("y", "x"), fair=True)
    assert lazy.chunks is not None  # stays lazy on dask input
    assert float(lazy) == pytest.approx(float(ref), rel=1e-10)
    # members in chunks of their own (computed apart), both estimators
    per_member = fc.chunk({"member": 1})
    assert float(m.crps(per_member, obs, ("y", "x"), fair=True)) == pytest.approx(float(ref))
    assert float(m.crps(per_member, obs, ("y", "x"))) == pytest.approx(float(m.crps(fc, obs)))

    holes = obs.where(obs.x > 4)
    keep = obs.x > 4
    ref = crps_for_ensemble(
        fc.where(keep).stack(p=("y", "x")).dropna("p"),
        obs.where(keep).stack(p=("y", "x")).dropna("p"),
        "member",
        method="fair",
    )
    assert float(m.crps(fc, holes, ("y", "x"), fair=True)) == pytest.approx(float(ref), rel=1e-10)


def test_fair_crps_of_a_small_perfect_ensemble_is_the_true_crps():
    # members and observation drawn from N(0, 1): the CRPS of the distribution is
    # E|X - Y| - E|X - X'| / 2 = 2/sqrt(pi) - 1/sqrt(pi); with 3 members the fair
    # estimator finds it, the default one adds E|X - X'| / (2 M) = 1 / (3 sqrt(pi))
    rng = np.random.default_rng(7)
    fc = xr.DataArray(rng.standard_normal((200_000, 3)), dims=("i", "member"))
    obs = xr.DataArray(rng.standard_normal(200_000), dims="i")
    truth = 1 / np.sqrt(np.pi)
    assert float(m.crps(fc, obs, "i", fair=True)) == pytest.approx(truth, abs=0.005)
    assert float(m.crps(fc, obs, "i")) == pytest.approx(truth * 4 / 3, abs=0.005)
    one = fc.isel(member=[0])
    mae = m.mae(one.squeeze("member", drop=True), obs, "i")
    assert float(m.crps(one, obs, "i", fair=True)) == pytest.approx(float(mae))


def test_crps_of_a_deterministic_forecast_is_the_mae():
    rng = np.random.default_rng(5)
    fc = xr.DataArray(rng.gamma(0.5, 2.0, (20, 30)), dims=("y", "x"))
    obs = xr.DataArray(rng.gamma(0.5, 2.0, (20, 30)), dims=("y", "x")).where(lambda o: o < 3)
    assert float(m.crps(fc, obs, ("y", "x"))) == pytest.approx(float(m.mae(fc, obs, ("y", "x"))))


@pytest.mark.parametrize("window", [1, 2, 3, 5, (4, 7)])
def test_fss_equals_scores_fss_2d(window):
    from scores.spatial import fss_2d

    rng = np.random.default_rng(6)
    fc = xr.DataArray(rng.gamma(0.5, 2.0, (3, 40, 50)), dims=("t", "y", "x"))
    obs = xr.DataArray(rng.gamma(0.5, 2.0, (3, 40, 50)), dims=("t", "y", "x"))
    obs[0, 5, 5] = 1.0  # exactly at the threshold: an event for both
    size = window if isinstance(window, tuple) else (window, window)
    ref = fss_2d(
        fc,
        obs,
        event_threshold=1.0,
        window_size=size,
        spatial_dims=("y", "x"),
        threshold_operator=np.greater_equal,
        reduce_dims=["t", "y", "x"],
    )
    ours = m.fss(fc, obs, 1.0, window, spatial_dims=("y", "x"), dim="t")
    assert float(ours) == pytest.approx(float(ref), abs=1e-6)
    per_field = m.fss(fc, obs, 1.0, window, spatial_dims=("y", "x"))
    ref_field = fss_2d(
        fc,
        obs,
        event_threshold=1.0,
        window_size=size,
        spatial_dims=("y", "x"),
        threshold_operator=np.greater_equal,
        preserve_dims=["t"],
    )
    np.testing.assert_allclose(per_field, ref_field, atol=1e-6)


@pytest.mark.parametrize("window", [1, 3, 4, 9])
def test_fss_zero_padding_equals_pysteps(window):
    from pysteps.verification.spatialscores import fss as pysteps_fss

    rng = np.random.default_rng(7)
    fc = rng.gamma(0.5, 2.0, (40, 50))
    obs = np.roll(fc, (2, 3), axis=(0, 1)) * rng.uniform(0.5, 1.5, (40, 50))
    # pysteps counts values > thr: no value sits on the threshold here
    ref = pysteps_fss(fc, obs, 1.0, window)
    ours = m.fss(
        xr.DataArray(fc, dims=("y", "x")),
        xr.DataArray(obs, dims=("y", "x")),
        1.0,
        window,
        padding="zeros",
    )
    assert float(ours) == pytest.approx(ref, abs=1e-10)


def test_fss_leaves_out_windows_with_missing_cells():
    rng = np.random.default_rng(8)
    fc = xr.DataArray(rng.gamma(0.5, 2.0, (40, 50)), dims=("y", "x"))
    obs = xr.DataArray(rng.gamma(0.5, 2.0, (40, 50)), dims=("y", "x"))
    gappy = obs.where(obs.x >= 12)  # radar missing on the 12 left columns
    ours = m.fss(fc, gappy, 1.0, 5)
    cropped = m.fss(fc.isel(x=slice(12, None)), obs.isel(x=slice(12, None)), 1.0, 5)
    assert float(ours) == pytest.approx(float(cropped), abs=1e-12)
    # counting the missing cells as "no rain" gives a different answer
    assert abs(float(m.fss(fc, gappy.fillna(0), 1.0, 5)) - float(ours)) > 1e-3


def test_fss_perfect_and_undefined():
    rng = np.random.default_rng(9)
    obs = xr.DataArray(rng.gamma(0.5, 2.0, (30, 30)), dims=("y", "x"))
    assert float(m.fss(obs, obs, 1.0, 3)) == pytest.approx(1.0)
    assert np.isnan(float(m.fss(obs * 0, obs * 0, 1.0, 3)))
    with pytest.raises(m.MetricError, match="larger than the field"):
        m.fss(obs, obs, 1.0, 31)


def _ssim_by_loops(a, b, data_range, window):
    """The FC-ZSM definition written out: l * c * s with c3 = c2 / 2, window by window."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    c3 = c2 / 2
    values = []
    for i in range(a.shape[0] - window + 1):
        for j in range(a.shape[1] - window + 1):
            x = a[i : i + window, j : j + window].ravel()
            y = b[i : i + window, j : j + window].ravel()
            if not (np.isfinite(x).all() and np.isfinite(y).all()):
                continue
            mx, my = x.mean(), y.mean()
            sx, sy = x.std(ddof=1), y.std(ddof=1)
            sxy = np.cov(x, y, ddof=1)[0, 1]
            lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            con = (2 * sx * sy + c2) / (sx**2 + sy**2 + c2)
            struct = (sxy + c3) / (sx * sy + c3)
            values.append(lum * con * struct)
    return np.mean(values)


@pytest.mark.parametrize("window", [3, 7])
def test_ssim_equals_the_paper_formula(window):
    rng = np.random.default_rng(10)
    a = rng.gamma(0.6, 3.0, (16, 19))
    b = 0.7 * a + rng.gamma(0.6, 1.0, (16, 19))
    b[2:5, 3] = np.nan
    ours = m.ssim(a, b, data_range=20.0, window=window)
    assert ours == pytest.approx(_ssim_by_loops(a, b, 20.0, window), rel=1e-9)


def test_ssim_identical_fields_and_batches():
    rng = np.random.default_rng(11)
    a = rng.gamma(0.6, 3.0, (2, 3, 20, 20))
    assert np.allclose(m.ssim(a, a, data_range=10.0), 1.0)
    assert m.ssim(a, a[..., ::-1], data_range=10.0).shape == (2, 3)
    assert m.ssim(a[0, 0], 0.5 * a[0, 0], data_range=10.0) < 1.0


def test_pooling_by_hand():
    values = np.arange(1.0, 26.0).reshape(5, 5)
    values[0, 0] = np.nan
    da = xr.DataArray(values, dims=("y", "x"))
    avg = m.pool(da, 2, spatial_dims=("y", "x"), how="avg")
    mx = m.pool(da, 2, spatial_dims=("y", "x"), how="max")
    assert avg.shape == (2, 2)  # the 5th row and column do not fill a block
    assert np.isnan(avg[0, 0]) and np.isnan(mx[0, 0])  # a block with a missing cell
    assert float(avg[0, 1]) == (3 + 4 + 8 + 9) / 4
    assert float(mx[1, 1]) == 19
    assert m.pool(da, 1, spatial_dims=("y", "x")) is da


def test_rapsd_equals_pysteps():
    from pysteps.utils.spectral import rapsd as pysteps_rapsd

    rng = np.random.default_rng(12)
    for n in (64, 65):
        field = rng.gamma(0.5, 2.0, (n, n))
        ref, freq = pysteps_rapsd(field, fft_method=np.fft, return_freq=True, d=2.0)
        ours = m.rapsd(field, spacing=(2.0, 2.0))
        np.testing.assert_allclose(ours, ref, rtol=1e-10)
        np.testing.assert_allclose(m.rapsd_wavenumbers((n, n), (2.0, 2.0)), freq, rtol=1e-12)


def test_rapsd_total_power_and_missing():
    rng = np.random.default_rng(13)
    field = rng.normal(size=(3, 32, 32))
    out = m.rapsd(field)
    assert out.shape == (3, 16)
    # the k = 0 bin is the squared mean times the number of cells
    np.testing.assert_allclose(out[:, 0], field.mean(axis=(1, 2)) ** 2 * 32 * 32)
    field[1, 4, 4] = np.nan
    assert np.isnan(m.rapsd(field)[1]).all() and np.isfinite(m.rapsd(field)[0]).all()


def test_registry_metadata_and_unknown_names():
    info = m.metric_info("CSI")
    assert (info.better, info.perfect, info.needs_threshold) == ("higher", 1.0, True)
    assert m.metric_info("crps").result_units("mm h-1") == "mm h-1"
    assert m.metric_info("crps").probabilistic
    assert m.metric_info("mse").result_units("mm/h") == "mm2 h-2"
    assert m.metric_info("far").better == "lower"
    assert m.metric_info("fbias").better == "closer"
    with pytest.raises(m.MetricError, match="Valid metrics: csi, hss") as err:
        m.metric_info("csii")
    assert isinstance(err.value, ValueError)
    with pytest.raises(m.MetricError, match="power_spectrum"):
        m.metric_info("psd")


def test_array_scores_are_lazy_and_equal_eager():
    rng = np.random.default_rng(14)
    fc = xr.DataArray(rng.gamma(0.5, 2.0, (4, 3, 24, 20)), dims=("t", "member", "y", "x"))
    obs = xr.DataArray(rng.gamma(0.5, 2.0, (4, 24, 20)), dims=("t", "y", "x"))
    obs[1, :4] = np.nan
    fcd = fc.chunk({"t": 1, "y": 12, "x": 10})
    obsd = obs.chunk({"t": 2, "y": 12, "x": 10})
    calls = {
        "csi": lambda f, o: m.csi(f, o, 1.0, ("member", "y", "x")),
        "crps": lambda f, o: m.crps(f, o, ("y", "x")),
        "fss": lambda f, o: m.fss(f, o, 1.0, 3, dim="member"),
        "pool": lambda f, o: m.pool(f, 4, spatial_dims=("y", "x"), how="max"),
    }
    for name, call in calls.items():
        with dask.config.set(scheduler=_raise_if_computed):
            lazy = call(fcd, obsd)
        assert lazy.chunks is not None, name
        xr.testing.assert_allclose(lazy.compute(scheduler="sync"), call(fc, obs))


def test_categorical_dim_none_pools_every_dim() -> None:
    rng = np.random.default_rng(3)
    f = xr.DataArray(rng.gamma(1, 2, (3, 5)), dims=("y", "x"))
    o = xr.DataArray(rng.gamma(1, 2, (3, 5)), dims=("y", "x"))
    fb, ob = f.values >= 1, o.values >= 1
    hits = np.sum(fb & ob)
    expected = hits / (hits + np.sum(fb & ~ob) + np.sum(~fb & ob))
    assert float(m.csi(f, o, 1.0)) == pytest.approx(expected)
    assert float(m.csi(f, o, 1.0, dim=None)) == float(m.csi(f, o, 1.0, dim=["y", "x"]))

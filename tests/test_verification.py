"""`verify`: alignment by valid time, units, missing data, laziness, and a real event."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
import xarray as xr

import xnowcast
from xnowcast.errors import CoordinateError, TimeAxisError
from xnowcast.metrics import MetricError, metric_info
from xnowcast.testing import moving_storm
from xnowcast.units import convert_dataarray, ureg
from xnowcast.verification import align_observations, power_spectrum, verify

STEP = np.timedelta64(5, "m")


def persistence(obs: xr.DataArray, init_index, steps: int, members: int = 0) -> xr.DataArray:
    """The last observed frame held for ``steps`` lead times, in the forecast format."""
    lead = (np.arange(1, steps + 1) * STEP).astype("timedelta64[ns]")
    fields = obs.isel(time=list(init_index)).rename(time="init_time")
    fc = fields.expand_dims(lead_time=lead).transpose("init_time", "lead_time", ...)
    if members:
        fc = fc.expand_dims(member=np.arange(members), axis=2)
    fc = fc.assign_coords(valid_time=fc.init_time + fc.lead_time)
    fc.attrs = dict(obs.attrs)
    return fc


@pytest.fixture(scope="module")
def storm() -> xr.DataArray:
    return moving_storm(frames=14, shape=(40, 36), velocity=(1.0, 2.0), seed=3)


def _raise_if_computed(*args, **kwargs):
    raise AssertionError("a dask graph was computed before .compute()")


def test_verify_aligns_valid_times_and_returns_tidy_scores(storm):
    fc = persistence(storm, [2, 6], steps=4)
    scores = verify(fc, storm, metrics=["csi", "fss", "crps", "rmse"], fss_window=(1, 3))
    assert scores.csi.dims == ("lead_time", "threshold", "scale")
    assert scores.fss.dims == ("lead_time", "threshold", "window")
    assert scores.crps.dims == ("lead_time", "scale")
    assert scores.sizes == {"lead_time": 4, "threshold": 3, "scale": 1, "window": 2}
    assert list(scores.threshold_label.values) == ["1 mm/h", "4 mm/h", "8 mm/h"]
    # the score at lead 10 min is the score of the fields 2 frames ahead of each init
    obs_at = storm.isel(time=[4, 8]).rename(time="init_time")
    hand = verify(
        fc.isel(lead_time=[1]),
        storm,
        metrics=["csi"],
    ).csi.isel(lead_time=0, scale=0)
    fc_np = fc.isel(lead_time=1).values >= 4
    ob_np = obs_at.values >= 4
    a = np.sum(fc_np & ob_np)
    b = np.sum(fc_np & ~ob_np)
    c = np.sum(~fc_np & ob_np)
    assert float(hand.sel(threshold=4)) == pytest.approx(a / (a + b + c))
    assert float(scores.csi.sel(threshold=4, scale=1).isel(lead_time=1)) == pytest.approx(
        a / (a + b + c)
    )
    info = metric_info("csi")
    assert scores.csi.attrs["long_name"] == info.long_name
    assert scores.csi.attrs["better"] == "higher"
    assert scores.crps.attrs["units"] == storm.attrs["units"]
    assert scores.threshold.attrs["units"] == storm.attrs["units"]


def test_a_single_forecast_with_a_scalar_init_time(storm):
    single = persistence(storm, [4], steps=3).isel(init_time=0)
    assert single.init_time.ndim == 0 and single.valid_time.dims == ("lead_time",)
    scores = verify(single, storm, metrics=["csi", "mae"], thresholds=[2])
    assert scores.csi.dims == ("lead_time", "threshold", "scale")
    hindcast = verify(
        persistence(storm, [4], steps=3), storm, metrics=["csi", "mae"], thresholds=[2]
    )
    xr.testing.assert_allclose(scores.reset_coords(drop=True), hindcast.reset_coords(drop=True))
    per_init = verify(persistence(storm, [2, 4], steps=3), storm, ["mae"], dim=["y", "x"])
    assert per_init.mae.dims == ("init_time", "lead_time", "scale")


def test_persistence_of_a_moving_storm_loses_skill(storm):
    scores = verify(persistence(storm, [2, 5], steps=6), storm, metrics=["csi", "fss", "crps"])
    csi = scores.csi.sel(threshold=1, scale=1).values
    assert np.all(np.diff(csi) < 0)
    assert np.all(np.diff(scores.crps.sel(scale=1).values) > 0)


def test_missing_valid_times_give_nan_and_no_overlap_is_an_error(storm):
    fc = persistence(storm, [8], steps=6)  # valid times run past the last observation
    part = storm.isel(time=slice(0, 12))
    scores = verify(fc, part, metrics=["csi", "mae"])
    observed = fc.valid_time.values.ravel() <= part.time.values[-1]
    assert np.isfinite(scores.mae.isel(scale=0).values[observed]).all()
    assert np.isnan(scores.mae.isel(scale=0).values[~observed]).all()
    with pytest.raises(TimeAxisError, match="No valid time"):
        verify(fc, storm.isel(time=slice(0, 5)))


def test_missing_observations_are_excluded_not_counted_as_no_rain(storm):
    fc = persistence(storm, [3], steps=3)
    obs_at = align_observations(fc, storm)
    # hide the observations exactly where the forecast has rain the radar did not see
    false_alarm = (fc >= 1) & (obs_at < 1)
    gappy = storm.copy()
    gappy.loc[{"time": fc.valid_time.values.ravel()}] = obs_at.where(~false_alarm).values[0]
    scores = verify(fc, gappy, metrics=["csi"], thresholds=[1]).csi.sel(threshold=1, scale=1)
    as_no_rain = verify(fc, gappy.fillna(0.0), metrics=["csi"], thresholds=[1]).csi
    f = fc.values[0] >= 1
    o = obs_at.values[0] >= 1
    keep = ~false_alarm.values[0]
    a = np.sum(f & o & keep, axis=(1, 2))
    c = np.sum(~f & o & keep, axis=(1, 2))
    b = np.sum(f & ~o & keep, axis=(1, 2))
    assert np.all(b == 0)
    np.testing.assert_allclose(scores.values, a / (a + b + c))
    assert np.all(scores.values > as_no_rain.sel(threshold=1, scale=1).values + 0.01)


def test_missing_forecast_pixels_are_excluded(storm):
    fc = persistence(storm, [3], steps=3)
    holed = fc.where(fc.x > fc.x[10])
    obs_cut = storm.where(storm.x > storm.x[10])
    a = verify(holed, storm, metrics=["csi", "mae", "fss"])
    b = verify(fc, obs_cut, metrics=["csi", "mae", "fss"])
    xr.testing.assert_allclose(a, b)


def test_dbz_forecast_at_a_rain_rate_threshold(storm):
    fc = persistence(storm, [2, 4], steps=4)
    fc_dbz = convert_dataarray(fc, "dBZ")
    metrics = ["csi", "hss", "fss", "pod"]
    in_dbz = verify(fc_dbz, storm, metrics=metrics, thresholds=["1 mm/h", ureg.Quantity(4, "mm/h")])
    in_mmh = verify(fc, storm, metrics=metrics, thresholds=[1, 4])
    assert in_dbz.threshold.attrs["units"] == "dBZ"
    np.testing.assert_allclose(in_dbz.threshold, [23.0103, 32.6433], atol=1e-4)
    for name in metrics:
        np.testing.assert_allclose(in_dbz[name].values, in_mmh[name].values, rtol=1e-12)
    # observations in another unit are converted to the forecast's
    obs_per_5min = convert_dataarray(storm, "mm", time_step=STEP)
    xr.testing.assert_allclose(
        verify(fc, obs_per_5min, metrics=["csi", "mae"])[["csi", "mae"]],
        verify(fc, storm, metrics=["csi", "mae"])[["csi", "mae"]],
    )


def test_verify_is_lazy_on_chunked_input_and_equals_eager(storm):
    fc = persistence(storm, [2, 5, 7], steps=4, members=3)
    fc = fc + xr.DataArray([0.0, 0.4, -0.3], dims="member")
    fc.attrs = dict(storm.attrs)
    metrics = ["csi", "hss", "pod", "far", "fbias", "ets", "crps", "crps_fair"]
    metrics += ["mse", "mae", "rmse", "bias", "fss", "ssim"]
    storm_d = storm.where(storm.y > storm.y[3]).chunk({"time": 3, "y": 20, "x": 18})
    fc_d = fc.chunk({"init_time": 1, "y": 20, "x": 18})
    with dask.config.set(scheduler=_raise_if_computed):
        lazy = verify(fc_d, storm_d.to_dataset(), metrics=metrics, scales=(1, 4), fss_window=(1, 5))
        assert all(v.chunks is not None for v in lazy.data_vars.values())
    eager = verify(fc, storm.where(storm.y > storm.y[3]), metrics, scales=(1, 4), fss_window=(1, 5))
    xr.testing.assert_allclose(lazy.compute(scheduler="sync"), eager)


def test_crps_of_a_deterministic_forecast_is_its_mae(storm):
    scores = verify(persistence(storm, [2, 6], steps=4), storm, metrics=["crps", "mae"])
    xr.testing.assert_allclose(scores.crps.drop_attrs(), scores.mae.drop_attrs())


def test_identical_members_score_like_the_deterministic_forecast(storm):
    det = persistence(storm, [2], steps=3)
    ens = persistence(storm, [2], steps=3, members=2)
    names = ["csi", "fss", "rmse", "crps", "crps_fair"]
    xr.testing.assert_allclose(verify(ens, storm, names), verify(det, storm, names))


def test_scales_and_windows_in_km(storm):
    fc = persistence(storm, [2], steps=2)
    in_km = verify(fc, storm, ["csi", "fss"], scales=("4 km",), fss_window="3 km")
    in_cells = verify(fc, storm, ["csi", "fss"], scales=(4,), fss_window=3)
    xr.testing.assert_identical(in_km.drop_attrs(), in_cells.drop_attrs())
    with pytest.raises(MetricError, match="whole number"):
        verify(fc, storm, ["csi"], scales=("2.5 km",))
    max_pooled = verify(fc, storm, ["csi"], scales=(1, 4), pooling="max")
    assert max_pooled.csi.attrs["pooling"] == "max"
    assert not np.allclose(max_pooled.csi.sel(scale=4), in_cells.csi.sel(scale=4))


def test_bad_requests_have_clear_errors(storm):
    fc = persistence(storm, [2], steps=2)
    with pytest.raises(MetricError, match="Valid metrics: csi"):
        verify(fc, storm, metrics=["csi", "accuracy"])
    with pytest.raises(CoordinateError, match="spatial dims"):
        verify(fc, storm, metrics=["fss"], dim=["init_time"])
    with pytest.raises(CoordinateError, match="valid_time"):
        verify(fc.drop_vars(["valid_time", "init_time"]), storm)
    shifted = storm.assign_coords(x=storm.x + 500.0)
    with pytest.raises(CoordinateError, match="do not contain the forecast grid"):
        verify(fc, shifted)


def test_observations_on_a_larger_grid_are_cut_to_the_forecast(storm):
    fc = persistence(storm, [2], steps=3).isel(y=slice(5, 30), x=slice(4, 30))
    whole = verify(fc, storm, metrics=["csi", "mae"])
    cut = verify(fc, storm.isel(y=slice(5, 30), x=slice(4, 30)), metrics=["csi", "mae"])
    xr.testing.assert_allclose(whole, cut)


def test_power_spectrum_of_fields(storm):
    spectra = power_spectrum(storm.isel(time=slice(0, 3)))
    assert spectra.dims == ("time", "wavenumber")
    assert spectra.wavelength.attrs["units"] == "km"
    assert spectra.attrs["units"] == "mm2 h-2"
    # 36 x 40 grid of 1 km: bins of 1/40 km-1
    assert float(spectra.wavenumber[1]) == pytest.approx(1 / 40)
    lazy = power_spectrum(storm.isel(time=slice(0, 3)).chunk({"time": 1, "y": 20}))
    xr.testing.assert_allclose(lazy.compute(), spectra)


# --------------------------------------------------------------------- a real event


@pytest.fixture(scope="module")
def rmi(shared_data):
    from xnowcast.io import open_radar

    return open_radar(str(shared_data / "radar" / "rmi" / "radqpe" / "20210704" / "*.hdf"))


@pytest.fixture(scope="module")
def rmi_persistence_scores(rmi):
    fc = persistence(rmi.precipitation, [6, 18], steps=6)
    return fc, verify(fc, rmi)


def test_persistence_on_a_real_event(rmi_persistence_scores):
    _, scores = rmi_persistence_scores
    assert set(scores.data_vars) == {"csi", "hss", "fss", "crps"}
    assert scores.csi.sizes == {"lead_time": 6, "threshold": 3, "scale": 1}
    assert scores.fss.sizes == {"lead_time": 6, "threshold": 3, "window": 1}
    for name in scores.data_vars:
        assert np.isfinite(scores[name].values).all(), name
    csi = scores.csi.isel(scale=0)
    assert np.all(csi.diff("lead_time") < 0)  # skill falls with lead time at every threshold
    assert np.all(csi.diff("threshold") < 0)  # and with intensity
    assert np.all(scores.crps.isel(scale=0).diff("lead_time") > 0)
    assert 0.45 < float(csi.sel(threshold=1).isel(lead_time=0)) < 0.7


def test_real_event_csi_equals_pysteps_on_the_known_pairs(rmi_persistence_scores, rmi):
    from pysteps.verification.detcatscores import det_cat_fct

    fc, scores = rmi_persistence_scores
    obs = align_observations(fc, rmi).values
    pred = fc.values
    known = np.isfinite(obs) & np.isfinite(pred)
    for i in (0, 5):
        p, o = pred[:, i][known[:, i]], obs[:, i][known[:, i]]
        for thr in (1.0, 8.0):
            # pysteps counts values > thr: the threshold just below gives ">= thr"
            ref = det_cat_fct(p, o, np.nextafter(np.float32(thr), -np.inf), ["CSI", "HSS"])
            got = scores.sel(threshold=thr).isel(lead_time=i, scale=0, window=0)
            assert float(got.csi) == pytest.approx(ref["CSI"], rel=1e-9)
            assert float(got.hss) == pytest.approx(ref["HSS"], rel=1e-9)


# ------------------------------------------- one pass per field: equal to the references


@pytest.fixture(scope="module")
def rmi_ensemble(rmi):
    """A 2-member real forecast (persistence, and persistence moved by 3 cells) of 2 inits x 4
    leads on a 256 x 256 crop holding rain and missing cells."""
    obs = rmi.precipitation.isel(y=slice(150, 406), x=slice(150, 406))
    fc = persistence(obs, [6, 18], steps=4, members=2)
    moved = fc.isel(member=1).shift(x=3)
    fc = xr.concat([fc.isel(member=0), moved], "member").transpose(*fc.dims)
    fc.attrs = dict(obs.attrs)
    assert np.isnan(obs).any() and (obs >= 8).any()
    return fc, obs


def test_crps_and_fair_crps_equal_the_scores_package_on_real_data(rmi_ensemble):
    from scores.probability import crps_for_ensemble

    fc, obs = rmi_ensemble
    scores = verify(fc, obs, ["crps", "crps_fair"], scales=[1, 4])
    pair_ok = fc.notnull().all("member") & align_observations(fc, obs).notnull()
    for scale in (1, 4):
        f = fc.where(pair_ok).coarsen(y=scale, x=scale).reduce(np.mean)  # NaN propagates
        o = align_observations(fc, obs).where(pair_ok).coarsen(y=scale, x=scale).reduce(np.mean)
        known = f.notnull().all("member") & o.notnull()
        f = f.where(known, 0.0).stack(p=("init_time", "y", "x"))
        o = o.where(known, 0.0).stack(p=("init_time", "y", "x"))
        w = known.stack(p=("init_time", "y", "x"))
        for name, method in (("crps", "ecdf"), ("crps_fair", "fair")):
            point = crps_for_ensemble(f, o, "member", method=method, preserve_dims="all")
            ref = (point * w).sum("p") / w.sum("p")
            got = scores[name].sel(scale=scale)
            np.testing.assert_allclose(got, ref.transpose(*got.dims), rtol=1e-7, err_msg=name)
    # two members: the fair estimator credits their spread twice as much
    assert (scores.crps_fair < scores.crps).all()
    assert scores.crps_fair.attrs["units"] == scores.crps.attrs["units"]


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_one_pass_scores_equal_xskillscore_and_numpy_on_real_data(rmi_ensemble, pooling):
    import xskillscore as xs

    fc, obs = rmi_ensemble
    names = ["csi", "hss", "pod", "far", "fbias", "ets", "mae", "mse", "rmse", "bias"]
    scores = verify(fc, obs, names, thresholds=[0.5, 4, 8], scales=[1, 4], pooling=pooling)
    block = np.mean if pooling == "avg" else np.max
    pair_ok = fc.notnull().all("member") & align_observations(fc, obs).notnull()
    methods = {"csi": "threat_score", "hss": "heidke_score", "pod": "hit_rate"}
    methods |= {"far": "false_alarm_ratio", "fbias": "bias_score", "ets": "equit_threat_score"}
    dims = ["init_time", "member", "y", "x"]
    for scale in (1, 4):
        f = fc.where(pair_ok).coarsen(y=scale, x=scale).reduce(block)  # NaN propagates
        o = align_observations(fc, obs).where(pair_ok).coarsen(y=scale, x=scale).reduce(block)
        f, o = xr.broadcast(f, o)
        for thr in (0.5, 4.0, 8.0):
            edges = np.array([-np.inf, thr, np.inf])
            table = xs.Contingency(o, f, edges, edges, dim=dims)
            for name, method in methods.items():
                got = scores[name].sel(threshold=thr, scale=scale)
                ref = getattr(table, method)()
                np.testing.assert_allclose(got, ref, rtol=1e-12, err_msg=f"{name} {thr} {scale}")
        error = (f.astype(np.float64) - o).values
        known = np.isfinite(error)
        axes = (0, 2, 3, 4)
        count = known.sum(axis=axes)
        mean = np.where(known, error, 0).sum(axis=axes) / count
        mse = np.where(known, error**2, 0).sum(axis=axes) / count
        mae = np.where(known, np.abs(error), 0).sum(axis=axes) / count
        np.testing.assert_allclose(scores.bias.sel(scale=scale), mean, rtol=1e-12)
        np.testing.assert_allclose(scores.mse.sel(scale=scale), mse, rtol=1e-12)
        np.testing.assert_allclose(scores.mae.sel(scale=scale), mae, rtol=1e-12)
        np.testing.assert_allclose(scores.rmse.sel(scale=scale), np.sqrt(mse), rtol=1e-12)


@pytest.mark.parametrize("window", [1, 5, 12])
def test_one_pass_fss_equals_scores_fss_2d_on_real_data(rmi_ensemble, window):
    from scores.spatial import fss_2d

    fc, obs = rmi_ensemble
    fc = fc.isel(member=0, y=slice(60, 256))  # scores' fss_2d knows no missing cells
    assert fc.notnull().all()
    got = verify(fc, obs, ["fss"], thresholds=[0.5, 8], fss_window=window).fss
    aligned = align_observations(fc, obs)
    for thr in (0.5, 8.0):
        ref = fss_2d(
            fc, aligned, event_threshold=thr, window_size=(window, window),
            spatial_dims=("y", "x"), threshold_operator=np.greater_equal,
            preserve_dims=["lead_time"],
        )  # fmt: skip
        np.testing.assert_allclose(got.sel(threshold=thr, window=window), ref, rtol=1e-12)


def test_one_pass_fss_with_missing_cells_and_zero_padding_equals_the_array_scores(rmi_ensemble):
    from xnowcast import metrics as m

    fc, obs = rmi_ensemble
    aligned = align_observations(fc, obs)
    known = fc.notnull().all("member") & aligned.notnull()
    for padding in ("valid", "zeros"):
        got = verify(fc, obs, ["fss"], thresholds=[4], fss_window=[3, 7], fss_padding=padding)
        for window in (3, 7):
            ref = m.fss(
                fc.where(known), aligned.where(known), 4.0, window,
                dim=["init_time", "member"], padding=padding,
            )  # fmt: skip
            np.testing.assert_allclose(got.fss.sel(threshold=4, window=window), ref, rtol=1e-12)


def test_lazy_scores_leak_no_warnings_and_undefined_scores_are_nan(rmi_ensemble):
    fc, obs = rmi_ensemble
    lazy_fc = fc.chunk({"init_time": 1, "y": 128})
    lazy_obs = obs.chunk({"time": 3})
    names = ["csi", "hss", "pod", "far", "fbias", "ets", "fss", "mae", "crps"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lazy = verify(lazy_fc, lazy_obs, names, thresholds=[1, 1000]).compute()
    eager = verify(fc, obs, names, thresholds=[1, 1000])
    xr.testing.assert_allclose(lazy, eager, rtol=1e-12)
    # no event at 1000 mm/h anywhere: the scores are undefined (NaN), not 0 and not a warning
    for name in ("csi", "pod", "far", "fss"):
        assert np.isnan(lazy[name].sel(threshold=1000)).all(), name
    assert np.isfinite(lazy.csi.sel(threshold=1)).all()


# ------------------------------------- reflectivity, km lengths, common pixels, provenance


def test_errors_and_crps_of_reflectivity_are_computed_in_rain_rate(storm):
    fc = persistence(storm, [2, 5], steps=3, members=2)
    fc = fc * xr.DataArray([1.0, 1.3], dims="member")
    fc.attrs = dict(storm.attrs)
    assert (fc == 0).any()  # no rain: -inf dBZ
    names = ["mae", "mse", "rmse", "bias", "crps", "csi"]
    in_dbz = verify(convert_dataarray(fc, "dBZ"), convert_dataarray(storm, "dBZ"), names,
                    thresholds=["1 mm/h"])  # fmt: skip
    in_rate = verify(fc, storm, names, thresholds=[1])
    for name in ["mae", "mse", "rmse", "bias", "crps"]:
        assert np.isfinite(in_dbz[name]).all(), name
        np.testing.assert_allclose(in_dbz[name], in_rate[name], rtol=1e-5, err_msg=name)
        assert in_dbz[name].attrs["units"] == metric_info(name).result_units("mm h-1"), name
        assert "rain rate" in in_dbz[name].attrs["comment"]
    np.testing.assert_allclose(in_dbz.csi, in_rate.csi, rtol=1e-12)


def test_lengths_within_a_tenth_of_a_percent_of_whole_kilometres(storm):
    fmi_like = storm.assign_coords(x=storm.x * 0.999674, y=storm.y * 0.999674)
    fc = persistence(fmi_like, [2], steps=2)
    in_km = verify(fc, fmi_like, ["csi", "fss"], scales=["4 km"], fss_window="9 km")
    in_cells = verify(fc, fmi_like, ["csi", "fss"], scales=[4], fss_window=9)
    xr.testing.assert_identical(in_km.drop_attrs(), in_cells.drop_attrs())
    with pytest.raises(MetricError, match="whole number of cells"):
        verify(fc, fmi_like, ["fss"], fss_window="9.5 km")


def test_several_forecasts_are_scored_on_the_same_pixels(storm):
    fc = persistence(storm, [2, 5], steps=3)
    holed_a = fc.where(fc.x > fc.x[8])  # system a misses the west
    holed_b = (fc * 1.1).where(fc.y > fc.y[10])  # system b misses the south
    holed_b.attrs = dict(fc.attrs)
    names = ["csi", "mae", "fss", "crps"]
    both = verify({"a": holed_a, "b": holed_b}, storm, names)
    assert set(both) == {"a", "b"}
    common = holed_a.notnull() & holed_b.notnull()
    xr.testing.assert_allclose(both["a"], verify(holed_a.where(common), storm, names))
    xr.testing.assert_allclose(both["b"], verify(holed_b.where(common), storm, names))
    assert "a, b" in both["a"].attrs["common_mask"]
    apart = verify({"a": holed_a, "b": holed_b}, storm, names, common_mask=False)
    xr.testing.assert_allclose(apart["a"], verify(holed_a, storm, names))
    assert not np.allclose(apart["a"].mae, both["a"].mae)


def test_scores_record_the_forecast_model_and_weights():
    import xnowcast

    obs = xnowcast.open_dataset("sample").precipitation.isel(y=slice(0, 64), x=slice(0, 64))
    fc = obs.nowcast.predict(model="persistence", steps=2, init_time=obs.time[4], progress=False)
    scores = verify(fc, obs, ["mae"])
    assert scores.attrs["forecast_model"] == "persistence"
    assert scores.attrs["forecast_weights"] == fc.attrs["xnowcast_weights"]


def test_public_verify_scores_several_systems_on_common_pixels() -> None:
    """``xnowcast.verify({...}, obs)``: one score Dataset per system, CF-finished, same pixels."""
    obs = xnowcast.open_dataset("sample")["precipitation"].isel(x=slice(0, 64), y=slice(0, 64))
    kwargs = {"steps": 3, "init_time": obs.time[5], "progress": False}
    systems = {
        "persistence": obs.nowcast.predict(model="persistence", **kwargs),
        "extrapolation": obs.nowcast.predict(model="extrapolation", **kwargs),
    }
    scores = xnowcast.verify(systems, obs, metrics=["csi", "mae"], thresholds=[1])
    assert set(scores) == set(systems)
    for name, result in scores.items():
        assert result.attrs["forecast_model"] == name
        assert result.attrs["Conventions"].startswith("CF-")
    assert "persistence" in scores["extrapolation"].attrs["common_mask"]

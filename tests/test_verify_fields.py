"""``verify`` of fields with a time axis (a downscaled series) against fine observations."""

from __future__ import annotations

import numpy as np
import pytest

import xnowcast
from xnowcast.testing import moving_storm

EVERY = ["time", "y", "x"]


def _offset_field(obs, offset: float):
    """Frames 2..6 of the observations, on a smaller grid inside theirs, plus ``offset``."""
    part = obs.isel(time=slice(2, 7), y=slice(4, 36), x=slice(6, 38))
    out = part + offset
    out.attrs = dict(obs.attrs)
    return out


def test_a_field_is_matched_to_the_observations_by_time_and_grid() -> None:
    """Known answer: the field is the observations plus 1 mm/h, on a sub-grid and sub-period."""
    obs = moving_storm(frames=10, shape=(40, 44))
    field = _offset_field(obs, 1.0)
    scores = xnowcast.verify(field, obs, metrics=["mse", "mae", "bias"], dim=EVERY)
    for name in ("mse", "mae", "bias"):
        assert float(scores[name].sel(scale=1)) == pytest.approx(1.0, rel=1e-6), name
    per_frame = xnowcast.verify(field, obs, metrics="mae")
    assert per_frame["mae"].dims == ("scale", "time")
    np.testing.assert_array_equal(per_frame.time.values, field.time.values)
    np.testing.assert_allclose(per_frame["mae"].values, 1.0, rtol=1e-6)


def test_a_perfect_field_scores_perfectly_and_lazily_the_same() -> None:
    obs = moving_storm(frames=10, shape=(40, 44))
    field = _offset_field(obs, 0.0)
    metrics = ["csi", "fss", "ssim", "mse"]
    eager = xnowcast.verify(field, obs, metrics=metrics, thresholds=[1.0], dim=EVERY)
    assert float(eager["csi"].squeeze()) == 1.0 and float(eager["fss"].squeeze()) == 1.0
    assert float(eager["ssim"]) == pytest.approx(1.0)
    assert float(eager["mse"].squeeze()) == 0.0
    lazy = xnowcast.verify(
        field.chunk({"time": 2}),
        obs.chunk({"time": 3}),
        metrics=metrics,
        thresholds=[1.0],
        dim=EVERY,
    )
    assert lazy["mse"].chunks is not None
    np.testing.assert_allclose(lazy.compute()["ssim"].values, eager["ssim"].values)


def test_a_field_outside_the_observed_times_is_refused() -> None:
    obs = moving_storm(frames=10, shape=(40, 44))
    later = _offset_field(obs, 0.0).assign_coords(time=lambda d: d.time + np.timedelta64(1, "D"))
    with pytest.raises(xnowcast.TimeAxisError, match="No valid time"):
        xnowcast.verify(later, obs, metrics="mse")


def test_a_downscaled_sample_scored_by_verify_as_by_hand() -> None:
    """The demo's case on the real sample: verify's pooled MSE equals the hand-written one,
    and the scores name the downscaler."""
    obs = xnowcast.open_dataset("sample")["precipitation"].isel(y=slice(0, 96), x=slice(0, 96))
    coarse = obs.coarsen(y=2, x=2).mean().isel(time=slice(None, 9, 2))
    coarse.attrs = obs.attrs
    fine = coarse.downscale(factor=2, time_factor=2, model="trilinear", progress=False)
    truth = obs.isel(time=slice(0, fine.sizes["time"])).values.astype(np.float64)
    by_hand = np.nanmean((fine.values.astype(np.float64) - truth) ** 2)
    scores = xnowcast.verify(fine, obs, metrics="mse", dim=EVERY)
    assert float(scores["mse"].sel(scale=1)) == pytest.approx(by_hand, rel=1e-9)
    assert scores.attrs["forecast_model"] == "trilinear"

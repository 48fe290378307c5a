"""The self-supervised radar encoder and its learned distance, ``verify(metrics=["atmodist"])``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from xnowcast.metrics import metric_info
from xnowcast.models.atmodist import ATMODIST_WEIGHTS, build_lag_classifier, load_encoder
from xnowcast.testing import moving_storm
from xnowcast.training.atmodist import patch_bank, sample_lag_pairs, train_steps
from xnowcast.verification import verify
from xnowcast.weights import PACKAGE_WEIGHTS_DIR, read_metadata

STEP = np.timedelta64(5, "m")


def persistence(obs: xr.DataArray, init_index: list[int], steps: int) -> xr.DataArray:
    """The frame at each init time held for ``steps`` lead times, in the forecast format."""
    lead = (np.arange(1, steps + 1) * STEP).astype("timedelta64[ns]")
    fields = obs.isel(time=init_index).rename(time="init_time")
    fc = fields.expand_dims(lead_time=lead).transpose("init_time", "lead_time", ...)
    fc = fc.assign_coords(valid_time=fc.init_time + fc.lead_time)
    fc.attrs = dict(obs.attrs)
    return fc


def as_forecast(obs: xr.DataArray, init: int, steps: int) -> xr.DataArray:
    """The observed frames themselves in the forecast format (a perfect forecast)."""
    lead = (np.arange(1, steps + 1) * STEP).astype("timedelta64[ns]")
    frames = obs.isel(time=slice(init + 1, init + 1 + steps)).rename(time="lead_time")
    fc = frames.assign_coords(lead_time=lead, init_time=obs.time[init].values)
    fc = fc.assign_coords(valid_time=fc.init_time + fc.lead_time)
    fc.attrs = dict(obs.attrs)
    return fc


@pytest.fixture(scope="module")
def rmi(shared_data) -> xr.DataArray:
    """Held-out RMI 2021-07-04 (never trained on), a 256 km square, 1 km, mm/h."""
    from xnowcast.io import open_radar

    ds = open_radar(str(shared_data / "radar" / "rmi" / "radqpe" / "20210704" / "*.hdf"))
    return ds.precipitation.isel(y=slice(250, 506), x=slice(250, 506)).load()


def test_shipped_encoder_records_its_training_and_held_out_skill() -> None:
    meta = read_metadata(PACKAGE_WEIGHTS_DIR / ATMODIST_WEIGHTS[0])
    training = meta["training"]
    assert "rmi-20210704" not in training["events"] and training["holdout"] == "rmi-20210704"
    assert training["steps"] > 0 and training["loss_curve"]
    accuracy = meta["scores"]["heldout_lag_accuracy"]
    # better than chance on the held-out event (8 lag classes)
    assert accuracy["accuracy"] > 1.5 * accuracy["chance"]
    assert load_encoder().distance_scale > 0


def test_identical_fields_are_at_distance_zero(rmi: xr.DataArray) -> None:
    fc = as_forecast(rmi, init=10, steps=3)
    scores = verify(fc, rmi, metrics=["atmodist", "mse"])
    np.testing.assert_array_equal(scores.atmodist.values, 0.0)
    assert scores.atmodist.attrs["perfect_score"] == 0.0
    assert scores.atmodist.attrs["units"] == "1"
    assert metric_info("atmodist").better == "lower"


def test_distance_grows_with_time_lag_on_held_out_radar(rmi: xr.DataArray) -> None:
    """Persistence drifts away from the radar: the learned distance grows with lead time."""
    fc = persistence(rmi, [6, 18], steps=6)
    distance = verify(fc, rmi, metrics=["atmodist"]).atmodist.values
    assert np.all(np.isfinite(distance)) and distance[0] > 0
    # monotone on average over the first lags (5..30 minutes), and clearly growing
    assert np.all(np.diff(distance) > 0), distance
    assert distance[-1] > 2 * distance[0]


def test_missing_cells_are_left_out_and_units_are_converted(rmi: xr.DataArray) -> None:
    fc = persistence(rmi, [10], steps=2)
    reference = verify(fc, rmi, metrics=["atmodist"]).atmodist
    holey = rmi.copy()
    holey[:, :40, :40] = np.nan
    scored = verify(fc, holey, metrics=["atmodist"]).atmodist
    assert np.all(np.isfinite(scored.values))
    assert not np.allclose(scored.values, reference.values)  # the hole is left out, not zero rain
    empty = rmi.copy()
    empty[:] = np.nan
    assert np.isnan(verify(fc, empty, metrics=["atmodist"]).atmodist.values).all()
    from xnowcast.units import convert_dataarray

    dbz_fc = convert_dataarray(fc.where(fc > 0.05, 0.05), "dBZ", time_step=STEP)
    dbz_obs = convert_dataarray(rmi.where(rmi > 0.05, 0.05), "dBZ", time_step=STEP)
    in_dbz = verify(dbz_fc, dbz_obs, metrics=["atmodist"]).atmodist
    in_rate = verify(fc.where(fc > 0.05, 0.05), rmi.where(rmi > 0.05, 0.05), ["atmodist"])
    np.testing.assert_allclose(in_dbz.values, in_rate.atmodist.values, rtol=1e-3)


def test_lag_pairs_and_a_training_step_on_a_synthetic_storm() -> None:
    storm = moving_storm(frames=14, shape=(48, 48), velocity=(1.0, 2.0), seed=3).values
    bank = torch.from_numpy(patch_bank(storm, 24, stride=24))
    assert bank.shape[1:] == (14, 24, 24) and bank.shape[0] >= 1
    net = build_lag_classifier("tiny")
    first, second, label = sample_lag_pairs([bank], net.lags, 6, torch.Generator().manual_seed(0))
    assert first.shape == second.shape == (6, 1, 24, 24)
    assert int(label.max()) < len(net.lags)
    before = [p.clone() for p in net.parameters()]
    losses = train_steps(net, torch.optim.Adam(net.parameters()), [bank], torch.Generator(), 2, 4)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    # the distance of any encoder: zero for identical fields, positive otherwise, any size
    a = torch.rand(2, 1, 30, 27) * 10
    assert torch.equal(net.encoder.distance(a, a), torch.zeros(2))
    assert bool((net.encoder.distance(a, a.flip(-1)) > 0).all())

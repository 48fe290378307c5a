"""Plots draw on the Agg backend: the right axes, lines, colours for missing data and no rain."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from xnowcast.plot import plot_forecast_panel, plot_psd, plot_scores
from xnowcast.testing import moving_storm
from xnowcast.units import convert_dataarray
from xnowcast.verification import power_spectrum, verify

STEP = np.timedelta64(5, "m")


@pytest.fixture(scope="module")
def storm() -> xr.DataArray:
    obs = moving_storm(frames=10, shape=(32, 30), seed=1)
    obs[4, :8, :6] = np.nan  # radar gap in the first valid frame
    return obs


@pytest.fixture(scope="module")
def forecast(storm) -> xr.DataArray:
    lead = (np.arange(1, 5) * STEP).astype("timedelta64[ns]")
    fc = storm.isel(time=[3, 5]).rename(time="init_time").expand_dims(lead_time=lead)
    fc = fc.transpose("init_time", "lead_time", ...)
    return fc.assign_coords(valid_time=fc.init_time + fc.lead_time)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_scores_several_models_and_thresholds(forecast, storm):
    scores = verify(forecast, storm, metrics=["csi", "fss"], thresholds=(1, 4))
    other = scores * 0.9
    ax = plot_scores({"persistence": scores, "damped": other}, "csi")
    assert len(ax.figure.axes) == 1
    assert len(ax.lines) == 4  # 2 models x 2 thresholds
    x, y = ax.lines[0].get_data()
    np.testing.assert_allclose(x, [5, 10, 15, 20])
    np.testing.assert_allclose(y, scores.csi.sel(threshold=1, scale=1).values)
    assert ax.get_xlabel() == "lead time [min]"
    assert ax.get_ylabel() == "critical success index"
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"persistence, ≥ 1 mm/h"}

    ax = plot_scores(scores, "fss", threshold="4 mm/h")
    assert len(ax.lines) == 1
    np.testing.assert_allclose(ax.lines[0].get_data()[1], scores.fss.sel(threshold=4).squeeze())
    with pytest.raises(KeyError, match="available"):
        plot_scores(scores, "csi", threshold=2)
    with pytest.raises(KeyError, match="have no 'hss'"):
        plot_scores(scores, "hss")


def test_plot_scores_on_given_axes(forecast, storm):
    scores = verify(forecast, storm, metrics=["crps"])
    _, (ax1, ax2) = plt.subplots(1, 2)
    assert plot_scores(scores, "crps", ax=ax2) is ax2
    assert len(ax2.lines) == 1 and not ax1.lines
    assert ax2.get_ylabel() == "continuous ranked probability score [mm/h]"


def test_forecast_panel_rows_columns_and_colours(forecast, storm):
    fig = plot_forecast_panel(forecast, storm, lead_times=(5, "15 min"))
    assert len(fig.axes) == 2 * 2 + 1  # forecast and observed rows, 2 lead times, colour bar
    maps = [ax for ax in fig.axes if ax.collections]
    assert [ax.get_title() for ax in maps[:2]] == ["+5 min", "+15 min"]
    observed = maps[2].collections[0]
    data = observed.get_array()
    assert data.mask.sum() == 8 * 6  # the radar gap is drawn in the "bad" colour
    assert observed.cmap.get_bad()[:3] == pytest.approx((0.75, 0.75, 0.75))
    assert observed.norm.vmin == 0.1 and type(observed.norm).__name__ == "LogNorm"
    assert fig.axes[-1].get_ylabel() == "precipitation rate [mm h-1]"
    # no rain is below vmin (white), not masked as missing
    rain = forecast.isel(init_time=0, lead_time=0).values
    assert np.all(data[~data.mask] > 0) and (rain == 0).sum() > 0


def test_forecast_panel_converts_dbz_and_picks_lead_times(forecast):
    fig = plot_forecast_panel(convert_dataarray(forecast, "dBZ"))
    assert len(fig.axes) == 4 + 1  # no observations: one row of the 4 lead times
    shown = fig.axes[0].collections[0].get_array()
    rain = forecast.isel(init_time=0, lead_time=0).values
    np.testing.assert_allclose(shown.max(), rain.max(), rtol=1e-5)  # drawn in mm/h
    with pytest.raises(KeyError, match="available"):
        plot_forecast_panel(forecast, lead_times=(7,))


def test_plot_psd_lines(forecast, storm):
    ax = plot_psd({"observed": storm.isel(time=slice(5, 9)), "persistence": forecast})
    assert len(ax.lines) == 2
    assert ax.xaxis_inverted()
    spectrum = power_spectrum(storm.isel(time=slice(5, 9))).mean("time")
    np.testing.assert_allclose(ax.lines[0].get_data()[1], spectrum.values[1:])
    assert ax.get_xlabel() == "wavelength [km]"


def test_plot_psd_refuses_to_draw_nothing(storm):
    gappy = storm.isel(time=slice(3, 6)).where(lambda d: d.x > d.x[0])
    with pytest.raises(ValueError, match="fill_value=0"):
        plot_psd({"gappy": gappy})
    ax = plot_psd({"gappy": gappy}, fill_value=0.0)
    assert np.isfinite(ax.lines[0].get_data()[1]).all()


def test_exceedance_map_is_the_fraction_of_members_with_the_observed_contour(forecast, storm):
    """Members scaled by 0, 0.5, 1 and 2: the map shows the fraction of members at or above
    the threshold, missing where any member is missing; dBZ thresholds are converted."""
    from xnowcast.errors import CoordinateError
    from xnowcast.plot import plot_exceedance

    members = xr.concat([forecast * f for f in (0.0, 0.5, 1.0, 2.0)], dim="member")
    members.attrs = forecast.attrs
    members[1, :, :, :4, :4] = np.nan  # one member misses a corner
    ax = plot_exceedance(members, "1 mm/h", 10, observations=storm)
    shown = ax.collections[0].get_array()
    lead = members.isel(init_time=0).sel(lead_time=np.timedelta64(10, "m"))
    expected = (lead >= 1.0).mean("member").transpose("y", "x").values
    gap = np.isnan(lead.isel(member=1).transpose("y", "x").values)
    assert gap.sum() == 16
    np.testing.assert_allclose(np.ma.filled(shown, np.nan).reshape(expected.shape)[~gap],
                               expected[~gap])  # fmt: skip
    assert np.ma.getmaskarray(shown).reshape(expected.shape)[gap].all()
    assert {0.0, 0.5, 0.75}.issubset(set(np.unique(expected[~gap])))
    assert len(ax.collections) > 1 and "+10 min, observed contour" in ax.get_title()
    in_dbz = convert_dataarray(members, "dBZ")
    again = plot_exceedance(in_dbz, "1 mm/h", 10).collections[0].get_array()
    np.testing.assert_allclose(np.ma.filled(again, -1), np.ma.filled(shown, -1), atol=1e-12)
    with pytest.raises(CoordinateError, match="members > 1"):
        plot_exceedance(forecast, "1 mm/h")

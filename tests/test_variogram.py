"""The empirical semivariogram: known answers, missing cells, bad input, ``verify`` and a plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

import xnowcast
from xnowcast.errors import MetricError
from xnowcast.metrics import semivariogram, semivariogram_ratio_terms, semivariogram_sums
from xnowcast.plot import plot_semivariogram
from xnowcast.testing import moving_storm
from xnowcast.units import convert_dataarray
from xnowcast.verification import semivariogram as field_semivariogram


def _brute_force(z: np.ndarray, lag: int) -> float:
    """gamma(lag) by looping over every pair along y and x with both ends known."""
    total, pairs = 0.0, 0
    ny, nx = z.shape
    for i in range(ny):
        for j in range(nx):
            for a, b in ((i + lag, j), (i, j + lag)):
                if a < ny and b < nx and np.isfinite(z[i, j]) and np.isfinite(z[a, b]):
                    total += (z[a, b] - z[i, j]) ** 2
                    pairs += 1
    return 0.5 * total / pairs


def test_white_noise_has_its_variance_at_every_lag():
    noise = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 160, 160))
    gamma = semivariogram(noise, [1, 2, 5, 20], transform=None)
    np.testing.assert_allclose(gamma, 4.0, rtol=0.03)


def test_a_ramp_grows_as_the_square_of_the_lag_along_its_axis():
    slope = 0.3
    ramp = slope * np.arange(30.0)[None, :] + np.zeros((30, 1))
    lags = [1, 2, 7]
    along = semivariogram(ramp, lags, transform=None, direction="x")
    np.testing.assert_allclose(along, slope**2 * np.square(lags) / 2)
    np.testing.assert_array_equal(semivariogram(ramp, lags, transform=None, direction="y"), 0.0)
    both = semivariogram(ramp, lags, transform=None)  # square field: as many pairs either way
    np.testing.assert_allclose(both, slope**2 * np.square(lags) / 4)


def test_missing_cells_are_left_out_of_every_pair():
    rng = np.random.default_rng(1)
    z = rng.gamma(0.5, 2.0, size=(17, 13))
    z[rng.random(z.shape) < 0.2] = np.nan
    gamma = semivariogram(z, [1, 3], transform=None)
    np.testing.assert_allclose(gamma, [_brute_force(z, 1), _brute_force(z, 3)])
    sums = semivariogram_sums(z, [1], transform=None)
    assert 0 < sums[0, 1] < 17 * 12 + 16 * 13  # fewer pairs than a full field has
    # the default transform is log(1 + R) of the same pairs
    np.testing.assert_allclose(semivariogram(z, [1, 3]), semivariogram(np.log1p(z), [1, 3], None))
    # the ratio's terms use only the pairs known in both fields
    other = 2 * np.nan_to_num(z) + 1  # known everywhere
    terms = semivariogram_ratio_terms(z, other, [1, 3])
    np.testing.assert_allclose(terms[..., 0], semivariogram_sums(z, [1, 3])[..., 0])
    masked = np.where(np.isfinite(z), other, np.nan)
    np.testing.assert_allclose(terms[..., 1], semivariogram_sums(masked, [1, 3])[..., 0])
    assert np.isnan(semivariogram(np.full((5, 5), np.nan), [1])).all()
    assert np.isnan(semivariogram(z, [40])).all()  # no pair that far apart


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"field": np.zeros(8), "lags": [1]}, "2-D fields"),
        ({"field": np.zeros((8, 8)), "lags": [0]}, "whole number of grid cells >= 1"),
        ({"field": np.zeros((8, 8)), "lags": [1.5]}, "whole number"),
        ({"field": np.zeros((8, 8)), "lags": ["2 km"]}, "lengths such as"),
        ({"field": np.zeros((8, 8)), "lags": []}, "No semivariogram lag"),
        ({"field": np.zeros((8, 8)), "lags": [1], "transform": "log"}, "Unknown .* transform"),
        ({"field": -np.ones((8, 8)), "lags": [1]}, "rain rates >= 0"),
        ({"field": np.zeros((8, 8)), "lags": [1], "direction": "diagonal"}, "direction"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, match):
    with pytest.raises(MetricError, match=match):
        semivariogram(**kwargs)


@pytest.fixture(scope="module")
def storm() -> xr.DataArray:
    """Rain cells with a small-scale texture (lognormal noise), as radar rain has."""
    smooth = moving_storm(frames=6, shape=(48, 48), seed=2)
    texture = np.random.default_rng(2).lognormal(0.0, 0.5, size=smooth.shape)
    return (smooth * texture).assign_attrs(smooth.attrs)


def _smoothed(obs: xr.DataArray) -> xr.DataArray:
    """A Gaussian blur (2 cells) of each frame: the texture gone, the cells kept."""
    from scipy.ndimage import gaussian_filter

    out = obs.copy(data=gaussian_filter(obs.values, sigma=(0, 2, 2)))
    out.attrs = dict(obs.attrs)
    return out


def test_field_semivariogram_has_lags_in_km_and_units(storm):
    gamma = field_semivariogram(storm, lags=["1 km", 4, "8 km"])
    assert gamma.dims == ("time", "lag")
    np.testing.assert_array_equal(gamma.lag, [1, 4, 8])
    np.testing.assert_allclose(gamma.lag_distance, [1.0, 4.0, 8.0])
    assert gamma.lag_distance.attrs["units"] == "km" and gamma.attrs["units"] == "1"
    np.testing.assert_allclose(gamma.values, semivariogram(storm.values, [1, 4, 8]))
    raw = field_semivariogram(storm, lags=[2], transform=None)
    assert raw.attrs["units"] == "mm2 h-2"
    dbz = convert_dataarray(storm, "dBZ")  # converted back to mm/h for log(1 + R)
    expected = field_semivariogram(storm, lags=[2])
    np.testing.assert_allclose(field_semivariogram(dbz, lags=[2]), expected, rtol=1e-4)
    with pytest.raises(MetricError, match="whole number of cells"):
        field_semivariogram(storm, lags="1.5 km")


def test_verify_reports_the_ratio_to_the_observations(storm):
    ones = xnowcast.verify(storm, storm, metrics="semivariogram_ratio", dim=["time", "y", "x"])
    ratio = ones["semivariogram_ratio"]
    assert ratio.dims == ("lag",) and ratio.attrs["perfect_score"] == 1.0
    np.testing.assert_allclose(ratio, 1.0)
    assert "log(1 + R)" in ratio.attrs["comment"]
    smooth = _smoothed(storm)
    scores = xnowcast.verify(smooth, storm, metrics=["semivariogram_ratio"], variogram_lags=[1, 8])
    per_frame = scores["semivariogram_ratio"]
    assert per_frame.dims == ("lag", "time")
    assert (per_frame.sel(lag=1) < 0.5).all()  # the blur removed the cell-to-cell texture
    assert (per_frame.sel(lag=8) > per_frame.sel(lag=1)).all()
    lazy = xnowcast.verify(
        smooth.chunk({"time": 2}), storm, metrics=["semivariogram_ratio"], variogram_lags=[1, 8]
    )
    xr.testing.assert_allclose(lazy.compute(), scores)
    in_dbz = xnowcast.verify(
        convert_dataarray(smooth, "dBZ"),
        storm,
        metrics=["semivariogram_ratio"],
        variogram_lags=[1, 8],
    )  # scored in rain rate, as the docs say
    np.testing.assert_allclose(in_dbz["semivariogram_ratio"], per_frame, rtol=1e-4)
    with pytest.raises(MetricError, match="semivariogram_ratio"):
        xnowcast.verify(smooth, storm, metrics=["semivariogram"])


def test_verify_leaves_out_missing_cells_of_either_field(storm):
    gappy = storm.copy()
    gappy[:, 10:20, 5:30] = np.nan
    scores = xnowcast.verify(gappy, storm, metrics="semivariogram_ratio", variogram_lags=[2])
    np.testing.assert_allclose(scores["semivariogram_ratio"], 1.0)
    smooth = _smoothed(storm).where(gappy.notnull())
    got = xnowcast.verify(smooth, storm, metrics="semivariogram_ratio", variogram_lags=[2])
    ours = semivariogram_sums(smooth.values, [2])[..., 0]
    theirs = semivariogram_sums(storm.where(gappy.notnull()).values, [2])[..., 0]
    np.testing.assert_allclose(got["semivariogram_ratio"].values, (ours / theirs).T)


def test_real_radar_variability_grows_with_lag_and_interpolation_loses_it(shared_data):
    from xnowcast.training.pairs import load_rain_rate

    paths = sorted((shared_data / "radar" / "rmi" / "radqpe" / "20210704").glob("*"))[10:13]
    radar = load_rain_rate([str(p) for p in paths]).isel(y=slice(200, 456), x=slice(200, 456))
    gamma = field_semivariogram(radar, lags=["1 km", "2 km", "4 km", "8 km", "16 km"])
    assert (gamma.diff("lag") > 0).all()  # rain fields decorrelate with distance
    coarse = radar.coarsen(y=4, x=4).mean()
    bilinear = coarse.interp(y=radar.y, x=radar.x, kwargs={"fill_value": None})
    scores = xnowcast.verify(
        bilinear.assign_attrs(radar.attrs),
        radar,
        metrics="semivariogram_ratio",
        dim=["time", "y", "x"],
    )
    ratio = scores["semivariogram_ratio"]
    assert float(ratio.sel(lag=1)) < 0.5 < float(ratio.sel(lag=16)) < 1.1


def test_plot_semivariogram_lines(storm):
    ax = plot_semivariogram({"radar": storm, "blurred": _smoothed(storm)})
    assert len(ax.lines) == 2 and ax.get_xlabel() == "lag [km]"
    x, _ = ax.lines[0].get_data()
    np.testing.assert_allclose(x, [1, 2, 4, 8, 16, 32])  # 64 cells does not fit a 48-cell field
    plt.close("all")
    with pytest.raises(ValueError, match="no pair of known cells"):
        plot_semivariogram(storm.where(storm.x < storm.x[0]))

"""The downscale pipeline through the accessor: grid, time axis, units, NaN, dask."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import xarray as xr

import xnowcast
from xnowcast.downscaling import window_starts
from xnowcast.testing import moving_storm


@pytest.fixture(scope="module")
def fine_truth() -> xr.DataArray:
    return moving_storm(frames=9, shape=(48, 40), velocity=(1.0, 1.0))


@pytest.fixture(scope="module")
def coarse(fine_truth: xr.DataArray) -> xr.DataArray:
    out = fine_truth.coarsen(y=2, x=2).mean().isel(time=slice(None, None, 2))
    out.attrs = fine_truth.attrs
    return out


def test_grid_and_time_axis(coarse: xr.DataArray, fine_truth: xr.DataArray) -> None:
    before = copy.deepcopy(coarse)
    fine = coarse.downscale(factor=2, time_factor=2, model="trilinear", progress=False)
    xr.testing.assert_identical(coarse, before)
    assert fine.sizes == {"time": 9, "y": 48, "x": 40}
    np.testing.assert_allclose(fine.x.values, fine_truth.x.values)
    np.testing.assert_allclose(fine.y.values, fine_truth.y.values)
    # coarsening the output again gives the input grid back
    back = fine.coarsen(y=2, x=2).mean()
    np.testing.assert_allclose(back.x.values, coarse.x.values)
    np.testing.assert_allclose(back.y.values, coarse.y.values)
    # inserted times are the midpoints
    np.testing.assert_array_equal(fine.time.values, fine_truth.time.values)
    assert fine.x.attrs == coarse.x.attrs and "crs" in fine.coords
    assert fine.attrs["units"] == coarse.attrs["units"]
    assert fine.attrs["xnowcast_model"] == "trilinear"


def test_trilinear_keeps_input_frames(coarse: xr.DataArray) -> None:
    fine = coarse.downscale(factor=2, time_factor=2, model="trilinear", progress=False)
    # at the original times the block mean of the output stays close to the input
    back = fine.isel(time=slice(None, None, 2)).coarsen(y=2, x=2).mean()
    interior = (slice(2, -2), slice(2, -2))
    err = np.abs(
        back.values[:, interior[0], interior[1]] - coarse.values[:, interior[0], interior[1]]
    )
    assert err.mean() < 0.05 * float(coarse.max())


def test_units_and_nan(coarse: xr.DataArray) -> None:
    dbz = coarse.copy(data=xnowcast.units.convert_values(coarse.values, "mm/h", "dBZ"))
    dbz.attrs["units"] = "dBZ"
    dbz[:, 3:6, 4:8] = np.nan
    fine = dbz.downscale(factor=2, time_factor=2, model="trilinear", progress=False)
    assert fine.attrs["units"] == "dBZ"
    assert np.isnan(fine.values[:, 6:12, 8:16]).all()
    assert np.isfinite(fine.values[:, 14:, :]).sum() > 0


def test_window_starts_cover_series() -> None:
    assert window_starts(4, 4) == [0]
    assert window_starts(10, 4) == [0, 3, 6]
    assert window_starts(11, 4) == [0, 3, 6, 7]


def test_dask_lazy_equals_eager() -> None:
    series = moving_storm(frames=20, shape=(32, 32), velocity=(0.5, 1.0))
    coarse = series.coarsen(y=2, x=2).mean()
    coarse.attrs = series.attrs
    eager = coarse.downscale(factor=2, time_factor=2, model="trilinear", progress=False)
    lazy = coarse.chunk(time=5).downscale(
        factor=2, time_factor=2, model="trilinear", progress=False
    )
    assert lazy.chunks is not None
    np.testing.assert_array_equal(lazy.compute().values, eager.values)


def test_unknown_model_lists_valid_ones(coarse: xr.DataArray) -> None:
    with pytest.raises(xnowcast.ModelError, match="trilinear"):
        coarse.downscale(model="bicubic-magic")
    assert "trilinear" in coarse.downscale.models()

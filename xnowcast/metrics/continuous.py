"""Point-wise errors (MSE, MAE, RMSE, mean error) and the ensemble CRPS.

Pairs where the forecast or the observation is missing are left out: every
mean is over the pairs known in both fields.  All functions are lazy on dask
input.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np
import xarray as xr
import xskillscore as xs

from xnowcast.metrics._common import as_dims, joint_mask, mask_pair

__all__ = ["crps", "mae", "mean_error", "mse", "rmse"]

Dims = Hashable | Iterable[Hashable] | None


def _errors(forecast: xr.DataArray, observations: xr.DataArray) -> xr.DataArray:
    fc, ob = mask_pair(forecast, observations)
    return fc.astype(np.float64) - ob


def mse(forecast: xr.DataArray, observations: xr.DataArray, dim: Dims = None) -> xr.DataArray:
    """Mean squared error over ``dim`` (all dims when ``None``)."""
    return (_errors(forecast, observations) ** 2).mean(_reduce(dim), skipna=True)


def mae(forecast: xr.DataArray, observations: xr.DataArray, dim: Dims = None) -> xr.DataArray:
    """Mean absolute error over ``dim`` (all dims when ``None``)."""
    return np.abs(_errors(forecast, observations)).mean(_reduce(dim), skipna=True)


def rmse(forecast: xr.DataArray, observations: xr.DataArray, dim: Dims = None) -> xr.DataArray:
    """Root mean squared error over ``dim`` (all dims when ``None``)."""
    return np.sqrt(mse(forecast, observations, dim))


def mean_error(
    forecast: xr.DataArray, observations: xr.DataArray, dim: Dims = None
) -> xr.DataArray:
    """Mean error (bias) ``mean(forecast - observations)`` over ``dim``."""
    return _errors(forecast, observations).mean(_reduce(dim), skipna=True)


def crps(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    dim: Dims = None,
    *,
    member_dim: Hashable = "member",
) -> xr.DataArray:
    """Continuous ranked probability score of an ensemble, averaged over ``dim``.

    Uses :func:`xskillscore.crps_ensemble` (the CRPS of the empirical CDF of the
    members, ``E|X - y| - E|X - X'| / 2``).  A forecast without ``member_dim`` is
    a one-member ensemble, whose CRPS is the mean absolute error.  A point is
    left out when the observation or any member is missing.
    """
    if member_dim not in forecast.dims:
        forecast = forecast.expand_dims({member_dim: 1})
    forecast, observations = xr.broadcast(forecast, observations, exclude=[member_dim])
    known = joint_mask(forecast, observations, member_dim)
    # score filled fields point by point, then drop the unknown points from the mean
    # (properscoring warns on all-NaN members otherwise)
    point = xs.crps_ensemble(
        observations.where(known, 0.0),
        forecast.where(known, 0.0),
        member_dim=str(member_dim),
        dim=[],
    )
    reduce = [d for d in (_reduce(dim) or point.dims) if d != member_dim]
    return point.astype(np.float64).where(known).mean(reduce, skipna=True)


def _reduce(dim: Dims) -> list[Hashable] | None:
    dims = as_dims(dim)
    return dims or None

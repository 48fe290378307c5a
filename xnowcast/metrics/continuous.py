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

__all__ = ["crps", "mae", "mean_error", "mean_pair_distance", "mse", "rmse"]

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
    fair: bool = False,
) -> xr.DataArray:
    """Continuous ranked probability score of an ensemble, averaged over ``dim``.

    Uses :func:`xskillscore.crps_ensemble` (the CRPS of the empirical CDF of the
    members, ``E|X - y| - E|X - X'| / 2``).  A forecast without ``member_dim`` is
    a one-member ensemble, whose CRPS is the mean absolute error.  A point is
    left out when the observation or any member is missing.

    ``fair=True`` gives the fair CRPS (Ferro 2014): ``E|X - X'|`` averaged over the
    ``M (M - 1)`` pairs of distinct members, not all ``M^2``.  It estimates without
    bias the CRPS of the distribution the members are drawn from, so it compares
    ensembles of few members fairly; the default estimator rewards an ensemble that
    is too narrow by up to ``E|X - X'| / (2 M)``.  One member: the MAE either way.
    """
    if member_dim not in forecast.dims:
        forecast = forecast.expand_dims({member_dim: 1})
    if forecast.chunks is not None:  # members computed apart: score them together
        forecast = forecast.chunk({member_dim: -1})
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
    m = forecast.sizes[member_dim]
    if fair and m > 1:
        pairs = xr.apply_ufunc(
            mean_pair_distance,
            forecast.where(known, 0.0),
            input_core_dims=[[member_dim]],
            dask="parallelized",
            output_dtypes=[np.float64],
        )
        point = point - pairs / (2 * (m - 1))
    reduce = [d for d in (_reduce(dim) or point.dims) if d != member_dim]
    return point.astype(np.float64).where(known).mean(reduce, skipna=True)


def mean_pair_distance(members: np.ndarray, axis: int = -1) -> np.ndarray:
    """``sum_ij |x_i - x_j| / M^2`` over the ``M`` members along ``axis``.

    The CRPS's spread term, self-pairs included, in ``O(M log M)`` from the sorted
    members.
    """
    members = np.moveaxis(members, axis, -1)
    m = members.shape[-1]
    weights = 2.0 * np.arange(1, m + 1) - m - 1
    return 2.0 * (np.sort(members, axis=-1) * weights).sum(axis=-1) / (m * m)


def _reduce(dim: Dims) -> list[Hashable] | None:
    dims = as_dims(dim)
    return dims or None

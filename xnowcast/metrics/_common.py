"""Helpers shared by the metric modules: dims and the joint missing-data mask."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import xarray as xr

__all__ = ["as_dims", "joint_mask", "mask_pair", "whole_fields"]


def as_dims(dim: Hashable | Iterable[Hashable] | None) -> list[Hashable]:
    """``dim`` as a list of names (``None`` -> empty list)."""
    if dim is None:
        return []
    if isinstance(dim, str) or not isinstance(dim, Iterable):
        return [dim]
    return list(dim)


def joint_mask(
    forecast: xr.DataArray, observations: xr.DataArray, member_dim: Hashable | None = None
) -> xr.DataArray:
    """True where both fields are known (every member, when ``member_dim`` is given)."""
    fc_ok = forecast.notnull()
    if member_dim is not None and member_dim in forecast.dims:
        fc_ok = fc_ok.all(member_dim)
    return fc_ok & observations.notnull()


def mask_pair(
    forecast: xr.DataArray, observations: xr.DataArray, member_dim: Hashable | None = None
) -> tuple[xr.DataArray, xr.DataArray]:
    """Both fields set to NaN wherever either is missing.

    Missing data are excluded from every score, never counted as "no rain".
    """
    ok = joint_mask(forecast, observations, member_dim)
    return forecast.where(ok), observations.where(ok)


def whole_fields(arrays: Iterable[xr.DataArray], dims: Iterable[Hashable]) -> list[xr.DataArray]:
    """The arrays with ``dims`` in one chunk when any is dask-backed (for per-field maths)."""
    arrays = list(arrays)
    if all(a.chunks is None for a in arrays):
        return arrays
    return [a.chunk({d: -1 for d in dims if d in a.dims}) for a in arrays]

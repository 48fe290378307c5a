"""The public pipelines, xarray in and xarray out.

:func:`nowcast` (radar frames -> forecast), :func:`downscale` (coarse, infrequent
fields -> fine, frequent ones) and :func:`verify` (forecast + observations ->
scores).  The accessors ``.nowcast`` and ``.downscale`` delegate here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import xarray as xr

from xnowcast.downscaling import downscale
from xnowcast.nowcasting import nowcast

__all__ = ["downscale", "nowcast", "verify"]


def verify(
    forecast: xr.DataArray,
    observations: xr.Dataset | xr.DataArray,
    metrics: Sequence[str] = ("csi", "hss", "fss", "crps"),
    **kwargs: Any,
) -> xr.Dataset:
    """Score a forecast against observations; see :func:`xnowcast.verification.verify`.

    The scores carry the institution, references and licence of the forecast and the
    observations.  (xskillscore is imported on first use, which keeps ``import xnowcast``
    fast.)
    """
    from xnowcast.cf_output import place_grid_mappings, scores_attrs, without_coordinate_fill
    from xnowcast.conventions import find_axes, find_precipitation
    from xnowcast.fields import package_version
    from xnowcast.verification import verify as _verify

    scores = _verify(forecast, observations, metrics=metrics, **kwargs)
    field = find_precipitation(forecast, kwargs.get("var"))
    axes = find_axes(field, require_time=False)
    scores = without_coordinate_fill(place_grid_mappings(scores, {axes.y, axes.x}))
    scores.attrs = scores_attrs(scores.attrs, forecast, observations, version=package_version())
    return scores

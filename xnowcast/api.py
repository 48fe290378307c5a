"""The public pipelines, xarray in and xarray out.

:func:`nowcast` (radar frames -> forecast), :func:`downscale` (coarse, infrequent
fields -> fine, frequent ones) and :func:`verify` (forecast + observations ->
scores).  The accessors ``.nowcast`` and ``.downscale`` delegate here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr

from xnowcast.downscaling import downscale
from xnowcast.nowcasting import nowcast

__all__ = ["downscale", "nowcast", "verify"]


def verify(
    forecast: xr.DataArray | xr.Dataset | Mapping[str, xr.DataArray | xr.Dataset],
    observations: xr.Dataset | xr.DataArray,
    metrics: Sequence[str] = ("csi", "hss", "fss", "crps"),
    **kwargs: Any,
) -> xr.Dataset | dict[str, xr.Dataset]:
    """Score a forecast against observations; see :func:`xnowcast.verification.verify`.

    ``forecast`` may be a mapping of several systems (``{"steps": fc1, "dgmr": fc2}``):
    the result is then a dict of score Datasets, scored on the pixels every system
    knows unless ``common_mask=False``.  The scores carry the institution, references
    and licence of the forecast and the observations.  (xskillscore is imported on
    first use, which keeps ``import xnowcast`` fast.)
    """
    from xnowcast.verification import verify as _verify

    scores = _verify(forecast, observations, metrics=metrics, **kwargs)
    if isinstance(forecast, Mapping) and not isinstance(forecast, xr.Dataset):
        return {
            name: _finish_scores(scores[name], forecast[name], observations, kwargs.get("var"))
            for name in forecast
        }
    return _finish_scores(scores, forecast, observations, kwargs.get("var"))


def _finish_scores(
    scores: xr.Dataset,
    forecast: xr.DataArray | xr.Dataset,
    observations: xr.Dataset | xr.DataArray,
    var: str | None,
) -> xr.Dataset:
    """CF touches on one system's scores: grid mappings, no coordinate fill, provenance."""
    from xnowcast.cf_output import place_grid_mappings, scores_attrs, without_coordinate_fill
    from xnowcast.conventions import find_axes, find_precipitation
    from xnowcast.fields import package_version

    field = find_precipitation(forecast, var)
    axes = find_axes(field, require_time=False)
    scores = without_coordinate_fill(place_grid_mappings(scores, {axes.y, axes.x}))
    scores.attrs = scores_attrs(scores.attrs, forecast, observations, version=package_version())
    return scores

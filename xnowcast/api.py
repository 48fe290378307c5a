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

    (xskillscore is imported on first use, which keeps ``import xnowcast`` fast.)
    """
    from xnowcast.verification import verify as _verify

    return _verify(forecast, observations, metrics=metrics, **kwargs)

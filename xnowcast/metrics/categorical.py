"""Categorical scores from the 2x2 contingency table of events ``>= threshold``.

The table is built by :class:`xskillscore.Contingency` with the category edges
``[-inf, threshold, inf]``: the first category is ``[-inf, threshold)``, the
second ``[threshold, inf]``, so an *event* is a value ``>= threshold``.  Pairs
where the forecast or the observation is missing (NaN) are left out of the
table.  All counts are pooled over ``dim`` before a score is formed (the score
of the summed table, not the mean of per-field scores).

With ``a`` hits, ``b`` false alarms, ``c`` misses, ``d`` correct negatives and
``n = a + b + c + d``:

========  ======================================  ===========================
name      score                                   formula
========  ======================================  ===========================
``csi``   critical success index (threat score)   ``a / (a + b + c)``
``pod``   probability of detection (hit rate)     ``a / (a + c)``
``far``   false alarm ratio                       ``b / (a + b)``
``fbias`` frequency bias                          ``(a + b) / (a + c)``
``ets``   equitable threat score                  ``(a - r) / (a + b + c - r)``,
                                                  ``r = (a + b)(a + c) / n``
``hss``   Heidke skill score                      ``2(ad - bc) / ((a + c)(c + d)
                                                  + (a + b)(b + d))``
========  ======================================  ===========================

A score whose denominator is zero (no event forecast nor observed, say) is NaN.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np
import xarray as xr
import xskillscore as xs

from xnowcast.metrics._common import as_dims, mask_pair
from xnowcast.metrics.registry import MetricError

__all__ = [
    "CATEGORICAL_SCORES",
    "categorical_score",
    "categorical_scores",
    "contingency",
    "csi",
    "ets",
    "far",
    "fbias",
    "hss",
    "pod",
]

# our name -> the xskillscore.Contingency method
CATEGORICAL_SCORES: dict[str, str] = {
    "csi": "threat_score",
    "hss": "heidke_score",
    "pod": "hit_rate",
    "far": "false_alarm_ratio",
    "fbias": "bias_score",
    "ets": "equit_threat_score",
}


def contingency(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None,
) -> xs.Contingency:
    """The contingency table of events ``>= threshold``, pooled over ``dim``.

    Parameters
    ----------
    forecast, observations
        Fields in the same units; broadcast against each other (a ``member`` dim
        of the forecast is kept unless it is in ``dim``).
    threshold
        Event threshold in the data's units (a plain number).
    dim
        Dims summed over when counting (None: all dims, as in xskillscore).

    Returns
    -------
    xskillscore.Contingency
        ``.hits()``, ``.misses()``, ``.false_alarms()``, ``.correct_negatives()``
        and the scores; lazy on dask input.
    """
    fc, ob = mask_pair(*xr.broadcast(forecast, observations))
    edges = np.array([-np.inf, float(threshold), np.inf])
    dims = list(fc.dims) if dim is None else as_dims(dim)
    return xs.Contingency(ob, fc, edges, edges, dim=dims)


def categorical_score(
    name: str,
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None,
) -> xr.DataArray:
    """Categorical score ``name`` (one of :data:`CATEGORICAL_SCORES`) at ``threshold``."""
    return categorical_scores([name], forecast, observations, threshold, dim)[name]


def categorical_scores(
    names: Iterable[str],
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None,
) -> dict[str, xr.DataArray]:
    """Several categorical scores from one contingency table (built once)."""
    names = list(names)
    unknown = [n for n in names if n not in CATEGORICAL_SCORES]
    if unknown:
        raise MetricError(
            f"{unknown} are not categorical scores; choose from {sorted(CATEGORICAL_SCORES)}."
        )
    table = contingency(forecast, observations, threshold, dim)
    return {name: _tidy(getattr(table, CATEGORICAL_SCORES[name])()) for name in names}


def _tidy(score: xr.DataArray) -> xr.DataArray:
    extra = [c for c in score.coords if str(c).startswith(("observations_", "forecasts_"))]
    return score.drop_vars(extra)


def csi(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None = None,
) -> xr.DataArray:
    """Critical success index ``a / (a + b + c)`` of events ``>= threshold``."""
    return categorical_score("csi", forecast, observations, threshold, dim)


def hss(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None = None,
) -> xr.DataArray:
    """Heidke skill score of events ``>= threshold``."""
    return categorical_score("hss", forecast, observations, threshold, dim)


def pod(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None = None,
) -> xr.DataArray:
    """Probability of detection ``a / (a + c)`` of events ``>= threshold``."""
    return categorical_score("pod", forecast, observations, threshold, dim)


def far(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None = None,
) -> xr.DataArray:
    """False alarm ratio ``b / (a + b)`` of events ``>= threshold``."""
    return categorical_score("far", forecast, observations, threshold, dim)


def fbias(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None = None,
) -> xr.DataArray:
    """Frequency bias ``(a + b) / (a + c)`` of events ``>= threshold``."""
    return categorical_score("fbias", forecast, observations, threshold, dim)


def ets(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    dim: Hashable | Iterable[Hashable] | None = None,
) -> xr.DataArray:
    """Equitable threat score (Gilbert skill score) of events ``>= threshold``."""
    return categorical_score("ets", forecast, observations, threshold, dim)

"""Every point-wise and neighbourhood score of a field pair from one pass over the data.

Scoring a hindcast is dominated by reading the fields, so :func:`score_sums`
reads each forecast/observation pair once and returns the *sums* every score
is made of (counts of events and hits per threshold, sums of errors, the FSS
window sums per threshold and window), for each 2-D field.  The sums add over
fields, init times and members, and over dask chunks, so that a hindcast of
any length streams through in bounded memory; :func:`scores_from_sums` forms
the scores from the added sums.  The scores equal those of
``xskillscore.Contingency`` (categorical), of numpy means (errors) and of
``scores.spatial.fss_2d`` (FSS) to rounding: the tests check it on real radar.

The numpy kernel (and how it is made cheap) is :mod:`xnowcast.metrics.field_sums`.

The module works on numpy arrays (and on dask through ``xarray.apply_ufunc``);
it knows nothing of units or CF conventions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from dask.system import CPU_COUNT

from xnowcast.metrics._common import whole_fields
from xnowcast.metrics.field_sums import ERROR_TERMS, EVENT_TERMS, FSS_TERMS, SumsPlan, field_sums

__all__ = ["SumsPlan", "field_sums", "score_sums", "scores_from_sums"]

TERM_DIM = "score_term"
#: Fields (along the last loop dim, e.g. lead times) scored by one dask task.
FIELDS_PER_TASK = 3


# ------------------------------------------------------------------------ xarray layer


def score_sums(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    plan: SumsPlan,
    *,
    spatial_dims: tuple[Hashable, Hashable],
    member_dim: Hashable | None = None,
    dim: Iterable[Hashable] = (),
) -> xr.DataArray:
    """:func:`field_sums` of every field pair, added over ``dim``; lazy on dask input.

    Parameters
    ----------
    forecast, observations
        Fields in the same units; the observations have no ``member_dim``.
    plan
        What to compute.
    spatial_dims
        The (Y, X) dims (each field is summed over them).
    member_dim
        The forecast's ensemble dim, if any (always summed over).
    dim
        Further dims to add the sums over (e.g. ``init_time``).

    Returns
    -------
    xarray.DataArray
        The remaining dims plus ``score_term`` (labelled by ``plan.names``).
        On dask input each chunk is reduced to its sums before they are added,
        so memory stays bounded by a few chunks.  Numpy input is shared among
        ``dask.system.CPU_COUNT`` threads.
    """
    ydim, xdim = spatial_dims
    fc = forecast
    member = member_dim if member_dim is not None and member_dim in fc.dims else None
    if member is None:
        member = "__member__"
        fc = fc.expand_dims({member: 1})
    lazy = fc.chunks is not None or observations.chunks is not None
    fc, observations = whole_fields((fc, observations), (member, ydim, xdim))
    if lazy:
        # a few fields per task, so that every thread has fields to score (rather
        # than one scoring a whole init time while the others read further chunks
        # ahead); then the observations in the forecast's chunks
        loop = [d for d in fc.dims if d not in (member, ydim, xdim)]
        if loop:
            fc = fc.chunk({loop[-1]: FIELDS_PER_TASK})
        chunks = dict(zip(fc.dims, fc.data.chunks, strict=True))
        shared = {d: chunks[d] for d in observations.dims if d in chunks}
        observations = observations.chunk(shared)
    threads = 1 if lazy else CPU_COUNT  # on dask, the scheduler runs chunks in parallel
    sums = xr.apply_ufunc(
        field_sums,
        fc,
        observations,
        input_core_dims=[[member, ydim, xdim], [ydim, xdim]],
        output_core_dims=[[TERM_DIM]],
        kwargs={"plan": plan, "threads": threads},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {TERM_DIM: len(plan.names)}},
    )
    extra = [d for d in dim if d in sums.dims]
    if extra:
        sums = sums.sum(extra)
    return sums.assign_coords({TERM_DIM: list(plan.names)})


def scores_from_sums(
    sums: xr.DataArray, plan: SumsPlan, names: Iterable[str]
) -> dict[str, xr.DataArray]:
    """The scores ``names`` from (added) :func:`score_sums`.

    Categorical scores (``csi``, ``hss``, ``pod``, ``far``, ``fbias``, ``ets``)
    get ``threshold`` and ``scale`` dims (positions into the plan's lists),
    errors (``mse``, ``mae``, ``rmse``, ``bias``) a ``scale`` dim, ``fss``
    ``threshold`` and ``window`` dims.  A score with a zero denominator is NaN
    (no warning).
    """
    names = list(names)
    values = sums.data  # numpy or dask: the maths below work on both
    position = {name: i for i, name in enumerate(plan.names)}
    lead_dims = sums.dims[:-1]
    coords = {k: v for k, v in sums.coords.items() if TERM_DIM not in v.dims}

    def term(name: str) -> Any:
        return values[..., position[name]]

    def wrap(grid: list[list[Any]], dims: tuple[str, str]) -> xr.DataArray:
        stacked = np.stack([np.stack(row, axis=-1) for row in grid], axis=-2)
        return xr.DataArray(stacked, dims=(*lead_dims, *dims), coords=coords)

    out: dict[str, xr.DataArray] = {}
    categorical = [n for n in names if n in _CATEGORICAL]
    grids: dict[str, list[list[Any]]] = {n: [] for n in categorical}
    for k in range(len(plan.thresholds) if categorical else 0):
        for name in categorical:
            grids[name].append([])
        for s in range(len(plan.scales)):
            n = term(f"pairs/{s}")
            f, o, a = (term(f"{t}/{s}/{k}") for t in EVENT_TERMS)
            table = _Table(a, f - a, o - a, n - f - o + a)
            for name in categorical:
                grids[name][-1].append(_CATEGORICAL[name](table))
    for name in categorical:
        out[name] = wrap(grids[name], ("threshold", "scale"))
    for name in (n for n in names if n in _ERRORS):
        row = []
        for s in range(len(plan.scales)):
            n = term(f"pairs/{s}")
            means = [_ratio(term(f"{t}/{s}"), n) for t in ERROR_TERMS]
            row.append(_ERRORS[name](*means))
        out[name] = wrap([row], ("_", "scale")).isel(_=0, drop=True)
    if "fss" in names:
        grid = []
        for k in range(len(plan.thresholds)):
            grid.append([])
            for w in range(len(plan.windows)):
                f2, o2, fo = (term(f"{t}/{k}/{w}") for t in FSS_TERMS)
                power = f2 + o2
                grid[-1].append(np.clip(1.0 - _ratio(power - 2.0 * fo, power), 0.0, 1.0))
        out["fss"] = wrap(grid, ("threshold", "window"))
    return out


def _ratio(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator``, NaN where the denominator is 0 (no warning)."""
    return numerator / np.where(denominator != 0, denominator, np.nan)


@dataclass(frozen=True)
class _Table:
    """A 2x2 contingency table: hits, false alarms, misses, correct negatives."""

    a: Any
    b: Any
    c: Any
    d: Any


def _hss(t: _Table) -> Any:
    # xskillscore's (multi-category) Heidke score, in counts
    n = t.a + t.b + t.c + t.d
    correct = _ratio(t.a + t.d, n)
    chance = _ratio((t.b + t.d) * (t.c + t.d) + (t.a + t.c) * (t.a + t.b), n**2)
    return _ratio(correct - chance, 1.0 - chance)


def _ets(t: _Table) -> Any:
    n = t.a + t.b + t.c + t.d
    random_hits = _ratio((t.a + t.c) * (t.a + t.b), n)
    return _ratio(t.a - random_hits, t.a + t.b + t.c - random_hits)


_CATEGORICAL = {
    "csi": lambda t: _ratio(t.a, t.a + t.b + t.c),
    "pod": lambda t: _ratio(t.a, t.a + t.c),
    "far": lambda t: _ratio(t.b, t.a + t.b),
    "fbias": lambda t: _ratio(t.a + t.b, t.a + t.c),
    "hss": _hss,
    "ets": _ets,
}
_ERRORS = {
    "bias": lambda mean, absolute, squared: mean,
    "mae": lambda mean, absolute, squared: absolute,
    "mse": lambda mean, absolute, squared: squared,
    "rmse": lambda mean, absolute, squared: np.sqrt(squared),
}

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

import numpy as np
import xarray as xr
from dask.system import CPU_COUNT

from xnowcast.metrics._common import whole_fields
from xnowcast.metrics.field_sums import ERROR_TERMS, EVENT_TERMS, FSS_TERMS, SumsPlan, field_sums

__all__ = ["SumsPlan", "field_sums", "score_sums", "scores_from_sums"]

TERM_DIM = "score_term"


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
    if lazy:  # the observations in the forecast's chunks: one task per forecast chunk
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
    out: dict[str, xr.DataArray] = {}
    names = list(names)

    def term(name: str) -> xr.DataArray:
        return sums.sel({TERM_DIM: name}, drop=True)

    def stack(rows: list[list[xr.DataArray]], dims: tuple[str, str]) -> xr.DataArray:
        return xr.concat([xr.concat(r, dims[1], coords="minimal") for r in rows], dims[0])

    categorical = [n for n in names if n in _CATEGORICAL]
    if categorical:
        per_name: dict[str, list[list[xr.DataArray]]] = {n: [] for n in categorical}
        for k in range(len(plan.thresholds)):
            rows: dict[str, list[xr.DataArray]] = {n: [] for n in categorical}
            for s in range(len(plan.scales)):
                n = term(f"pairs/{s}")
                f, o, a = (term(f"{t}/{s}/{k}") for t in EVENT_TERMS)
                table = _Table(a, f - a, o - a, n - f - o + a)
                for name in categorical:
                    rows[name].append(_CATEGORICAL[name](table))
            for name in categorical:
                per_name[name].append(rows[name])
        for name in categorical:
            out[name] = stack(per_name[name], ("threshold", "scale"))
    errors = [n for n in names if n in _ERRORS]
    if errors:
        for name in errors:
            values = []
            for s in range(len(plan.scales)):
                n = term(f"pairs/{s}")
                total, absolute, squared = (term(f"{t}/{s}") for t in ERROR_TERMS)
                values.append(
                    _ERRORS[name](_ratio(total, n), _ratio(absolute, n), _ratio(squared, n))
                )
            out[name] = xr.concat(values, "scale", coords="minimal")
    if "fss" in names:
        rows_fss = []
        for k in range(len(plan.thresholds)):
            row = []
            for w in range(len(plan.windows)):
                f2, o2, fo = (term(f"{t}/{k}/{w}") for t in FSS_TERMS)
                power = f2 + o2
                row.append((1.0 - _ratio(power - 2.0 * fo, power)).clip(0.0, 1.0))
            rows_fss.append(row)
        out["fss"] = stack(rows_fss, ("threshold", "window"))
    return out


def _ratio(numerator: xr.DataArray, denominator: xr.DataArray) -> xr.DataArray:
    """``numerator / denominator``, NaN where the denominator is 0 (no warning)."""
    return numerator / denominator.where(denominator != 0)


@dataclass(frozen=True)
class _Table:
    """A 2x2 contingency table: hits, false alarms, misses, correct negatives."""

    a: xr.DataArray
    b: xr.DataArray
    c: xr.DataArray
    d: xr.DataArray


def _hss(t: _Table) -> xr.DataArray:
    # xskillscore's (multi-category) Heidke score, in counts
    n = t.a + t.b + t.c + t.d
    correct = _ratio(t.a + t.d, n)
    chance = _ratio((t.b + t.d) * (t.c + t.d) + (t.a + t.c) * (t.a + t.b), n**2)
    return _ratio(correct - chance, 1.0 - chance)


def _ets(t: _Table) -> xr.DataArray:
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

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

How the pass is cheap:

- the events of a threshold are one comparison per field (in float32 when the
  data are float32: the threshold is rounded up to the next float32, which
  gives the same events as comparing in float64); hits, forecast and observed
  events are counted with ``count_nonzero``, and the contingency table follows
  from these counts and the number of known pairs;
- FSS window sums are integer box sums (shifted adds of the event fields for
  small windows, one integral image for large ones), so that
  ``sum P_f**2``, ``sum P_o**2`` and ``sum P_f P_o`` are exact integers; the
  mask of windows free of missing cells is computed once per window and
  shared by every threshold;
- errors (sum, absolute sum, squared sum) are formed once in float64;
- each pooling scale pools the masked fields once and reuses the same code.

The module works on numpy arrays (and on dask through ``xarray.apply_ufunc``);
it knows nothing of units or CF conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import xarray as xr
from dask.system import CPU_COUNT

from xnowcast.metrics._common import whole_fields
from xnowcast.metrics.registry import MetricError

__all__ = ["SumsPlan", "field_sums", "score_sums", "scores_from_sums"]

TERM_DIM = "score_term"
_ERROR_TERMS = ("sum_error", "sum_abs_error", "sum_squared_error")
_EVENT_TERMS = ("forecast_events", "observed_events", "hits")
_FSS_TERMS = ("forecast_power", "observation_power", "cross_power", "windows")


@dataclass(frozen=True)
class SumsPlan:
    """What :func:`field_sums` computes.

    Attributes
    ----------
    thresholds
        Event thresholds in the data's units (events are values ``>= threshold``).
    scales
        Pooling scales (grid cells) of the contingency counts and errors.
    windows
        FSS window sides (grid cells); FSS is computed on the unpooled fields.
    pooling
        ``"avg"`` or ``"max"``.
    padding
        FSS padding, ``"valid"`` or ``"zeros"`` (see :mod:`xnowcast.metrics.spatial`).
    events, errors
        Whether to count events (categorical scores) and sum errors (MSE, MAE, ...).
    """

    thresholds: tuple[float, ...] = ()
    scales: tuple[int, ...] = (1,)
    windows: tuple[int, ...] = ()
    pooling: Literal["avg", "max"] = "avg"
    padding: Literal["valid", "zeros"] = "valid"
    events: bool = False
    errors: bool = False
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pooling not in ("avg", "max"):
            raise MetricError(f"Pooling is 'avg' or 'max', not {self.pooling!r}.")
        if self.padding not in ("valid", "zeros"):
            raise MetricError(f"padding must be 'valid' or 'zeros', not {self.padding!r}.")
        for what, sizes in (("pooling scale", self.scales), ("FSS window", self.windows)):
            if any(int(s) < 1 for s in sizes):
                raise MetricError(f"A {what} must be at least 1 grid cell, got {list(sizes)}.")
        names: list[str] = []
        for s in range(len(self.scales)):
            names.append(f"pairs/{s}")
            if self.events:
                names += [f"{t}/{s}/{k}" for k in range(len(self.thresholds)) for t in _EVENT_TERMS]
            if self.errors:
                names += [f"{t}/{s}" for t in _ERROR_TERMS]
        for w in range(len(self.windows)):
            names.append(f"windows/{w}")
            names += [f"{t}/{k}/{w}" for k in range(len(self.thresholds)) for t in _FSS_TERMS[:3]]
        object.__setattr__(self, "names", tuple(names))

    def index(self, name: str) -> int:
        """Position of the term ``name`` along the last axis of :func:`field_sums`."""
        return self.names.index(name)


# ------------------------------------------------------------------------ numpy kernel


def field_sums(
    forecast: np.ndarray, observations: np.ndarray, plan: SumsPlan, *, threads: int = 1
) -> np.ndarray:
    """The sums of :class:`SumsPlan` for each field pair.

    Parameters
    ----------
    forecast
        Array ``(..., member, Y, X)`` (a member axis of length 1 for a
        deterministic forecast).
    observations
        Array ``(..., Y, X)``, broadcastable to the forecast without its member axis.
    plan
        What to compute.
    threads
        Fields are shared among this many threads (numpy releases the GIL).

    Returns
    -------
    numpy.ndarray
        float64 array ``(..., len(plan.names))``: the sums over the field (and
        its members).  A pair counts when the observation and every member are
        known (not NaN); ``-inf`` (0 mm/h in dBZ) is data.  Counts are exact
        integers.
    """
    fc = np.asarray(forecast)
    obs = np.asarray(observations)
    lead = np.broadcast_shapes(fc.shape[:-3], obs.shape[:-2])
    fc = np.broadcast_to(fc, lead + fc.shape[-3:])
    obs = np.broadcast_to(obs, lead + obs.shape[-2:])
    out = np.zeros((*lead, len(plan.names)), dtype=np.float64)
    flat_fc = fc.reshape((-1, *fc.shape[-3:]))
    flat_obs = obs.reshape((-1, *obs.shape[-2:]))
    flat_out = out.reshape(-1, len(plan.names))

    def run(indices: range) -> None:
        for i in indices:
            _one_pair(flat_fc[i], flat_obs[i], plan, flat_out[i])

    n = flat_out.shape[0]
    threads = max(1, min(int(threads), n))
    if threads == 1:
        run(range(n))
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, [range(k, n, threads) for k in range(threads)]))
    return out


def _one_pair(fc: np.ndarray, obs: np.ndarray, plan: SumsPlan, out: np.ndarray) -> None:
    """Fill ``out`` with the sums of one pair: ``fc`` is ``(member, Y, X)``, ``obs`` ``(Y, X)``."""
    known = ~np.isnan(obs)
    for member in fc:
        known &= ~np.isnan(member)
    pos = 0
    for scale in plan.scales:
        if scale == 1:
            f, o, ok = fc, obs, known
        else:
            f = _pool(np.where(known, fc, np.nan), scale, plan.pooling)
            o = _pool(np.where(known, obs, np.nan), scale, plan.pooling)
            ok = ~np.isnan(o)
            for member in f:
                ok &= ~np.isnan(member)
        pairs = np.count_nonzero(ok)
        out[pos] = pairs * f.shape[0]
        pos += 1
        if plan.events:
            pos = _event_counts(f, o, ok, plan.thresholds, out, pos)
        if plan.errors:
            pos = _error_sums(f, o, ok, pairs, out, pos)
    if plan.windows:
        _fss_sums(fc, obs, known, plan, out, pos)


def _pool(values: np.ndarray, scale: int, how: str) -> np.ndarray:
    """Pool the last two axes over ``scale x scale`` blocks (as ``xarray.coarsen``, trimmed)."""
    ny, nx = values.shape[-2:]
    if ny < scale or nx < scale:
        raise MetricError(
            f"The pooling scale {scale} is larger than the field ({ny} x {nx} cells)."
        )
    by, bx = ny // scale, nx // scale
    blocks = values[..., : by * scale, : bx * scale].reshape(
        (*values.shape[:-2], by, scale, bx, scale)
    )
    return (np.mean if how == "avg" else np.max)(blocks, axis=(-3, -1))


def _events(values: np.ndarray, threshold: float, known: np.ndarray) -> np.ndarray:
    """``values >= threshold`` (compared as float64) where ``known``, else False."""
    return np.greater_equal(values, _cast_threshold(threshold, values.dtype)) & known


def _cast_threshold(threshold: float, dtype: np.dtype) -> np.floating:
    """The threshold in ``dtype`` such that ``x >= t'`` equals ``float64(x) >= threshold``."""
    t = np.float64(threshold)
    if dtype == np.float32:
        t32 = np.float32(t)
        if np.float64(t32) < t:
            t32 = np.nextafter(t32, np.float32(np.inf))
        return t32
    return t


def _event_counts(
    f: np.ndarray, o: np.ndarray, ok: np.ndarray, thresholds: Sequence[float], out: np.ndarray,
    pos: int,
) -> int:  # fmt: skip
    members = f.shape[0]
    for threshold in thresholds:
        observed = _events(o, threshold, ok)
        n_obs = np.count_nonzero(observed)
        n_fc = hits = 0
        for member in f:
            forecast = _events(member, threshold, ok)
            n_fc += np.count_nonzero(forecast)
            hits += np.count_nonzero(forecast & observed)
        out[pos : pos + 3] = (n_fc, n_obs * members, hits)
        pos += 3
    return pos


def _error_sums(
    f: np.ndarray, o: np.ndarray, ok: np.ndarray, pairs: int, out: np.ndarray, pos: int
) -> int:
    total = absolute = squared = 0.0
    unknown = None if pairs == ok.size else ~ok
    for member in f:
        error = member.astype(np.float64)
        error -= o
        if unknown is not None:
            np.copyto(error, 0.0, where=unknown)
        total += float(error.sum())
        squared += _dot(error, error)
        np.abs(error, out=error)
        absolute += float(error.sum())
    out[pos : pos + 3] = (total, absolute, squared)
    return pos + 3


# ------------------------------------------------------------------------- FSS sums


def _fss_sums(
    fc: np.ndarray, obs: np.ndarray, known: np.ndarray, plan: SumsPlan, out: np.ndarray, pos: int
) -> None:
    ny, nx = obs.shape
    members = fc.shape[0]
    for window in plan.windows:
        if plan.padding == "valid" and (window > ny or window > nx):
            raise MetricError(
                f"The FSS window ({window} x {window} cells) is larger than the field "
                f"({ny} x {nx})."
            )
    pad = _zero_pad if plan.padding == "zeros" else lambda a, w: a
    missing = None if known.all() else ~known
    events = []  # per threshold: (observed, [each member]), then where any event lies
    for t in plan.thresholds:
        observed = _events(obs, t, known)
        forecast = [_events(m, t, known) for m in fc]
        events.append((observed, forecast, _event_rows_cols(observed, forecast)))
    for window in plan.windows:
        scored = None
        if missing is not None:
            scored = _box_sum(pad(missing, window), window) == 0
            n_windows = np.count_nonzero(scored)
        elif plan.padding == "valid":
            n_windows = (ny - window + 1) * (nx - window + 1)
        else:
            n_windows = ny * nx
        out[pos] = n_windows * members
        pos += 1
        for observed, forecast, extent in events:
            out[pos : pos + 3] = _power_sums(observed, forecast, extent, window, pad, scored)
            pos += 3


def _event_rows_cols(
    observed: np.ndarray, forecast: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The first and last rows and columns holding an event (None when there is none)."""
    anywhere = observed.copy()
    for member in forecast:
        anywhere |= member
    rows = np.flatnonzero(anywhere.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(anywhere.any(axis=0))
    return rows[[0, -1]], cols[[0, -1]]


def _power_sums(
    observed: np.ndarray,
    forecast: list[np.ndarray],
    extent: tuple[np.ndarray, np.ndarray] | None,
    window: int,
    pad: Callable[[np.ndarray, int], np.ndarray],
    scored: np.ndarray | None,
) -> tuple[float, float, float]:
    """``sum S_f**2``, ``sum S_o**2`` and ``sum S_f S_o`` of the window event counts ``S``.

    Only the part of the field within a window of an event is filtered: the
    counts are zero elsewhere.
    """
    if extent is None:
        return 0.0, 0.0, 0.0
    observed = pad(observed, window)
    ny, nx = observed.shape
    (first_row, last_row), (first_col, last_col) = extent
    shift = window // 2 if pad is _zero_pad else 0
    r0, r1 = max(0, first_row + shift - window + 1), min(ny, last_row + shift + window)
    c0, c1 = max(0, first_col + shift - window + 1), min(nx, last_col + shift + window)
    crop = (slice(r0, r1), slice(c0, c1))
    keep = None if scored is None else scored[r0 : r1 - window + 1, c0 : c1 - window + 1]
    s_o = _box_sum(observed[crop], window, keep)
    f2 = fo = 0.0
    for member in forecast:
        s_f = _box_sum(pad(member, window)[crop], window, keep)
        f2 += _dot(s_f, s_f)
        fo += _dot(s_f, s_o)
    return f2, _dot(s_o, s_o) * len(forecast), fo


def _zero_pad(values: np.ndarray, window: int) -> np.ndarray:
    """Pad with False so that a box sits around every cell (``uniform_filter``'s placement)."""
    before, after = window // 2, window - 1 - window // 2
    return np.pad(values, ((before, after), (before, after)))


def _box_sum(events: np.ndarray, window: int, scored: np.ndarray | None = None) -> np.ndarray:
    """Number of True cells in every ``window x window`` box inside ``events``, 0 where not
    ``scored``.

    The result is int32 when every sum of products of two such arrays fits in
    int32 (so that :func:`_dot` is exact), else int64.
    """
    cells = window * window
    if window <= 48:
        counts = events.view(np.uint8)
        if cells >= 256:
            counts = counts.astype(np.uint16)
        sums = _shifted_sum(_shifted_sum(counts, window, 0), window, 1)
    else:
        sums = _integral_box(events, window)
    if scored is not None:
        sums *= scored.view(np.uint8)
    fits = sums.size * float(cells) ** 2 < 2**31
    return sums.astype(np.int32 if fits else np.int64)


def _shifted_sum(values: np.ndarray, window: int, axis: int) -> np.ndarray:
    n = values.shape[axis] - window + 1
    take = [slice(None), slice(None)]
    take[axis] = slice(0, n)
    out = values[tuple(take)].copy()
    for k in range(1, window):
        take[axis] = slice(k, k + n)
        out += values[tuple(take)]
    return out


def _integral_box(events: np.ndarray, window: int) -> np.ndarray:
    ny, nx = events.shape
    table = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    np.cumsum(events, axis=0, dtype=np.int64, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    w = window
    return table[w:, w:] - table[:-w, w:] - table[w:, :-w] + table[:-w, :-w]


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)``: exact for :func:`_box_sum` output (in its dtype), float64 otherwise."""
    if a.dtype.kind == "f":
        return float(np.multiply(a, b).sum())
    return float(np.einsum("ij,ij->", a, b))


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
                f, o, a = (term(f"{t}/{s}/{k}") for t in _EVENT_TERMS)
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
                total, absolute, squared = (term(f"{t}/{s}") for t in _ERROR_TERMS)
                values.append(
                    _ERRORS[name](_ratio(total, n), _ratio(absolute, n), _ratio(squared, n))
                )
            out[name] = xr.concat(values, "scale", coords="minimal")
    if "fss" in names:
        rows_fss = []
        for k in range(len(plan.thresholds)):
            row = []
            for w in range(len(plan.windows)):
                f2, o2, fo = (term(f"{t}/{k}/{w}") for t in _FSS_TERMS[:3])
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

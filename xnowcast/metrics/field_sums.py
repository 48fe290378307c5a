"""The numpy kernel of :mod:`xnowcast.metrics.sums`: every score's sums from one field pair.

For each 2-D forecast/observation pair :func:`field_sums` computes the sums
that :class:`SumsPlan` names: the number of known pairs, per threshold the
forecast events, observed events and hits, the error sums, and per threshold
and window the FSS sums ``sum S_f**2``, ``sum S_o**2``, ``sum S_f S_o`` of
the integer window event counts ``S`` and the number of scored windows.

How the pass is cheap:

- the events of a threshold are one comparison per field, made once and used
  by the contingency counts and by FSS (in float32 when the data are float32:
  the threshold is rounded up to the next float32, which gives the events of
  the float64 comparison);
- counts are ``count_nonzero``; the contingency table follows from the
  counts of forecast events, observed events, hits and known pairs;
- FSS window counts are integer box sums (shifted adds in uint8/uint16, an
  integral image for windows over 48 cells), computed only around the events
  (zero elsewhere) and multiplied exactly in int32/int64; the mask of windows
  free of missing cells is made once per window for every threshold;
- every temporary lives in a per-thread scratch space reused from field to
  field: a fresh 2 MB array per operation costs a page fault per page where
  the allocator returns freed memory to the system at once (as dask's
  ``distributed`` workers are set up to), which made the kernel 5 x slower there.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from xnowcast.metrics.registry import MetricError

__all__ = ["SumsPlan", "field_sums"]

ERROR_TERMS = ("sum_error", "sum_abs_error", "sum_squared_error")
EVENT_TERMS = ("forecast_events", "observed_events", "hits")
FSS_TERMS = ("forecast_power", "observation_power", "cross_power")


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
    names
        The names of the sums, in the order of the last axis of :func:`field_sums`:
        ``pairs/<scale>``, ``<event term>/<scale>/<threshold>``,
        ``<error term>/<scale>``, ``windows/<window>`` and
        ``<fss term>/<threshold>/<window>`` (positions into the lists above).
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
                names += [f"{t}/{s}/{k}" for k in range(len(self.thresholds)) for t in EVENT_TERMS]
            if self.errors:
                names += [f"{t}/{s}" for t in ERROR_TERMS]
        for w in range(len(self.windows)):
            names.append(f"windows/{w}")
            names += [f"{t}/{k}/{w}" for k in range(len(self.thresholds)) for t in FSS_TERMS]
        object.__setattr__(self, "names", tuple(names))


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
        scratch = _thread_scratch()
        for i in indices:
            _Pair(flat_fc[i], flat_obs[i], plan, scratch).fill(flat_out[i])

    n = flat_out.shape[0]
    threads = max(1, min(int(threads), n))
    if threads == 1:
        run(range(n))
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, [range(k, n, threads) for k in range(threads)]))
    return out


_PER_THREAD = threading.local()


def _thread_scratch() -> _Scratch:
    """This thread's scratch space, kept between calls (dask calls once per chunk)."""
    scratch = getattr(_PER_THREAD, "scratch", None)
    if scratch is None:
        scratch = _PER_THREAD.scratch = _Scratch()
    return scratch


class _Scratch:
    """Named work arrays reused from field to field (grown when a larger one is needed)."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[name] = np.empty(max(size, 1), dtype=np.uint8)
        return buffer[:size].view(dtype).reshape(shape)


class _Pair:
    """One forecast ``(member, Y, X)`` and observation ``(Y, X)`` pair being summed."""

    def __init__(self, fc: np.ndarray, obs: np.ndarray, plan: SumsPlan, scratch: _Scratch):
        self.fc, self.obs, self.plan, self.scratch = fc, obs, plan, scratch
        self.members = fc.shape[0]

    def fill(self, out: np.ndarray) -> None:
        plan, fc, obs = self.plan, self.fc, self.obs
        known = self._known(fc, obs, "known")
        # events at the native scale, used by the contingency counts and FSS
        events = [
            self._events(fc, obs, t, known, f"events{k}") for k, t in enumerate(plan.thresholds)
        ]
        pos = 0
        for scale in plan.scales:
            if scale == 1:
                f, o, ok, ev = fc, obs, known, events
            else:
                f, o = self._pooled(fc, obs, known, scale)
                ok = self._known(f, o, "pooled_known")
                ev = [
                    self._events(f, o, t, ok, f"pooled_events{k}")
                    for k, t in enumerate(plan.thresholds)
                ]
            pairs = np.count_nonzero(ok)
            out[pos] = pairs * self.members
            pos += 1
            if plan.events:
                for observed, forecast in ev:
                    out[pos : pos + 3] = self._event_counts(observed, forecast)
                    pos += 3
            if plan.errors:
                out[pos : pos + 3] = self._error_sums(f, o, ok, pairs)
                pos += 3
        if plan.windows:
            self._fss_sums(known, events, out[pos:])

    # ---------------------------------------------------------------- point-wise sums

    def _known(self, fc: np.ndarray, obs: np.ndarray, name: str) -> np.ndarray:
        known = self.scratch.get(name, obs.shape, bool)
        missing = self.scratch.get("missing", obs.shape, bool)
        np.isnan(obs, out=known)
        for member in fc:
            np.isnan(member, out=missing)
            known |= missing
        return np.logical_not(known, out=known)

    def _events(
        self, fc: np.ndarray, obs: np.ndarray, threshold: float, known: np.ndarray, name: str
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(observed, [forecast per member])`` events ``>= threshold`` among known pairs."""
        fields = [obs, *fc]
        out = self.scratch.get(name, (len(fields), *obs.shape), bool)
        for values, events in zip(fields, out, strict=True):
            np.greater_equal(values, _cast_threshold(threshold, values.dtype), out=events)
            events &= known
        return out[0], list(out[1:])

    def _event_counts(
        self, observed: np.ndarray, forecast: list[np.ndarray]
    ) -> tuple[int, int, int]:
        both = self.scratch.get("both", observed.shape, bool)
        n_fc = hits = 0
        for events in forecast:
            n_fc += np.count_nonzero(events)
            hits += np.count_nonzero(np.logical_and(events, observed, out=both))
        return n_fc, np.count_nonzero(observed) * len(forecast), hits

    def _error_sums(
        self, fc: np.ndarray, obs: np.ndarray, known: np.ndarray, pairs: int
    ) -> tuple[float, float, float]:
        error = self.scratch.get("error", obs.shape, np.float64)
        unknown = None
        if pairs < known.size:
            unknown = np.logical_not(known, out=self.scratch.get("unknown", obs.shape, bool))
        total = absolute = squared = 0.0
        for member in fc:
            np.copyto(error, member)
            error -= obs
            if unknown is not None:
                np.copyto(error, 0.0, where=unknown)
            total += float(error.sum())
            squared += float(np.einsum("ij,ij->", error, error))
            np.abs(error, out=error)
            absolute += float(error.sum())
        return total, absolute, squared

    def _pooled(
        self, fc: np.ndarray, obs: np.ndarray, known: np.ndarray, scale: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both fields pooled over ``scale x scale`` blocks, missing where a cell of a block is."""
        ny, nx = obs.shape
        if ny < scale or nx < scale:
            raise MetricError(
                f"The pooling scale {scale} is larger than the field ({ny} x {nx} cells)."
            )
        unknown = np.logical_not(known, out=self.scratch.get("unknown", obs.shape, bool))
        pooled = []
        for values in (fc, obs):
            masked = self.scratch.get("masked", values.shape, values.dtype)
            np.copyto(masked, values)
            np.copyto(masked, np.nan, where=unknown)
            pooled.append(_pool(masked, scale, self.plan.pooling))
        return pooled[0], pooled[1]

    # ------------------------------------------------------------------------- FSS sums

    def _fss_sums(
        self,
        known: np.ndarray,
        events: list[tuple[np.ndarray, list[np.ndarray]]],
        out: np.ndarray,
    ) -> None:
        plan = self.plan
        ny, nx = known.shape
        pad = plan.padding == "zeros"
        for window in plan.windows:
            if not pad and (window > ny or window > nx):
                raise MetricError(
                    f"The FSS window ({window} x {window} cells) is larger than the field "
                    f"({ny} x {nx})."
                )
        missing = None
        if not known.all():
            missing = np.logical_not(known, out=self.scratch.get("unknown", known.shape, bool))
        extents = [self._extent(observed, forecast) for observed, forecast in events]
        pos = 0
        for window in plan.windows:
            scored = None
            if missing is not None:
                counts = self._box_sum(
                    _zero_pad(missing, window) if pad else missing, window, "box_missing"
                )
                scored = np.equal(counts, 0, out=self.scratch.get("scored", counts.shape, bool))
                n_windows = np.count_nonzero(scored)
            elif pad:
                n_windows = ny * nx
            else:
                n_windows = (ny - window + 1) * (nx - window + 1)
            out[pos] = n_windows * self.members
            pos += 1
            for (observed, forecast), extent in zip(events, extents, strict=True):
                out[pos : pos + 3] = self._power_sums(observed, forecast, extent, window, scored)
                pos += 3

    def _extent(self, observed: np.ndarray, forecast: list[np.ndarray]) -> tuple | None:
        """The first and last rows and columns holding an event (None when there is none)."""
        anywhere = self.scratch.get("anywhere", observed.shape, bool)
        np.copyto(anywhere, observed)
        for member in forecast:
            anywhere |= member
        rows = np.flatnonzero(anywhere.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(anywhere.any(axis=0))
        return (rows[0], rows[-1]), (cols[0], cols[-1])

    def _power_sums(
        self,
        observed: np.ndarray,
        forecast: list[np.ndarray],
        extent: tuple | None,
        window: int,
        scored: np.ndarray | None,
    ) -> tuple[float, float, float]:
        """``sum S_f**2``, ``sum S_o**2`` and ``sum S_f S_o`` of the window event counts.

        Only the part of the field within a window of an event is filtered: the
        counts are zero elsewhere.
        """
        if extent is None:
            return 0.0, 0.0, 0.0
        pad = self.plan.padding == "zeros"
        if pad:
            observed = _zero_pad(observed, window)
            forecast = [_zero_pad(member, window) for member in forecast]
        ny, nx = observed.shape
        (first_row, last_row), (first_col, last_col) = extent
        shift = window // 2 if pad else 0
        r0, r1 = max(0, first_row + shift - window + 1), min(ny, last_row + shift + window)
        c0, c1 = max(0, first_col + shift - window + 1), min(nx, last_col + shift + window)
        keep = None if scored is None else scored[r0 : r1 - window + 1, c0 : c1 - window + 1]
        s_o = self._box_sum(observed[r0:r1, c0:c1], window, "box_observed", keep)
        f2 = fo = 0.0
        for member in forecast:
            s_f = self._box_sum(member[r0:r1, c0:c1], window, "box_forecast", keep)
            f2 += _dot(s_f, s_f)
            fo += _dot(s_f, s_o)
        return f2, _dot(s_o, s_o) * len(forecast), fo

    def _box_sum(
        self, events: np.ndarray, window: int, name: str, scored: np.ndarray | None = None
    ) -> np.ndarray:
        """Number of True cells in every ``window x window`` box inside ``events``, 0 where
        not ``scored``: int32 when every sum of products of two such arrays fits in
        int32 (so that :func:`_dot` is exact), else int64."""
        cells = window * window
        ny, nx = events.shape[0] - window + 1, events.shape[1] - window + 1
        if window <= 48:
            small = np.uint8 if cells < 256 else np.uint16
            rows = self.scratch.get(name + "_rows", (ny, events.shape[1]), small)
            _shifted_sum(events.view(np.uint8), window, 0, rows)
            sums = self.scratch.get(name + "_small", (ny, nx), small)
            _shifted_sum(rows, window, 1, sums)
        else:
            sums = _integral_box(events, window)
        if scored is not None:
            sums *= scored.view(np.uint8)
        exact = np.int32 if sums.size * float(cells) ** 2 < 2**31 else np.int64
        out = self.scratch.get(name, (ny, nx), exact)
        np.copyto(out, sums)
        return out


def _cast_threshold(threshold: float, dtype: np.dtype) -> np.floating:
    """The threshold in ``dtype`` such that ``x >= t'`` equals ``float64(x) >= threshold``."""
    t = np.float64(threshold)
    if dtype == np.float32:
        t32 = np.float32(t)
        if np.float64(t32) < t:
            t32 = np.nextafter(t32, np.float32(np.inf))
        return t32
    return t


def _pool(values: np.ndarray, scale: int, how: str) -> np.ndarray:
    """Pool the last two axes over ``scale x scale`` blocks (as ``xarray.coarsen``, trimmed)."""
    ny, nx = values.shape[-2:]
    by, bx = ny // scale, nx // scale
    blocks = values[..., : by * scale, : bx * scale].reshape(
        (*values.shape[:-2], by, scale, bx, scale)
    )
    return (np.mean if how == "avg" else np.max)(blocks, axis=(-3, -1))


def _zero_pad(values: np.ndarray, window: int) -> np.ndarray:
    """Pad with False so that a box sits around every cell (``uniform_filter``'s placement)."""
    before, after = window // 2, window - 1 - window // 2
    return np.pad(values, ((before, after), (before, after)))


def _shifted_sum(values: np.ndarray, window: int, axis: int, out: np.ndarray) -> None:
    """``out`` = sums of ``window`` consecutive values along ``axis`` (valid positions)."""
    n = values.shape[axis] - window + 1
    take: list[slice] = [slice(None), slice(None)]
    take[axis] = slice(0, n)
    np.copyto(out, values[tuple(take)])
    for k in range(1, window):
        take[axis] = slice(k, k + n)
        np.add(out, values[tuple(take)], out=out)


def _integral_box(events: np.ndarray, window: int) -> np.ndarray:
    ny, nx = events.shape
    table = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    np.cumsum(events, axis=0, dtype=np.int64, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    w = window
    return table[w:, w:] - table[:-w, w:] - table[w:, :-w] + table[:-w, :-w]


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)``, exact for the integer box sums."""
    return float(np.einsum("ij,ij->", a, b))

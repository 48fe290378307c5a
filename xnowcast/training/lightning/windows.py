"""Importance-sampled space-time windows of lazy (dask) radar streams.

Candidate windows lie on a lattice: every start frame of a stretch without gaps
and every ``stride``-th pixel offset.  Their DGMR acceptance probability
(Ravuri et al. 2021, Methods; :func:`xnowcast.training.data.acceptance_probability`)

    q(x) = min(1, q_min + m * mean(1 - exp(-x)))

is computed from ``stride x stride`` block sums of the wetness and of the
missing pixels, which dask reduces chunk by chunk: the full-resolution data are
never held in memory, only these block sums (``1 / stride**2`` of the data).
A window is then drawn with probability proportional to ``q`` (what rejection
sampling with acceptance ``q`` does, without the rejections) and only its own
chunks are read.  xbatcher's ``BatchGenerator`` is not used here: it builds a
selector for every window up front, which an archive of years cannot afford.

Every draw is a pure function of a key (seed, step, rank, slot), so a run
resumed at step ``s`` draws the same windows as an uninterrupted one, and every
rank of a data-parallel run draws its own.

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import xarray as xr

from xnowcast.errors import CoordinateError, DataValueError, TimeAxisError
from xnowcast.training.data import acceptance_from_sums
from xnowcast.training.lightning.sources import Stream

__all__ = ["Window", "WindowSampler", "key_rng", "time_step_of"]


def key_rng(*key: int) -> np.random.Generator:
    """A numpy generator determined by a tuple of non-negative integers."""
    return np.random.default_rng([int(k) for k in key])


def time_step_of(times: np.ndarray) -> np.timedelta64:
    """The most common spacing of a datetime axis (the regular step between gaps)."""
    if len(times) < 2:
        raise TimeAxisError("a training stream needs at least two frames")
    steps, counts = np.unique(np.diff(times.astype("datetime64[ns]")), return_counts=True)
    return steps[np.argmax(counts)]


@dataclass
class Window:
    """A drawn window: values ``(frames, crop, crop)`` (NaN where missing) and where it lies."""

    values: np.ndarray
    stream: int
    t0: int
    y0: int
    x0: int


@dataclass
class _Segment:
    stream: int
    start: int  # first frame of the stretch without gaps
    acceptance: np.ndarray  # (starts, ny, nx): q of the window starting at start + t, y*s, x*s


class WindowSampler:
    """Windows of ``frames`` frames and ``crop x crop`` pixels, importance sampled.

    Parameters
    ----------
    streams
        Lazy ``(time, y, x)`` rain rates in mm/h (:func:`~xnowcast.training.lightning.sources.open_sources`).
    frames, crop
        Window length in frames and side in pixels.
    stride
        Spacing of the lattice of offsets; divides ``crop`` (default ``crop // 4``).
    q_min, m
        DGMR's importance-sampling constants (``2e-4`` and ``0.1`` in the paper).
    max_missing
        Largest share of missing pixels a window may hold.
    """

    def __init__(
        self,
        streams: Sequence[Stream],
        frames: int,
        crop: int,
        *,
        stride: int | None = None,
        q_min: float = 2e-4,
        m: float = 0.1,
        max_missing: float = 0.05,
    ) -> None:
        stride = stride or max(crop // 4, 1)
        if crop % stride:
            raise DataValueError(f"the lattice stride {stride} must divide the crop {crop}")
        self.streams = list(streams)
        self.frames, self.crop, self.stride = int(frames), int(crop), int(stride)
        self.q_min, self.m, self.max_missing = q_min, m, max_missing
        self.segments: list[_Segment] = []
        for k, stream in enumerate(self.streams):
            self.segments.extend(self._segments_of(k, stream.data))
        if not self.segments:
            raise TimeAxisError(
                f"no stretch of {self.frames} frames without gaps in the data "
                f"({', '.join(s.name for s in self.streams)}): give longer sequences"
            )
        sizes = np.array([s.acceptance.size for s in self.segments])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        q = np.concatenate([s.acceptance.ravel() for s in self.segments])
        total = q.sum()
        if total <= 0:
            raise DataValueError(
                f"no usable window: every candidate has more than {self.max_missing:.0%} "
                "missing pixels or the data hold no finite values"
            )
        self.cumulative = np.cumsum(q) / total
        self.candidates = int((q > 0).sum())

    def _segments_of(self, k: int, da: xr.DataArray) -> list[_Segment]:
        ny, nx = da.sizes["y"], da.sizes["x"]
        if ny < self.crop or nx < self.crop:
            raise CoordinateError(
                f"{self.streams[k].name!r} is {ny} x {nx} pixels, smaller than the crop "
                f"{self.crop}: use a smaller --crop"
            )
        times = da["time"].values.astype("datetime64[ns]")
        step = time_step_of(times)
        s = self.stride
        by, bx = ny // s, nx // s
        v = da.isel(y=slice(0, by * s), x=slice(0, bx * s))
        wet = -np.expm1(-v.fillna(0.0).clip(min=0.0))
        wet_blocks, miss_blocks = dask.compute(
            wet.coarsen(y=s, x=s).sum().data, v.isnull().coarsen(y=s, x=s).sum().data
        )
        breaks = np.nonzero(np.diff(times) != step)[0] + 1
        out = []
        for a, b in zip([0, *breaks], [*breaks, len(times)], strict=True):
            if b - a >= self.frames:
                q = self._acceptance(
                    np.asarray(wet_blocks[a:b], np.float64),
                    np.asarray(miss_blocks[a:b], np.float64),
                )
                out.append(_Segment(k, int(a), q))
        return out

    def _acceptance(self, wet: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """q of every window of a stretch, from its block sums ``(t, by, bx)``."""
        f, k = self.frames, self.crop // self.stride

        def box(blocks: np.ndarray) -> np.ndarray:
            c = np.zeros(tuple(n + 1 for n in blocks.shape))
            c[1:, 1:, 1:] = blocks.cumsum(0).cumsum(1).cumsum(2)
            return (
                c[f:, k:, k:]
                - c[:-f, k:, k:]
                - c[f:, :-k, k:]
                - c[f:, k:, :-k]
                + c[:-f, :-k, k:]
                + c[:-f, k:, :-k]
                + c[f:, :-k, :-k]
                - c[:-f, :-k, :-k]
            )

        n = float(f * self.crop * self.crop)
        return acceptance_from_sums(box(wet), box(missing), n, self.q_min, self.m, self.max_missing)

    def __len__(self) -> int:
        """Number of usable candidate windows."""
        return self.candidates

    def _locate(self, flat: int) -> tuple[_Segment, int, int, int]:
        j = int(np.searchsorted(self.offsets, flat, side="right")) - 1
        seg = self.segments[j]
        t, y, x = np.unravel_index(flat - self.offsets[j], seg.acceptance.shape)
        return seg, int(t), int(y), int(x)

    def read(self, seg: _Segment, t: int, y: int, x: int) -> Window:
        """The window at lattice position ``(t, y, x)`` of ``seg`` (reads only its chunks)."""
        t0, y0, x0 = seg.start + t, y * self.stride, x * self.stride
        # the (dask or numpy) array itself: xarray's indexing machinery would triple the cost
        part = self.streams[seg.stream].data.data[
            t0 : t0 + self.frames, y0 : y0 + self.crop, x0 : x0 + self.crop
        ]
        # one small window: dask's synchronous scheduler (no thread pool, safe in forked
        # data-loader workers, where the parent's pool threads do not exist)
        with dask.config.set(scheduler="synchronous"):
            values = np.asarray(part, dtype=np.float32)
        return Window(values, seg.stream, t0, y0, x0)

    def draw(self, rng: np.random.Generator) -> Window:
        """One window, drawn with probability proportional to its acceptance."""
        flat = int(np.searchsorted(self.cumulative, rng.random(), side="right"))
        return self.read(*self._locate(min(flat, len(self.cumulative) - 1)))

    def fixed(self, count: int) -> list[Window]:
        """``count`` deterministic windows: the wettest offset of start frames spread evenly.

        Used for held-out scores (the same windows at every call).
        """
        starts = [
            (j, t)
            for j, seg in enumerate(self.segments)
            for t in range(seg.acceptance.shape[0])
            if seg.acceptance[t].max() > 0
        ]
        if not starts:
            raise DataValueError("no usable held-out window in the data")
        picks = np.unique(np.linspace(0, len(starts) - 1, count).round().astype(int))
        out = []
        for p in picks:
            j, t = starts[int(p)]
            seg = self.segments[j]
            y, x = np.unravel_index(int(np.argmax(seg.acceptance[t])), seg.acceptance.shape[1:])
            out.append(self.read(seg, t, int(y), int(x)))
        return out

    def describe(self) -> dict[str, Any]:
        """What the sampler draws from (recorded in the training metadata)."""
        steps = [time_step_of(s.data["time"].values) / np.timedelta64(1, "m") for s in self.streams]
        spacings = [  # metres on projected grids (degrees on latitude-longitude ones)
            max(abs(float(s.data[d].values[1] - s.data[d].values[0])) for d in ("y", "x"))
            for s in self.streams
        ]
        return {
            "streams": [s.name for s in self.streams],
            "time_step_minutes": sorted({float(m) for m in steps}),
            "grid_spacing": sorted(set(spacings)),
            "frames": self.frames,
            "crop": self.crop,
            "stride": self.stride,
            "candidate_windows": self.candidates,
            "q_min": self.q_min,
            "m": self.m,
            "max_missing": self.max_missing,
        }

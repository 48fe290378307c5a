"""Training sequences for nowcasting models: xarray radar -> random space-time crops -> torch.

Windows of ``input_frames + lead_frames`` consecutive frames and ``crop x
crop`` pixels are enumerated lazily by :class:`xbatcher.BatchGenerator`
(dims ``time``, ``y``, ``x``) on a lattice of spatial offsets, over every
stretch of the time axis without gaps.  Crops are drawn at random and kept by
importance sampling as in DGMR (Ravuri et al. 2021, Methods, "Datasets"):
a crop ``x`` (rain rates, mm/h) is accepted with probability

    q(x) = min(1, q_min + m * mean(1 - exp(-x)))

(``q_min = 2e-4``, ``m = 0.1`` in the paper), so dry crops are rare but not
absent.  Missing pixels (NaN) are excluded from that mean; crops with more than
``max_missing`` of their pixels missing are rejected.  Rain rates are clipped to
``[0, max_rate]``; NaN becomes 0 in the tensors, and a validity mask comes
with the targets so losses can skip the missing pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import CoordinateError, DataValueError, TimeAxisError

__all__ = [
    "CropBatch",
    "SequenceCropSampler",
    "acceptance_from_sums",
    "acceptance_probability",
    "as_rain_rate",
]


def as_rain_rate(da: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """A ``(time, y, x)`` float32 DataArray of rain rate in mm/h.

    A Dataset gives its precipitation (or reflectivity) variable; reflectivity
    in dBZ is converted with Marshall-Palmer (:func:`xnowcast.units.convert_dataarray`).
    """
    from xnowcast.units import convert_dataarray

    if isinstance(da, xr.Dataset):
        names = [n for n in da.data_vars if da[n].ndim == 3]
        if not names:
            raise CoordinateError("the Dataset has no (time, y, x) variable to train on")
        preferred = [n for n in names if n in ("precipitation", "reflectivity")]
        da = da[(preferred or names)[0]]
    for dim in ("time", "y", "x"):
        if dim not in da.dims:
            raise CoordinateError(f"training data need dims time, y, x; got {da.dims}")
    da = da.transpose("time", "y", "x")
    # the canonical orientation the pipeline runs models on (north up, x east)
    da = cv.flip_axes(da, cv.orientation_flips(da, cv.Axes("time", "y", "x")))
    units = da.attrs.get("units")
    if units is None:
        raise DataValueError("training data need a 'units' attribute (mm/h, dBZ, ...)")
    if str(units) != "mm/h":
        da = convert_dataarray(da, "mm/h")
    return da.astype(np.float32)


def acceptance_probability(crop: np.ndarray, q_min: float = 2e-4, m: float = 0.1) -> float:
    """DGMR's importance-sampling acceptance ``min(1, q_min + m * mean(1 - exp(-x)))``.

    NaN pixels are left out of the mean; an all-NaN crop has probability 0.
    """
    valid = np.isfinite(crop)
    if not valid.any():
        return 0.0
    x = np.clip(crop[valid], 0.0, None)
    return float(min(1.0, q_min + m * float(np.mean(-np.expm1(-x)))))


def acceptance_from_sums(
    wet_sum: np.ndarray,
    missing_sum: np.ndarray,
    pixels: float,
    q_min: float = 2e-4,
    m: float = 0.1,
    max_missing: float = 0.05,
) -> np.ndarray:
    """:func:`acceptance_probability` of many crops from their sums.

    ``wet_sum`` is the sum of ``1 - exp(-x)`` over the observed pixels of each
    crop, ``missing_sum`` its count of missing pixels, ``pixels`` its size;
    crops with more than ``max_missing`` of their pixels missing get 0.
    """
    n_valid = pixels - missing_sum
    mean_wet = np.where(n_valid > 0, wet_sum / np.maximum(n_valid, 1.0), 0.0)
    q = np.minimum(1.0, q_min + m * mean_wet)
    q[(missing_sum / pixels > max_missing) | (n_valid <= 0)] = 0.0
    return q


@dataclass
class CropBatch:
    """A batch of training sequences (torch tensors, float32, mm/h).

    ``inputs`` ``(B, I, 1, H, W)``, ``targets`` ``(B, T, 1, H, W)`` (NaN -> 0),
    ``valid`` ``(B, T, 1, H, W)`` bool (False where the target was missing),
    ``input_valid`` likewise for the inputs, and where each crop came from.
    """

    inputs: Any
    targets: Any
    valid: Any
    input_valid: Any
    origins: list[dict[str, Any]]

    def to(self, device: Any) -> CropBatch:
        """The batch on ``device``."""
        return CropBatch(
            self.inputs.to(device),
            self.targets.to(device),
            self.valid.to(device),
            self.input_valid.to(device),
            self.origins,
        )


def _segments(times: np.ndarray, step: np.timedelta64) -> list[slice]:
    """Index ranges of the time axis without gaps."""
    if len(times) < 2:
        return [slice(0, len(times))]
    gaps = np.nonzero(np.diff(times) != step)[0]
    starts = [0, *(gaps + 1).tolist()]
    stops = [*(gaps + 1).tolist(), len(times)]
    return [slice(a, b) for a, b in zip(starts, stops, strict=False)]


class SequenceCropSampler:
    """Random ``(input + lead)``-frame crops from radar DataArrays, importance sampled.

    The acceptance probability of every candidate crop on the lattice is
    computed up front from block sums (so ``stride`` must divide ``crop``);
    drawing a crop with probability proportional to it is exactly what
    rejection sampling with that acceptance does, without the rejections.

    Parameters
    ----------
    data
        One or several DataArrays or Datasets with dims time/y/x (any rain
        units, see :func:`as_rain_rate`), or a mapping name -> data; each is
        read into memory unless ``load=False``.
    input_frames, lead_frames
        Frames given to the model and frames to predict (4 and 18 in DGMR).
    crop
        Spatial crop size in pixels (256 in DGMR).
    stride
        Spacing of the lattice of crop offsets (divides ``crop``).
    time_step
        Expected spacing of frames; windows never span a gap.
    q_min, m
        Importance-sampling constants (see the module docstring).
    max_missing
        Largest fraction of missing pixels a crop may have.
    max_rate
        Rain rates are clipped to ``[0, max_rate]`` mm/h.
    seed
        Seed of the sampler's random generator.
    """

    def __init__(
        self,
        data: xr.DataArray
        | xr.Dataset
        | Sequence[xr.DataArray | xr.Dataset]
        | Mapping[str, xr.DataArray | xr.Dataset],
        *,
        input_frames: int = 4,
        lead_frames: int = 18,
        crop: int = 256,
        stride: int = 8,
        time_step: str | np.timedelta64 = "5min",
        q_min: float = 2e-4,
        m: float = 0.1,
        max_missing: float = 0.05,
        max_rate: float = 128.0,
        seed: int = 0,
        load: bool = True,
    ) -> None:
        import xbatcher

        if isinstance(data, Mapping):
            named = list(data.items())
        elif isinstance(data, xr.DataArray | xr.Dataset):
            named = [(None, data)]
        else:
            named = [(None, d) for d in data]
        if not named:
            raise DataValueError("no training data given")
        if crop % stride:
            raise ValueError(f"stride {stride} must divide crop {crop}")
        self.input_frames = input_frames
        self.lead_frames = lead_frames
        self.frames = input_frames + lead_frames
        self.crop = crop
        self.stride = stride
        self.q_min = q_min
        self.m = m
        self.max_missing = max_missing
        self.max_rate = max_rate
        self.rng = np.random.default_rng(seed)
        step = np.timedelta64(pd.Timedelta(time_step).value, "ns")
        self.generators: list[Any] = []
        self.names: list[str] = []
        q_parts: list[np.ndarray] = []
        for k, (given_name, item) in enumerate(named):
            da = as_rain_rate(item)
            if load:
                da = da.load()
            if da.sizes["y"] < crop or da.sizes["x"] < crop:
                raise CoordinateError(
                    f"data {k} is {da.sizes['y']} x {da.sizes['x']}, smaller than the crop {crop}"
                )
            times = da["time"].values.astype("datetime64[ns]")
            name = str(given_name if given_name is not None else da.attrs.get("source", k))
            for seg in _segments(times, step):
                part = da.isel(time=seg)
                if part.sizes["time"] < self.frames:
                    continue
                gen = xbatcher.BatchGenerator(
                    part,
                    input_dims={"time": self.frames, "y": crop, "x": crop},
                    input_overlap={"time": self.frames - 1, "y": crop - stride, "x": crop - stride},
                )
                self.generators.append(gen)
                self.names.append(name)
                q_parts.append(self._acceptance_of_windows(part, gen))
        if not self.generators:
            raise TimeAxisError(
                f"no stretch of {self.frames} consecutive frames {time_step} apart in the data"
            )
        self.owner = np.concatenate(
            [np.full(len(q), g, dtype=np.int64) for g, q in enumerate(q_parts)]
        )
        self.local = np.concatenate([np.arange(len(q)) for q in q_parts])
        self.acceptance = np.concatenate(q_parts)
        total = self.acceptance.sum()
        if total <= 0:
            raise DataValueError(
                f"no usable crop: every candidate has more than {self.max_missing:.0%} missing "
                "pixels or the data hold no finite values"
            )
        self.probabilities = self.acceptance / total

    def _acceptance_of_windows(self, part: xr.DataArray, gen: Any) -> np.ndarray:
        """Acceptance probability of each window of ``gen`` (0 when too much is missing)."""
        s, f = self.stride, self.frames
        values = np.asarray(part.values, dtype=np.float32)
        t, ny, nx = values.shape
        by, bx = ny // s, nx // s
        v = values[:, : by * s, : bx * s].reshape(t, by, s, bx, s)
        missing = np.isnan(v)
        wet = -np.expm1(-np.clip(np.nan_to_num(v, nan=0.0), 0.0, None))
        blocks = []
        for arr in (wet, missing):
            b = arr.sum(axis=(2, 4), dtype=np.float64)
            c = np.zeros((t + 1, by + 1, bx + 1))
            c[1:, 1:, 1:] = b.cumsum(0).cumsum(1).cumsum(2)
            blocks.append(c)
        # the windows of xbatcher, in its order (xbatcher 0.4: a dict index -> [selector])
        sel = [v[0] for v in gen._batch_selectors.selectors.values()]
        t0 = np.array([d["time"].start for d in sel])
        y0 = np.array([d["y"].start for d in sel]) // s
        x0 = np.array([d["x"].start for d in sel]) // s
        k = self.crop // s

        def box(c: np.ndarray) -> np.ndarray:
            t1, y1, x1 = t0 + f, y0 + k, x0 + k
            return (
                c[t1, y1, x1]
                - c[t0, y1, x1]
                - c[t1, y0, x1]
                - c[t1, y1, x0]
                + c[t0, y0, x1]
                + c[t0, y1, x0]
                + c[t1, y0, x0]
                - c[t0, y0, x0]
            )

        n = float(f * self.crop * self.crop)
        return acceptance_from_sums(
            box(blocks[0]), box(blocks[1]), n, self.q_min, self.m, self.max_missing
        )

    def __len__(self) -> int:
        """Number of usable candidate crops."""
        return int((self.acceptance > 0).sum())

    def _window(self, g: int, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        window = self.generators[int(g)][int(i)]
        values = np.asarray(window.values, dtype=np.float32)
        origin = {"data": self.names[g], "time": str(window["time"].values[0])}
        for dim in ("y", "x"):
            if dim in window.coords:
                origin[dim] = float(window[dim].values[0])
        return values, origin

    def draw(self) -> tuple[np.ndarray, dict[str, Any]]:
        """One importance-sampled crop ``(frames, crop, crop)`` (NaN kept) and its origin."""
        j = int(self.rng.choice(len(self.probabilities), p=self.probabilities))
        return self._window(int(self.owner[j]), int(self.local[j]))

    def to_batch(self, crops: Sequence[np.ndarray], origins: list[dict[str, Any]]) -> CropBatch:
        """Stack crops ``(frames, H, W)`` into a :class:`CropBatch`."""
        import torch

        arr = np.stack(crops)[:, :, None]  # (B, F, 1, H, W)
        valid = np.isfinite(arr)
        arr = np.clip(np.nan_to_num(arr, nan=0.0), 0.0, self.max_rate)
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        v = torch.from_numpy(valid)
        i = self.input_frames
        return CropBatch(t[:, :i], t[:, i:], v[:, i:], v[:, :i], origins)

    def sample(self, batch_size: int) -> CropBatch:
        """A batch of ``batch_size`` importance-sampled crops."""
        drawn = [self.draw() for _ in range(batch_size)]
        return self.to_batch([d[0] for d in drawn], [d[1] for d in drawn])

    def rainiest(self, count: int) -> CropBatch:
        """A deterministic batch: the ``count`` wettest usable crops from distinct windows.

        The time windows are spread evenly over the data; in each, the crop of
        highest acceptance is taken.  Used for validation (same crops at every call).
        """
        starts = []
        for gen in self.generators:
            sel = [v[0] for v in gen._batch_selectors.selectors.values()]
            starts.append(np.array([d["time"].start for d in sel]))
        keys = sorted({(g, int(t)) for g, st in enumerate(starts) for t in np.unique(st)})
        picks = np.unique(np.linspace(0, len(keys) - 1, count).round().astype(int))
        chosen = []
        for p in picks:
            g, t0 = keys[int(p)]
            idx = np.nonzero(self.owner == g)[0]
            idx = idx[starts[g][self.local[idx]] == t0]
            best = idx[np.argmax(self.acceptance[idx])]
            if self.acceptance[best] > 0:
                chosen.append(self._window(g, int(self.local[best])))
        if not chosen:
            raise DataValueError("no usable validation crop in the data")
        return self.to_batch([c[0] for c in chosen], [c[1] for c in chosen])

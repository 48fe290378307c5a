"""Coarse/fine training pairs for downscaling, made from real fine-resolution radar data.

The native data (e.g. 1 km / 5 min) are the **target**; the **input** is made
from them as a coarser, less frequent observation would be:

* space: the ``factor x factor`` block mean (a block with any missing cell is
  missing: a coarse cell is only known where all of it is observed);
* time: every ``time_factor``-th frame, starting at the window's first frame.

A window of ``window`` coarse frames covers ``(window - 1) * time_factor + 1``
fine frames.  Windows and spatial crops are cut with ``xbatcher``; crops with
rain are preferred (a share of dry crops is kept so the models also learn that
no rain stays no rain).  Missing values are filled with 0 in the tensors and
excluded from the loss through a mask: a fine value counts where it is
observed and the coarse cells it is interpolated from (the same frame for
original times, both neighbouring frames for inserted times) are observed too
(elsewhere the downscaling runtime returns NaN anyway).

Static fields (the FC-ZSM models' ``static`` input) are made from the coarse
data alone, the same way at training and at inference
(:func:`static_fields`): the radar coverage mask (the coarse cell is observed
in every frame) and the projected x and y of the fine cell centres, scaled to
[-1, 1] over the domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import DataValueError, TimeAxisError
from xnowcast.grids import STATIC_NAMES, known_fine_cells, static_fields

__all__ = [
    "STATIC_NAMES",
    "PairSet",
    "block_mean",
    "coarsen_window",
    "dihedral",
    "load_rain_rate",
    "make_pairs",
    "static_fields",
]


def load_rain_rate(paths: Any, **kwargs: Any) -> xr.DataArray:
    """Open radar files with :func:`xnowcast.io.open_radar` as rain rate in mm/h.

    Reflectivity (dBZ) is converted with the Marshall-Palmer relation
    (:func:`xnowcast.units.convert_values`); missing values stay NaN.

    Returns
    -------
    xarray.DataArray
        ``(time, y, x)`` float32 rain rate, ``units = "mm h-1"``.
    """
    from xnowcast.io import open_radar
    from xnowcast.units import convert_values

    ds = open_radar(paths, **kwargs)
    names = [n for n in ("precipitation", "reflectivity") if n in ds.data_vars]
    if not names:
        raise DataValueError(f"no precipitation or reflectivity variable in {list(ds.data_vars)}")
    da = ds[names[0]]
    units = da.attrs.get("units", "")
    values = np.asarray(convert_values(da.values, units, "mm/h"), dtype=np.float32)
    out = da.copy(data=values)
    out.attrs = {**da.attrs, "units": "mm h-1", "standard_name": "rainfall_rate"}
    out.name = "precipitation"
    return out


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of the last two axes (NaN if any cell is NaN)."""
    *lead, h, w = values.shape
    if h % factor or w % factor:
        raise DataValueError(f"a {h}x{w} field does not split into {factor}x{factor} blocks")
    blocks = values.reshape(*lead, h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(-3, -1))


def coarsen_window(
    fine: np.ndarray, factor: int, time_factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Coarse input and loss mask of one window of fine frames ``(T_fine, H, W)``.

    Returns
    -------
    coarse
        ``(T, H/f, W/f)``, NaN where a block has a missing cell.
    mask
        ``(T_fine, H, W)`` bool: the fine value is observed and so are the
        coarse cells it is made from.
    """
    t_fine = fine.shape[0]
    if (t_fine - 1) % time_factor:
        raise TimeAxisError(f"{t_fine} fine frames do not fit time_factor={time_factor}")
    coarse = block_mean(fine[::time_factor], factor)
    return coarse, known_fine_cells(np.isfinite(coarse), factor, time_factor) & np.isfinite(fine)


@dataclass
class PairSet:
    """Training pairs as tensors (mm/h, missing filled with 0).

    Attributes
    ----------
    coarse : Tensor ``(N, T, 1, h, w)``
    fine : Tensor ``(N, T_fine, 1, H, W)``
    mask : Tensor ``(N, T_fine, 1, H, W)`` bool, where the loss counts
    static : Tensor ``(N, 3, H, W)`` (:data:`STATIC_NAMES`)
    events : list of str, the event of each pair
    info : dict, how the pairs were made
    motion : Tensor ``(N, T-1, 2, h, w)`` or None: the optical flow of each coarse pair
        measured on the whole domain of the event (coarse pixels per input step)
    """

    coarse: Any
    fine: Any
    mask: Any
    static: Any
    events: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    motion: Any = None

    def __len__(self) -> int:
        return int(self.coarse.shape[0])

    def subset(self, index: Any) -> PairSet:
        """The pairs at ``index`` (a tensor / array / list of integers)."""
        import torch

        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        events = [self.events[i] for i in idx.tolist()] if self.events else []
        motion = None if self.motion is None else self.motion[idx]
        return PairSet(
            self.coarse[idx],
            self.fine[idx],
            self.mask[idx],
            self.static[idx],
            events,
            self.info,
            motion,
        )

    @staticmethod
    def concat(sets: list[PairSet]) -> PairSet:
        """One set from several (e.g. one per event)."""
        import torch

        sets = [s for s in sets if len(s)]
        if not sets:
            raise DataValueError("no training pairs to concatenate")
        return PairSet(
            torch.cat([s.coarse for s in sets]),
            torch.cat([s.fine for s in sets]),
            torch.cat([s.mask for s in sets]),
            torch.cat([s.static for s in sets]),
            [e for s in sets for e in s.events],
            {**sets[0].info, "events": sorted({e for s in sets for e in s.events})},
            None if any(s.motion is None for s in sets) else torch.cat([s.motion for s in sets]),
        )


def make_pairs(
    da: xr.DataArray,
    window: int = 4,
    factor: int = 2,
    time_factor: int = 2,
    crop: int = 32,
    spatial_stride: int | None = None,
    time_stride: int | None = None,
    max_pairs: int | None = 256,
    rain_threshold: float = 0.5,
    min_rain_fraction: float = 0.05,
    dry_share: float = 0.1,
    min_valid_fraction: float = 0.5,
    seed: int = 0,
    event: str = "",
    motion: bool = False,
) -> PairSet:
    """Cut coarse/fine pairs from a fine rain-rate DataArray ``(time, y, x)`` in mm/h.

    Parameters
    ----------
    da
        Fine data; NaN where missing.  Dims ``time``, ``y``, ``x`` (in any order).
    window
        Coarse frames per pair; each pair spans ``(window-1)*time_factor + 1``
        fine frames.
    factor, time_factor
        Coarsening in space (block mean) and time (every n-th frame).
    crop
        Side of a crop on the **coarse** grid (the fine crop is ``crop*factor``).
    spatial_stride, time_stride
        Step between crops in fine cells / fine frames (default: half a crop;
        ``time_factor + 1`` frames, so both time phases occur).
    max_pairs
        At most this many pairs are kept (None: all that pass the filters).
    rain_threshold, min_rain_fraction
        A crop is *rainy* when at least ``min_rain_fraction`` of its observed
        fine values reach ``rain_threshold`` mm/h.
    dry_share
        Share of the kept pairs drawn from the crops that are not rainy.
    min_valid_fraction
        Crops where less than this share of the fine values counts in the
        loss are dropped.
    seed
        Seed of the random choice of crops.
    event
        A name recorded with each pair.
    motion
        Also measure the optical flow of every pair of consecutive coarse frames on
        the whole domain (the ``flow`` downscaler's motion) and keep it cropped with
        each pair, as a downscaler would see it at inference on the whole domain.
    """
    import torch
    import xbatcher

    da = da.transpose("time", "y", "x")
    # pairs on the canonical orientation the pipeline runs models on (north up, x east)
    da = cv.flip_axes(da, cv.orientation_flips(da, cv.Axes("time", "y", "x")))
    t_fine = (window - 1) * time_factor + 1
    size = crop * factor
    if da.sizes["time"] < t_fine:
        raise TimeAxisError(f"{da.sizes['time']} frames are fewer than a window of {t_fine}")
    spatial_stride = spatial_stride or size // 2
    if spatial_stride % factor:
        raise DataValueError(f"spatial_stride {spatial_stride} is not a multiple of {factor}")
    time_stride = time_stride or time_factor + 1
    # Whole coarse cells only; integer coordinates tell where each crop sits.
    values = np.asarray(da.values, dtype=np.float32)
    h_all, w_all = (values.shape[1] // factor) * factor, (values.shape[2] // factor) * factor
    values = values[:, :h_all, :w_all]
    ds = xr.Dataset(
        {"rain": (("time", "y", "x"), values)},
        coords={"time": np.arange(values.shape[0]), "y": np.arange(h_all), "x": np.arange(w_all)},
    )
    gen = xbatcher.BatchGenerator(
        ds,
        input_dims={"time": t_fine, "y": size, "x": size},
        input_overlap={
            "time": max(t_fine - time_stride, 0),
            "y": max(size - spatial_stride, 0),
            "x": max(size - spatial_stride, 0),
        },
    )
    rainy: list[int] = []
    dry: list[int] = []
    for i in range(len(gen)):
        fine = gen[i]["rain"].values
        _, mask = coarsen_window(fine, factor, time_factor)
        if mask.mean() < min_valid_fraction:
            continue
        wet = (np.where(mask, fine, 0) >= rain_threshold).sum() / max(mask.sum(), 1)
        (rainy if wet >= min_rain_fraction else dry).append(i)

    rng = np.random.default_rng(seed)
    if max_pairs is None:
        chosen = rainy + dry
    else:
        n_dry = min(len(dry), round(max_pairs * dry_share))
        n_rainy = min(len(rainy), max_pairs - n_dry)
        n_dry = min(len(dry), max_pairs - n_rainy)
        chosen = [rainy[i] for i in rng.permutation(len(rainy))[:n_rainy]]
        chosen += [dry[i] for i in rng.permutation(len(dry))[:n_dry]]
    info = {
        "window": window,
        "factor": factor,
        "time_factor": time_factor,
        "crop": crop,
        "rainy_crops": len(rainy),
        "dry_crops": len(dry),
        "rain_threshold": rain_threshold,
        "min_rain_fraction": min_rain_fraction,
    }

    # Static fields of the whole event (coverage over all its coarse frames), then cropped.
    coarse_all = block_mean(values[::time_factor], factor)
    x = y = None
    if "x" in da.coords and "y" in da.coords and min(h_all, w_all) > factor:
        xf, yf = da["x"].values[:w_all], da["y"].values[:h_all]
        x = xf[::factor] + (xf[1] - xf[0]) * (factor - 1) / 2
        y = yf[::factor] + (yf[1] - yf[0]) * (factor - 1) / 2
    static_all = static_fields(coarse_all, factor, x, y)

    flows = _phase_flows(values, factor, time_factor) if motion else None
    coarse_l, fine_l, mask_l, static_l, motion_l = [], [], [], [], []
    for i in chosen:
        patch = gen[i]["rain"]
        fine = patch.values
        coarse, mask = coarsen_window(fine, factor, time_factor)
        y0, x0 = int(patch["y"][0]), int(patch["x"][0])
        if flows is not None:
            t0 = int(patch["time"][0])
            phase, first = t0 % time_factor, t0 // time_factor
            cy, cx = y0 // factor, x0 // factor
            motion_l.append(
                flows[phase][first : first + window - 1, :, cy : cy + crop, cx : cx + crop]
            )
        coarse_l.append(np.nan_to_num(coarse, nan=0.0))
        fine_l.append(np.nan_to_num(fine, nan=0.0))
        mask_l.append(mask)
        static_l.append(static_all[:, y0 : y0 + size, x0 : x0 + size])
    if not chosen:
        coarse_l = [np.zeros((window, crop, crop), np.float32)]
        fine_l = [np.zeros((t_fine, size, size), np.float32)]
        mask_l = [np.zeros((t_fine, size, size), bool)]
        static_l = [np.zeros((len(STATIC_NAMES), size, size), np.float32)]
        motion_l = [np.zeros((window - 1, 2, crop, crop), np.float32)]
    keep = len(chosen)
    return PairSet(
        torch.from_numpy(np.stack(coarse_l)[:keep]).unsqueeze(2),
        torch.from_numpy(np.stack(fine_l)[:keep]).unsqueeze(2),
        torch.from_numpy(np.stack(mask_l)[:keep]).unsqueeze(2),
        torch.from_numpy(np.stack(static_l)[:keep]),
        [event] * keep,
        info,
        torch.from_numpy(np.stack(motion_l)[:keep]) if motion else None,
    )


def _phase_flows(values: np.ndarray, factor: int, time_factor: int) -> list[np.ndarray]:
    """Pair flows of the coarse series of each time phase, at coarse resolution.

    Returns a list (one per phase ``p``: the coarse frames are the fine frames
    ``p, p + tf, ...``) of ``(T_p - 1, 2, h, w)`` float32 arrays, coarse px per step.
    """
    import torch
    import torch.nn.functional as F

    from xnowcast.models.flow import build_flow

    model = build_flow(factor=factor, time_factor=time_factor)
    out = []
    for phase in range(time_factor):
        coarse = np.nan_to_num(block_mean(values[phase::time_factor], factor))
        frames = torch.from_numpy(coarse.astype(np.float32))[None, :, None]
        with torch.no_grad():
            flow = model.motion(frames)[0]
            flow = F.interpolate(flow, size=coarse.shape[-2:], mode="bilinear", align_corners=False)
        out.append(flow.numpy())
    return out


def _rotate_vectors(motion: Any, k: int, flip: bool) -> Any:
    """Rotate / flip a field of (x, y) displacement vectors ``(..., 2, H, W)`` like its grid."""
    import torch

    for _ in range(k % 4):
        motion = torch.rot90(motion, 1, dims=(-2, -1))
        # a displacement (u, v) in (column, row) becomes (v, -u) on the rotated grid
        motion = torch.stack((motion[..., 1, :, :], -motion[..., 0, :, :]), dim=-3)
    if flip:
        motion = torch.flip(motion, dims=(-1,))
        motion = torch.stack((-motion[..., 0, :, :], motion[..., 1, :, :]), dim=-3)
    return motion


def dihedral(batch: tuple, generator: Any) -> tuple:
    """One random element of the dihedral group (and maybe time reversal) applied to a batch.

    ``batch`` is ``(coarse, fine, mask, static, motion)`` (``motion`` may be None);
    rotations and the flip act on the last two axes of all, the motion vectors turn
    with the grid, time reversal reverses the frames and negates the reversed motion.
    """
    import torch

    coarse, fine, mask, static, motion = batch
    k = int(torch.randint(4, (1,), generator=generator))
    flip = bool(torch.randint(2, (1,), generator=generator))
    reverse = bool(torch.randint(2, (1,), generator=generator))

    def grid(x: Any) -> Any:
        x = torch.rot90(x, k, dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if flip else x

    coarse, fine, mask, static = (grid(x) for x in (coarse, fine, mask, static))
    if motion is not None:
        motion = _rotate_vectors(motion, k, flip)
    if reverse:
        coarse, fine, mask = (torch.flip(x, dims=(1,)) for x in (coarse, fine, mask))
        motion = None if motion is None else -torch.flip(motion, dims=(1,))
    out = tuple(x.contiguous() for x in (coarse, fine, mask, static))
    return (*out, None if motion is None else motion.contiguous())

"""The one ``LightningDataModule``: training windows streamed from any xarray source.

:class:`RadarDataModule` opens the sources lazily
(:mod:`~xnowcast.training.lightning.sources`), holds out the validation days,
and draws importance-sampled windows (:mod:`~xnowcast.training.lightning.windows`)
that a *task* turns into model batches:

* :class:`NowcastTask` - ``input_frames + lead_frames`` frames, a
  :class:`~xnowcast.training.data.CropBatch` (inputs, targets, validity masks);
* :class:`DownscaleTask` - ``(window - 1) * time_factor + 1`` fine frames, coarsened
  in space and time as a coarser observation would be
  (:func:`~xnowcast.training.pairs.coarsen_window`), a tuple ``(coarse, fine, mask, static)``;
* :class:`LagTask` - ``max(lags) + 1`` frames without a missing pixel, from which
  pairs of patches and their time-lag class are drawn for a self-supervised
  encoder (:func:`~xnowcast.training.atmodist.sample_lag_pairs`), a tuple
  ``(first, second, label)``.

Batches come from an ``IterableDataset`` whose batch of step ``s`` on rank ``r``
depends only on ``(seed, s, r)``: resuming at step ``s`` continues the exact
sequence of an uninterrupted run, and ``num_workers`` loader processes share
the steps round-robin (the loader returns them in step order).  Each batch gets
a random element of the dihedral group (rotations and flips; time reversal too
for downscaling), drawn from the same key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from xnowcast.errors import TrainingError
from xnowcast.training.data import CropBatch
from xnowcast.training.lightning.sources import (
    HOLDOUT_DATES,
    Stream,
    heldout_streams,
    open_sources,
    split_holdout,
)
from xnowcast.training.lightning.windows import Window, WindowSampler, key_rng

__all__ = ["DownscaleTask", "LagTask", "NowcastTask", "RadarDataModule", "WindowDataset"]

#: Key offset of the batches used for batch-norm statistics (never a training step).
STANDING_STATS_KEY = 2**40
#: Seed of the lag pairs drawn from the held-out windows (the same pairs at every call).
HELDOUT_PAIRS_SEED = 1234


@dataclass
class NowcastTask:
    """Windows of ``input_frames + lead_frames`` frames for a nowcasting model."""

    input_frames: int
    lead_frames: int
    max_rate: float = 128.0
    spatial_multiple: int = 1

    @property
    def frames(self) -> int:
        return self.input_frames + self.lead_frames

    def batch(
        self, windows: Sequence[Window], statics: Any, rng: torch.Generator | None
    ) -> CropBatch:
        """Stack windows into a :class:`CropBatch` (NaN -> 0 with a validity mask)."""
        from xnowcast.training.gan_step import dihedral

        arr = np.stack([w.values for w in windows])[:, :, None]
        valid = torch.from_numpy(np.isfinite(arr))
        values = torch.from_numpy(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, self.max_rate))
        i = self.input_frames
        origins = [{"stream": w.stream, "t0": w.t0, "y0": w.y0, "x0": w.x0} for w in windows]
        out = CropBatch(values[:, :i], values[:, i:], valid[:, i:], valid[:, :i], origins)
        return dihedral(out, rng) if rng is not None else out


@dataclass
class DownscaleTask:
    """Windows of fine frames, coarsened into the input of a downscaling model."""

    window: int
    factor: int
    time_factor: int
    static_channels: int = 0
    spatial_multiple: int = 1

    @property
    def frames(self) -> int:
        return (self.window - 1) * self.time_factor + 1

    def batch(
        self, windows: Sequence[Window], statics: Any, rng: torch.Generator | None
    ) -> tuple[torch.Tensor, ...]:
        """``(coarse, fine, mask, static)`` tensors (NaN -> 0; ``mask`` where the loss counts)."""
        from xnowcast.training.pairs import coarsen_window, dihedral

        coarse_l, fine_l, mask_l, static_l = [], [], [], []
        for w in windows:
            coarse, mask = coarsen_window(w.values, self.factor, self.time_factor)
            coarse_l.append(np.nan_to_num(coarse, nan=0.0))
            fine_l.append(np.nan_to_num(w.values, nan=0.0))
            mask_l.append(mask)
            size = w.values.shape[-1]
            if statics is not None:
                static_l.append(statics[w.stream][:, w.y0 : w.y0 + size, w.x0 : w.x0 + size])
            else:
                static_l.append(np.zeros((0, size, size), np.float32))
        coarse_t = torch.from_numpy(np.stack(coarse_l)).unsqueeze(2)
        fine_t = torch.from_numpy(np.stack(fine_l)).unsqueeze(2)
        mask_t = torch.from_numpy(np.stack(mask_l)).unsqueeze(2)
        static_t = torch.from_numpy(np.stack(static_l))
        if rng is None:
            return coarse_t, fine_t, mask_t, static_t
        return dihedral((coarse_t, fine_t, mask_t, static_t, None), rng)[:4]


@dataclass
class LagTask:
    """Windows of ``max(lags) + 1`` frames, cut into lag pairs for a self-supervised encoder.

    The windows of a batch are the places of one patch bank ``(N, frames, P, P)``;
    :func:`~xnowcast.training.atmodist.sample_lag_pairs` draws ``pairs_per_window``
    pairs per window from it, as the encoder's own trainer draws them from its
    banks: lag class uniform, start time uniform, redrawn while both patches are
    dry, random order, the same dihedral element applied to both patches.
    Windows hold no missing pixel (``max_missing = 0``), as the banks' places.
    Held-out windows give ``heldout_pairs_per_window`` pairs each, from a fixed seed.
    """

    lags: tuple[int, ...]
    pairs_per_window: int = 4
    heldout_pairs_per_window: int = 8
    spatial_multiple: int = 4
    max_missing: float = 0.0

    @property
    def frames(self) -> int:
        return max(self.lags) + 1

    @staticmethod
    def bank(windows: Sequence[Window]) -> torch.Tensor:
        """The windows as one patch bank ``(N, frames, P, P)`` (mm/h)."""
        arr = np.stack([np.nan_to_num(w.values, nan=0.0) for w in windows])
        return torch.from_numpy(arr.astype(np.float32))

    def batch(
        self, windows: Sequence[Window], statics: Any, rng: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(first, second, label)``: patches ``(N, 1, P, P)`` and lag classes ``(N,)``.

        Without ``rng`` (held-out windows) the pairs are drawn from a fixed seed.
        """
        from xnowcast.training.atmodist import sample_lag_pairs

        per_window = self.pairs_per_window
        if rng is None:
            rng = torch.Generator().manual_seed(HELDOUT_PAIRS_SEED)
            per_window = self.heldout_pairs_per_window
        size = per_window * len(windows)
        return sample_lag_pairs([self.bank(windows)], list(self.lags), size, rng)


def _stream_static(stream: Stream, factor: int) -> np.ndarray:
    """FC-ZSM's static fields of a whole stream (coverage over all its frames, scaled x / y)."""
    from xnowcast.grids import static_fields

    da = stream.data
    h, w = (da.sizes["y"] // factor) * factor, (da.sizes["x"] // factor) * factor
    fine = da.isel(y=slice(0, h), x=slice(0, w))
    covered = fine.notnull().all("time").coarsen(y=factor, x=factor).all().values
    coverage = np.where(covered, 0.0, np.nan)[None]
    xf, yf = da["x"].values[:w], da["y"].values[:h]
    x = xf[::factor] + (xf[1] - xf[0]) * (factor - 1) / 2
    y = yf[::factor] + (yf[1] - yf[0]) * (factor - 1) / 2
    return static_fields(coverage, factor, x, y)


class WindowDataset(IterableDataset):
    """An endless stream of batches; the batch of step ``s`` depends only on ``(seed, s, rank)``.

    Parameters
    ----------
    sampler, task
        Where windows come from and how they become batches.
    batch_size, seed, rank
        Windows per batch, run seed, data-parallel rank.
    start_step
        First step to produce (the step a resumed run continues from).
    augment
        Apply a random dihedral transform to each batch.
    statics
        Per-stream static fields (downscaling models with static inputs).
    """

    def __init__(
        self,
        sampler: WindowSampler,
        task: NowcastTask | DownscaleTask | LagTask,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start_step: int = 0,
        augment: bool = True,
        statics: Any = None,
    ) -> None:
        self.sampler, self.task = sampler, task
        self.batch_size, self.seed, self.rank = int(batch_size), int(seed), int(rank)
        self.start_step, self.augment, self.statics = int(start_step), augment, statics

    def batch(self, step: int) -> Any:
        """The batch of training step ``step`` on this rank."""
        windows = [
            self.sampler.draw(key_rng(self.seed, step, self.rank, slot))
            for slot in range(self.batch_size)
        ]
        rng = None
        if self.augment:
            draw = key_rng(self.seed, step, self.rank, self.batch_size).integers(2**62)
            rng = torch.Generator().manual_seed(int(draw))
        return self.task.batch(windows, self.statics, rng)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.start_step + worker
        while True:
            yield self.batch(step)
            step += workers


class RadarDataModule(L.LightningDataModule):
    """Training windows from radar file globs, NetCDF, zarr (local or fsspec) or dataset names.

    Parameters
    ----------
    data
        Source(s): see :mod:`xnowcast.training.lightning.sources`; several as a list
        or a comma-separated string.
    task
        :class:`NowcastTask`, :class:`DownscaleTask` or :class:`LagTask`.
    crop, batch_size
        Window side in pixels of the data, windows per batch and rank.
    seed, augment
        Seed of every draw; dihedral augmentation.
    holdout_dates, val_fraction, val_windows
        The held-out split (:func:`~xnowcast.training.lightning.sources.split_holdout`)
        and how many fixed held-out windows are scored.
    var, stride, q_min, m, max_missing
        Variable of a Dataset; lattice stride and importance sampling
        (:class:`~xnowcast.training.lightning.windows.WindowSampler`); a task with
        a ``max_missing`` of its own (:class:`LagTask`) overrides ``max_missing``.
    num_workers
        Loader processes (0: batches are made in the training process).
    heldout_only
        Read only the frames on ``holdout_dates`` (which the data must hold), for
        :meth:`heldout_batch`: scoring trained weights, no training windows.
    """

    def __init__(
        self,
        data: Any,
        task: NowcastTask | DownscaleTask | LagTask,
        *,
        crop: int,
        batch_size: int,
        seed: int = 0,
        augment: bool = True,
        holdout_dates: Sequence[str] = HOLDOUT_DATES,
        val_fraction: float = 0.1,
        val_windows: int = 4,
        var: str | None = None,
        stride: int | None = None,
        q_min: float = 2e-4,
        m: float = 0.1,
        max_missing: float = 0.05,
        num_workers: int = 0,
        heldout_only: bool = False,
    ) -> None:
        super().__init__()
        multiple = task.spatial_multiple * getattr(task, "factor", 1)
        if crop % multiple:
            raise ValueError(f"the crop {crop} must be a multiple of {multiple} for this model")
        self.data, self.task = data, task
        self.crop, self.batch_size, self.seed, self.augment = crop, batch_size, seed, augment
        self.holdout_dates, self.val_fraction = tuple(holdout_dates), val_fraction
        self.val_windows, self.var, self.num_workers = val_windows, var, num_workers
        max_missing = float(getattr(task, "max_missing", max_missing))
        self.sampling = {"stride": stride, "q_min": q_min, "m": m, "max_missing": max_missing}
        self.train_sampler: WindowSampler | None = None
        self.val_sampler: WindowSampler | None = None
        self.statics: list[np.ndarray] | None = None
        self.split = ""
        self.heldout_only = heldout_only

    def setup(self, stage: str | None = None) -> None:
        """Open the sources, hold out the validation days, index the windows."""
        if self.train_sampler is not None or self.val_sampler is not None:
            return
        streams = open_sources(self.data, self.var)
        if self.heldout_only:
            val = heldout_streams(streams, self.holdout_dates)
            self.val_sampler = WindowSampler(val, self.task.frames, self.crop, **self.sampling)
            self.split = f"only the frames on {', '.join(self.holdout_dates)} (nothing trained)"
            return
        train, val, self.split = split_holdout(
            streams, self.holdout_dates, self.val_fraction, self.task.frames
        )
        self.train_sampler = WindowSampler(train, self.task.frames, self.crop, **self.sampling)
        if val:
            try:
                self.val_sampler = WindowSampler(val, self.task.frames, self.crop, **self.sampling)
            except ValueError:  # held-out frames too few or too small for a window
                self.val_sampler = None
        if isinstance(self.task, DownscaleTask) and self.task.static_channels:
            self.statics = [_stream_static(s, self.task.factor) for s in train]

    def dataset(self, start_step: int = 0, rank: int = 0) -> WindowDataset:
        """The training batches of ``rank`` from ``start_step`` on."""
        self.setup()
        if self.train_sampler is None:
            raise TrainingError("this data module reads held-out frames only: nothing to train on")
        return WindowDataset(
            self.train_sampler,
            self.task,
            self.batch_size,
            self.seed,
            rank,
            start_step,
            self.augment,
            self.statics,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = int(trainer.global_step) if trainer is not None else 0
        rank = int(trainer.global_rank) if trainer is not None else 0
        return DataLoader(
            self.dataset(start, rank),
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """A :class:`~xnowcast.training.data.CropBatch` moves as a whole; tuples as Lightning does."""
        if isinstance(batch, CropBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def heldout_batch(self) -> Any:
        """Fixed held-out windows as one batch (no augmentation), or None without a split."""
        self.setup()
        if self.val_sampler is None:
            return None
        windows = self.val_sampler.fixed(self.val_windows)
        statics = None
        if isinstance(self.task, DownscaleTask) and self.task.static_channels:
            statics = [_stream_static(s, self.task.factor) for s in self.val_sampler.streams]
        return self.task.batch(windows, statics, None)

    def standing_batches(self, count: int) -> list[Any]:
        """``count`` training batches that no training step draws (batch-norm statistics)."""
        ds = self.dataset()
        return [ds.batch(STANDING_STATS_KEY + k) for k in range(count)]

    def standing_windows(self, count: int) -> list[Window]:
        """``count`` training windows that no training step draws (calibrations)."""
        sampler = self.dataset().sampler
        return [sampler.draw(key_rng(self.seed, STANDING_STATS_KEY, 0, k)) for k in range(count)]

    def describe(self) -> dict[str, Any]:
        """The data record of the training metadata."""
        self.setup()
        out: dict[str, Any] = {
            "source": self.data if isinstance(self.data, str | list) else "in-memory xarray",
            "split": self.split,
        }
        if self.train_sampler is not None:
            out["train"] = self.train_sampler.describe()
            out["augment"] = "dihedral" if self.augment else "none"
        if self.val_sampler is not None:
            out["heldout"] = self.val_sampler.describe()
        return out

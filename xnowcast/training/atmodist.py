"""Self-supervised training of the radar encoder: classify the time lag between two patches.

Data (:func:`patch_bank`): from each 5-minute event, square patches cut at
fixed places over the whole sequence (``(places, T, P, P)``, rain rate in mm/h,
on the canonical orientation), kept where every frame is observed and it rains
somewhere in the sequence.  A training pair (:func:`sample_lag_pairs`) is one
place, a lag class ``k`` drawn uniformly (lags 5..60 minutes), a start time
``t``, and the patches at ``t`` and ``t + lag`` (in random order: the task is
the size of the lag), redrawn while both are dry; the same element of the
dihedral group (4 rotations x flip) is applied to both patches.

Training (:func:`train_steps`): cross-entropy of :class:`LagClassifier`'s
logits, Adam; resumable through a state dict.  :func:`lag_accuracy` scores a
fixed set of held-out pairs (RMI 2021-07-04: never trained on);
:func:`calibrate_distance` sets the encoder's ``distance_scale`` to the mean
distance of 60-minute pairs of the training events.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xnowcast.models.atmodist import LagClassifier

__all__ = [
    "calibrate_distance",
    "distance_by_lag",
    "fixed_pairs",
    "lag_accuracy",
    "lag_loss",
    "patch_bank",
    "sample_lag_pairs",
    "train_steps",
]

#: A patch counts as wet when this share of it reaches ``WET_RATE`` mm/h.
WET_SHARE, WET_RATE = 0.05, 0.5


def patch_bank(values: np.ndarray, patch: int, stride: int | None = None) -> np.ndarray:
    """Patch sequences ``(places, T, P, P)`` of a ``(T, H, W)`` mm/h array (NaN missing).

    A place is kept when all its cells are observed in every frame and at least
    one frame is wet (see :data:`WET_SHARE`).
    """
    t, h, w = values.shape
    stride = stride or patch
    kept = []
    for y in range(0, h - patch + 1, stride):
        for x in range(0, w - patch + 1, stride):
            seq = values[:, y : y + patch, x : x + patch]
            if not np.isfinite(seq).all():
                continue
            if ((seq >= WET_RATE).mean(axis=(1, 2)) >= WET_SHARE).any():
                kept.append(seq)
    if not kept:
        return np.zeros((0, t, patch, patch), np.float32)
    return np.stack(kept).astype(np.float32)


def _wet(bank: Tensor) -> Tensor:
    return (bank >= WET_RATE).float().mean((-2, -1)) >= WET_SHARE


def sample_lag_pairs(
    banks: list[Tensor], lags: list[int], size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """A batch of lag pairs: ``first, second`` ``(N, 1, P, P)`` and class labels ``(N,)``.

    Banks shorter than a lag never give that lag; both patches dry is redrawn
    (up to 20 times).
    """
    firsts, seconds, labels = [], [], []
    weights = torch.tensor([float(b.shape[0]) for b in banks])
    for _ in range(size):
        for _attempt in range(20):
            bank = banks[int(torch.multinomial(weights, 1, generator=generator))]
            label = int(torch.randint(len(lags), (1,), generator=generator))
            lag = lags[label]
            if bank.shape[1] <= lag:
                continue
            place = int(torch.randint(bank.shape[0], (1,), generator=generator))
            start = int(torch.randint(bank.shape[1] - lag, (1,), generator=generator))
            a, b = bank[place, start], bank[place, start + lag]
            if _wet(a) or _wet(b):
                break
        if bool(torch.randint(2, (1,), generator=generator)):
            a, b = b, a
        k = int(torch.randint(4, (1,), generator=generator))
        flip = bool(torch.randint(2, (1,), generator=generator))
        pair = torch.rot90(torch.stack([a, b]), k, dims=(-2, -1))
        pair = torch.flip(pair, dims=(-1,)) if flip else pair
        firsts.append(pair[0])
        seconds.append(pair[1])
        labels.append(label)
    return (
        torch.stack(firsts).unsqueeze(1),
        torch.stack(seconds).unsqueeze(1),
        torch.tensor(labels),
    )


def lag_loss(net: LagClassifier, first: Tensor, second: Tensor, label: Tensor) -> Tensor:
    """The pretext loss: cross-entropy of the lag-class logits of the pairs."""
    return F.cross_entropy(net(first, second), label)


def train_steps(
    net: LagClassifier,
    optimiser: torch.optim.Optimizer,
    banks: list[Tensor],
    generator: torch.Generator,
    steps: int,
    batch_size: int = 32,
) -> list[float]:
    """``steps`` Adam steps of the lag cross-entropy; the losses."""
    net.train()
    losses = []
    for _ in range(steps):
        first, second, label = sample_lag_pairs(banks, net.lags, batch_size, generator)
        loss = lag_loss(net, first, second, label)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def lag_accuracy(net: LagClassifier, pairs: tuple[Tensor, Tensor, Tensor]) -> dict[str, float]:
    """Share of pairs whose lag class is right, and right to within one class."""
    net.eval()
    first, second, label = pairs
    guess = torch.cat(
        [net(a, b).argmax(1) for a, b in zip(first.split(64), second.split(64), strict=True)]
    )
    return {
        "accuracy": float((guess == label).float().mean()),
        "within_one_class": float(((guess - label).abs() <= 1).float().mean()),
        "chance": 1.0 / len(net.lags),
    }


@torch.no_grad()
def distance_by_lag(net: LagClassifier, pairs: tuple[Tensor, Tensor, Tensor]) -> dict[int, float]:
    """Mean encoder distance of the pairs of each lag (frames), in ``distance_scale`` units."""
    net.eval()
    first, second, label = pairs
    dist = net.encoder.distance(first, second)
    return {
        int(net.lags[k]): float(dist[label == k].mean())
        for k in range(len(net.lags))
        if bool((label == k).any())
    }


@torch.no_grad()
def calibrate_distance(
    net: LagClassifier, banks: list[Tensor], generator: torch.Generator, count: int = 256
) -> float:
    """Set ``distance_scale`` to the mean raw distance of 60-minute (largest-lag) pairs."""
    net.eval()
    lags = [max(net.lags)]
    first, second, _ = sample_lag_pairs(banks, lags, count, generator)
    net.encoder.distance_scale.fill_(1.0)
    raw = float(net.encoder.distance(first, second).mean())
    net.encoder.distance_scale.fill_(max(raw, 1e-12))
    return raw


def fixed_pairs(banks: list[Tensor], lags: list[int], count: int, seed: int) -> Any:
    """A reproducible set of lag pairs (validation)."""
    return sample_lag_pairs(banks, lags, count, torch.Generator().manual_seed(seed))

"""Post-processing of each STEPS member: precipitation mask and probability matching.

Both act on the recomposed (dB) field of every member at every step, batched
over members:

* the *incremental mask* (Seed et al. 2013; pysteps' ``mask_method="incremental"``)
  keeps rain from appearing far from where the member had rain one step earlier:
  the previous rain area is dilated by the distance rain can travel in a step,
  then given a soft rim, and the new field is pulled towards its minimum outside;
* *probability matching* gives each member the distribution of the last
  observation: ``"cdf"`` maps the ranks of the forecast onto the observed values
  (empirical quantile mapping, keeping the forecast's wet fraction), ``"mean"``
  shifts the forecast's rain so that its mean equals the observed one.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["apply_mask", "cdf_match", "incremental_mask", "manhattan_distance", "mean_match"]


def _spread(distance: Tensor, dim: int, limit: int) -> Tensor:
    """Min-plus convolution along ``dim`` with ``|k|``, exact up to ``limit``.

    Radii double at every pass (``|k|`` for ``|k| < 2**j`` combined with shifts of
    ``2**j``), so ``limit`` needs about ``log2(limit)`` passes.
    """
    out, shift = distance, 1
    size = distance.shape[dim]
    while shift <= limit and shift < size:
        nxt = out.clone()
        ahead, behind = out.narrow(dim, shift, size - shift), out.narrow(dim, 0, size - shift)
        step = torch.tensor(shift, dtype=out.dtype, device=out.device)
        torch.minimum(
            nxt.narrow(dim, shift, size - shift),
            behind + step,
            out=nxt.narrow(dim, shift, size - shift),
        )
        torch.minimum(
            nxt.narrow(dim, 0, size - shift), ahead + step, out=nxt.narrow(dim, 0, size - shift)
        )
        out, shift = nxt, 2 * shift
    return out


def manhattan_distance(wet: Tensor, limit: int) -> Tensor:
    """Distance in 4-neighbour steps from every pixel to the nearest wet pixel.

    Exact up to ``limit``; farther pixels get at least ``limit + 1``. The L1
    distance is separable (rows, then columns), and each pass doubles the radius
    covered, so the cost grows with ``log2(limit)``; small integers keep it cheap.

    Parameters
    ----------
    wet
        ``(N, H, W)`` boolean.
    limit
        Largest distance of interest (below 120).

    Returns
    -------
    Tensor
        ``(N, H, W)`` uint8 distances, 0 on wet pixels, capped at ``limit + 1``.
    """
    if not 0 <= limit < 120:
        raise ValueError(f"limit must be in [0, 120), got {limit}")
    far = torch.tensor(limit + 1, dtype=torch.uint8, device=wet.device)
    distance = torch.where(wet, torch.zeros_like(far), far)
    distance = _spread(distance, -1, limit).clamp_max(limit + 1)
    return _spread(distance, -2, limit).clamp_max(limit + 1)


def incremental_mask(wet: Tensor, radius: int, rim: int) -> Tensor:
    """Soft mask around the wet pixels: 1 within ``radius``, fading to 0 over ``rim`` more.

    The rain area dilated ``radius`` times by the 4-neighbour cross, plus the
    average of ``rim`` further dilations: a pixel ``j`` steps beyond the dilated area
    gets ``(rim + 1 - j) / (rim + 1)`` (the grayscale rim of Seed et al. 2013).

    Parameters
    ----------
    wet
        ``(N, H, W)`` boolean rain area.
    radius
        Distance (4-neighbour steps) rain may move in one time step.
    rim
        Width of the linear fade beyond ``radius``.

    Returns
    -------
    Tensor
        ``(N, H, W)`` float in ``[0, 1]`` (all zero where a member has no rain).
    """
    distance = manhattan_distance(wet, radius + rim + 1).to(torch.float32)
    beyond = (distance - radius).clamp_min(0.0)
    return ((rim + 1.0 - beyond) / (rim + 1.0)).clamp(0.0, 1.0)


def apply_mask(field: Tensor, mask: Tensor) -> Tensor:
    """Pull each member towards its minimum where ``mask`` < 1 (``(N, H, W)`` both)."""
    floor = field.amin(dim=(1, 2), keepdim=True)
    return floor + (field - floor) * mask


def _at_rank(ranked: Tensor, position: Tensor) -> Tensor:
    """``ranked`` (sorted, 1-D) at fractional positions, interpolated linearly."""
    low = position.floor().long().clamp(0, ranked.numel() - 1)
    high = (low + 1).clamp(max=ranked.numel() - 1)
    weight = position - low
    return torch.lerp(ranked[low], ranked[high], weight)


def cdf_match(field: Tensor, ranked_target: Tensor, quanta: int = 1 << 15) -> Tensor:
    """Give each member the empirical distribution of the target, keeping its ranks.

    Pixel ``i`` of a member, the ``r``-th smallest of the member's ``H * W``
    values, gets the ``r``-th smallest target value. Pixels at the member's
    minimum (no rain) get the target's minimum. When the target has more rain than
    the member, its smallest rain values are set to its minimum first, so that the
    member keeps its own wet fraction.

    The ranks come from a counting sort instead of a comparison sort: each
    member's values are binned into ``quanta`` equal bins between its minimum and
    maximum, and pixels sharing a bin share their mean rank (their values differ
    by less than the range over ``quanta``), which makes matching linear in the
    number of pixels.

    Parameters
    ----------
    field
        ``(N, H, W)`` forecasts.
    ranked_target
        ``(H * W,)`` the observed field's values, finite, sorted in ascending order.
    quanta
        Number of bins of the counting sort.

    Returns
    -------
    Tensor
        ``(N, H, W)`` matched fields.
    """
    n, height, width = field.shape
    flat = field.reshape(n, -1)
    size = ranked_target.numel()
    floor_target = ranked_target[0]
    floor = flat.amin(dim=1, keepdim=True)
    top = flat.amax(dim=1, keepdim=True)
    dry = flat <= floor
    member_wet = (~dry).sum(dim=1, keepdim=True)
    # bin 0 holds the dry pixels, bins 1 .. quanta - 1 the wet ones
    scale = (quanta - 2) / (top - floor).clamp_min(1e-12)
    bins = ((flat - floor) * scale).long().clamp_(0, quanta - 2).add_(1)
    bins = torch.where(dry, 0, bins)
    offsets = torch.arange(n, device=field.device)[:, None] * quanta
    counts = torch.bincount((bins + offsets).flatten(), minlength=n * quanta).view(n, quanta)
    # the mean rank of the pixels of each bin, looked up once per pixel
    mean_rank = (counts.cumsum(dim=1) - 0.5 * (counts + 1)).to(field.dtype)
    values = _at_rank(ranked_target, mean_rank.gather(1, bins))
    # the target's quantile at the member's dry fraction: below it, no rain
    cut = _at_rank(
        ranked_target, (size - member_wet).clamp_min(0).to(field.dtype) * (size - 1) / size
    )
    target_wet = (ranked_target > floor_target).sum()
    values = torch.where((target_wet > member_wet) & (values < cut), floor_target, values)
    return torch.where(dry, floor_target, values).reshape(n, height, width)


def mean_match(field: Tensor, target_mean: Tensor, threshold: float) -> Tensor:
    """Shift each member's values ``>= threshold`` so that their mean is ``target_mean``."""
    wet = field >= threshold
    count = wet.sum(dim=(1, 2), keepdim=True)
    total = torch.where(wet, field, torch.zeros_like(field)).sum(dim=(1, 2), keepdim=True)
    shift = torch.where(count > 0, target_mean - total / count.clamp_min(1), 0.0)
    return torch.where(wet, field + shift, field)

"""The one place that knows the tensor layout ``(batch, time, channel, H, W)``.

numpy <-> torch without needless copies, NaN masking, padding to a model's
spatial multiple, and tiling with overlap and linear blending for domains larger
than a tile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from xnowcast.errors import ModelError

__all__ = [
    "blend_window",
    "fill_missing",
    "fill_nearest",
    "pad_to_multiple",
    "run_tiled",
    "tile_starts",
    "to_batch_tensor",
]


def fill_missing(array: np.ndarray, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(filled float32 array, valid mask)``: NaN replaced by ``fill``, mask True where finite."""
    array = np.asarray(array, dtype=np.float32)
    valid = np.isfinite(array)
    if valid.all():
        return array, valid
    return np.where(valid, array, np.float32(fill)), valid


def fill_nearest(array: np.ndarray) -> np.ndarray:
    """NaN replaced by the nearest valid value of the same 2-D field (0 where a field is all NaN).

    Used before interpolating models, so that valid cells next to missing ones are
    not pulled towards "no rain"; the missing cells are set back to NaN afterwards.
    """
    from scipy import ndimage

    array = np.array(array, dtype=np.float32, copy=True)
    missing = ~np.isfinite(array)
    if not missing.any():
        return array
    flat = array.reshape(-1, *array.shape[-2:])
    flat_missing = missing.reshape(flat.shape)
    for field, hole in zip(flat, flat_missing, strict=True):
        if hole.all():
            field[:] = 0.0
        elif hole.any():
            index = ndimage.distance_transform_edt(
                hole, return_distances=False, return_indices=True
            )
            field[:] = field[tuple(index)]
    return array


def to_batch_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, T, H, W)`` numpy -> ``(N, T, 1, H, W)`` float32 tensor on ``device``.

    Shares memory with ``array`` on the CPU when it is float32 and contiguous; uses
    pinned memory and a non-blocking copy towards a GPU.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).unsqueeze(2)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad the last two dims (bottom/right) up to a multiple; return the pads."""
    h, w = x.shape[-2:]
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (0, 0)
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)
    padded = F.pad(flat, (0, pad_w, 0, pad_h), mode="constant", value=0.0)
    return padded.reshape(*lead, h + pad_h, w + pad_w), (pad_h, pad_w)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start indices of tiles of length ``tile`` covering ``size`` with at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def blend_window(
    tile_h: int, tile_w: int, overlap: int, device: torch.device, scale: int = 1
) -> torch.Tensor:
    """A tile's blending weight: 1 inside, rising linearly over ``overlap`` at the edges.

    ``tile_h``, ``tile_w`` and ``overlap`` are in input pixels; the weight is
    ``(tile_h * scale, tile_w * scale)``, constant within each ``scale x scale``
    block of output pixels (the output cells of one input cell).  A blend of
    tiles whose outputs each keep the block means of the input then keeps them
    too: every output cell of a block is mixed with the same weights.
    """

    def ramp(n: int) -> torch.Tensor:
        if overlap <= 0:
            return torch.ones(n, device=device)
        i = torch.arange(n, device=device, dtype=torch.float32)
        edge = torch.minimum(i + 1, n - i) / (overlap + 1)
        return edge.clamp(max=1.0)

    window = ramp(tile_h)[:, None] * ramp(tile_w)[None, :]
    if scale > 1:
        window = window.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return window


def _tiles(h: int, w: int, tile: int, overlap: int) -> Iterator[tuple[slice, slice]]:
    for y0 in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            yield slice(y0, min(y0 + tile, h)), slice(x0, min(x0 + tile, w))


def run_tiled(
    fn: Callable[[torch.Tensor, slice, slice], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    scale: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping spatial tiles of ``x`` and blend the results.

    Parameters
    ----------
    fn
        ``fn(tile, ys, xs)`` maps a tile ``(..., h, w)`` cut at ``[ys, xs]`` to
        ``(..., h*scale, w*scale)`` (leading dims may change).
    x
        Input with spatial dims last.
    tile, overlap
        Tile size and overlap in input pixels (tile should be a multiple of the
        model's spatial multiple).
    scale
        Spatial upscaling of ``fn`` (1 for nowcasting).  The blending weights are
        constant within each ``scale x scale`` output block, so tiles whose
        outputs keep the input's block means (consistent downscalers) give a
        blend that keeps them across the seams too.

    Returns
    -------
    torch.Tensor
        The blended output; the same as ``fn(x)`` when ``x`` fits in one tile.
    """
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x, slice(0, h), slice(0, w))
    out: torch.Tensor | None = None
    weight_sum: torch.Tensor | None = None
    for ys, xs in _tiles(h, w, tile, overlap):
        result = fn(x[..., ys, xs], ys, xs)
        oys = slice(ys.start * scale, ys.stop * scale)
        oxs = slice(xs.start * scale, xs.stop * scale)
        size = (ys.stop - ys.start, xs.stop - xs.start)
        if result.shape[-2:] != (size[0] * scale, size[1] * scale):
            raise ModelError(
                f"A tile of {size} input pixels gave {tuple(result.shape[-2:])} output pixels; "
                f"expected {scale} x as many (scale={scale})."
            )
        wgt = blend_window(*size, overlap, result.device, scale)
        if out is None:
            out = result.new_zeros((*result.shape[:-2], h * scale, w * scale))
            weight_sum = result.new_zeros((h * scale, w * scale))
        # a pixel unknown (NaN) in any tile stays unknown in the blend
        finite = torch.isfinite(result)
        out[..., oys, oxs] += torch.where(finite, result, 0.0) * wgt
        weight_sum[oys, oxs] += wgt
        if not bool(finite.all()):
            out[..., oys, oxs] = torch.where(finite, out[..., oys, oxs], torch.nan)
    assert out is not None and weight_sum is not None
    return out / weight_sum

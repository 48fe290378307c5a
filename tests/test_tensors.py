"""The tensor layer: NaN filling, numpy -> torch, padding, tiles and their blending."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from xnowcast.tensors import (
    blend_window,
    fill_missing,
    fill_nearest,
    pad_to_multiple,
    run_tiled,
    tile_starts,
    to_batch_tensor,
)

CPU = torch.device("cpu")


# --- fill_missing ---------------------------------------------------------------------------------


def test_fill_missing_replaces_nan_and_reports_the_mask() -> None:
    array = np.array([[1.0, np.nan], [np.inf, 3.0]])
    filled, valid = fill_missing(array, fill=-1.0)
    assert filled.dtype == np.float32
    np.testing.assert_array_equal(filled, [[1.0, -1.0], [-1.0, 3.0]])
    np.testing.assert_array_equal(valid, [[True, False], [False, True]])
    assert np.isnan(array[0, 1])  # the input is untouched


def test_fill_missing_without_nan_does_not_copy_float32() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    filled, valid = fill_missing(array)
    assert filled is array and valid.all()
    ints, _ = fill_missing(np.arange(3, dtype=np.int16))
    assert ints.dtype == np.float32
    np.testing.assert_array_equal(ints, [0.0, 1.0, 2.0])


# --- fill_nearest -----------------------------------------------------------------------------------


def test_fill_nearest_takes_the_nearest_valid_value() -> None:
    field = np.array(
        [
            [1.0, 1.0, np.nan, 5.0, 5.0],
            [1.0, np.nan, np.nan, np.nan, 5.0],
            [2.0, 2.0, np.nan, 7.0, 7.0],
        ]
    )
    before = field.copy()
    filled = fill_nearest(field)
    assert filled.dtype == np.float32 and np.isfinite(filled).all()
    np.testing.assert_array_equal(before, field, strict=True)  # input untouched
    valid = np.isfinite(field)
    np.testing.assert_array_equal(filled[valid], field[valid].astype(np.float32))
    assert filled[1, 1] == 1.0 and filled[1, 3] == 5.0  # a direct neighbour wins
    # every filled cell holds the value of one of its nearest valid cells
    ys, xs = np.nonzero(valid)
    for y, x in zip(*np.nonzero(~valid), strict=True):
        distance = np.hypot(ys - y, xs - x)
        nearest = field[ys, xs][distance == distance.min()]
        assert filled[y, x] in nearest


def test_fill_nearest_works_per_field_and_zero_fills_empty_fields() -> None:
    stack = np.full((2, 3, 4, 4), np.nan, dtype=np.float32)
    stack[0, 0, 2, 2] = 3.0
    stack[1, 2, 0, 0] = 8.0
    filled = fill_nearest(stack)
    assert (filled[0, 0] == 3.0).all() and (filled[1, 2] == 8.0).all()
    assert (filled[0, 1:] == 0.0).all() and (filled[1, :2] == 0.0).all()
    complete = np.ones((2, 3), dtype=np.float32)
    out = fill_nearest(complete)
    np.testing.assert_array_equal(out, complete)
    assert out is not complete  # always a copy: the caller's array is never written


# --- to_batch_tensor ------------------------------------------------------------------------------


def test_to_batch_tensor_adds_the_channel_and_shares_memory() -> None:
    array = np.random.default_rng(0).random((2, 3, 4, 5), dtype=np.float32)
    tensor = to_batch_tensor(array, CPU)
    assert tensor.shape == (2, 3, 1, 4, 5) and tensor.dtype == torch.float32
    assert tensor.data_ptr() == array.ctypes.data  # no copy on the CPU
    np.testing.assert_array_equal(tensor[:, :, 0].numpy(), array)


def test_to_batch_tensor_converts_float64_and_non_contiguous() -> None:
    array = np.random.default_rng(1).random((2, 3, 5, 4))
    tensor = to_batch_tensor(array.transpose(0, 1, 3, 2), CPU)
    assert tensor.dtype == torch.float32 and tensor.shape == (2, 3, 1, 4, 5)
    np.testing.assert_allclose(
        tensor[:, :, 0].numpy(), array.transpose(0, 1, 3, 2).astype(np.float32)
    )


# --- pad_to_multiple --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "multiple", "pads"),
    [
        ((1, 2, 1, 30, 45), 8, (2, 3)),
        ((3, 5, 3), 8, (3, 5)),
        ((4, 1, 7), 1, (0, 0)),
        ((2, 64, 32), 32, (0, 0)),
        ((1, 33, 31), 32, (31, 1)),
    ],
)
def test_pad_to_multiple(shape: tuple[int, ...], multiple: int, pads: tuple[int, int]) -> None:
    x = torch.rand(shape) + 1.0
    padded, got = pad_to_multiple(x, multiple)
    assert got == pads
    h, w = shape[-2:]
    assert padded.shape == (*shape[:-2], h + pads[0], w + pads[1])
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert torch.equal(padded[..., :h, :w], x)
    assert (padded[..., h:, :] == 0).all() and (padded[..., :, w:] == 0).all()
    if pads == (0, 0):
        assert padded is x


def test_pad_to_multiple_keeps_boolean_masks() -> None:
    mask = torch.ones(1, 2, 1, 5, 6, dtype=torch.bool)
    padded, _ = pad_to_multiple(mask, 4)
    assert padded.dtype == torch.bool and padded.shape[-2:] == (8, 8)
    assert padded[..., :5, :6].all() and not padded[..., 5:, :].any()


# --- tiles --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "tile", "overlap"),
    [(10, 16, 4), (16, 16, 4), (100, 32, 8), (33, 32, 0), (200, 64, 16), (70, 32, 31)],
)
def test_tile_starts_cover_with_overlap(size: int, tile: int, overlap: int) -> None:
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0
    if size <= tile:
        assert starts == [0]
        return
    assert starts[-1] == size - tile  # the last tile ends at the edge
    assert starts == sorted(set(starts))
    for a, b in itertools.pairwise(starts):
        assert a + tile - b >= overlap  # neighbours overlap at least by `overlap`


def test_blend_window_ramps() -> None:
    window = blend_window(8, 10, 3, CPU)
    assert window.shape == (8, 10)
    assert (window > 0).all() and window.max() == 1.0
    np.testing.assert_allclose(window[0, :4].numpy(), [1 / 16, 2 / 16, 3 / 16, 4 / 16])
    np.testing.assert_allclose(window[4, 4].item(), 1.0)
    assert torch.equal(window, window.flip(0)) and torch.equal(window, window.flip(1))
    assert (blend_window(5, 7, 0, CPU) == 1).all()


def test_blend_window_is_constant_within_each_output_block() -> None:
    coarse = blend_window(8, 10, 3, CPU)
    fine = blend_window(8, 10, 3, CPU, scale=3)
    assert fine.shape == (24, 30)
    expected = coarse.repeat_interleave(3, 0).repeat_interleave(3, 1)
    torch.testing.assert_close(fine, expected, rtol=0, atol=0)


def test_run_tiled_keeps_block_means_of_a_consistent_downscaler_across_seams() -> None:
    """Tiles of a consistent upsampler disagree in their overlaps; the blend keeps block means."""
    import torch.nn.functional as F

    from xnowcast.models.flow import consistent_upsample

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 70, 90, generator=gen) ** 4 * 50  # rain-like: mostly light, some heavy

    def up(tile: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
        return consistent_upsample(tile, 2)  # bicubic + back-projection: depends on the tile

    tiled = run_tiled(up, x, tile=32, overlap=8, scale=2)
    whole = up(x, slice(None), slice(None))
    assert (tiled - whole).abs().max() > 0.1  # the tiles do disagree near the seams
    torch.testing.assert_close(F.avg_pool2d(tiled, 2), x, rtol=1e-5, atol=1e-5)


def test_run_tiled_refuses_a_tile_output_of_the_wrong_size() -> None:
    from xnowcast.errors import ModelError

    with pytest.raises(ModelError, match="expected 2 x as many"):
        run_tiled(lambda t, ys, xs: t, torch.rand(1, 40, 40), tile=16, overlap=4, scale=2)


def test_run_tiled_single_tile_calls_once_with_everything() -> None:
    x = torch.rand(2, 3, 20, 30)
    calls = []

    def fn(tile: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
        calls.append((ys, xs))
        return tile * 2

    out = run_tiled(fn, x, tile=32, overlap=8)
    assert calls == [(slice(0, 20), slice(0, 30))]
    assert torch.equal(out, x * 2)


def test_run_tiled_passes_the_right_slices() -> None:
    x = torch.arange(50 * 70, dtype=torch.float32).reshape(1, 50, 70)
    seen = []

    def fn(tile: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
        assert torch.equal(tile, x[..., ys, xs])
        seen.append((ys.start, xs.start))
        return tile

    out = run_tiled(fn, x, tile=32, overlap=8)
    assert sorted(seen) == [(y, x0) for y in (0, 18) for x0 in (0, 24, 38)]
    torch.testing.assert_close(out, x, rtol=1e-6, atol=0)


def test_run_tiled_linear_map_and_changed_leading_dims() -> None:
    x = torch.rand(2, 3, 45, 61)

    def fn(tile: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
        # (B, T, h, w) -> (B, 4, h, w): a per-pixel linear map, exactly tileable
        return torch.stack([tile.sum(1) * k + 1 for k in range(4)], dim=1)

    tiled = run_tiled(fn, x, tile=16, overlap=4)
    torch.testing.assert_close(tiled, fn(x, slice(None), slice(None)), rtol=1e-5, atol=1e-5)


def test_run_tiled_with_upscaling() -> None:
    x = torch.rand(1, 2, 37, 50)

    def up(tile: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
        return tile.repeat_interleave(3, dim=-2).repeat_interleave(3, dim=-1)

    tiled = run_tiled(up, x, tile=16, overlap=4, scale=3)
    assert tiled.shape == (1, 2, 111, 150)
    torch.testing.assert_close(tiled, up(x, slice(None), slice(None)), rtol=1e-6, atol=1e-6)


def test_run_tiled_keeps_nan_exactly_where_it_was() -> None:
    x = torch.rand(1, 40, 40)
    x[0, 5, 7] = torch.nan
    x[0, 20:26, 14:18] = torch.nan  # inside an overlap band
    out = run_tiled(lambda t, ys, xs: t.clone(), x, tile=16, overlap=6)
    assert torch.equal(torch.isnan(out), torch.isnan(x))
    finite = torch.isfinite(x)
    torch.testing.assert_close(out[finite], x[finite], rtol=1e-6, atol=0)


def test_run_tiled_blends_disagreeing_tiles_smoothly() -> None:
    x = torch.zeros(1, 8, 40)

    def offset(tile: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
        return tile + float(xs.start)  # each tile answers differently

    out = run_tiled(offset, x, tile=16, overlap=8)[0, 0]
    # left edge only the first tile (offset 0), right edge only the last (offset 24)
    assert out[0].item() == 0.0 and out[-1].item() == 24.0
    steps = out.diff()
    assert (steps >= 0).all()  # a monotone blend, no seams going back and forth
    assert steps.max().item() < 24.0 / 4  # and no jump anywhere

"""Deformable convolution in plain torch against its definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xnowcast.models.deform import (
    DeformAlign,
    DeformConv2d,
    deform_conv2d,
    deform_conv2d_reference,
)


def _inputs(seed: int, groups: int, stride: int, pad: int, dil: int, size=(5, 6)):
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    x = torch.randn(2, 4, h, w, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    ho = (h + 2 * pad - dil * 2 - 1) // stride + 1
    wo = (w + 2 * pad - dil * 2 - 1) // stride + 1
    # Offsets up to +-3 pixels: many samples fall between pixels and some outside the image.
    offset = 3 * (2 * torch.rand(2, 2 * groups * 9, ho, wo, generator=gen, dtype=torch.float64) - 1)
    mask = torch.rand(2, groups * 9, ho, wo, generator=gen, dtype=torch.float64)
    return x, offset, weight, bias, mask


@pytest.mark.parametrize(
    ("groups", "stride", "pad", "dil"),
    [(1, 1, 1, 1), (2, 1, 1, 1), (4, 2, 1, 1), (2, 1, 2, 2), (1, 1, 0, 1)],
)
@pytest.mark.parametrize("modulated", [False, True])
def test_matches_loop_reference(groups, stride, pad, dil, modulated):
    x, offset, weight, bias, mask = _inputs(groups + stride + dil, groups, stride, pad, dil)
    mask = mask if modulated else None
    fast = deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask)
    slow = deform_conv2d_reference(x, offset, weight, bias, stride, pad, dil, mask)
    assert fast.shape == slow.shape
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("stride", "pad", "dil"), [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 0, 1)])
def test_zero_offsets_are_an_ordinary_convolution(stride, pad, dil):
    x, offset, weight, bias, _ = _inputs(7, 2, stride, pad, dil, size=(9, 8))
    zero = torch.zeros_like(offset)
    out = deform_conv2d(x, zero, weight, bias, stride, pad, dil)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, stride, pad, dil))


def test_integer_offset_shifts_the_input():
    """An offset of (+1, -2) everywhere samples the input one row down, two columns left."""
    x, _, weight, bias, _ = _inputs(3, 1, 1, 1, 1, size=(8, 8))
    offset = torch.zeros(2, 18, 8, 8, dtype=torch.float64)
    offset[:, 0::2] = 1.0
    offset[:, 1::2] = -2.0
    shifted = torch.zeros_like(x)
    shifted[:, :, :-1, 2:] = x[:, :, 1:, :-2]  # shifted[i, j] = x[i + 1, j - 2]
    out = deform_conv2d(x, offset, weight, bias, 1, 1, 1)
    expected = F.conv2d(shifted, weight, bias, 1, 1)
    # Away from the first row and last column, where the zero padding of the shifted
    # image hides values the deformable samples still reach.
    torch.testing.assert_close(out[..., 1:, :-1], expected[..., 1:, :-1])


def test_half_pixel_offset_is_bilinear_average():
    """A 1x1 kernel sampled half a pixel right is the mean of two neighbours (0 past the edge)."""
    x = torch.arange(12.0, dtype=torch.float64).view(1, 1, 3, 4)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    offset[:, 1] = 0.5
    out = deform_conv2d(x, offset, weight)
    expected = torch.cat([(x[..., :-1] + x[..., 1:]) / 2, x[..., -1:] / 2], dim=-1)
    torch.testing.assert_close(out, expected)


def test_gradients_match_numerical():
    x, offset, weight, _, mask = _inputs(11, 2, 1, 1, 1, size=(4, 5))
    x = x[:1].requires_grad_()
    offset = offset[:1].requires_grad_()
    mask = mask[:1].requires_grad_()
    weight.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, o, w, m: deform_conv2d(a, o, w, None, 1, 1, 1, m),
        (x, offset, weight, mask),
        eps=1e-6,
        atol=1e-5,
    )


def test_untrained_align_layer_is_a_plain_convolution():
    """Offset heads start at zero: an untrained DeformAlign is its conv (times the 0.5 mask)."""
    torch.manual_seed(0)
    layer = DeformAlign(8, 16, groups=4, modulated=False)
    source, guide = torch.randn(2, 8, 10, 10), torch.randn(2, 16, 10, 10)
    conv: DeformConv2d = layer.conv
    expected = F.conv2d(source, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(layer(source, guide), expected, rtol=1e-5, atol=1e-5)
    modulated = DeformAlign(8, 16, groups=4, modulated=True)
    c = modulated.conv
    half = F.conv2d(source, c.weight, None, padding=1) * 0.5 + c.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(modulated(source, guide), half, rtol=1e-5, atol=1e-5)


def test_bounded_offsets_stay_bounded():
    torch.manual_seed(1)
    layer = DeformAlign(4, 4, groups=2, max_offset=2.0)
    torch.nn.init.normal_(layer.head.weight, std=10.0)
    offset, _ = layer.offsets(torch.randn(1, 4, 6, 6) * 10)
    assert offset.abs().max() <= 2.0
    assert offset.abs().max() > 1.0


def test_bad_shapes_are_errors():
    x = torch.randn(1, 4, 5, 5)
    weight = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="offset must have shape"):
        deform_conv2d(x, torch.zeros(1, 17, 5, 5), weight, padding=1)
    with pytest.raises(ValueError, match="do not divide"):
        deform_conv2d(x, torch.zeros(1, 2 * 3 * 9, 5, 5), weight, padding=1)

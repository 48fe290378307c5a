"""Deformable convolution in plain torch.

A deformable convolution (Dai et al. 2017; modulated form, Zhu et al. 2019)
samples its input at the regular kernel positions *plus* a learned offset per
output pixel and kernel position, and (optionally) multiplies each sample by a
modulation scalar in [0, 1].  Here the samples are taken with
:func:`torch.nn.functional.grid_sample` (bilinear, zero outside the image), so
it runs wherever torch runs; the semantics are those of
``torchvision.ops.deform_conv2d``:

* ``offset`` has shape ``(B, 2 * G * kh * kw, Ho, Wo)``; for offset group ``g``
  and kernel position ``k = i * kw + j`` the channels ``g*2K + 2k`` and
  ``g*2K + 2k + 1`` hold the displacement along y and along x (in pixels);
* the input channels are split into ``G`` contiguous groups, each moved by its
  own offsets;
* the sample of output pixel ``(ho, wo)`` at kernel position ``(i, j)`` is
  taken at ``y = ho*stride - pad + i*dilation + dy``,
  ``x = wo*stride - pad + j*dilation + dx``, bilinearly, with corners outside
  the image counting as zero;
* ``mask`` (optional) has shape ``(B, G * kh * kw, Ho, Wo)``.

:func:`deform_conv2d_reference` is a direct loop over pixels written from that
definition; it is slow and exists to test :func:`deform_conv2d` against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DeformAlign",
    "DeformConv2d",
    "deform_conv2d",
    "deform_conv2d_reference",
]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def _output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable 2D convolution (bilinear sampling with ``grid_sample``).

    Parameters
    ----------
    x
        Input, ``(B, C, H, W)``.
    offset
        Sampling displacements in pixels, ``(B, 2 * G * kh * kw, Ho, Wo)``
        (``(dy, dx)`` pairs, see the module docstring).  ``G`` must divide ``C``.
    weight
        Kernel, ``(C_out, C, kh, kw)`` (no grouped convolution).
    bias
        ``(C_out,)`` or None.
    stride, padding, dilation
        As in :func:`torch.nn.functional.conv2d`.
    mask
        Modulation, ``(B, G * kh * kw, Ho, Wo)``, or None for an unmodulated
        deformable convolution.

    Returns
    -------
    Tensor
        ``(B, C_out, Ho, Wo)``.
    """
    if x.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError("deform_conv2d expects 4D x (B,C,H,W), offset and weight")
    batch, channels, height, width = x.shape
    c_out, c_in, kh, kw = weight.shape
    if c_in != channels:
        raise ValueError(f"weight expects {c_in} input channels, x has {channels}")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    ho = _output_size(height, kh, sh, ph, dh)
    wo = _output_size(width, kw, sw, pw, dw)
    kernel = kh * kw
    if offset.shape[0] != batch or offset.shape[2:] != (ho, wo) or offset.shape[1] % (2 * kernel):
        raise ValueError(
            f"offset must have shape (B, 2*G*{kernel}, {ho}, {wo}); got {tuple(offset.shape)}"
        )
    groups = offset.shape[1] // (2 * kernel)
    if channels % groups:
        raise ValueError(f"{groups} offset groups do not divide {channels} input channels")
    if mask is not None and mask.shape != (batch, groups * kernel, ho, wo):
        raise ValueError(
            f"mask must have shape {(batch, groups * kernel, ho, wo)}; got {tuple(mask.shape)}"
        )

    dtype, device = x.dtype, x.device
    # Regular sampling positions p0 + pk, shape (K, Ho, Wo) for y and x.
    ky = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw)
    kx = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh)
    oy = torch.arange(ho, device=device, dtype=dtype) * sh - ph
    ox = torch.arange(wo, device=device, dtype=dtype) * sw - pw
    base_y = ky[:, None, None] + oy[None, :, None]
    base_x = kx[:, None, None] + ox[None, None, :]

    off = offset.view(batch, groups, kernel, 2, ho, wo)
    py = base_y + off[:, :, :, 0]
    px = base_x + off[:, :, :, 1]
    # grid_sample with align_corners=False: pixel i sits at (2i + 1)/size - 1.
    grid = torch.stack(((2 * px + 1) / width - 1, (2 * py + 1) / height - 1), dim=-1)
    grid = grid.view(batch * groups, kernel * ho, wo, 2)
    sampled = F.grid_sample(
        x.reshape(batch * groups, channels // groups, height, width),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    sampled = sampled.view(batch, groups, channels // groups, kernel, ho, wo)
    if mask is not None:
        sampled = sampled * mask.view(batch, groups, 1, kernel, ho, wo)
    columns = sampled.reshape(batch, channels * kernel, ho * wo)
    out = torch.matmul(weight.reshape(c_out, channels * kernel), columns)
    if bias is not None:
        out = out + bias.view(1, c_out, 1)
    return out.view(batch, c_out, ho, wo)


def _bilinear_at(image: Tensor, y: float, x: float) -> Tensor:
    """Value of ``image`` (C, H, W) at real position (y, x); zero outside, per corner."""
    _, height, width = image.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return image.new_zeros(image.shape[0])
    y0, x0 = math.floor(y), math.floor(x)
    value = image.new_zeros(image.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value = value + wy * wx * image[:, yy, xx]
    return value


def deform_conv2d_reference(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution as an explicit loop over pixels (slow; for tests only).

    Same arguments and result as :func:`deform_conv2d`.
    """
    batch, channels, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    ho = _output_size(height, kh, sh, ph, dh)
    wo = _output_size(width, kw, sw, pw, dw)
    kernel = kh * kw
    groups = offset.shape[1] // (2 * kernel)
    per_group = channels // groups
    out = x.new_zeros(batch, c_out, ho, wo)
    for b in range(batch):
        for i in range(ho):
            for j in range(wo):
                acc = x.new_zeros(c_out)
                for g in range(groups):
                    chans = slice(g * per_group, (g + 1) * per_group)
                    for ki in range(kh):
                        for kj in range(kw):
                            k = ki * kw + kj
                            dy = float(offset[b, g * 2 * kernel + 2 * k, i, j])
                            dx = float(offset[b, g * 2 * kernel + 2 * k + 1, i, j])
                            y = i * sh - ph + ki * dh + dy
                            xx = j * sw - pw + kj * dw + dx
                            sample = _bilinear_at(x[b, chans], y, xx)
                            if mask is not None:
                                sample = sample * mask[b, g * kernel + k, i, j]
                            acc = acc + weight[:, chans, ki, kj] @ sample
                out[b, :, i, j] = acc
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """A deformable convolution layer whose offsets (and mask) are given at call time.

    Parameters
    ----------
    in_channels, out_channels
        Channel counts.
    kernel_size, stride, padding, dilation
        As in :class:`torch.nn.Conv2d`.
    bias
        Whether to learn a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )


class DeformAlign(nn.Module):
    """Move a feature map with a deformable convolution whose offsets come from other features.

    ``forward(source, guide)`` predicts, from ``guide`` (e.g. the concatenation
    of the source frame's and the reference frame's features), the offsets and
    modulation masks of a 3x3 deformable convolution applied to ``source``.
    The offset predictor starts at zero, so an untrained layer is an ordinary
    convolution of ``source``.

    Parameters
    ----------
    channels
        Channels of ``source`` (and of the output).
    guide_channels
        Channels of ``guide``.
    groups
        Offset (deformable) groups; must divide ``channels``.
    modulated
        Learn a modulation mask (DCNv2) as well as offsets.
    max_offset
        If given, offsets are bounded to ``(-max_offset, max_offset)`` pixels
        through a scaled tanh, which keeps training stable.

    Notes
    -----
    ``forward`` and :meth:`offsets` take an optional ``prior``: offsets added to
    the predicted ones (a pyramid passes the coarser level's offsets, upsampled
    and doubled, as the starting guess).
    """

    def __init__(
        self,
        channels: int,
        guide_channels: int,
        groups: int = 4,
        modulated: bool = True,
        max_offset: float | None = None,
    ) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"{groups} deformable groups do not divide {channels} channels")
        self.groups = groups
        self.modulated = modulated
        self.max_offset = max_offset
        kernel = 9
        self.offset_channels = 2 * groups * kernel
        self.trunk = nn.Sequential(
            nn.Conv2d(guide_channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
        )
        head_out = self.offset_channels + (groups * kernel if modulated else 0)
        self.head = nn.Conv2d(channels, head_out, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.conv = DeformConv2d(channels, channels, 3, padding=1)

    def offsets(self, guide: Tensor, prior: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Offsets ``(B, 2*G*9, H, W)`` and mask ``(B, G*9, H, W)`` (or None) from ``guide``."""
        raw = self.head(self.trunk(guide))
        offset = raw[:, : self.offset_channels]
        if self.max_offset is not None:
            offset = self.max_offset * torch.tanh(offset / self.max_offset)
        if prior is not None:
            offset = offset + prior
        mask = torch.sigmoid(raw[:, self.offset_channels :]) if self.modulated else None
        return offset, mask

    def forward(self, source: Tensor, guide: Tensor, prior: Tensor | None = None) -> Tensor:
        offset, mask = self.offsets(guide, prior)
        return self.conv(source, offset, mask)

"""Building blocks shared by the generative models: plain ``torch.nn`` modules.

The blocks follow the descriptions and pseudocode of Ravuri et al. (2021,
"Skilful precipitation nowcasting using deep generative models of radar",
Nature 597, Extended Data Figs. 1-2 and the Supplementary pseudocode), but
are general enough to be reused by other models:

* spectrally normalised convolutions and linear layers (:func:`sn_conv2d`,
  :func:`sn_conv3d`, :func:`sn_linear`);
* space-to-depth / depth-to-space for tensors with any number of leading dims;
* residual blocks: :class:`DBlock` (down, 2-D or 3-D), :class:`GBlock`
  (optionally up-sampling, batch-normalised), :class:`LBlock` (channel growth
  by concatenation);
* :class:`SpatialAttention` (non-local self-attention with a learned gain);
* :class:`ConvGRU`, a convolutional GRU whose input half of every gate is
  computed for all time steps at once, so only the hidden-state half runs
  sequentially.

Nothing here imports xarray.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "SN_EPS",
    "ConvGRU",
    "DBlock",
    "GBlock",
    "LBlock",
    "SpatialAttention",
    "apply_per_frame",
    "depth_to_space",
    "is_spectral_normed",
    "sn_conv2d",
    "sn_conv3d",
    "sn_linear",
    "space_to_depth",
]

#: epsilon of the spectral normalisation (the value of the DGMR pseudocode).
SN_EPS = 1e-4


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module, eps=SN_EPS) if enabled else module


def sn_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    bias: bool = True,
    sn: bool = True,
    padding_mode: str = "zeros",
) -> nn.Module:
    """A 2-D convolution with 'same' padding, spectrally normalised unless ``sn=False``.

    ``padding_mode`` is torch's (``"zeros"``, ``"replicate"``, ``"reflect"``):
    ``"replicate"`` keeps a uniform field uniform up to the borders.
    """
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=kernel_size // 2,
        bias=bias,
        padding_mode=padding_mode,
    )
    return _sn(conv, sn)


def sn_conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    bias: bool = True,
    sn: bool = True,
) -> nn.Module:
    """A 3-D convolution with 'same' padding, spectrally normalised unless ``sn=False``."""
    conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    return _sn(conv, sn)


def sn_linear(in_features: int, out_features: int, *, sn: bool = True) -> nn.Module:
    """A linear layer, spectrally normalised unless ``sn=False``."""
    return _sn(nn.Linear(in_features, out_features), sn)


def is_spectral_normed(module: nn.Module) -> bool:
    """Whether ``module.weight`` is computed by a spectral-norm parametrization."""
    return parametrize.is_parametrized(module, "weight")


def space_to_depth(x: Tensor, factor: int = 2) -> Tensor:
    """Fold ``factor x factor`` pixel blocks into channels: ``(..., C, H, W) -> (..., C f², H/f, W/f)``.

    Leading dims (batch, time, ...) are kept; the channel order is torch's
    ``pixel_unshuffle`` order.
    """
    lead = x.shape[:-3]
    y = F.pixel_unshuffle(x.reshape(-1, *x.shape[-3:]), factor)
    return y.reshape(*lead, *y.shape[-3:])


def depth_to_space(x: Tensor, factor: int = 2) -> Tensor:
    """Inverse of :func:`space_to_depth`: ``(..., C f², H, W) -> (..., C, H f, W f)``."""
    lead = x.shape[:-3]
    y = F.pixel_shuffle(x.reshape(-1, *x.shape[-3:]), factor)
    return y.reshape(*lead, *y.shape[-3:])


class DBlock(nn.Module):
    """Residual down-sampling block of the DGMR conditioning stack and discriminators.

    ``out = pool(conv3(relu(conv3(relu?(x))))) + pool(conv1(x))``, with the
    1x1 shortcut only when the channel count changes and 2x average pooling
    only when ``downsample``.

    Parameters
    ----------
    in_channels, out_channels
        Channel counts.
    downsample
        Halve the spatial size (and, for 3-D blocks, the time axis).
    pre_activation
        Apply a ReLU to the input of the residual branch (False for the first
        block that sees raw data).
    dims
        2 for images ``(B, C, H, W)``, 3 for sequences ``(B, C, T, H, W)``.
    sn
        Spectrally normalise the convolutions.
    padding_mode
        Padding of the 2-D 3x3 convolutions (see :func:`sn_conv2d`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        downsample: bool = True,
        pre_activation: bool = True,
        dims: int = 2,
        sn: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        pad = {"padding_mode": padding_mode} if dims == 2 else {}
        conv = sn_conv2d if dims == 2 else sn_conv3d
        self.downsample = downsample
        self.pre_activation = pre_activation
        self.dims = dims
        self.conv1 = conv(in_channels, out_channels, 3, sn=sn, **pad)
        self.conv2 = conv(out_channels, out_channels, 3, sn=sn, **pad)
        self.shortcut = (
            conv(in_channels, out_channels, 1, sn=sn) if in_channels != out_channels else None
        )

    def _pool(self, x: Tensor) -> Tensor:
        if not self.downsample:
            return x
        return F.avg_pool2d(x, 2) if self.dims == 2 else F.avg_pool3d(x, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.pre_activation else x
        h = self.conv2(F.relu(self.conv1(h), inplace=True))
        sc = x if self.shortcut is None else self.shortcut(x)
        return self._pool(h) + self._pool(sc)


class GBlock(nn.Module):
    """Residual generator block (batch norm, ReLU, 3x3 convs), optionally up-sampling 2x.

    ``out = conv3(relu(bn(conv3(up(relu(bn(x))))))) + conv1(up(x))``: the
    first 3x3 convolution keeps the input width, the second maps to
    ``out_channels``; the 1x1 shortcut exists only when the width changes.
    Up-sampling is nearest-neighbour followed by a 3x3 convolution (a
    resize-convolution, free of the checkerboard of transposed or sub-pixel
    convolutions); ``padding_mode`` as in :func:`sn_conv2d`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        upsample: bool = False,
        sn: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = sn_conv2d(in_channels, in_channels, 3, sn=sn, padding_mode=padding_mode)
        self.bn2 = nn.BatchNorm2d(in_channels)
        self.conv2 = sn_conv2d(in_channels, out_channels, 3, sn=sn, padding_mode=padding_mode)
        self.shortcut = (
            sn_conv2d(in_channels, out_channels, 1, sn=sn) if in_channels != out_channels else None
        )

    def _up(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest") if self.upsample else x

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(x), inplace=True)
        h = self.conv1(self._up(h))
        h = self.conv2(F.relu(self.bn2(h), inplace=True))
        if self.shortcut is None:
            return h + self._up(x)
        # a 1x1 convolution commutes with nearest up-sampling: convolve the smaller tensor
        sc = self.shortcut(x)
        return h.add_(self._up(sc))


class LBlock(nn.Module):
    """Residual block of the latent conditioning stack that widens the channels.

    The shortcut concatenates the input with a 1x1 convolution of it (``out -
    in`` new channels); the residual branch is ReLU, 3x3 conv, ReLU, 3x3 conv.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, sn: bool = False, padding_mode: str = "zeros"
    ) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("an LBlock cannot reduce the number of channels")
        self.conv1 = sn_conv2d(in_channels, out_channels, 3, sn=sn, padding_mode=padding_mode)
        self.conv2 = sn_conv2d(out_channels, out_channels, 3, sn=sn, padding_mode=padding_mode)
        self.shortcut = (
            sn_conv2d(in_channels, out_channels - in_channels, 1, sn=sn)
            if out_channels > in_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True))
        sc = x if self.shortcut is None else torch.cat([x, self.shortcut(x)], dim=1)
        return h + sc


class SpatialAttention(nn.Module):
    """Non-local self-attention over all pixels, added back with a learned gain.

    Query, key and value are 1x1 convolutions to ``channels // ratio``
    channels; the attention weights are a softmax of the (unscaled) dot
    products over all positions; the result is mapped back to ``channels`` by
    a 1x1 convolution and scaled by ``gamma`` (initialised at 0, so the block
    starts as the identity).
    """

    def __init__(self, channels: int, *, ratio: int = 8) -> None:
        super().__init__()
        inner = max(channels // ratio, 1)
        self.query = nn.Conv2d(channels, inner, 1, bias=False)
        self.key = nn.Conv2d(channels, inner, 1, bias=False)
        self.value = nn.Conv2d(channels, inner, 1, bias=False)
        self.out = nn.Conv2d(inner, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, c)
        k = self.key(x).flatten(2).transpose(1, 2)
        v = self.value(x).flatten(2).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, HW, c)
        att = att.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.gamma * self.out(att)


class ConvGRU(nn.Module):
    """Convolutional GRU (the DGMR sampler's recurrent cell), unrolled over time.

    With ``xh = [x, h]``: ``r = σ(conv_r(xh))``, ``u = σ(conv_u(xh))``,
    ``c = relu(conv_c([x, r * h]))`` and ``h' = u * h + (1 - u) * c``; the
    output at every step is ``h'``.

    Each gate is one (spectrally normalised) convolution over the
    concatenated input and state, as in the paper.  Because a convolution is
    linear, its input half is computed for all time steps in one batched
    call (and only once when the input is the same at every step); only the
    state half runs step by step.  The normalised weights are read once per
    call, so spectral normalisation runs one power iteration per call.

    Parameters
    ----------
    in_channels, hidden_channels
        Channels of the input ``x`` and of the state ``h``.
    kernel_size
        Spatial size of the gate convolutions.
    sn
        Spectrally normalise the gate convolutions.
    padding_mode
        ``"zeros"`` or ``"replicate"`` (see :func:`sn_conv2d`).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        *,
        sn: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if padding_mode not in ("zeros", "replicate"):
            raise ValueError(f"padding_mode must be 'zeros' or 'replicate', got {padding_mode!r}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.padding = kernel_size // 2
        self.padding_mode = padding_mode
        total = in_channels + hidden_channels
        self.read_gate = sn_conv2d(total, hidden_channels, kernel_size, sn=sn)
        self.update_gate = sn_conv2d(total, hidden_channels, kernel_size, sn=sn)
        self.output_conv = sn_conv2d(total, hidden_channels, kernel_size, sn=sn)

    def _split_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        c = self.in_channels
        wr, wu, wc = self.read_gate.weight, self.update_gate.weight, self.output_conv.weight
        fmt = torch.channels_last if wr.is_contiguous(memory_format=torch.channels_last) else None
        w_x = torch.cat([wr[:, :c], wu[:, :c], wc[:, :c]], dim=0)
        b_x = torch.cat([self.read_gate.bias, self.update_gate.bias, self.output_conv.bias])
        w_h = torch.cat([wr[:, c:], wu[:, c:]], dim=0)
        w_ch = wc[:, c:]
        if fmt is not None:
            w_x, w_h, w_ch = (w.contiguous(memory_format=fmt) for w in (w_x, w_h, w_ch))
        else:
            w_ch = w_ch.contiguous()
        return w_x, b_x, w_h, w_ch, self.hidden_channels

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        pad = self.padding
        if self.padding_mode == "zeros" or pad == 0:
            return F.conv2d(x, weight, bias, padding=pad)
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), weight, bias)

    def forward(self, x: Tensor, state: Tensor, steps: int | None = None) -> tuple[Tensor, Tensor]:
        """Run the GRU over a sequence.

        Parameters
        ----------
        x
            Inputs ``(B, T, C, H, W)``, or ``(B, C, H, W)`` to feed the same
            input at each of ``steps`` steps.
        state
            Initial state ``(B, hidden_channels, H, W)``.
        steps
            Number of steps when ``x`` is the same at every step.

        Returns
        -------
        outputs, last_state
            ``(B, T, hidden_channels, H, W)`` and the final state.
        """
        w_x, b_x, w_h, w_ch, hid = self._split_weights()
        conv = self._conv
        if x.dim() == 4:
            if steps is None:
                raise ValueError("steps is required when the input is the same at every step")
            gx_all = conv(x, w_x, b_x).unsqueeze(1)  # (B, 1, 3hid, H, W)
            n = steps
        else:
            b, n = x.shape[:2]
            gx_all = conv(x.flatten(0, 1), w_x, b_x)
            gx_all = gx_all.reshape(b, n, *gx_all.shape[1:])
        h = state
        outputs = []
        for t in range(n):
            gx = gx_all[:, 0 if gx_all.shape[1] == 1 else t]
            gh = conv(h, w_h, None)
            r = torch.sigmoid(gx[:, :hid] + gh[:, :hid])
            u = torch.sigmoid(gx[:, hid : 2 * hid] + gh[:, hid:])
            c = F.relu(gx[:, 2 * hid :] + conv(r * h, w_ch, None))
            h = c + u * (h - c)  # = u h + (1 - u) c
            outputs.append(h)
        return torch.stack(outputs, dim=1), h


def apply_per_frame(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Apply an image module to every frame of ``(B, T, C, H, W)`` in one batched call."""
    b, t = x.shape[:2]
    y = fn(x.flatten(0, 1))
    return y.reshape(b, t, *y.shape[1:])

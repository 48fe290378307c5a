"""Dense pyramidal Lucas-Kanade optical flow for radar rain fields, in plain torch.

The motion field is estimated coarse to fine on an image pyramid. At each level
the later frame of every consecutive pair is warped back with the current flow,
the Lucas-Kanade normal equations of all pairs are pooled (one motion field for
the whole input sequence) and summed over a Gaussian window, and the flow update
is the regularised 2 x 2 solve at every pixel (Lucas and Kanade 1981, Bouguet
2001). Where the window holds no rain texture the equations are singular; there
the flow is filled in from the confident pixels around it by a push-pull
normalised convolution, so that the field is defined everywhere (rain must be
able to move into dry pixels) and smooth, which is what an advection scheme needs.

Conventions: ``flow[:, 0]`` is the x (column) displacement and ``flow[:, 1]``
the y (row) displacement, in pixels per time step, such that a feature at
``(x, y)`` in one frame is at ``(x + u, y + v)`` in the next.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "dense_lucas_kanade",
    "fill_push_pull",
    "gaussian_blur",
    "normalized_grid",
    "normalized_pixel_size",
    "rain_intensity",
    "sample_bilinear",
]


def rain_intensity(rate: Tensor, threshold: float = 0.1) -> Tensor:
    """Log-transform rain rate for tracking: ``10 log10(R / threshold)``, 0 below ``threshold``.

    Parameters
    ----------
    rate
        Rain rate (any shape), in the unit of ``threshold``.
    threshold
        Smallest rate counted as rain.

    Returns
    -------
    Tensor
        Intensity in dB above ``threshold``; 0 where there is no rain.
    """
    return 10.0 * torch.log10(torch.clamp(rate, min=threshold) / threshold)


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: Tensor, sigma: float, padding: str = "replicate") -> Tensor:
    """Separable Gaussian blur of every channel of ``x`` (N, C, H, W).

    Parameters
    ----------
    x
        Batch of images, shape ``(N, C, H, W)``.
    sigma
        Standard deviation in pixels; ``<= 0`` returns ``x`` unchanged.
    padding
        Values beyond the edges: ``"replicate"`` (the edge value) or ``"zeros"``.

    Returns
    -------
    Tensor
        Blurred images, same shape and dtype.
    """
    if sigma <= 0:
        return x
    channels = x.shape[1]
    kernel = _gaussian_kernel(sigma, x.dtype, x.device)
    radius = (kernel.numel() - 1) // 2
    kx = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, kernel.numel())
    ky = kernel.view(1, 1, -1, 1).expand(channels, 1, kernel.numel(), 1)
    # Replicate padding needs the pad to be smaller than the dimension; fall back to
    # reflecting a clamped radius on tiny images.
    pad_x = min(radius, x.shape[-1] - 1)
    pad_y = min(radius, x.shape[-2] - 1)
    if pad_x < radius or pad_y < radius:
        kernel_x = _gaussian_kernel(sigma, x.dtype, x.device)[radius - pad_x : radius + pad_x + 1]
        kernel_y = _gaussian_kernel(sigma, x.dtype, x.device)[radius - pad_y : radius + pad_y + 1]
        kx = (kernel_x / kernel_x.sum()).view(1, 1, 1, -1).expand(channels, 1, 1, -1)
        ky = (kernel_y / kernel_y.sum()).view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    mode = "constant" if padding == "zeros" else padding
    x = F.conv2d(F.pad(x, (pad_x, pad_x, 0, 0), mode=mode), kx, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, pad_y, pad_y), mode=mode), ky, groups=channels)


def normalized_grid(height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Pixel centres in ``grid_sample`` coordinates (``align_corners=False``), ``(1, H, W, 2)``.

    -1 and +1 are the outer edges of the image, so one grid addresses the same
    places in an image of any resolution covering the same domain.
    """
    ys = (2.0 * torch.arange(height, dtype=dtype, device=device) + 1.0) / height - 1.0
    xs = (2.0 * torch.arange(width, dtype=dtype, device=device) + 1.0) / width - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1).unsqueeze(0)


def normalized_pixel_size(
    height: int, width: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Size of one pixel ``(dx, dy)`` in ``grid_sample`` coordinates, shape ``(2,)``."""
    return torch.tensor([2.0 / width, 2.0 / height], dtype=dtype, device=device)


def sample_bilinear(images: Tensor, displacement: Tensor, padding_mode: str = "border") -> Tensor:
    """Sample ``images`` (N, C, H, W) at pixel ``x + displacement`` (N, 2, H, W), bilinearly.

    Parameters
    ----------
    images
        Images to sample.
    displacement
        Pixel offsets ``(dx, dy)`` per output pixel.
    padding_mode
        ``grid_sample`` padding: ``"border"`` (nearest edge value) or ``"zeros"``.

    Returns
    -------
    Tensor
        Sampled images, shape ``(N, C, H, W)``.
    """
    _, _, height, width = images.shape
    base = normalized_grid(height, width, images.dtype, images.device)
    scale = normalized_pixel_size(height, width, images.dtype, images.device)
    grid = base + displacement.permute(0, 2, 3, 1) * scale
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )


def _downsample(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


def fill_push_pull(flow: Tensor, confidence: Tensor, saturation: float = 0.5) -> Tensor:
    """Fill low-confidence parts of a flow field from confident neighbours (push-pull).

    Confidence-weighted averages of the flow are built on a pyramid down to a few
    pixels ("push"); going back up, every level keeps its own average where its
    pooled confidence is high and takes the upsampled coarser estimate where it is
    low ("pull"). The result is a normalised convolution at every scale at once:
    pixels far from any rain take the motion of the nearest rain, and the domain
    mean when there is no rain at all nearby.

    Parameters
    ----------
    flow
        Flow field, shape ``(N, 2, H, W)``.
    confidence
        Weights in ``[0, 1]``, shape ``(N, 1, H, W)``.
    saturation
        Pooled confidence at which a level's own average is fully trusted.

    Returns
    -------
    Tensor
        Filled flow, shape ``(N, 2, H, W)``; zero where the whole image has no confidence.
    """
    numerators = [flow * confidence]
    weights = [confidence]
    while min(weights[-1].shape[-2:]) > 2:
        numerators.append(_downsample(numerators[-1]))
        weights.append(_downsample(weights[-1]))
    estimate = numerators[-1].sum(dim=(-2, -1), keepdim=True) / weights[-1].sum(
        dim=(-2, -1), keepdim=True
    ).clamp_min(1e-12)
    for num, weight in zip(reversed(numerators), reversed(weights), strict=True):
        coarse = F.interpolate(estimate, size=num.shape[-2:], mode="bilinear", align_corners=False)
        local = num / weight.clamp_min(1e-12)
        trust = (weight / saturation).clamp(max=1.0)
        estimate = trust * local + (1.0 - trust) * coarse
    return estimate


def _gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences (one-sided at the edges) of (N, C, H, W) along x and y."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    gy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return gx, gy


def _erode(mask: Tensor, radius: int) -> Tensor:
    """Binary erosion of a 0/1 mask (N, C, H, W); outside the image counts as unobserved."""
    if radius <= 0:
        return mask
    size = 2 * radius + 1
    # A box average is 1 only where the whole box is 1 (zero padding = outside).
    mean = F.avg_pool2d(mask, size, stride=1, padding=radius, count_include_pad=True)
    return (mean > 1.0 - 0.5 / size**2).to(mask.dtype)


def dense_lucas_kanade(
    images: Tensor,
    valid: Tensor | None = None,
    *,
    levels: int = 5,
    finest_level: int = 1,
    iterations: int = 3,
    window_sigma: float = 4.0,
    presmooth_sigma: float = 1.0,
    regularization: float = 0.05,
    confidence_scale: float = 0.5,
    flow_smooth_sigma: float = 2.0,
    margin: int = 2,
    edge_margin: int = 1,
    min_coarse_size: int = 16,
    full_resolution: bool = True,
) -> Tensor:
    """Dense motion field of an image sequence by pyramidal Lucas-Kanade.

    One flow field is fitted to all consecutive pairs of the sequence (constant
    motion over the input frames).

    Parameters
    ----------
    images
        Tracking images (e.g. :func:`rain_intensity`), shape ``(N, T, H, W)``, ``T >= 2``.
    valid
        Boolean mask of observed pixels, same shape; ``None`` means all valid.
        Invalid pixels (and a ``margin`` around them) take no part in the fit.
    levels
        Number of pyramid levels below full resolution; the coarsest is
        ``2**levels`` times smaller. Displacements up to about ``2**levels`` pixels per
        step are tracked.
    finest_level
        Pyramid level of the last refinement (0 = full resolution, 1 = half); the
        flow is upsampled from there.
    iterations
        Warp-and-solve iterations per level.
    window_sigma
        Standard deviation of the Gaussian Lucas-Kanade window, in pixels of each level.
    presmooth_sigma
        Gaussian smoothing of the images before differentiation, in level pixels.
    regularization
        Tikhonov term added to the structure tensor (intensity units squared); keeps
        the update small where the window has little texture.
    confidence_scale
        Smallest eigenvalue of the structure tensor at which a pixel counts as
        half-confident when the flow is filled in.
    flow_smooth_sigma
        Gaussian smoothing of the flow after every level, in level pixels.
    margin
        Pixels eroded from the valid mask at full resolution.
    min_coarse_size
        Fewer levels are used when the coarsest would be smaller than this many pixels.
    edge_margin
        Pixels, at every level, next to the image edge or an unobserved pixel that take
        no part in the fit.
    full_resolution
        Upsample the flow to ``(H, W)``; otherwise return it on the grid of
        ``finest_level`` (still in full-resolution pixels per step, covering the
        same domain), which is all an advection scheme that interpolates it needs.

    Returns
    -------
    Tensor
        Flow ``(N, 2, H, W)`` (or coarser, see ``full_resolution``) in pixels per
        time step, same dtype as ``images``.
    """
    if images.ndim != 4 or images.shape[1] < 2:
        raise ValueError(f"images must be (N, T>=2, H, W), got {tuple(images.shape)}")
    n, t, height, width = images.shape
    if valid is None:
        weight = torch.ones_like(images)
    else:
        weight = _erode(valid.to(images.dtype), margin)
    images = images * (weight > 0)
    edge = edge_margin
    # The coarsest level keeps at least ``min_coarse_size`` pixels across: a level of
    # a few pixels has no usable structure and would only add its errors.
    while levels > finest_level and min(height, width) / 2**levels < min_coarse_size:
        levels -= 1

    # Image pyramid: level k is 2**k times coarser; images averaged over valid pixels.
    pyramid = [(images, weight)]
    for _ in range(levels):
        img, w = pyramid[-1]
        pooled_w = _downsample(w)
        pooled = _downsample(img * w) / pooled_w.clamp_min(1e-6)
        pyramid.append((pooled, pooled_w))

    flow = torch.zeros(n, 2, *pyramid[-1][0].shape[-2:], dtype=images.dtype, device=images.device)
    for level in range(levels, finest_level - 1, -1):
        img, w = pyramid[level]
        if flow.shape[-2:] != img.shape[-2:]:
            flow = 2.0 * F.interpolate(
                flow, size=img.shape[-2:], mode="bilinear", align_corners=False
            )
        # Smooth over observed pixels inside the image only (normalised convolution),
        # so that neither the edge of an unobserved region nor the image edge looks
        # like an edge of the rain field.
        w = (w > 0.999).to(img.dtype)
        img = gaussian_blur(img * w, presmooth_sigma, "zeros") / gaussian_blur(
            w, presmooth_sigma, "zeros"
        ).clamp_min(1e-3)
        # Pixels next to an unobserved one or the image edge (where rain leaving the
        # domain looks like a fixed edge) take no part.
        w = _erode(w, edge)
        first, second = img[:, :-1], img[:, 1:]
        w_first, w_second = w[:, :-1], w[:, 1:]
        pairs = t - 1
        h_l, w_l = img.shape[-2:]
        for _ in range(iterations):
            # Warp the later frame of every pair back onto the earlier one.
            disp = flow.repeat_interleave(pairs, dim=0)
            warped = sample_bilinear(
                torch.stack((second, w_second), dim=2).reshape(n * pairs, 2, h_l, w_l),
                disp,
                padding_mode="zeros",
            ).reshape(n, pairs, 2, h_l, w_l)
            second_w, w_second_w = warped[:, :, 0], warped[:, :, 1]
            # The gradient stencil must not reach a pixel the warp brought in from outside.
            pair_weight = _erode(w_first * (w_second_w > 0.999).to(img.dtype), 1)
            gx1, gy1 = _gradients(first)
            gx2, gy2 = _gradients(second_w)
            gx = 0.5 * (gx1 + gx2)
            gy = 0.5 * (gy1 + gy2)
            diff = first - second_w
            terms = (
                torch.stack(
                    (
                        (pair_weight * gx * gx).sum(1),
                        (pair_weight * gx * gy).sum(1),
                        (pair_weight * gy * gy).sum(1),
                        (pair_weight * gx * diff).sum(1),
                        (pair_weight * gy * diff).sum(1),
                    ),
                    dim=1,
                )
                / pairs
            )
            j11, j12, j22, b1, b2 = gaussian_blur(terms, window_sigma).unbind(1)
            a11 = j11 + regularization
            a22 = j22 + regularization
            det = a11 * a22 - j12 * j12
            du = (a22 * b1 - j12 * b2) / det
            dv = (a11 * b2 - j12 * b1) / det
            flow = flow + torch.stack((du, dv), dim=1)
        # Confidence: smallest eigenvalue of the structure tensor.
        half_trace = 0.5 * (j11 + j22)
        root = torch.sqrt((0.5 * (j11 - j22)) ** 2 + j12 * j12)
        min_eig = (half_trace - root).clamp_min(0.0)
        confidence = (min_eig / (min_eig + confidence_scale)).unsqueeze(1)
        flow = fill_push_pull(flow, confidence)
        flow = gaussian_blur(flow, flow_smooth_sigma)

    flow = flow * 2.0**finest_level
    if full_resolution and flow.shape[-2:] != (height, width):
        flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    return flow

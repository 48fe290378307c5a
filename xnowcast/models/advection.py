"""Semi-Lagrangian backward advection of a field along a motion field, in plain torch.

The forecast at lead step ``k`` and pixel ``x`` is the last observed field taken
at the departure point of the backward trajectory that ends at ``x``. The
departure points are stepped back one time step at a time along the (stationary)
motion field, with the velocity taken at the midpoint of each step (a
second-order scheme, as in Germann and Zawadzki 2002), so curved trajectories
follow the flow instead of a single straight shift of ``k * v``. The field is
sampled once per lead time from the original observation, so no numerical
diffusion accumulates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from xnowcast.models.optical_flow import normalized_pixel_size

__all__ = [
    "advect_per_lead",
    "departure_points",
    "semi_lagrangian",
    "to_full_resolution",
    "trajectory_grid",
]


def _corner_grid(
    height: int, width: int, fine: tuple[int, int], dtype: torch.dtype, device: torch.device
) -> Tensor:
    """A ``height x width`` grid spanning the outermost pixel centres of a ``fine`` image.

    In ``grid_sample`` coordinates (``align_corners=False``), shape ``(1, h, w, 2)``.
    Upsampling a field given at these points with ``align_corners=True`` lands exactly
    on the fine pixel centres, so positions, being linear, interpolate without error.
    """
    fine_h, fine_w = fine
    ys = torch.linspace(-1.0 + 1.0 / fine_h, 1.0 - 1.0 / fine_h, height, dtype=dtype, device=device)
    xs = torch.linspace(-1.0 + 1.0 / fine_w, 1.0 - 1.0 / fine_w, width, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1).unsqueeze(0)


def trajectory_grid(
    height: int, width: int, trajectory_scale: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Arrival points of the trajectories integrated for a ``height x width`` field.

    Parameters
    ----------
    height, width
        Size of the advected field.
    trajectory_scale
        The grid is about this many times coarser than the field (1: every pixel).
    dtype, device
        Of the returned tensor.

    Returns
    -------
    Tensor
        ``(1, h, w, 2)`` in ``grid_sample`` units; :func:`to_full_resolution`
        interpolates departure points given on it to every pixel of the field.
    """
    coarse = (
        max(2, -(-(height - 1) // trajectory_scale) + 1),
        max(2, -(-(width - 1) // trajectory_scale) + 1),
    )
    if trajectory_scale <= 1 or coarse[0] >= height or coarse[1] >= width:
        coarse = (height, width)
    return _corner_grid(*coarse, (height, width), dtype, device)


def to_full_resolution(points: Tensor, height: int, width: int) -> Tensor:
    """Departure points ``(N, 2, h, w)`` on a :func:`trajectory_grid` -> ``(N, H, W, 2)``.

    The result is what ``grid_sample`` takes (a strided view, not copied again).
    """
    if tuple(points.shape[-2:]) != (height, width):
        points = F.interpolate(points, size=(height, width), mode="bilinear", align_corners=True)
    return points.permute(0, 2, 3, 1)


def departure_points(
    velocity: Tensor,
    steps: int,
    start: Tensor,
    midpoint: bool = True,
    perturbation: Callable[[int], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Departure points of backward trajectories ending at ``start``.

    Parameters
    ----------
    velocity
        ``(N, 2, h, w)`` in ``grid_sample`` units (``align_corners=False``) per step,
        at any resolution covering the domain.
    steps
        Number of steps.
    start
        Arrival points ``(1 or N, H', W', 2)``.
    midpoint
        Velocity at the midpoint of each step (second order) or at its start.
    perturbation
        ``perturbation(k)``: a velocity added during step ``k`` (1-based), in the
        units and on the grid of ``velocity`` (e.g. a member's motion perturbation);
        None: the motion is steady.

    Returns
    -------
    tuple of Tensor
        Departure points ``(N, steps, 2, H', W')`` after ``1 .. steps`` steps, and a
        boolean ``(N, steps, 1, H', W')``, True where the trajectory was outside the
        domain at an earlier step.
    """
    n = velocity.shape[0]
    start = start.expand(n, -1, -1, -1)

    def velocity_at(field: Tensor, points: Tensor) -> Tensor:
        return F.grid_sample(
            field, points, mode="bilinear", padding_mode="border", align_corners=False
        ).permute(0, 2, 3, 1)

    position = start
    increment: Tensor | None = None
    points, left = [], []
    outside = torch.zeros(start.shape[:-1], dtype=torch.bool, device=velocity.device)
    for k in range(1, steps + 1):
        current = velocity if perturbation is None else velocity + perturbation(k)
        if increment is None or not midpoint:
            increment = velocity_at(current, position)
        if midpoint:
            increment = velocity_at(current, position - 0.5 * increment)
        left.append(outside)
        position = position - increment
        points.append(position)
        outside = outside | (position.abs() > 1.0).any(dim=-1)
    return torch.stack(points, dim=1).permute(0, 1, 4, 2, 3), torch.stack(left, dim=1).unsqueeze(2)


def semi_lagrangian(
    field: Tensor,
    flow: Tensor,
    steps: int,
    *,
    valid: Tensor | None = None,
    midpoint: bool = True,
    trajectory_scale: int = 4,
    min_valid_weight: float = 0.5,
    max_chunk_pixels: int = 2**23,
    perturbation: Callable[[int], Tensor] | None = None,
) -> Tensor:
    """Advect ``field`` backward along ``flow`` for ``steps`` time steps.

    Parameters
    ----------
    field
        Field to advect, shape ``(N, C, H, W)``; must be finite where ``valid``.
    flow
        Motion ``(N, 2, h, w)``: x and y displacement in pixels of ``field`` per time
        step. It may be given on a coarser grid covering the same domain; it is
        interpolated bilinearly.
    steps
        Number of lead times.
    valid
        Boolean mask ``(N, 1, H, W)`` of observed pixels of ``field``; ``None`` means all.
    midpoint
        Take the velocity at the midpoint of each step (second order); otherwise at
        the start of the step (first order).
    trajectory_scale
        Trajectories are integrated on a grid about this many times coarser than
        ``field`` and the departure points interpolated bilinearly to every pixel
        (they are as smooth as the motion field); 1 integrates at every pixel.
    min_valid_weight
        Smallest bilinear weight of observed pixels around a departure point for the
        value to count as known.
    max_chunk_pixels
        Lead times are processed in chunks of at most about this many output pixels,
        to bound memory.
    perturbation
        ``perturbation(k)``: motion ``(N, 2, h, w)`` in pixels per time step, on the
        grid of ``flow``, added to it during step ``k`` (1-based); None: steady motion.

    Returns
    -------
    Tensor
        Shape ``(N, steps, C, H, W)``, dtype of ``field``; NaN where the trajectory
        left the domain or departs from an unobserved pixel.
    """
    if field.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != field.shape[0]:
        raise ValueError("field must be (N, C, H, W) and flow (N, 2, h, w)")
    n, channels, height, width = field.shape
    dtype, device = field.dtype, field.device
    pixel = normalized_pixel_size(height, width, dtype, device)
    velocity = flow.to(dtype) * pixel.view(1, 2, 1, 1)  # grid_sample units per step

    start = trajectory_grid(height, width, trajectory_scale, dtype, device)
    coarse = (start.shape[1], start.shape[2])
    extra: Callable[[int], Tensor] | None = None
    if perturbation is not None:
        moved_by = perturbation

        def in_grid_units(k: int) -> Tensor:
            return moved_by(k).to(dtype) * pixel.view(1, 2, 1, 1)

        extra = in_grid_units
    departures, left = departure_points(velocity, steps, start, midpoint, extra)
    # Trajectories that leave the domain and come back are rare: flag them only when
    # there are some (the departure point itself is checked at full resolution).
    left = left & (departures.abs() <= 1.0).all(dim=2, keepdim=True)
    reentry = left.to(torch.uint8) if bool(left.any()) else None

    mask = torch.ones_like(field[:, :1]) if valid is None else valid.to(dtype)
    weighted = field * mask
    chunk = max(1, max_chunk_pixels // (n * height * width))
    outputs = []
    for first in range(0, steps, chunk):
        k = min(chunk, steps - first)
        points = departures[:, first : first + k].reshape(n * k, 2, *coarse).contiguous()
        points = to_full_resolution(points, height, width)

        def sample(image: Tensor, points: Tensor = points, k: int = k) -> Tensor:
            # One image for all k lead times: a broadcast view, copied only when n > 1.
            image = image.unsqueeze(1).expand(-1, k, -1, -1, -1).flatten(0, 1)
            return F.grid_sample(
                image, points, mode="bilinear", padding_mode="zeros", align_corners=False
            ).reshape(n, k, 1, height, width)

        # Outside the domain the mask is 0, so enough weight also means that the
        # departure point lies inside the domain.
        weight = sample(mask)
        unknown = weight < min_valid_weight
        if reentry is not None:
            flags = reentry[:, first : first + k].reshape(n * k, 1, *coarse)
            flags = F.interpolate(flags, size=(height, width), mode="nearest")
            unknown |= flags.reshape(n, k, 1, height, width).bool()
        weight.masked_fill_(unknown, float("nan"))
        if channels == 1:
            values = sample(weighted)
        else:
            values = torch.cat([sample(weighted[:, c : c + 1]) for c in range(channels)], dim=2)
        outputs.append(values.div_(weight))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


def advect_per_lead(
    fields: Tensor, flow: Tensor, *, midpoint: bool = True, trajectory_scale: int = 4
) -> Tensor:
    """Advect a different field for every lead time: field ``k`` moves ``k + 1`` steps.

    Used to carry quantities defined in the Lagrangian frame of the last observation
    (e.g. a learned growth/decay per lead time) to where the rain will be.

    Parameters
    ----------
    fields
        ``(N, steps, C, H, W)``, finite.
    flow
        Motion ``(N, 2, h, w)`` in pixels of ``fields`` per time step (any grid covering
        the domain), as for :func:`semi_lagrangian`.
    midpoint, trajectory_scale
        As for :func:`semi_lagrangian`.

    Returns
    -------
    Tensor
        ``(N, steps, C, H, W)``; 0 where a backward trajectory departs from outside the
        domain.
    """
    n, steps, channels, height, width = fields.shape
    pixel = normalized_pixel_size(height, width, fields.dtype, fields.device)
    velocity = flow.to(fields.dtype) * pixel.view(1, 2, 1, 1)
    start = trajectory_grid(height, width, trajectory_scale, fields.dtype, fields.device)
    departures, _ = departure_points(velocity, steps, start, midpoint)
    points = to_full_resolution(departures.flatten(0, 1), height, width)
    moved = F.grid_sample(
        fields.flatten(0, 1), points, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return moved.reshape(n, steps, channels, height, width)

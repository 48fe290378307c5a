"""Amplitude anchoring: a generated member takes a reference's smoothed rain amount.

Used by :mod:`xnowcast.models.cascast`, whose members take the amount of rain at
scales above ``anchor_sigma`` from the deterministic stage and the texture within
them from the diffusion.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xnowcast.models.optical_flow import gaussian_blur

__all__ = ["ANCHOR_BOUNDS", "ANCHOR_FLOOR", "anchor_amplitude"]

#: Rain rate (mm/h) added to both smoothed fields of :func:`anchor_amplitude`, and the
#: bounds of its ratio: where neither has rain nothing changes, and no member is scaled
#: by more than 4x either way (the backbone has no rain where rain flows in unseen).
ANCHOR_FLOOR = 0.01
ANCHOR_BOUNDS = (0.25, 4.0)


def anchor_amplitude(
    member: Tensor, reference: Tensor, sigma: float, known: Tensor | None = None
) -> Tensor:
    """``member`` times the ratio of ``reference`` to it, both smoothed at ``sigma`` pixels.

    Parameters
    ----------
    member, reference
        Rain rates ``(B, T, 1, H, W)`` in mm/h: a generated member and the
        deterministic forecast it refines.
    sigma
        Standard deviation of the Gaussian (pixels, replicated edges); ``<= 0``
        returns ``member`` unchanged.
    known
        Where the reference is known (bool, same shape; default everywhere).  Both
        fields are smoothed over the known pixels only, and the ratio fades to 1 with
        the known fraction ``w`` of the neighbourhood (``ratio ** w``): rain flowing
        in, which the reference cannot know, stays the member's.

    Returns
    -------
    Tensor
        The member with the reference's smoothed amplitude: the ratio
        ``(G*(k reference) + f G*k) / (G*(k member) + f G*k)`` (``k`` the known mask,
        ``f`` = :data:`ANCHOR_FLOOR`) bounded to :data:`ANCHOR_BOUNDS`.  Isotropic, so
        it commutes with flips and rotations.
    """
    if sigma <= 0:
        return member
    shape = member.shape

    def smooth(field: Tensor) -> Tensor:
        return gaussian_blur(field.reshape(-1, 1, *shape[-2:]), sigma).reshape(shape)

    k = torch.ones_like(member) if known is None else known.to(member.dtype)
    weight = smooth(k)
    ratio = (smooth(reference * k) + ANCHOR_FLOOR * weight) / (
        smooth(member * k) + ANCHOR_FLOOR * weight
    ).clamp_min(1e-12)
    ratio = torch.where(weight > 1e-6, ratio, torch.ones_like(ratio)).clamp(*ANCHOR_BOUNDS)
    return member * ratio ** weight.clamp(0.0, 1.0)

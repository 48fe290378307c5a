"""The cascade of every member evolving by its AR(2) models, held in the Fourier domain.

Each cascade level is band-limited: its Gaussian filter is negligible outside
a box of wavenumbers (tiny for the large scales, the whole plane for the
smallest). Every level is kept only on its box, in ``rfft2`` layout with the
rows shifted so that wavenumber 0 is in the middle, as a real view of the
complex coefficients. A step costs one pass over each box, a forward FFT of
the members' white noise and an inverse FFT of their recomposed fields.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xnowcast.models.steps.autoregression import ar2_step
from xnowcast.models.steps.cascade import BandpassCascade
from xnowcast.models.steps.noise import white_spectrum

__all__ = ["LevelBoxes", "MemberCascades"]


class LevelBoxes:
    """Where each level of a cascade lives in the (row-centred) ``rfft2`` plane.

    Parameters
    ----------
    cascade
        The cascade.
    tolerance
        Coefficients whose filter weight is below ``tolerance`` times the level's
        largest weight are dropped.

    Attributes
    ----------
    slices : list of tuple of slice
        Rows and columns of each level's box in the row-centred layout.
    """

    def __init__(self, cascade: BandpassCascade, tolerance: float = 1e-4) -> None:
        centred = torch.fft.fftshift(cascade.weights, dim=-2)
        self.slices: list[tuple[slice, slice]] = []
        for level in centred:
            keep = level > tolerance * level.max()
            rows = torch.nonzero(keep.any(dim=1))[:, 0]
            columns = torch.nonzero(keep.any(dim=0))[:, 0]
            rows_span = slice(int(rows.min()), int(rows.max()) + 1)
            self.slices.append((rows_span, slice(0, int(columns.max()) + 1)))

    def split(self, spectra: Tensor) -> list[Tensor]:
        """``(..., levels, H, W')`` complex -> one real ``(..., 1, h, w, 2)`` box per level."""
        centred = torch.view_as_real(torch.fft.fftshift(spectra, dim=-2))
        return [
            centred[..., level : level + 1, rows, columns, :]
            for level, (rows, columns) in enumerate(self.slices)
        ]


class MemberCascades:
    """The normalised-then-rescaled cascade levels of ``members`` forecasts.

    Parameters
    ----------
    cascade
        The cascade decomposition.
    levels_now, levels_before
        ``(levels, H, W')`` complex spectra of the observed levels at ``t`` and
        ``t - 1`` (in the frame of ``t``), already scaled by the statistics the
        forecast restores.
    phi
        ``(levels, 3)`` AR(2) parameters.
    drive
        ``(levels, H, W')`` filters turning white noise into each level's innovation
        (``phi0`` included), or None for no noise.
    members
        Ensemble size.
    """

    def __init__(
        self,
        cascade: BandpassCascade,
        levels_now: Tensor,
        levels_before: Tensor,
        phi: Tensor,
        drive: Tensor | None,
        members: int,
    ) -> None:
        self.cascade, self.phi, self.members = cascade, phi, members
        self.boxes = LevelBoxes(cascade)
        expand = (members, -1, -1, -1, -1)
        self.current = [box.expand(*expand) for box in self.boxes.split(levels_now)]
        self.previous = [box.expand(*expand) for box in self.boxes.split(levels_before)]
        self.drive = None
        if drive is not None:
            centred = torch.fft.fftshift(drive, dim=-2)
            self.drive = [
                centred[level, rows, columns, None]
                for level, (rows, columns) in enumerate(self.boxes.slices)
            ]

    def step(self, generator: torch.Generator | None) -> Tensor:
        """Advance every level one step; the recomposed (zero-mean) fields ``(M, H, W)``."""
        height, width = self.cascade.height, self.cascade.width
        device = self.phi.device
        white = None
        if self.drive is not None:
            spectrum = white_spectrum(self.members, height, width, generator, device)
            white = torch.view_as_real(torch.fft.fftshift(spectrum, dim=-2))
        total = torch.zeros((self.members, height, width // 2 + 1, 2), device=device)
        for level, (rows, columns) in enumerate(self.boxes.slices):
            phi = self.phi[level : level + 1]
            advanced = ar2_step(self.current[level], self.previous[level], phi, None, -4)
            if white is not None and self.drive is not None:
                advanced[:, 0].addcmul_(white[:, rows, columns], self.drive[level])
            self.previous[level], self.current[level] = self.current[level], advanced
            total[:, rows, columns] += advanced[:, 0]
        spectrum = torch.view_as_complex(torch.fft.ifftshift(total, dim=-3).contiguous())
        return torch.fft.irfft2(spectrum, s=(height, width))

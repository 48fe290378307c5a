"""FFT bandpass cascade: Gaussian filters in log-wavenumber, statistics by Parseval.

A field is split into ``levels`` spatial scales by weighting its Fourier
transform with Gaussian windows in the logarithm of the wavenumber (Seed 2003;
Pulkkinen et al. 2019): level 0 holds the largest scales and the field mean,
the last level the pixel scale. The weights of all levels sum to one at every
wavenumber, so the levels add up to the field again.

The levels are kept in the spectral domain (``rfft2`` layout, shape
``(..., levels, H, W // 2 + 1)``): the mean, standard deviation and the
correlation of two levels over the grid follow from Parseval's theorem without
an inverse transform, and a linear model of the levels (the AR(2) of STEPS)
needs one inverse transform per recomposed field, not one per level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "BandpassCascade",
    "hermitian_weights",
    "spectral_inner",
    "spectral_mean_std",
]


def hermitian_weights(height: int, width: int, device: torch.device) -> Tensor:
    """How often each ``rfft2`` coefficient appears in the full spectrum (1 or 2), ``(H, W')``."""
    columns = torch.full((width // 2 + 1,), 2.0, device=device)
    columns[0] = 1.0
    if width % 2 == 0:
        columns[-1] = 1.0
    return columns.expand(height, -1)


def spectral_mean_std(spectrum: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over the grid of fields given by their ``rfft2``.

    Parameters
    ----------
    spectrum
        ``(..., H, W // 2 + 1)`` complex.
    height, width
        Size ``(H, W)`` of the fields.

    Returns
    -------
    tuple of Tensor
        Mean and (population) standard deviation, shape ``(...)``, real.
    """
    size = height * width
    weights = hermitian_weights(height, width, spectrum.device)
    mean = spectrum[..., 0, 0].real / size
    power = (spectrum.real.square() + spectrum.imag.square()).mul(weights).sum(dim=(-2, -1))
    variance = power / size**2 - mean.square()
    return mean, variance.clamp_min(0.0).sqrt()


def spectral_inner(first: Tensor, second: Tensor, height: int, width: int) -> Tensor:
    """Grid mean of the product of two fields given by their ``rfft2`` (Parseval)."""
    weights = hermitian_weights(height, width, first.device)
    product = first.real * second.real + first.imag * second.imag
    return product.mul(weights).sum(dim=(-2, -1)) / (height * width) ** 2


class BandpassCascade:
    """Gaussian bandpass filters of a cascade decomposition for ``(H, W)`` fields.

    Wavenumbers are counted in cycles per ``max(H, W)`` pixels along both axes, so
    the filters are isotropic on a grid of square pixels whatever its shape. With
    ``L = max(H, W)`` and ``q = (L / 2) ** (1 / levels)``, level ``k`` is centred on
    the wavenumber ``(q**k + q**(k+1)) / 2`` and has a Gaussian profile of width
    ``gauss_scale`` in ``log_q`` of the wavenumber; the weights are normalised to sum
    to one, and the mean (wavenumber 0) goes to level 0 alone.

    Parameters
    ----------
    height, width
        Grid size.
    levels
        Number of cascade levels (at least 3).
    gauss_scale
        Width of the Gaussian windows in ``log_q`` units.
    device
        Where the weights live.

    Attributes
    ----------
    weights : Tensor
        ``(levels, H, W // 2 + 1)`` float32 filter weights in ``rfft2`` layout.
    central_wavenumbers : Tensor
        ``(levels,)`` centres, in cycles per ``max(H, W)`` pixels.
    """

    def __init__(
        self,
        height: int,
        width: int,
        levels: int = 6,
        gauss_scale: float = 0.5,
        device: torch.device | str = "cpu",
    ) -> None:
        if levels < 3:
            raise ValueError(f"a cascade needs at least 3 levels, got {levels}")
        self.height, self.width, self.levels = int(height), int(width), int(levels)
        length = max(height, width)
        base = (0.5 * length) ** (1.0 / levels)
        centres = [0.5 * (base**k + base ** (k + 1)) for k in range(levels)]
        ky = torch.fft.fftfreq(height, device=device, dtype=torch.float64) * height
        kx = torch.fft.rfftfreq(width, device=device, dtype=torch.float64) * width
        radius = torch.sqrt((ky[:, None] * length / height) ** 2 + (kx[None] * length / width) ** 2)
        log_radius = torch.where(radius > 0, torch.log(radius.clamp_min(1e-12)) / math.log(base), 0)
        log_centres = torch.log(torch.tensor(centres, dtype=torch.float64, device=device))
        log_centres = log_centres / math.log(base)
        weights = torch.exp(
            -((log_radius[None] - log_centres[:, None, None]) ** 2) / (2.0 * gauss_scale**2)
        )
        weights = weights / weights.sum(dim=0, keepdim=True)
        weights[:, 0, 0] = 0.0
        weights[0, 0, 0] = 1.0
        self.weights = weights.to(torch.float32)
        self.central_wavenumbers = torch.tensor(centres, dtype=torch.float32)

    def wavelengths_km(self, grid_spacing_km: float) -> list[float]:
        """Central wavelength of each level in km, for a grid of ``grid_spacing_km``."""
        length = max(self.height, self.width) * grid_spacing_km
        return [length / float(k) for k in self.central_wavenumbers]

    def decompose(self, spectrum: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Split fields into normalised cascade levels.

        Parameters
        ----------
        spectrum
            ``rfft2`` of the fields, ``(..., H, W // 2 + 1)``.

        Returns
        -------
        tuple of Tensor
            The levels ``(..., levels, H, W // 2 + 1)``, each with zero mean and unit
            standard deviation over the grid (a level with no variance stays 0), and
            their means and standard deviations ``(..., levels)`` before normalising.
        """
        levels = spectrum.unsqueeze(-3) * self.weights
        mean, std = spectral_mean_std(levels, self.height, self.width)
        levels[..., 0, 0] = 0.0
        scale = torch.where(std > 0, std, torch.ones_like(std)).reciprocal()
        levels = levels * scale[..., None, None]
        return levels, mean, std

    def recompose(self, levels: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """Fields from normalised levels and the statistics to restore.

        Parameters
        ----------
        levels
            ``(..., levels, H, W // 2 + 1)`` normalised levels (zero mean).
        mean, std
            ``(..., levels)`` or broadcastable: the statistics each level gets back.

        Returns
        -------
        Tensor
            ``(..., H, W)`` real fields.
        """
        spectrum = (levels * std[..., None, None]).sum(dim=-3)
        field = torch.fft.irfft2(spectrum, s=(self.height, self.width))
        return field + mean.sum(dim=-1)[..., None, None]

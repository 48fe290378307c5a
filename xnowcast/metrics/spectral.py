"""Radially averaged power spectral density (RAPSD) of 2-D fields.

Blurry forecasts lose power at short wavelengths; DGMR (Ravuri et al. 2021)
compares the RAPSD of forecasts with that of the radar to show it.

The power of a ``ny x nx`` field is ``|FFT(field)|**2 / (ny nx)``.  Each
Fourier coefficient has the radial wavenumber ``k = hypot(ky, kx)`` (cycles
per unit length of ``spacing``); coefficients are binned to the nearest
multiple of ``dk = 1 / max(ny dy, nx dx)`` and the power is averaged in each
bin, for ``(max(ny, nx) + 1) // 2`` bins from ``k = 0``.  On a square grid with
equal spacing this is the binning of ``pysteps.utils.spectral.rapsd``.  A field
with a missing value has an all-NaN spectrum: crop to the observed domain (or
fill explicitly) first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rapsd", "rapsd_wavenumbers"]


def _radial_bins(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, int]:
    ny, nx = shape
    dy, dx = spacing
    ky = np.fft.fftfreq(ny, d=dy)
    kx = np.fft.fftfreq(nx, d=dx)
    dk = 1.0 / max(ny * dy, nx * dx)
    radius = np.hypot(ky[:, None], kx[None, :]) / dk
    nbins = (max(ny, nx) + 1) // 2
    return np.round(radius).astype(np.int64), nbins


def rapsd_wavenumbers(
    shape: tuple[int, int], spacing: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """The wavenumbers (cycles per unit of ``spacing``) of the :func:`rapsd` bins."""
    ny, nx = shape
    dk = 1.0 / max(ny * spacing[0], nx * spacing[1])
    return np.arange((max(ny, nx) + 1) // 2) * dk


def rapsd(field: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Radially averaged power spectral density of each 2-D field (last two axes).

    Parameters
    ----------
    field
        Array ``(..., ny, nx)``.
    spacing
        Grid spacing ``(dy, dx)``; sets the wavenumbers of the bins
        (:func:`rapsd_wavenumbers`).

    Returns
    -------
    numpy.ndarray
        Shape ``(..., (max(ny, nx) + 1) // 2)``: mean power per wavenumber bin.
    """
    values = np.asarray(field, dtype=np.float64)
    ny, nx = values.shape[-2:]
    labels, nbins = _radial_bins((ny, nx), spacing)
    power = np.abs(np.fft.fft2(values, axes=(-2, -1))) ** 2 / (ny * nx)
    flat_labels = labels.ravel()
    inside = flat_labels < nbins
    counts = np.bincount(flat_labels[inside], minlength=nbins)[:nbins]
    lead = values.shape[:-2]
    flat_power = power.reshape(-1, ny * nx)[:, inside]
    out = np.empty((flat_power.shape[0], nbins))
    for i, row in enumerate(flat_power):
        out[i] = np.bincount(flat_labels[inside], weights=row, minlength=nbins)[:nbins] / counts
    return out.reshape(*lead, nbins)

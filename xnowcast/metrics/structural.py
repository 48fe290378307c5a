"""Structural similarity (SSIM) as defined in the FC-ZSM paper.

For two fields ``a`` and ``b`` and every ``w x w`` window, with local means
``mu``, standard deviations ``sigma`` and covariance ``sigma_ab``::

    l = (2 mu_a mu_b + c1) / (mu_a**2 + mu_b**2 + c1)            luminance
    c = (2 sigma_a sigma_b + c2) / (sigma_a**2 + sigma_b**2 + c2)  contrast
    s = (sigma_ab + c3) / (sigma_a sigma_b + c3)                  structure
    SSIM = l * c * s,   c1 = (k1 L)**2, c2 = (k2 L)**2, c3 = c2 / 2

with ``k1 = 0.01``, ``k2 = 0.03`` and ``L`` the data range.  With ``c3 = c2 / 2``
the product equals ``(2 mu_a mu_b + c1)(2 sigma_ab + c2) /
((mu_a**2 + mu_b**2 + c1)(sigma_a**2 + sigma_b**2 + c2))``, the form computed
here.  Windows are uniform, the (co)variances use the unbiased ``N - 1``
normalisation, and only windows wholly inside the field are scored (the
conventions of ``skimage.metrics.structural_similarity``'s defaults).  A window
touching a missing (NaN) or infinite value in either field (e.g. ``-inf``
dBZ, which has no mean) is left out.  The result is the mean
over the scored windows.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from xnowcast.metrics.registry import MetricError

__all__ = ["K1", "K2", "ssim", "ssim_terms_array"]

K1 = 0.01
K2 = 0.03


def ssim_terms_array(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float | np.ndarray,
    window: int = 7,
) -> np.ndarray:
    """Sum of SSIM over the scored windows and their number, per 2-D field.

    ``a`` and ``b`` are arrays whose last two axes are (Y, X); ``data_range`` is
    a number or an array broadcastable to the leading axes.  Returns shape
    ``(..., 2)``: ``[sum of SSIM, number of windows]``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    window = int(window)
    ny, nx = a.shape[-2:]
    if window < 2:
        raise MetricError(f"The SSIM window must be at least 2 cells, got {window}.")
    if window > min(ny, nx):
        raise MetricError(
            f"The SSIM window ({window} cells) is larger than the field ({ny} x {nx})."
        )
    span = np.asarray(data_range, dtype=np.float64)
    if np.any(~(span > 0)):
        raise MetricError(f"The SSIM data range must be positive, got {data_range!r}.")
    span = span[..., None, None] if span.ndim else span
    c1 = (K1 * span) ** 2
    c2 = (K2 * span) ** 2

    known = np.isfinite(a) & np.isfinite(b)
    a = np.where(known, a, 0.0)
    b = np.where(known, b, 0.0)
    kwargs = {"size": window, "mode": "constant", "cval": 0.0, "axes": (-2, -1)}
    n = window * window
    lo, hi_y, hi_x = window // 2, ny - window + window // 2 + 1, nx - window + window // 2 + 1
    crop = (..., slice(lo, hi_y), slice(lo, hi_x))

    def local_mean(values: np.ndarray) -> np.ndarray:
        return uniform_filter(values, **kwargs)[crop]

    mu_a, mu_b = local_mean(a), local_mean(b)
    unbiased = n / (n - 1.0)
    var_a = np.maximum(local_mean(a * a) - mu_a**2, 0.0) * unbiased
    var_b = np.maximum(local_mean(b * b) - mu_b**2, 0.0) * unbiased
    cov_ab = (local_mean(a * b) - mu_a * mu_b) * unbiased
    index = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    scored = local_mean((~known).astype(np.float64)) < 0.5 / n
    axes = (-2, -1)
    return np.stack(
        [np.sum(np.where(scored, index, 0.0), axis=axes), np.sum(scored, axis=axes) * 1.0],
        axis=-1,
    )


def ssim(
    a: np.ndarray, b: np.ndarray, *, data_range: float | np.ndarray, window: int = 7
) -> np.ndarray | float:
    """Mean structural similarity of ``a`` and ``b`` over their last two axes.

    Parameters
    ----------
    a, b
        Arrays of the same (or broadcastable) shape ``(..., Y, X)``; NaN marks
        missing cells.
    data_range
        ``L`` of the SSIM constants: the range the data can span (e.g. the
        maximum minus the minimum of the target, or 1 for data scaled to [0, 1]).
    window
        Side of the square uniform window in cells.

    Returns
    -------
    float or numpy.ndarray
        The SSIM of each 2-D field (a float for 2-D input); 1 for identical fields,
        NaN when no window is free of missing cells.
    """
    terms = ssim_terms_array(a, b, data_range, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = terms[..., 0] / np.where(terms[..., 1] > 0, terms[..., 1], np.nan)
    return float(out) if out.ndim == 0 else out

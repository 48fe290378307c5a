"""Empirical semivariograms of 2-D fields, and the forecast-to-observation ratio.

For a field ``z`` and a lag ``h``, the isotropic empirical semivariogram is::

    gamma(h) = 0.5 * mean over pairs (s, s + h) of (z(s + h) - z(s))**2

Pairs are taken along the two grid axes (``h`` whole cells along ``x`` and
along ``y``, pooled; or along one of them with ``direction``), so every lag
is an exact distance on a grid of square cells; shifted arrays make it one
vectorised difference per lag and axis.  Diagonal pairs are not used.  A
pair with a missing (NaN) end is left out; a lag with no pair has ``gamma =
NaN``.  White noise of variance ``s**2`` has ``gamma = s**2`` at every lag; a
ramp of slope ``a`` per cell along one axis has ``gamma = a**2 h**2 / 2``
along that axis (and 0 across it).

Transform
---------
By default fields are scored as ``log(1 + R)`` with ``R`` the rain rate in mm/h
(``transform="log1p"``).  Squared differences of ``R`` itself are dominated by
the few strongest convective cores (on held-out RMI the 99.9th percentile is
about 80 times the mean), so ``gamma`` of ``R`` mostly measures how sharp those
few cores are.  ``log(1 + R)`` weighs the structure of light and heavy rain
alike, is 0 where it is dry (no ``-inf``, unlike dBZ) and is, up to a factor,
the space the ``srgan`` generator and the AtmoDist encoder work in.
``transform=None`` scores the values as they are (any quantity, e.g. dBZ with
its ``-inf`` cells set to NaN first).

The ratio ``gamma_forecast(h) / gamma_observation(h)`` (pairs known in both
fields, sums pooled over fields before dividing) is 1 for a forecast with the
observation's spatial variability at lag ``h``, below 1 for a smooth one (a
bicubic interpolation at scales under its input's cell), above 1 for a noisy
one.  ``verify(metrics=["semivariogram_ratio"])`` reports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xnowcast.errors import MetricError

__all__ = [
    "DIRECTIONS",
    "VARIOGRAM_TRANSFORMS",
    "check_lags",
    "semivariogram",
    "semivariogram_ratio_terms",
    "semivariogram_sums",
]

#: The transforms a field can be scored in (``None`` is the values as they are).
VARIOGRAM_TRANSFORMS = ("log1p", None)
#: Pairs along both axes (pooled), or along one: ``y`` (rows apart) or ``x`` (columns apart).
DIRECTIONS = ("isotropic", "y", "x")


def check_lags(lags: int | Sequence[int]) -> tuple[int, ...]:
    """``lags`` as a tuple of positive whole numbers of cells.

    Raises
    ------
    MetricError
        For an empty list, a lag that is not a whole number or is below 1.
    """
    values = [lags] if np.ndim(lags) == 0 else list(lags)  # type: ignore[list-item]
    if not values:
        raise MetricError("No semivariogram lag given: pass e.g. lags=(1, 2, 4, 8).")
    out = []
    for lag in values:
        try:
            whole = not isinstance(lag, (bool, np.bool_)) and float(lag).is_integer()
        except (TypeError, ValueError):
            whole = False
        if not whole or lag < 1:
            raise MetricError(
                f"A semivariogram lag is a whole number of grid cells >= 1, got {lag!r} "
                "(lengths such as '4 km' are read by xnowcast.verification.semivariogram)."
            )
        out.append(int(lag))
    return tuple(out)


def _transformed(field: np.ndarray, transform: str | None) -> np.ndarray:
    values = np.asarray(field, dtype=np.float64)
    if values.ndim < 2:
        raise MetricError(
            f"A semivariogram needs 2-D fields (last two axes y, x), got shape {values.shape}."
        )
    if transform is None:
        return np.where(np.isfinite(values), values, np.nan)
    if transform != "log1p":
        raise MetricError(
            f"Unknown semivariogram transform {transform!r}: use 'log1p' (rain rate in "
            "mm/h, scored as log(1 + R)) or None (the values as they are)."
        )
    if np.nanmin(values, initial=0.0) < 0:
        raise MetricError(
            f"The 'log1p' transform needs rain rates >= 0, got {np.nanmin(values):g}: convert "
            "to mm/h first, or pass transform=None for a quantity that can be negative."
        )
    return np.log1p(np.where(np.isfinite(values), values, np.nan))


def _increments(values: np.ndarray, lag: int, direction: str) -> list[np.ndarray]:
    """Increments at ``lag`` cells along y and/or x (NaN where an end is missing)."""
    if direction not in DIRECTIONS:
        raise MetricError(
            f"Unknown semivariogram direction {direction!r}: use one of {', '.join(DIRECTIONS)}."
        )
    out = []
    if direction in ("isotropic", "y"):
        out.append(values[..., lag:, :] - values[..., :-lag, :])
    if direction in ("isotropic", "x"):
        out.append(values[..., :, lag:] - values[..., :, :-lag])
    return out


def semivariogram_sums(
    field: np.ndarray,
    lags: int | Sequence[int],
    transform: str | None = "log1p",
    direction: str = "isotropic",
) -> np.ndarray:
    """Sums of squared increments and numbers of pairs, per 2-D field and lag.

    Parameters
    ----------
    field
        Array ``(..., ny, nx)``; NaN marks missing cells.
    lags
        Lags in grid cells.
    transform
        ``"log1p"`` (rain rate in mm/h, scored as ``log(1 + R)``) or ``None``.
    direction
        ``"isotropic"`` (pairs along y and along x, pooled), ``"y"`` or ``"x"``.

    Returns
    -------
    numpy.ndarray
        Shape ``(..., len(lags), 2)``: ``[sum of squared increments, number of
        pairs]``, so that sums over fields pool them; ``gamma = 0.5 * sum / n``.
    """
    values = _transformed(field, transform)
    lags = check_lags(lags)
    out = np.zeros((*values.shape[:-2], len(lags), 2))
    for i, lag in enumerate(lags):
        for inc in _increments(values, lag, direction):
            known = np.isfinite(inc)
            out[..., i, 0] += np.sum(np.where(known, inc, 0.0) ** 2, axis=(-2, -1))
            out[..., i, 1] += np.sum(known, axis=(-2, -1))
    return out


def semivariogram(
    field: np.ndarray,
    lags: int | Sequence[int],
    transform: str | None = "log1p",
    direction: str = "isotropic",
) -> np.ndarray:
    """Empirical semivariogram ``gamma(h)`` of each 2-D field (last two axes).

    Returns an array ``(..., len(lags))``; NaN at a lag with no pair of known
    cells.  See :func:`semivariogram_sums` for the arguments.
    """
    sums = semivariogram_sums(field, lags, transform, direction)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 0.5 * sums[..., 0] / np.where(sums[..., 1] > 0, sums[..., 1], np.nan)


def semivariogram_ratio_terms(
    forecast: np.ndarray,
    observation: np.ndarray,
    lags: int | Sequence[int],
    transform: str | None = "log1p",
) -> np.ndarray:
    """Squared increments of forecast and observation on the pairs known in both.

    Returns shape ``(..., len(lags), 2)``: ``[forecast sum, observation sum]``
    per field and lag; the ratio of their sums over fields is the pooled
    ``gamma_forecast / gamma_observation`` (the numbers of pairs cancel).
    """
    fc = np.asarray(forecast, dtype=np.float64)
    obs = np.asarray(observation, dtype=np.float64)
    fc, obs = np.broadcast_arrays(fc, obs)
    # a pair is known in both fields exactly when both its ends are known in both
    known = np.isfinite(fc) & np.isfinite(obs)
    fc_sums = semivariogram_sums(np.where(known, fc, np.nan), lags, transform)
    obs_sums = semivariogram_sums(np.where(known, obs, np.nan), lags, transform)
    return np.stack([fc_sums[..., 0], obs_sums[..., 0]], axis=-1)

"""Neighbourhood verification: the fractions skill score and pooling.

Fractions skill score (Roberts and Lean 2008)
---------------------------------------------
For a threshold ``q`` and a ``wy x wx`` window, the event fields
``I = (field >= q)`` of forecast and observation are turned into fractions
``P`` (the share of event cells in the window around each position) and

``FSS = 1 - sum (P_f - P_o)**2 / (sum P_f**2 + sum P_o**2)``

where the sums run over the scored window positions of every field pooled
together (the sums are added over ``dim`` before the ratio is taken, the
aggregation of Roberts and Lean / Mittermaier 2021 that ``scores`` uses too).
FSS is NaN when no event is forecast or observed in any scored window (the
score is undefined; ``scores`` returns 0 there).

**Padding convention.**  ``padding="valid"`` (the default) scores only the
windows that lie wholly inside the domain: ``(H - wy + 1) x (W - wx + 1)``
positions, no invented values at the edges.  This is the convention of
``scores.spatial.fss_2d(..., zero_padding=False)`` and equals it (with
``threshold_operator=numpy.greater_equal``) to rounding.  ``padding="zeros"``
scores a window centred on every cell (``scipy.ndimage.uniform_filter``
with ``mode="constant", cval=0``: the outside of the domain counts as "no
event"), the convention of ``pysteps.verification.spatialscores.fss``.

**Missing data.**  A window is scored only when every cell in it is known in
both fields: windows touching a NaN are left out of all three sums, so missing
radar never counts as "no rain".

Pooling (DGMR, Ravuri et al. 2021)
----------------------------------
:func:`pool` average- or max-pools both fields over non-overlapping
``scale x scale`` blocks (stride = kernel, trailing cells that do not fill a
block are dropped) before a score is computed: CSI or CRPS "at 4 km" is the
score of the 4 x 4 pooled fields.  A block with any missing cell is missing.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from types import EllipsisType
from typing import Literal

import numpy as np
import xarray as xr
from scipy.ndimage import uniform_filter

from xnowcast.metrics._common import as_dims, whole_fields
from xnowcast.metrics.registry import MetricError

__all__ = ["FSS_TERMS", "fss", "fss_from_terms", "fss_terms", "fss_terms_array", "pool"]

Padding = Literal["valid", "zeros"]
FSS_TERMS = ("forecast_power", "observation_power", "difference_power", "windows")
_TERM_DIM = "fss_term"


def _window_pair(window: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(window, (int, np.integer)):
        pair = (int(window), int(window))
    else:
        pair = tuple(int(w) for w in window)
        if len(pair) != 2:
            raise MetricError(f"A window is one size or a (height, width) pair, not {window!r}.")
    if min(pair) < 1:
        raise MetricError(f"Window sizes must be at least 1 grid cell, got {window!r}.")
    return pair  # type: ignore[return-value]


def fss_terms_array(
    forecast: np.ndarray,
    observations: np.ndarray,
    threshold: float,
    window: int | Sequence[int],
    *,
    padding: Padding = "valid",
) -> np.ndarray:
    """The FSS sums of each 2-D field (the last two axes) of numpy arrays.

    Returns
    -------
    numpy.ndarray
        Shape ``(..., 4)``: the sums of ``P_f**2``, ``P_o**2``, ``(P_f - P_o)**2``
        over the scored windows, and the number of scored windows.
    """
    f = np.asarray(forecast)
    o = np.asarray(observations)
    f, o = np.broadcast_arrays(f, o)
    wy, wx = _window_pair(window)
    ny, nx = f.shape[-2:]
    if padding not in ("valid", "zeros"):
        raise MetricError(f"padding must be 'valid' or 'zeros', not {padding!r}.")
    if padding == "valid" and (wy > ny or wx > nx):
        raise MetricError(
            f"The FSS window ({wy} x {wx} cells) is larger than the field ({ny} x {nx})."
        )
    known = ~(np.isnan(f) | np.isnan(o))  # -inf (0 mm/h in dBZ) is data, not missing
    event_f = np.greater_equal(
        f, np.float64(threshold), where=known, out=np.zeros(f.shape, dtype=bool)
    )
    event_o = np.greater_equal(
        o, np.float64(threshold), where=known, out=np.zeros(o.shape, dtype=bool)
    )
    kwargs = {"size": (wy, wx), "mode": "constant", "cval": 0.0, "axes": (-2, -1)}
    frac_f = uniform_filter(event_f, output=np.float64, **kwargs)
    frac_o = uniform_filter(event_o, output=np.float64, **kwargs)
    crop: tuple[slice | EllipsisType, ...] = (...,)
    if padding == "valid":
        # uniform_filter's output at i averages the cells [i - w // 2, i - w // 2 + w)
        rows = slice(wy // 2, ny - wy + wy // 2 + 1)
        cols = slice(wx // 2, nx - wx + wx // 2 + 1)
        crop = (..., rows, cols)
    frac_f, frac_o = frac_f[crop], frac_o[crop]
    if known.all():
        windows = np.full(frac_f.shape[:-2], float(frac_f.shape[-2] * frac_f.shape[-1]))
    else:
        frac_missing = uniform_filter(~known, output=np.float64, **kwargs)[crop]
        scored = frac_missing < 0.5 / (wy * wx)
        frac_f *= scored
        frac_o *= scored
        windows = scored.sum(axis=(-2, -1)).astype(np.float64)
    diff = frac_f - frac_o
    return np.stack(
        [_sum_squares(frac_f), _sum_squares(frac_o), _sum_squares(diff), windows], axis=-1
    )


def _sum_squares(values: np.ndarray) -> np.ndarray:
    return np.einsum("...ij,...ij->...", values, values)


def fss_terms(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    window: int | Sequence[int],
    *,
    spatial_dims: tuple[Hashable, Hashable],
    padding: Padding = "valid",
) -> xr.DataArray:
    """The FSS sums of every field, with a ``fss_term`` dim (see :data:`FSS_TERMS`).

    Lazy on dask input (the spatial dims are put in one chunk; other dims keep
    their chunks).  Add the terms over any dims, then call :func:`fss_from_terms`.
    """
    ydim, xdim = spatial_dims
    fc, ob = whole_fields(xr.broadcast(forecast, observations), spatial_dims)
    out = xr.apply_ufunc(
        fss_terms_array,
        fc,
        ob,
        input_core_dims=[[ydim, xdim], [ydim, xdim]],
        output_core_dims=[[_TERM_DIM]],
        kwargs={"threshold": float(threshold), "window": window, "padding": padding},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {_TERM_DIM: len(FSS_TERMS)}},
    )
    return out.assign_coords({_TERM_DIM: list(FSS_TERMS)})


def fss_from_terms(terms: xr.DataArray) -> xr.DataArray:
    """FSS from (summed) :func:`fss_terms`; NaN where no event is in any window."""
    f2 = terms.sel({_TERM_DIM: "forecast_power"}, drop=True)
    o2 = terms.sel({_TERM_DIM: "observation_power"}, drop=True)
    d2 = terms.sel({_TERM_DIM: "difference_power"}, drop=True)
    denominator = f2 + o2
    return (1.0 - d2 / denominator.where(denominator > 0)).clip(0.0, 1.0)


def fss(
    forecast: xr.DataArray,
    observations: xr.DataArray,
    threshold: float,
    window: int | Sequence[int],
    *,
    spatial_dims: tuple[Hashable, Hashable] = ("y", "x"),
    dim: Hashable | Iterable[Hashable] | None = None,
    padding: Padding = "valid",
) -> xr.DataArray:
    """Fractions skill score of events ``>= threshold`` in ``window`` (grid cells).

    Parameters
    ----------
    forecast, observations
        Fields in the same units with the two ``spatial_dims``.
    threshold
        Event threshold in the data's units.
    window
        Neighbourhood size in grid cells: one size or ``(height, width)``.
    spatial_dims
        The (Y, X) dims the window slides over.
    dim
        Further dims whose fields are pooled into one score (e.g. ``init_time``,
        ``member``).
    padding
        ``"valid"`` (windows inside the domain only) or ``"zeros"``; see the
        module docstring.

    Returns
    -------
    xarray.DataArray
        FSS in [0, 1] with the dims of the inputs less ``spatial_dims`` and ``dim``.
    """
    terms = fss_terms(
        forecast, observations, threshold, window, spatial_dims=spatial_dims, padding=padding
    )
    extra = [d for d in as_dims(dim) if d in terms.dims]
    if extra:
        terms = terms.sum(extra)
    return fss_from_terms(terms)


def pool(
    da: xr.DataArray,
    scale: int,
    *,
    spatial_dims: tuple[Hashable, Hashable],
    how: Literal["avg", "max"] = "avg",
) -> xr.DataArray:
    """Average- or max-pool ``da`` over non-overlapping ``scale x scale`` blocks.

    Trailing rows/columns that do not fill a block are dropped; a block with a
    missing cell is missing.  ``scale=1`` returns ``da`` unchanged.  Lazy on dask.
    """
    scale = int(scale)
    if scale < 1:
        raise MetricError(f"A pooling scale must be at least 1 grid cell, got {scale}.")
    if how not in ("avg", "max"):
        raise MetricError(f"Pooling is 'avg' or 'max', not {how!r}.")
    if scale == 1:
        return da
    ydim, xdim = spatial_dims
    if da.sizes[ydim] < scale or da.sizes[xdim] < scale:
        raise MetricError(
            f"The pooling scale {scale} is larger than the field "
            f"({da.sizes[ydim]} x {da.sizes[xdim]} cells)."
        )
    blocks = da.coarsen({ydim: scale, xdim: scale}, boundary="trim")
    out = blocks.reduce(np.mean if how == "avg" else np.max)  # NaN propagates
    out.attrs = dict(da.attrs)
    return out

"""Plots for verification: score curves, forecast-vs-observation maps, exceedance
probabilities, power spectra, semivariograms.

Matplotlib is imported inside the functions (``import xnowcast.plot`` stays
cheap and works with any backend, Agg included).  Every function returns the
Figure or Axes it drew on.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.errors import CoordinateError, DataValueError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

__all__ = [
    "plot_exceedance",
    "plot_forecast_panel",
    "plot_psd",
    "plot_scores",
    "plot_semivariogram",
    "radar_colormap",
]

# light blue -> blue -> green -> yellow -> orange -> red -> magenta, as radar displays
_RADAR_COLOURS = (
    "#c6e7ff",
    "#6bb3ff",
    "#1f5fd6",
    "#19a33a",
    "#8fd14f",
    "#ffe14d",
    "#ff9f1c",
    "#e8261c",
    "#a3127a",
    "#e36bff",
)


def radar_colormap(missing: str = "0.75", no_rain: str = "white") -> Colormap:
    """The radar colour scale: ``missing`` for NaN, ``no_rain`` below the norm's ``vmin``."""
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("xnowcast_radar", _RADAR_COLOURS, N=256)
    return cmap.with_extremes(bad=missing, under=no_rain)


def plot_scores(
    scores: xr.Dataset | Mapping[str, xr.Dataset],
    metric: str,
    threshold: float | str | None = None,
    *,
    scale: int | None = None,
    window: int | None = None,
    ax: Axes | None = None,
    **line_kwargs: Any,
) -> Axes:
    """A score against lead time, for one or several models on one axes.

    Parameters
    ----------
    scores
        A Dataset from :func:`xnowcast.verification.verify`, or a mapping of
        model name to such Datasets (one colour per model).
    metric
        The variable to draw (``"csi"``, ``"fss"``, ...).
    threshold, scale, window
        Select one value of these dims (a threshold in the scores' units or its
        label such as ``"1 mm/h"``).  A dim left unselected draws one line per
        value (line styles), so by default every threshold is drawn.
    ax
        Axes to draw on; a new figure when ``None``.
    **line_kwargs
        Passed to :meth:`matplotlib.axes.Axes.plot`.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    datasets = {"": scores} if isinstance(scores, xr.Dataset) else dict(scores)
    styles = ("-", "--", ":", "-.")
    markers = ("o", "s", "^", "D", "v", "P")
    first: xr.DataArray | None = None
    for i, (model, ds) in enumerate(datasets.items()):
        if metric not in ds.data_vars:
            raise KeyError(
                f"The scores{' of ' + repr(model) if model else ''} have no {metric!r}; "
                f"they have {sorted(map(str, ds.data_vars))}."
            )
        da = ds[metric]
        for name, value in (("threshold", threshold), ("scale", scale), ("window", window)):
            da = _select(da, name, value)
        if cv.LEAD_TIME not in da.dims:
            raise CoordinateError(f"{metric!r} has no {cv.LEAD_TIME!r} dim to plot against.")
        da = da.squeeze([d for d in da.dims if d != cv.LEAD_TIME and da.sizes[d] == 1])
        first = da if first is None else first
        others = [d for d in da.dims if d != cv.LEAD_TIME]
        minutes = da[cv.LEAD_TIME].values / np.timedelta64(1, "m")
        combos = list(itertools.product(*(range(da.sizes[d]) for d in others)))
        for j, combo in enumerate(combos):
            line = da.isel(dict(zip(others, combo, strict=True)))
            parts = [model] if model else []
            parts += [_describe(line, d) for d in others]
            kwargs = {
                "color": f"C{i % 10}",
                "linestyle": styles[j % len(styles)],
                "marker": markers[j % len(markers)],
                "markersize": 3,
                "label": ", ".join(p for p in parts if p) or None,
                **line_kwargs,
            }
            ax.plot(minutes, line.values, **kwargs)
    assert first is not None
    units = first.attrs.get("units", "1")
    long_name = first.attrs.get("long_name", metric)
    ax.set_xlabel("lead time [min]")
    ax.set_ylabel(long_name if units in ("1", "") else f"{long_name} [{units}]")
    title = metric.upper()
    for d in ("threshold", "scale", "window"):
        if d in first.coords and d not in first.dims:
            title += f", {_describe(first, d)}"
    ax.set_title(title)
    if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
        ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    return ax


def plot_forecast_panel(
    forecast: xr.DataArray | xr.Dataset,
    observations: xr.DataArray | xr.Dataset | None = None,
    lead_times: Sequence[Any] | None = None,
    *,
    init_time: Any = None,
    member: int | str = 0,
    var: str | None = None,
    vmin: float = 0.1,
    vmax: float = 100.0,
    cmap: Colormap | None = None,
    panel_size: float = 3.0,
) -> Figure:
    """Maps of a forecast (top row) and the observations (bottom row) at chosen lead times.

    Values are shown as rain rate in mm/h (converted from the data's units) on a
    logarithmic colour scale from ``vmin`` to ``vmax``: white below ``vmin`` (no
    rain), grey where the data are missing (NaN).

    Parameters
    ----------
    forecast
        A nowcast (``lead_time`` dim, ``valid_time`` coordinate).
    observations
        Observed fields with a time axis; the row is left out when ``None``.
    lead_times
        Lead times to draw: minutes (``30``), ``numpy.timedelta64`` or strings
        (``"30 min"``).  Default: up to four spread over the forecast.
    init_time
        Which forecast to draw when ``init_time`` is a dim (default the first).
    member
        Which member of an ensemble (an index), or ``"mean"`` for the ensemble mean.
    var
        Variable name for Dataset input.
    vmin, vmax
        Range of the logarithmic colour scale in mm/h.
    cmap
        Colour map (default :func:`radar_colormap`).
    panel_size
        Side of one map in inches.

    Returns
    -------
    matplotlib.figure.Figure
        ``rows x len(lead_times)`` map axes and one colour bar axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from xnowcast.units import convert_dataarray
    from xnowcast.verification import align_observations

    fc = cv.find_precipitation(forecast, var)
    if cv.INIT_TIME in fc.dims:
        fc = fc.isel({cv.INIT_TIME: 0}) if init_time is None else fc.sel({cv.INIT_TIME: init_time})
    if cv.MEMBER in fc.dims:
        fc = (
            fc.mean(cv.MEMBER, keep_attrs=True)
            if member == "mean"
            else fc.isel({cv.MEMBER: member})
        )
    if cv.LEAD_TIME not in fc.dims:
        raise CoordinateError(f"The forecast has no {cv.LEAD_TIME!r} dim.")
    fc = fc.sel({cv.LEAD_TIME: _lead_times(fc, lead_times)})
    rows = [("forecast", fc)]
    if observations is not None:
        rows.append(("observed", align_observations(fc, observations, var)))
    axes_names = cv.find_axes(fc, require_time=False)
    rate_units = "mm h-1"
    cmap = cmap or radar_colormap()
    norm = LogNorm(vmin=vmin, vmax=vmax)
    ncols = fc.sizes[cv.LEAD_TIME]
    fig, axes = plt.subplots(
        len(rows),
        ncols,
        figsize=(panel_size * ncols + 1.2, panel_size * len(rows)),
        squeeze=False,
        constrained_layout=True,
        sharex=True,
        sharey=True,
    )
    y, x, scale, label = _map_coords(fc, axes_names)
    mesh = None
    for r, (row_name, da) in enumerate(rows):
        rate = convert_dataarray(da, rate_units) if da.attrs.get("units") != rate_units else da
        for c in range(ncols):
            field = np.asarray(rate.isel({cv.LEAD_TIME: c}).transpose(axes_names.y, axes_names.x))
            shown = np.where(np.isfinite(field) & (field < vmin), vmin / 2.0, field)
            ax = axes[r, c]
            mesh = ax.pcolormesh(
                x / scale, y / scale, np.ma.masked_invalid(shown), cmap=cmap, norm=norm,
                shading="nearest", rasterized=True,
            )  # fmt: skip
            ax.set_aspect("equal")
            minutes = fc[cv.LEAD_TIME].values[c] / np.timedelta64(1, "m")
            if r == 0:
                ax.set_title(f"+{minutes:g} min")
            if c == 0:
                ax.set_ylabel(f"{row_name}\n{axes_names.y} [{label}]")
            if r == len(rows) - 1:
                ax.set_xlabel(f"{axes_names.x} [{label}]")
    fig.colorbar(mesh, ax=axes, extend="both", label=f"precipitation rate [{rate_units}]")
    if cv.INIT_TIME in fc.coords and fc[cv.INIT_TIME].ndim == 0:
        stamp = np.datetime_as_string(fc[cv.INIT_TIME].values, unit="m")
        fig.suptitle(f"forecast from {stamp}")
    return fig


def plot_exceedance(
    forecast: xr.DataArray | xr.Dataset,
    threshold: float | str = "1 mm/h",
    lead_time: Any = None,
    *,
    observations: xr.DataArray | xr.Dataset | None = None,
    init_time: Any = None,
    var: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Map of the probability that an ensemble reaches ``threshold`` at one lead time.

    The probability is the fraction of members at or above the threshold, missing
    where any member is missing; the observed threshold contour is drawn on top.

    Parameters
    ----------
    forecast
        An ensemble nowcast (``member`` and ``lead_time`` dims).
    threshold
        A number in the forecast's units or a string with units (``"1 mm/h"``,
        ``"35 dBZ"``).
    lead_time
        Minutes, ``numpy.timedelta64`` or a string (``"60 min"``); default the last.
    observations
        Observed fields with a time axis, for the contour; none when ``None``.
    init_time
        Which forecast to draw when ``init_time`` is a dim (default the first).
    var
        Variable name for Dataset input.
    ax
        Axes to draw on; a new figure when ``None``.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    CoordinateError
        When the forecast has no ``member`` or ``lead_time`` dim.
    """
    import matplotlib.pyplot as plt

    from xnowcast.units import to_data_units
    from xnowcast.verification import align_observations

    fc = cv.find_precipitation(forecast, var)
    if cv.INIT_TIME in fc.dims:
        fc = fc.isel({cv.INIT_TIME: 0}) if init_time is None else fc.sel({cv.INIT_TIME: init_time})
    for dim in (cv.MEMBER, cv.LEAD_TIME):
        if dim not in fc.dims:
            raise CoordinateError(
                f"The forecast has no {dim!r} dim: plot_exceedance maps an ensemble nowcast "
                "(predict with members > 1)."
            )
    lead = fc[cv.LEAD_TIME].values[-1] if lead_time is None else _lead_times(fc, [lead_time])[0]
    observed = None
    if observations is not None:
        observed = align_observations(fc, observations, var).sel({cv.LEAD_TIME: lead})
    fc = fc.sel({cv.LEAD_TIME: lead})
    cut = to_data_units(threshold, str(fc.attrs.get("units", "")))
    probability = (fc >= cut).where(fc.notnull().all(cv.MEMBER)).mean(cv.MEMBER)
    axes_names = cv.find_axes(fc, require_time=False)
    y, x, scale, label = _map_coords(fc, axes_names)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
    field = np.asarray(probability.transpose(axes_names.y, axes_names.x))
    mesh = ax.pcolormesh(x / scale, y / scale, np.ma.masked_invalid(field), vmin=0, vmax=1,
                         cmap="Blues", shading="nearest", rasterized=True)  # fmt: skip
    text = threshold if isinstance(threshold, str) else f"{threshold:g} {fc.attrs.get('units', '')}"
    ax.figure.colorbar(mesh, ax=ax, label=f"P(>= {text})")
    if observed is not None:
        seen = np.asarray(observed.transpose(axes_names.y, axes_names.x))
        ax.contour(x / scale, y / scale, seen, levels=[cut], colors="k", linewidths=0.8)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{axes_names.x} [{label}]")
    ax.set_ylabel(f"{axes_names.y} [{label}]")
    minutes = lead / np.timedelta64(1, "m")
    contour = ", observed contour" if observed is not None else ""
    ax.set_title(f"P(>= {text}) at +{minutes:g} min{contour}")
    return ax


def plot_psd(
    spectra: xr.DataArray | Mapping[str, xr.DataArray],
    *,
    ax: Axes | None = None,
    var: str | None = None,
    fill_value: float | None = None,
    **line_kwargs: Any,
) -> Axes:
    """Radially averaged power spectra against wavelength (log-log), one line per entry.

    Parameters
    ----------
    spectra
        Outputs of :func:`xnowcast.verification.power_spectrum`, or fields (which
        are transformed here); a mapping draws one labelled line per entry.  Any
        dims besides ``wavenumber`` are averaged.
    ax
        Axes to draw on; a new figure when ``None``.
    var
        Variable name for Dataset fields.
    fill_value
        Put in missing cells of fields before the transform (see
        :func:`~xnowcast.verification.power_spectrum`); fields with missing
        cells are otherwise left out of the average.
    **line_kwargs
        Passed to :meth:`matplotlib.axes.Axes.loglog`.

    Returns
    -------
    matplotlib.axes.Axes
        Wavelength on the x axis, large scales on the left.

    Raises
    ------
    DataValueError
        When every field of an entry has a missing cell (no spectrum to draw).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from xnowcast.verification import power_spectrum

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    entries = {"": spectra} if isinstance(spectra, (xr.DataArray, xr.Dataset)) else dict(spectra)
    last: xr.DataArray | None = None
    for i, (label, item) in enumerate(entries.items()):
        if "wavenumber" in getattr(item, "dims", ()):
            psd = item
        else:
            psd = power_spectrum(item, var=var, fill_value=fill_value)
        others = [d for d in psd.dims if d != "wavenumber"]
        mean = psd.mean(others) if others else psd
        mean = mean.isel(wavenumber=slice(1, None))  # the k = 0 bin has no wavelength
        if not np.isfinite(mean.values).any():
            raise DataValueError(
                f"No spectrum for {label or 'the fields'!s}: every field has missing cells. "
                "Crop to the observed domain first, or pass fill_value=0 to count them as "
                "no rain."
            )
        ax.loglog(
            mean["wavelength"].values,
            mean.values,
            color=f"C{i % 10}",
            label=label or None,
            **line_kwargs,
        )
        last = mean
    assert last is not None
    ax.invert_xaxis()
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"wavelength [{last['wavelength'].attrs.get('units', '')}]")
    ax.set_ylabel(f"power spectral density [{last.attrs.get('units', '')}]")
    ax.set_title("radially averaged power spectrum")
    if any(label for label in entries):
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_semivariogram(
    curves: xr.DataArray | Mapping[str, xr.DataArray],
    *,
    ax: Axes | None = None,
    var: str | None = None,
    lags: Sequence[int | str] | None = None,
    **line_kwargs: Any,
) -> Axes:
    """Empirical semivariograms against lag distance (log-log), one line per entry.

    Parameters
    ----------
    curves
        Outputs of :func:`xnowcast.verification.semivariogram`, or fields (rain
        rate or reflectivity; scored as ``log(1 + R)`` here); a mapping draws one
        labelled line per entry.  Any dims besides ``lag`` are averaged.
    ax
        Axes to draw on; a new figure when ``None``.
    var
        Variable name for Dataset fields.
    lags
        Lags for fields (grid cells or lengths); default 1 to 64 cells by powers of 2.
    **line_kwargs
        Passed to :meth:`matplotlib.axes.Axes.loglog`.

    Returns
    -------
    matplotlib.axes.Axes
        Lag on the x axis (km on a metric grid, else grid cells).

    Raises
    ------
    DataValueError
        When an entry has no pair of known cells at any lag.
    """
    import matplotlib.pyplot as plt

    from xnowcast.verification import semivariogram

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    entries = {"": curves} if isinstance(curves, (xr.DataArray, xr.Dataset)) else dict(curves)
    last: xr.DataArray | None = None
    for i, (label, item) in enumerate(entries.items()):
        if "lag" in getattr(item, "dims", ()):
            gamma = item
        else:
            gamma = semivariogram(item, var=var, lags=lags or (1, 2, 4, 8, 16, 32, 64))
        others = [d for d in gamma.dims if d != "lag"]
        mean = gamma.mean(others) if others else gamma
        if not np.isfinite(mean.values).any():
            raise DataValueError(
                f"No semivariogram for {label or 'the fields'!s}: no pair of known cells "
                "at any lag (all missing, or lags larger than the field)."
            )
        mean = mean.isel(lag=np.flatnonzero(np.isfinite(mean.values)))  # lags with pairs
        x = mean["lag_distance"] if "lag_distance" in mean.coords else mean["lag"]
        colour = f"C{i % 10}"
        ax.loglog(x.values, mean.values, "o-", color=colour, label=label or None, **line_kwargs)
        last = x
    assert last is not None
    unit = "km" if last.name == "lag_distance" else "grid cells"
    ax.set_xlabel(f"lag [{unit}]")
    ax.set_ylabel(f"semivariogram [{mean.attrs.get('units', '')}]")
    ax.set_title(mean.attrs.get("long_name", "empirical semivariogram"), fontsize="medium")
    if any(label for label in entries):
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return ax


# ---------------------------------------------------------------------------- helpers


def _select(da: xr.DataArray, dim: str, value: Any) -> xr.DataArray:
    if value is None or dim not in da.dims:
        return da
    if isinstance(value, str) and f"{dim}_label" in da.coords:
        labels = [str(v) for v in da[f"{dim}_label"].values]
        if value in labels:
            return da.isel({dim: labels.index(value)})
    values = np.asarray(da[dim].values, dtype=np.float64)
    try:
        wanted = float(value)
    except (TypeError, ValueError):
        wanted = np.nan
    hits = np.nonzero(np.isclose(values, wanted, rtol=1e-6, atol=1e-9))[0]
    if hits.size == 0:
        choices = list(da[f"{dim}_label"].values) if f"{dim}_label" in da.coords else list(values)
        raise KeyError(f"No {dim} {value!r} in the scores; available: {choices}.")
    return da.isel({dim: int(hits[0])})


def _describe(da: xr.DataArray, dim: Hashable) -> str:
    if dim == "threshold" and "threshold_label" in da.coords:
        return f"≥ {da['threshold_label'].values}"
    value = da[dim].values
    if dim == "scale":
        return "no pooling" if int(value) == 1 else f"pooled {int(value)}x{int(value)} cells"
    if dim == "window":
        return f"window {int(value)}x{int(value)} cells"
    return f"{dim} {value}"


def _lead_times(fc: xr.DataArray, lead_times: Sequence[Any] | None) -> np.ndarray:
    available = fc[cv.LEAD_TIME].values
    if lead_times is None:
        count = min(4, available.size)
        index = np.unique(np.linspace(0, available.size - 1, count).round().astype(int))
        return available[index]
    wanted = []
    for value in lead_times:
        if isinstance(value, str):
            from xnowcast.units import ureg

            minutes = float(ureg.Quantity(value).to("min").magnitude)
            value = np.timedelta64(round(minutes * 60), "s")
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value,
            np.timedelta64,  # a subclass of np.integer
        ):
            value = np.timedelta64(round(float(value) * 60), "s")
        value = np.timedelta64(value, "ns")
        if value not in available.astype("timedelta64[ns]"):
            have = [f"{v / np.timedelta64(1, 'm'):g}" for v in available]
            raise KeyError(
                f"No lead time of {value / np.timedelta64(1, 'm'):g} min; available: {have} min."
            )
        wanted.append(value)
    return np.asarray(wanted, dtype="timedelta64[ns]")


def _map_coords(da: xr.DataArray, axes: cv.Axes) -> tuple[np.ndarray, np.ndarray, float, str]:
    if axes.y in da.coords and axes.x in da.coords:
        y = np.asarray(da[axes.y].values, dtype=np.float64)
        x = np.asarray(da[axes.x].values, dtype=np.float64)
        units = str(da[axes.x].attrs.get("units", "m"))
        if units in ("m", "metre", "meter", "metres", "meters"):
            return y, x, 1000.0, "km"
        return y, x, 1.0, units
    return (
        np.arange(da.sizes[axes.y], dtype=np.float64),
        np.arange(da.sizes[axes.x], dtype=np.float64),
        1.0,
        "cells",
    )

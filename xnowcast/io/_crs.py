"""Coordinate reference systems through pyproj: file metadata -> CF grid mapping, projections.

Every reader describes its grid's CRS with a :class:`pyproj.CRS` (from a proj4
text, an EPSG code or the file's own CF grid-mapping attributes) and turns it
into the attributes of the ``crs`` variable with :func:`cf_attributes`
(``pyproj.CRS.to_cf()``: the CF grid mapping, the figure of the earth and the
WKT in ``crs_wkt``).  Corners given as longitude/latitude are projected with
:func:`project`.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from xnowcast.errors import RadarFormatError

if TYPE_CHECKING:  # pyproj is imported when a CRS is first made, not at ``import xnowcast``
    import pyproj

__all__ = [
    "cf_attributes",
    "crs_from_cf",
    "crs_from_proj4",
    "geographic_crs",
    "project",
    "to_crs",
]

_LENGTH_KEYS = ("a", "b", "R", "x_0", "y_0")
_UNIT_TO_METRE = {"m": 1.0, "km": 1000.0}


def _proj4_in_metres(text: str, length_unit: str | None) -> str:
    """The proj4 text with its lengths in metres and ``+units=m``."""
    params: dict[str, str | None] = {}
    for token in text.replace("+", " +").split():
        key, sep, value = token.lstrip("+").partition("=")
        if key:
            params[key] = value if sep else None
    if "proj" not in params:
        raise RadarFormatError(f"projection definition without +proj=: {text!r}")
    unit = params.pop("units", None) or length_unit or "m"
    if unit not in _UNIT_TO_METRE:
        raise RadarFormatError(f"unknown length unit {unit!r} in projection {text!r}")
    scale = _UNIT_TO_METRE[unit]
    parts, flags = [], []
    for key, value in params.items():
        if value is None:
            flags.append(f"+{key}")
        elif key in _LENGTH_KEYS and scale != 1.0:
            try:
                parts.append(f"+{key}={float(value) * scale:.10g}")
            except ValueError as err:
                raise RadarFormatError(f"cannot read +{key}={value!r} as a number") from err
        else:
            parts.append(f"+{key}={value}")
    return " ".join([*parts, "+units=m", *[f for f in flags if f != "+type=crs"]])


def crs_from_proj4(text: str, length_unit: str | None = None) -> tuple[pyproj.CRS, str]:
    """A CRS in metres from a proj4 definition found in a file.

    Parameters
    ----------
    text : str
        The proj4 text, e.g. ``"+proj=laea +lat_0=55 +lon_0=10 +ellps=WGS84"``.
    length_unit : {"m", "km"}, optional
        Unit of the text's lengths (``+a``, ``+x_0``, ...) when it has no
        ``+units=`` (KNMI's definitions are in km).

    Returns
    -------
    (pyproj.CRS, str)
        The CRS and the proj4 text rewritten in metres.

    Raises
    ------
    RadarFormatError
        When PROJ cannot make a CRS of the text.
    """
    metres = _proj4_in_metres(text, length_unit)
    return to_crs(metres), metres


@functools.lru_cache(maxsize=64)
def to_crs(definition: str) -> pyproj.CRS:
    """``pyproj.CRS(definition)`` (cached), with a :class:`RadarFormatError` naming it."""
    import pyproj

    try:
        return pyproj.CRS(definition)
    except pyproj.exceptions.CRSError as err:
        raise RadarFormatError(f"PROJ cannot read the projection {definition!r}: {err}") from err


def crs_from_cf(attrs: dict[str, Any]) -> pyproj.CRS:
    """``pyproj.CRS.from_cf(attrs)`` of a file's grid-mapping attributes (cached).

    PROJ searches its database for a datum without a name (0.4 s), so files
    that share one grid mapping share one CRS.
    """
    key = tuple(sorted((k, repr(np.asarray(v).tolist())) for k, v in attrs.items()))
    return _crs_from_cf(key)


@functools.lru_cache(maxsize=64)
def _crs_from_cf(key: tuple[tuple[str, str], ...]) -> pyproj.CRS:
    import ast

    import pyproj

    attrs = {k: ast.literal_eval(v) for k, v in key}
    try:
        return pyproj.CRS.from_cf(attrs)
    except pyproj.exceptions.CRSError as err:
        raise RadarFormatError(f"PROJ cannot read the grid mapping {attrs}: {err}") from err


def geographic_crs(crs: pyproj.CRS) -> pyproj.CRS:
    """The longitude/latitude CRS (same datum) that ``crs`` projects from."""
    return crs.geodetic_crs if crs.is_projected else crs


def project(crs: pyproj.CRS, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Longitude/latitude (degrees, on the CRS's own datum) -> projected x, y (m)."""
    import pyproj

    transformer = pyproj.Transformer.from_crs(geographic_crs(crs), crs, always_xy=True)
    x, y = transformer.transform(np.asarray(lon, float), np.asarray(lat, float))
    return np.asarray(x), np.asarray(y)


def cf_attributes(crs: pyproj.CRS, proj4: str | None = None, **extra: Any) -> dict[str, Any]:
    """CF attributes of a ``crs`` grid-mapping variable (``grid_mapping_name``, ``crs_wkt``, ...).

    Parameters
    ----------
    crs : pyproj.CRS
    proj4 : str, optional
        The proj4 definition to record in ``proj4_params`` (default: PROJ's
        rendering of ``crs``).
    **extra
        More attributes (a ``comment``, ...).

    Raises
    ------
    RadarFormatError
        For a CRS that has no CF grid mapping.
    """
    return {**copy.deepcopy(_cf_attributes(crs, proj4)), **extra}


@functools.lru_cache(maxsize=64)
def _cf_attributes(crs: pyproj.CRS, proj4: str | None) -> dict[str, Any]:
    with warnings.catch_warnings():
        # "angle from rectified to skew grid lost" (Swiss oblique Mercator: it equals the
        # azimuth) and "you will likely lose information" of to_proj4: the WKT keeps all.
        warnings.simplefilter("ignore", UserWarning)
        attrs = dict(crs.to_cf())
        if proj4 is None:
            proj4 = crs.to_proj4().replace(" +type=crs", "")
    if "grid_mapping_name" not in attrs:
        raise RadarFormatError(f"the projection {crs.name!r} has no CF grid mapping")
    if attrs.get("semi_major_axis") is not None and attrs.get("semi_major_axis") == attrs.get(
        "semi_minor_axis"
    ):  # a sphere: CF's earth_radius
        attrs["earth_radius"] = attrs.pop("semi_major_axis")
        attrs.pop("semi_minor_axis")
        attrs.pop("inverse_flattening", None)
    for key, value in list(attrs.items()):
        if isinstance(value, tuple):
            attrs[key] = list(value)
    attrs["proj4_params"] = proj4
    return attrs

"""Small map projection toolkit: proj4 strings -> CF grid mappings, and two forward projections.

xnowcast does not depend on pyproj.  The readers only need

* to translate the proj4 text found in a file's metadata into the CF
  grid-mapping attributes of a ``crs`` variable (:func:`proj4_to_cf`), and
* the forward polar stereographic projection, because the FMI PGM files give
  their grid corners as longitude/latitude only (:func:`polar_stereographic`).

The Lambert conformal conic forward projection (:func:`lambert_conformal_conic`)
is used to check ODIM grids whose metadata hold both projected and geographic
corners.  Formulas: J. P. Snyder (1987), *Map Projections: A Working Manual*,
USGS Professional Paper 1395, equations 15-9, 15-11, 21-33 and 21-34.
"""

from __future__ import annotations

import math

import numpy as np

from xnowcast.errors import RadarFormatError

__all__ = [
    "ELLIPSOIDS",
    "lambert_conformal_conic",
    "parse_proj4",
    "polar_stereographic",
    "proj4_to_cf",
]

#: Semi-major axis (m) and inverse flattening of the ellipsoids that radar files name.
ELLIPSOIDS: dict[str, tuple[float, float]] = {
    "WGS84": (6378137.0, 298.257223563),
    "GRS80": (6378137.0, 298.257222101),
    "bessel": (6377397.155, 299.1528128),
    "intl": (6378388.0, 297.0),
    "clrk66": (6378206.4, 294.9786982),
}

_UNIT_TO_METRE = {"m": 1.0, "km": 1000.0}


def parse_proj4(text: str) -> dict[str, str | None]:
    """Split a proj4 string into ``{key: value}`` (``None`` for flags such as ``+no_defs``).

    Parameters
    ----------
    text : str
        A proj4 definition such as ``"+proj=lcc +lat_1=49.8 +ellps=GRS80"``.

    Returns
    -------
    dict
        Keys without the leading ``+``.
    """
    params: dict[str, str | None] = {}
    for token in text.split():
        token = token.lstrip("+")
        if not token:
            continue
        key, sep, value = token.partition("=")
        params[key] = value if sep else None
    if "proj" not in params:
        raise RadarFormatError(f"projection definition without +proj=: {text!r}")
    return params


def _float(params: dict[str, str | None], key: str, default: float | None = None) -> float:
    value = params.get(key)
    if value is None:
        if default is None:
            raise RadarFormatError(f"projection definition lacks +{key}=")
        return default
    # FMI-style suffixes ("25E", "60N") are tolerated.
    value = value.rstrip("EN")
    try:
        return float(value)
    except ValueError as err:
        raise RadarFormatError(f"cannot read +{key}={params.get(key)!r} as a number") from err


def _ellipsoid_attrs(params: dict[str, str | None], scale: float) -> dict[str, float]:
    """CF figure-of-the-earth attributes; ``scale`` turns the file's length unit into metres."""
    if "R" in params:
        return {"earth_radius": _float(params, "R") * scale}
    if "a" in params:
        a = _float(params, "a") * scale
        if "b" in params:
            return {"semi_major_axis": a, "semi_minor_axis": _float(params, "b") * scale}
        if "rf" in params:
            return {"semi_major_axis": a, "inverse_flattening": _float(params, "rf")}
        return {"earth_radius": a}
    name = params.get("ellps") or params.get("datum") or "WGS84"
    if name not in ELLIPSOIDS:
        raise RadarFormatError(f"unknown ellipsoid {name!r}; known: {sorted(ELLIPSOIDS)}")
    a, rf = ELLIPSOIDS[name]
    return {"semi_major_axis": a, "inverse_flattening": rf}


def proj4_to_cf(text: str, length_unit: str | None = None) -> dict[str, object]:
    """CF grid-mapping attributes for a proj4 definition.

    Parameters
    ----------
    text : str
        The proj4 text from the file's metadata.
    length_unit : {"m", "km"}, optional
        Unit of the file's lengths (``+a``, ``+x_0``, ...) when the text does
        not say (``+units=``).  The attributes returned are always in metres.

    Returns
    -------
    dict
        ``grid_mapping_name``, its parameters, the figure of the earth and
        ``proj4_params`` (the definition rewritten in metres).

    Raises
    ------
    RadarFormatError
        For projections this module does not know.
    """
    params = parse_proj4(text)
    unit = params.get("units") or length_unit or "m"
    if unit not in _UNIT_TO_METRE:
        raise RadarFormatError(f"unknown length unit {unit!r} in projection {text!r}")
    scale = _UNIT_TO_METRE[unit]
    proj = params["proj"]
    attrs: dict[str, object] = {}
    false_en = {
        "false_easting": _float(params, "x_0", 0.0) * scale,
        "false_northing": _float(params, "y_0", 0.0) * scale,
    }
    if proj == "lcc":
        lat_1 = _float(params, "lat_1")
        lat_2 = _float(params, "lat_2", lat_1)
        attrs = {
            "grid_mapping_name": "lambert_conformal_conic",
            "standard_parallel": [lat_1, lat_2] if lat_2 != lat_1 else lat_1,
            "latitude_of_projection_origin": _float(params, "lat_0", lat_1),
            "longitude_of_central_meridian": _float(params, "lon_0", 0.0),
            **false_en,
        }
    elif proj == "stere" and abs(_float(params, "lat_0", 0.0)) == 90.0:
        attrs = {
            "grid_mapping_name": "polar_stereographic",
            "straight_vertical_longitude_from_pole": _float(params, "lon_0", 0.0),
            "latitude_of_projection_origin": _float(params, "lat_0"),
            **false_en,
        }
        if "lat_ts" in params:
            attrs["standard_parallel"] = _float(params, "lat_ts")
        else:
            attrs["scale_factor_at_projection_origin"] = _float(params, "k_0", 1.0)
    elif proj == "stere":
        attrs = {
            "grid_mapping_name": "stereographic",
            "longitude_of_projection_origin": _float(params, "lon_0", 0.0),
            "latitude_of_projection_origin": _float(params, "lat_0"),
            "scale_factor_at_projection_origin": _float(params, "k_0", 1.0),
            **false_en,
        }
    elif proj == "somerc":
        # Swiss oblique Mercator: an oblique Mercator whose central line runs east-west.
        attrs = {
            "grid_mapping_name": "oblique_mercator",
            "azimuth_of_central_line": 90.0,
            "latitude_of_projection_origin": _float(params, "lat_0"),
            "longitude_of_projection_origin": _float(params, "lon_0"),
            "scale_factor_at_projection_origin": _float(params, "k_0", 1.0),
            **false_en,
        }
    elif proj == "laea":
        attrs = {
            "grid_mapping_name": "lambert_azimuthal_equal_area",
            "longitude_of_projection_origin": _float(params, "lon_0", 0.0),
            "latitude_of_projection_origin": _float(params, "lat_0", 0.0),
            **false_en,
        }
    elif proj == "aeqd":
        attrs = {
            "grid_mapping_name": "azimuthal_equidistant",
            "longitude_of_projection_origin": _float(params, "lon_0", 0.0),
            "latitude_of_projection_origin": _float(params, "lat_0", 0.0),
            **false_en,
        }
    else:
        raise RadarFormatError(
            f"projection +proj={proj} is not supported (lcc, stere, somerc, laea, aeqd are)"
        )
    attrs.update(_ellipsoid_attrs(params, scale))
    if params.get("towgs84"):
        attrs["towgs84"] = [float(v) for v in str(params["towgs84"]).split(",")]
    attrs["proj4_params"] = _proj4_in_metres(params, scale)
    return attrs


def _proj4_in_metres(params: dict[str, str | None], scale: float) -> str:
    lengths = {"a", "b", "R", "x_0", "y_0"}
    parts, flags = [], []
    for key, value in params.items():
        if key == "units":
            continue
        if value is None:
            flags.append(f"+{key}")
        elif key in lengths and scale != 1.0:
            parts.append(f"+{key}={_float(params, key) * scale:.10g}")
        else:
            parts.append(f"+{key}={value}")
    return " ".join([*parts, "+units=m", *flags])


def _eccentricity(a: float, rf: float | None) -> float:
    if rf is None or math.isinf(rf):
        return 0.0
    f = 1.0 / rf
    return math.sqrt(2 * f - f * f)


def _t(phi: np.ndarray, e: float) -> np.ndarray:
    """Snyder's t (eq. 15-9): isometric-latitude helper of conformal projections."""
    sin_phi = np.sin(phi)
    return np.tan(np.pi / 4 - phi / 2) / ((1 - e * sin_phi) / (1 + e * sin_phi)) ** (e / 2)


def _m(phi: float, e: float) -> float:
    """Snyder's m (eq. 14-15)."""
    return math.cos(phi) / math.sqrt(1 - (e * math.sin(phi)) ** 2)


def polar_stereographic(
    lon: np.ndarray | float,
    lat: np.ndarray | float,
    *,
    lon_0: float,
    lat_ts: float,
    a: float,
    rf: float | None = None,
    false_easting: float = 0.0,
    false_northing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """North polar stereographic projection, true scale at ``lat_ts`` (Snyder 21-33, 21-34).

    Parameters
    ----------
    lon, lat : array_like
        Degrees.
    lon_0 : float
        Straight vertical longitude from the pole (degrees).
    lat_ts : float
        Latitude of true scale (degrees).
    a : float
        Semi-major axis or sphere radius (m).
    rf : float, optional
        Inverse flattening; ``None`` for a sphere of radius ``a``.
    false_easting, false_northing : float
        Metres.

    Returns
    -------
    x, y : numpy.ndarray
        Projected coordinates in metres.
    """
    e = _eccentricity(a, rf)
    phi = np.radians(np.asarray(lat, dtype=float))
    lam = np.radians(np.asarray(lon, dtype=float) - lon_0)
    phi_c = math.radians(lat_ts)
    if abs(lat_ts - 90.0) < 1e-12:
        rho = 2 * a * _t(phi, e) / math.sqrt((1 + e) ** (1 + e) * (1 - e) ** (1 - e))
    else:
        rho = a * _m(phi_c, e) * _t(phi, e) / _t(np.asarray(phi_c), e)
    return false_easting + rho * np.sin(lam), false_northing - rho * np.cos(lam)


def lambert_conformal_conic(
    lon: np.ndarray | float,
    lat: np.ndarray | float,
    *,
    lat_1: float,
    lat_2: float,
    lat_0: float,
    lon_0: float,
    a: float,
    rf: float | None = None,
    false_easting: float = 0.0,
    false_northing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Lambert conformal conic with two standard parallels (Snyder 15-1 to 15-11).

    Parameters
    ----------
    lon, lat : array_like
        Degrees.
    lat_1, lat_2 : float
        Standard parallels (degrees).
    lat_0, lon_0 : float
        Latitude and longitude of the origin (degrees).
    a : float
        Semi-major axis (m).
    rf : float, optional
        Inverse flattening; ``None`` for a sphere.
    false_easting, false_northing : float
        Metres.

    Returns
    -------
    x, y : numpy.ndarray
        Projected coordinates in metres.
    """
    e = _eccentricity(a, rf)
    p1, p2, p0 = (math.radians(v) for v in (lat_1, lat_2, lat_0))
    m1, m2 = _m(p1, e), _m(p2, e)
    t1, t2, t0 = (float(_t(np.asarray(p), e)) for p in (p1, p2, p0))
    n = math.sin(p1) if abs(lat_1 - lat_2) < 1e-12 else math.log(m1 / m2) / math.log(t1 / t2)
    big_f = m1 / (n * t1**n)
    rho0 = a * big_f * t0**n
    phi = np.radians(np.asarray(lat, dtype=float))
    rho = a * big_f * _t(phi, e) ** n
    theta = n * np.radians(np.asarray(lon, dtype=float) - lon_0)
    return false_easting + rho * np.sin(theta), false_northing + rho0 - rho * np.cos(theta)

"""MeteoSwiss 8-bit GIF composites (AQC "Acquire" / CPC precipitation products).

A palette GIF of the Swiss radar domain (CCS4: 710 x 640 cells of 1 km in the
Swiss CH1903/LV03 projection, outer edges x 255-965 km, y -160-480 km).  The
palette index of a pixel is its digital number DN; the palette only colours it.
The GIF comment carries the product metadata::

    PRDT=AQC151351545 SCALE=mmh2LASSEN8bitmm_mn COLOR=reddish ACCUm=000005 DeltaT=000005

``PRDT`` = product, 2-digit year, day of year, HHMM (UTC, end of the
accumulation); ``ACCUm`` = accumulation length in minutes; ``SCALE`` names the
8-bit coding.  The ``LASSEN8bit`` scale is logarithmic: DN is half-dB steps of
a reflectivity-like quantity, ``dBZ = (DN - 71.5) / 2``, turned into an amount
with MeteoSwiss' Z-R relation ``Z = 316 R^1.5``, i.e. ::

    amount(DN) = (10 ** ((DN - 71.5) / 20) / 316) ** (1 / 1.5)   [mm per ACCUm minutes]

for DN 2-250; DN 0 and 1 are the no-rain classes (0); DN 255 is outside the
radar range or no data and DN 251-254 are flags, both NaN.  The amounts are
5-minute accumulations and are returned as a mean rain rate in mm h-1
(x 60 / ACCUm = x 12).  When the comment is missing, the product, time and
accumulation come from the file name (``AQCyydddHHMM?_000MM.801.gif``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid, rate_from_accumulation_attrs
from xnowcast.io._crs import cf_attributes, crs_from_proj4

__all__ = ["CCS4_PROJ4", "amount_lut", "read_data", "read_header", "sniff"]

FORMAT = "mch_gif"

#: Swiss CH1903 / LV03 oblique Mercator (EPSG:21781) as a proj4 definition.
CCS4_PROJ4 = (
    "+proj=somerc +lat_0=46.9524055555556 +lon_0=7.43958333333333 +k_0=1 +x_0=600000 "
    "+y_0=200000 +ellps=bessel +towgs84=674.374,15.056,405.346,0,0,0,0 +units=m +no_defs"
)
#: The CCS4 radar domain: outer edges (m) and cell size.
CCS4_GRID = {"left": 255000.0, "top": 480000.0, "nx": 710, "ny": 640, "size": 1000.0}
#: 8-bit scales whose coding this reader knows.
SCALES = ("mmh2LASSEN8bitmm_mn",)
#: Products with that scale: AQC (Acquire) and CPC (CombiPrecip).
PRODUCTS = ("AQC", "CPC")

_NAME = re.compile(r"^(?P<product>[A-Z]{3})(?P<stamp>\d{9})\w?_(?P<accum>\d{5})")
_STAMP = re.compile(r"^(?P<product>[A-Z]{3})(?P<stamp>\d{9})")


def amount_lut() -> np.ndarray:
    """Amount (mm per accumulation period) of each DN 0-255 of the LASSEN 8-bit scale."""
    dn = np.arange(256, dtype=np.float64)
    lut = (10.0 ** ((dn - 71.5) / 20.0) / 316.0) ** (1.0 / 1.5)
    lut[:2] = 0.0
    lut[251:] = np.nan
    return lut


def sniff(path: Path, head: bytes) -> bool:
    """True for a GIF file."""
    return head[:6] in (b"GIF87a", b"GIF89a")


def _time(stamp: str, path: Path) -> np.datetime64:
    """``yydddHHMM`` -> datetime64 (UTC)."""
    try:
        year, doy, hour, minute = (
            2000 + int(stamp[:2]),
            int(stamp[2:5]),
            int(stamp[5:7]),
            int(stamp[7:9]),
        )
    except ValueError as err:
        raise RadarFormatError(f"{path}: bad time stamp {stamp!r}") from err
    if not (1 <= doy <= 366 and hour < 24 and minute < 60):
        raise RadarFormatError(f"{path}: bad time stamp {stamp!r}")
    day = np.datetime64(f"{year:04d}-01-01") + np.timedelta64(doy - 1, "D")
    return (
        day.astype("datetime64[ns]")
        + np.timedelta64(hour, "h").astype("timedelta64[ns]")
        + np.timedelta64(minute, "m").astype("timedelta64[ns]")
    )


def read_header(path: Path) -> FrameInfo:
    """Time, accumulation and grid of a MeteoSwiss GIF, from its comment (or its name)."""
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            comment = img.info.get("comment", b"")
    except OSError as err:
        raise RadarFormatError(f"{path}: cannot open as a GIF: {err}") from err
    if isinstance(comment, bytes):
        comment = comment.decode("ascii", errors="replace")
    fields = dict(re.findall(r"(\w+)=(\S+)", comment))
    if "PRDT" in fields:
        match = _STAMP.match(fields["PRDT"])
        if match is None:
            raise RadarFormatError(f"{path}: bad PRDT {fields['PRDT']!r} in the GIF comment")
        product, stamp = match["product"], match["stamp"]
        minutes = float(fields.get("ACCUm", "nan"))
    else:
        match = _NAME.match(path.name)
        if match is None:
            raise RadarFormatError(
                f"{path}: a GIF without a MeteoSwiss comment nor a MeteoSwiss file name"
            )
        product, stamp, minutes = match["product"], match["stamp"], float(match["accum"])
    scale = fields.get("SCALE", SCALES[0])
    if product not in PRODUCTS or scale not in SCALES:
        raise RadarFormatError(
            f"{path}: product {product} with scale {scale} is not supported "
            f"(products {PRODUCTS} with scale {SCALES})"
        )
    if not minutes > 0:
        raise RadarFormatError(f"{path}: no accumulation length (ACCUm) in the GIF comment")
    nx, ny = size
    if mode != "P" or (nx, ny) != (CCS4_GRID["nx"], CCS4_GRID["ny"]):
        raise RadarFormatError(
            f"{path}: expected a {CCS4_GRID['nx']} x {CCS4_GRID['ny']} palette GIF "
            f"(the CCS4 domain), got mode {mode} size {nx} x {ny}"
        )
    crs = cf_attributes(
        *crs_from_proj4(CCS4_PROJ4),
        comment="Swiss CH1903 / LV03 (EPSG:21781); CCS4 radar domain of MeteoSwiss",
    )
    grid = Grid.from_upper_left_corner(
        nx=nx,
        ny=ny,
        left=CCS4_GRID["left"],
        top=CCS4_GRID["top"],
        dx=CCS4_GRID["size"],
        dy=CCS4_GRID["size"],
        crs=crs,
    )
    var_attrs = {
        **rate_from_accumulation_attrs(minutes, "mm"),
        "mch_scale": scale,
    }
    var_attrs["comment"] = (
        "DN -> mm per accumulation: (10**((DN - 71.5)/20) / 316)**(1/1.5) for DN 2-250, "
        "0 for DN 0-1 (no rain), NaN for DN 251-255 (no data, flags); then " + var_attrs["comment"]
    )
    described = (
        " ".join(
            f"{key}={fields[key]}" for key in ("VERSION", "PRDT", "SCALE", "ACCUm") if key in fields
        )
        or f"file name {path.name}"
    )
    return FrameInfo(
        path=str(path),
        format=FORMAT,
        time=_time(stamp, path),
        grid=grid,
        variable="precipitation",
        var_attrs=var_attrs,
        decode={"minutes": minutes},
        global_attrs={
            "institution": "MeteoSwiss (Federal Office of Meteorology and Climatology)",
            "source": f"MeteoSwiss radar composite, product {product} ({described})",
            "title": f"MeteoSwiss {product} precipitation composite",
        },
    )


def read_data(info: FrameInfo) -> np.ndarray:
    """Mean rain rate in mm h-1 over the accumulation (float32, NaN where no data)."""
    with Image.open(info.path) as img:
        if img.mode != "P":
            raise RadarFormatError(f"{info.path}: not a palette GIF")
        dn = np.asarray(img)
    rate = amount_lut() * (60.0 / info.decode["minutes"])
    return rate[dn].astype(np.float32)

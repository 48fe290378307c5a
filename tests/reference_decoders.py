"""Independent decoders of the new radar formats, written from the format documents.

They use other libraries than xnowcast's readers (Pillow for GRIB2's PNG
packing and for TIFF, h5py for netCDF4), so a test that compares both
decodes checks the readers against the documented coding, not against
themselves.  Used by tests/test_io_formats.py and benchmarks/reader_agreement.py.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def _grib_signed(raw: bytes) -> int:
    """GRIB2 signed integers are sign-and-magnitude (WMO Manual 306, 92.1.5)."""
    value = int.from_bytes(raw, "big")
    bit = 1 << (8 * len(raw) - 1)
    return -(value & (bit - 1)) if value & bit else value


def grib2_png_field(path: Path) -> tuple[np.ndarray, dict[str, float]]:
    """Values of a one-message GRIB2 file packed with template 5.41 (PNG).

    Sections are walked by their 4-byte lengths; section 5 gives the reference
    value R (IEEE float32), the binary and decimal scale factors E and D;
    section 7 holds a PNG of the packed integers X; Y = (R + X 2^E) / 10^D
    (WMO FM 92 GRIB edition 2, regulation 92.9.4).
    """
    data = Path(path).read_bytes()
    if data[:4] != b"GRIB" or data[7] != 2:
        raise ValueError(f"{path} is not GRIB edition 2")
    pos, sections = 16, {}
    while data[pos : pos + 4] != b"7777":
        length, number = struct.unpack(">IB", data[pos : pos + 5])
        sections[number] = data[pos : pos + length]
        pos += length
    s5 = sections[5]
    template = struct.unpack(">H", s5[9:11])[0]
    if template != 41:
        raise ValueError(f"{path}: data template 5.{template}, not 5.41 (PNG)")
    reference = struct.unpack(">f", s5[11:15])[0]
    binary, decimal = _grib_signed(s5[15:17]), _grib_signed(s5[17:19])
    if sections[6][5] != 255:
        raise ValueError(f"{path}: a bitmap is present; this decoder handles none")
    packed = np.asarray(Image.open(io.BytesIO(sections[7][5:]))).astype(np.float64)
    values = (reference + packed * 2.0**binary) / 10.0**decimal
    s3 = sections[3]
    ni, nj = struct.unpack(">II", s3[30:38])
    lat1, lon1 = _grib_signed(s3[46:50]) * 1e-6, _grib_signed(s3[50:54]) * 1e-6
    lat2, lon2 = _grib_signed(s3[55:59]) * 1e-6, _grib_signed(s3[59:63]) * 1e-6
    grid = {"ni": ni, "nj": nj, "lat1": lat1, "lon1": lon1, "lat2": lat2, "lon2": lon2}
    return values.reshape(nj, ni), grid


def geotiff_pil(path: Path) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """(8-bit values, ModelTiepoint, ModelPixelScale) of a GeoTIFF, read with Pillow."""
    with Image.open(path) as image:
        values = np.asarray(image)
        tie = tuple(image.tag_v2[33922])
        scale = tuple(image.tag_v2[33550])
    return values, tie, scale


def odim_raw(path: Path, data_path: str) -> tuple[np.ndarray, dict]:
    """Raw array and merged ``what`` attributes (root, dataset, data) of an ODIM field."""
    with h5py.File(path, "r") as f:
        raw = f[f"{data_path}/data"][...]
        what: dict = {}
        parts = data_path.strip("/").split("/")
        for depth in range(len(parts) + 1):
            group = "/".join([*parts[:depth], "what"])
            if group in f:
                what.update(f[group].attrs)
    return raw, what


def netcdf_h5py(path: Path, name: str) -> tuple[np.ndarray, dict]:
    """A netCDF4 variable decoded by hand with h5py: raw * scale_factor + add_offset, fill -> NaN."""
    with h5py.File(path, "r") as f:
        var = f[name]
        raw = var[...]
        attrs = dict(var.attrs)

    def number(key: str, default: float) -> float:
        return float(np.ravel(attrs.get(key, default))[0])

    values = raw * number("scale_factor", 1.0) + number("add_offset", 0.0)
    if "_FillValue" in attrs:
        values = np.where(raw == number("_FillValue", 0), np.nan, values)
    return values, attrs

"""Readers that turn radar composite files into CF-compliant xarray Datasets.

>>> from xnowcast.io import open_radar
>>> ds = open_radar("radar/rmi/radqpe/20210704/*.hdf")  # doctest: +SKIP

Formats: ODIM HDF5 (:mod:`~xnowcast.io.odim`: OPERA, RMI, ...), KNMI HDF5
(:mod:`~xnowcast.io.knmi`), BOM Rainfields 3 netCDF (:mod:`~xnowcast.io.bom`),
FMI PGM (:mod:`~xnowcast.io.fmi`) and GeoTIFF (:mod:`~xnowcast.io.geotiff`),
MeteoSwiss GIF (:mod:`~xnowcast.io.mch`) and NOAA MRMS GRIB2
(:mod:`~xnowcast.io.mrms`).  More formats plug in through the reader protocol
(:mod:`~xnowcast.io.protocol`).
"""

from __future__ import annotations

from xnowcast.errors import RadarFormatError
from xnowcast.io._cf import FrameInfo, Grid
from xnowcast.io._open import FORMATS, detect_format, open_radar
from xnowcast.io.coords import add_lat_lon
from xnowcast.io.protocol import RadarReader, register_reader

__all__ = [
    "FORMATS",
    "FrameInfo",
    "Grid",
    "RadarFormatError",
    "RadarReader",
    "add_lat_lon",
    "detect_format",
    "open_radar",
    "register_reader",
]

"""Readers that turn radar composite files into CF-compliant xarray Datasets.

>>> from xnowcast.io import open_radar
>>> ds = open_radar("radar/rmi/radqpe/20210704/*.hdf")  # doctest: +SKIP

Formats: ODIM HDF5 (:mod:`~xnowcast.io.odim`, e.g. RMI), KNMI HDF5
(:mod:`~xnowcast.io.knmi`), FMI PGM (:mod:`~xnowcast.io.fmi`) and MeteoSwiss
GIF (:mod:`~xnowcast.io.mch`).
"""

from __future__ import annotations

from xnowcast.errors import RadarFormatError
from xnowcast.io._open import FORMATS, detect_format, open_radar

__all__ = ["FORMATS", "RadarFormatError", "detect_format", "open_radar"]

"""Helpers shared by the HDF5-based readers (ODIM, KNMI, netCDF4)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["HDF5_SIGNATURE", "text"]

#: The first 8 bytes of every HDF5 (and netCDF4) file.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def text(value: Any) -> str:
    """An HDF5 attribute (bytes, numpy bytes, a one-element array) as a stripped str."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("ascii", errors="replace").strip("\x00 ")
    return str(value)

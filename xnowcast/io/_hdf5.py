"""Helpers shared by the HDF5-based readers (ODIM, KNMI, netCDF4)."""

from __future__ import annotations

from typing import Any

import numpy as np
from xarray.backends.locks import HDF5_LOCK

__all__ = ["HDF5_SIGNATURE", "LOCK", "text"]

#: The HDF5 library is not thread-safe (netCDF4 and h5py in two dask threads crash
#: it): every HDF5-based reader holds xarray's HDF5 lock, which xarray's own
#: netCDF readers hold too, so lazy reads of both never overlap.
LOCK = HDF5_LOCK

#: The first 8 bytes of every HDF5 (and netCDF4) file.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def text(value: Any) -> str:
    """An HDF5 attribute (bytes, numpy bytes, a one-element array) as a stripped str."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes | np.bytes_):
        return value.decode("ascii", errors="replace").strip("\x00 ")
    return str(value)

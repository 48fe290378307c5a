"""Decoded values of the new readers against independent decoders, first/middle/last file.

    XNOWCAST_TEST_DATA=../shared/data python benchmarks/reader_agreement.py

Prints one table row per file: max |xnowcast - reference| over pixels where both
have data, NaN pixels in each, and how many pixels are NaN in one decode but
not in the other (must be 0).  References: pysteps' importers (ODIM, BOM) and,
where pysteps needs pygrib or GDAL (MRMS, GeoTIFF), the formats' documented
coding read with Pillow (tests/reference_decoders.py).  Known, documented
differences are mapped before comparing: pysteps' ODIM DBZH ``undetect`` is
-30 dBZ (xnowcast: -32, the scale floor); BOM amounts are mm per 10 min
(xnowcast: mm h-1, x 6).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reference_decoders import geotiff_pil, grib2_png_field, odim_raw  # noqa: E402

from xnowcast.io import open_radar  # noqa: E402


def _pysteps():
    import pysteps.io.importers as importers

    return importers


def bom(path: Path) -> np.ndarray:
    amount, _, _ = _pysteps().import_bom_rf3(str(path))
    return np.ma.filled(amount.astype(float), np.nan) * 6.0


def opera_rate(path: Path) -> np.ndarray:
    return _pysteps().import_odim_hdf5(str(path), qty="RATE")[0]


def opera_dbzh(path: Path) -> np.ndarray:
    values = _pysteps().import_odim_hdf5(str(path), qty="DBZH")[0]
    raw, what = odim_raw(path, "/dataset1/data1")
    return np.where(raw == what["undetect"], -32.0, values)


def mrms(path: Path) -> np.ndarray:
    values, _ = grib2_png_field(path)
    return np.where(values < 0, np.nan, values)


def geotiff(path: Path) -> np.ndarray:
    dn, _, _ = geotiff_pil(path)
    return np.where(dn == 255, np.nan, (dn - 64.0) / 2.0)


CASES = [
    ("BOM Rainfields 3", "radar/bom/prcp-c10/66/2020/10/31", "pysteps import_bom_rf3 x 6", bom),
    ("OPERA 2 km RATE", "radar/OPERA/20180824", "pysteps import_odim_hdf5", opera_rate),
    ("OPERA CIRRUS DBZH", "radar/OPERA/20241126/CIRRUS", "pysteps import_odim_hdf5", opera_dbzh),
    ("MRMS GRIB2", "mrms/2019/06/10", "GRIB2 5.41 by hand + Pillow PNG", mrms),
    ("FMI GeoTIFF", "radar/fmi/geotiff/20160928", "Pillow + GDAL-metadata coding", geotiff),
]


def main() -> None:
    root = Path(os.environ.get("XNOWCAST_TEST_DATA", ROOT.parent / "shared" / "data"))
    print("| format | file | reference | max abs diff | NaN (ours) | NaN (ref) | NaN mismatches |")
    print("|---|---|---|---|---|---|---|")
    for label, folder, reference, decode in CASES:
        files = sorted(p for p in (root / folder).iterdir() if p.is_file())
        for path in [files[0], files[len(files) // 2], files[-1]]:
            ours = open_radar(path)
            values = ours[next(iter(ours.data_vars))].values[0].astype(np.float64)
            ref = decode(path)
            both = ~np.isnan(values) & ~np.isnan(ref)
            diff = float(np.abs(values[both] - ref[both]).max())
            mismatch = int((np.isnan(values) != np.isnan(ref)).sum())
            print(
                f"| {label} | {path.name} | {reference} | {diff:.2e} | "
                f"{int(np.isnan(values).sum())} | {int(np.isnan(ref).sum())} | {mismatch} |",
                flush=True,
            )
            del ours, values, ref


if __name__ == "__main__":
    main()

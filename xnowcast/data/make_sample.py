"""Build ``sample.nc``: a 256 x 256 x 24-frame crop of the RMI event ``rmi-20210704``.

Usage::

    python xnowcast/data/make_sample.py RADAR_ROOT [OUTPUT]

``RADAR_ROOT`` is the folder holding ``radar/rmi/radqpe/20210704/`` (the
pysteps example data).  The crop was chosen by scanning every 24-frame span and
every 256 x 256 window (stride 4) of the 700 x 700 grid for the most rain,
keeping only windows without missing pixels in which at least 90 % of the rain
of the last frame lies more than 32 km from the window's edge, so that 4 input
frames + 18 lead times make a meaningful forecast: frames 0-23
(15:50-17:45 UTC), rows 344-599, columns 148-403.

Values are stored as int16 with ``scale_factor`` 0.01 (0.01 mm h-1 steps,
``_FillValue`` -32768 for NaN) and zlib-compressed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

EVENT = "rmi-20210704"
FRAMES = slice(0, 24)
ROWS = slice(344, 600)
COLS = slice(148, 404)


def build(radar_root: Path, output: Path) -> Path:
    """Crop the RMI event found under ``radar_root`` and write the compressed sample."""
    from xnowcast.datasets import EVENTS
    from xnowcast.io import open_radar

    info = EVENTS[EVENT]
    ds = open_radar(radar_root / info.prefix, format=info.format)
    crop = ds.isel(time=FRAMES, y=ROWS, x=COLS)
    precip = crop.precipitation
    if precip.isnull().any():
        raise ValueError("the sample crop has missing pixels; choose another window")
    # Quantise exactly as stored, so the file and the in-memory values agree.
    crop["precipitation"] = np.round(precip * 100.0) / 100.0
    crop.precipitation.attrs = dict(precip.attrs)
    crop.attrs.update(
        {
            "title": "xnowcast sample: RMI radar QPE, 4 July 2021, 256 x 256 km crop",
            "xnowcast_dataset": "sample",
            "source_dataset": EVENT,
            "source_files": ", ".join(
                Path(p).name
                for p in sorted(
                    str(q) for q in (radar_root / info.prefix).iterdir() if q.is_file()
                )[FRAMES]
            ),
            "crop": (
                f"time frames {FRAMES.start}:{FRAMES.stop}, rows {ROWS.start}:{ROWS.stop}, "
                f"columns {COLS.start}:{COLS.stop} of the 700 x 700 RMI grid"
            ),
            "license": info.licence,
            "references": (
                "pysteps example data, https://github.com/pySTEPS/pysteps-data; "
                "data: Royal Meteorological Institute of Belgium (RMI)"
            ),
            "comment": (
                "made by xnowcast/data/make_sample.py; values quantised to 0.01 mm h-1 "
                "(int16, scale_factor 0.01)"
            ),
        }
    )
    crop.attrs["history"] = crop.attrs["history"] + "; cropped by make_sample.py"
    encoding = {
        "precipitation": {
            "dtype": "int16",
            "scale_factor": np.float32(0.01),
            "_FillValue": np.int16(-32768),
            "zlib": True,
            "complevel": 9,
            "shuffle": True,
            "chunksizes": (1, 256, 256),
        },
        "time": {"units": "minutes since 1970-01-01 00:00:00", "dtype": "int64"},
        "x": {"_FillValue": None},
        "y": {"_FillValue": None},
        "crs": {"_FillValue": None},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    crop.to_netcdf(output, encoding=encoding, engine="netcdf4")
    return output


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).with_name("sample.nc")
    written = build(Path(sys.argv[1]), out)
    print(f"wrote {written} ({written.stat().st_size / 1e6:.2f} MB)")

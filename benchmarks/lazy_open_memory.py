"""Peak memory of opening the OPERA CIRRUS event (13 x 3800 x 4400 frames) lazily vs eagerly.

    XNOWCAST_TEST_DATA=../shared/data python benchmarks/lazy_open_memory.py

Each case runs in a fresh Python process; its peak resident set size
(``ru_maxrss``) and wall time are printed.  The baseline is the same process
importing xnowcast and doing nothing else (the nowcast row imports torch: compare
it with the row before it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "import xnowcast only (baseline)": "pass",
    "open 13 frames, chunks='auto' (nothing computed)": (
        "ds = open_radar(CIRRUS, chunks='auto'); assert ds.reflectivity.chunks"
    ),
    "+ compute a 256 x 256 crop of all 13 frames": (
        "ds = open_radar(CIRRUS, chunks='auto');"
        "ds.reflectivity.isel(y=slice(2000, 2256), x=slice(1500, 1756)).values"
    ),
    "import torch and the extrapolation model (baseline of the next row)": (
        "import torch, xnowcast.models.extrapolation"
    ),
    "+ extrapolation nowcast (4 inputs, 6 steps) on that crop": (
        "ds = open_radar(CIRRUS, chunks='auto');"
        "crop = ds.reflectivity.isel(time=slice(0, 4), y=slice(2000, 2256), x=slice(1500, 1756));"
        "fc = crop.nowcast.predict(model='extrapolation', steps=6); assert fc.chunks; fc.values"
    ),
    "+ maximum over the whole event, streamed chunk by chunk": (
        "ds = open_radar(CIRRUS, chunks='auto'); float(ds.reflectivity.max())"
    ),
    "eager open of 1 frame": "open_radar(FILES[:1])",
    "eager open of all 13 frames": "open_radar(FILES)",
}

TEMPLATE = """
import resource, time, json, sys
from pathlib import Path
import xnowcast
from xnowcast.io import open_radar
CIRRUS = Path({root!r}) / "radar/OPERA/20241126/CIRRUS"
FILES = sorted(CIRRUS.iterdir())
start = time.perf_counter()
{code}
print(json.dumps({{"s": time.perf_counter() - start,
                  "mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    root = os.environ.get("XNOWCAST_TEST_DATA", str(ROOT.parent / "shared" / "data"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    print("| case | peak RSS (MB) | above baseline (MB) | wall s |")
    print("|---|---|---|---|")
    baseline = None
    for label, code in CASES.items():
        out = subprocess.run(
            [sys.executable, "-c", TEMPLATE.format(root=root, code=code)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        baseline = result["mb"] if baseline is None else baseline
        print(
            f"| {label} | {result['mb']:.0f} | {result['mb'] - baseline:+.0f} | {result['s']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

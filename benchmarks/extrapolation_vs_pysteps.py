"""Extrapolation nowcast of xnowcast against pysteps, on real radar events.

For several init times of each event, both systems get the same last input
frames (rain rate, mm/h, NaN outside radar range) and forecast 18 steps (90 min):

* ``xnowcast``: :func:`xnowcast.models.extrapolation.build_extrapolation` (dense
  pyramidal Lucas-Kanade in torch + semi-Lagrangian advection with grid_sample);
* ``pysteps-<motion>``: pysteps' motion field (Lucas-Kanade when OpenCV is
  installed, otherwise its other methods, named in the table) on the dB-transformed
  frames as in the pysteps examples, then ``pysteps.extrapolation.semilagrangian``.

Printed: CSI at 1 mm/h at 30/60/90 min, pooled over the init times, counted on the
pixels where the observation and every forecast are known; and the median
wall-clock seconds for the motion field and for 18 extrapolation steps, with
``--threads`` CPU threads (default 2).

Usage::

    python benchmarks/extrapolation_vs_pysteps.py [DATA] [--events mch-20150515 ...]
        [--inits 4] [--threads 2] [--pysteps lucaskanade darts proesmans]

``DATA`` is the folder holding ``radar/`` (default ``$XNOWCAST_TEST_DATA`` or
``../shared/data`` beside the repository). pysteps is needed only here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("XNOWCAST_TEST_DATA", str(REPO / ".." / "shared" / "data"))
    parser.add_argument("data", nargs="?", default=default_data, help="folder holding radar/")
    parser.add_argument(
        "--events",
        nargs="+",
        default=["mch-20150515", "rmi-20210704"],
        help="events to run (known: %(default)s and mch-20160711, fmi-20160928, knmi-20100826)",
    )
    parser.add_argument("--inits", type=int, default=4, help="init times per event")
    parser.add_argument("--steps", type=int, default=18, help="lead times (5 min each)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both systems")
    parser.add_argument(
        "--pysteps",
        nargs="+",
        default=["lucaskanade", "darts", "proesmans"],
        help="pysteps motion methods to compare against (skipped when unavailable)",
    )
    parser.add_argument("--config", default="default", help="xnowcast extrapolation config")
    return parser.parse_args(argv)


ARGS = _parse_args(None if __name__ == "__main__" else [])
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
os.environ.setdefault("PYSTEPS_SILENT_IMPORT", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.environ.get("XNOWCAST_SRC", str(REPO)))
from xnowcast.models.advection import semi_lagrangian  # noqa: E402
from xnowcast.models.extrapolation import build_extrapolation  # noqa: E402

#: event name -> (folder under DATA, file glob)
EVENTS = {
    "mch-20150515": ("radar/mch/20150515", "*.gif"),
    "mch-20160711": ("radar/mch/20160711", "*.gif"),
    "rmi-20210704": ("radar/rmi/radqpe/20210704", "*.hdf"),
    "fmi-20160928": ("radar/fmi/pgm/20160928", "*.pgm.gz"),
    "knmi-20100826": ("radar/KNMI/2010/08", "*.h5"),
}
THRESHOLD = 1.0  # mm/h
LEADS = (6, 12, 18)  # 30, 60, 90 min


# --------------------------------------------------------------------------- reading


def load_event(data: Path, name: str) -> np.ndarray:
    """Frames of an event as rain rate in mm/h, NaN where not observed, shape (T, H, W)."""
    folder, pattern = EVENTS[name]
    files = sorted((data / folder).glob(pattern))
    if not files:
        raise SystemExit(f"no {pattern} files under {data / folder}")
    try:
        from xnowcast.io import open_radar
    except ImportError:
        return np.stack([_read_with_pysteps(path, name) for path in files])
    return _read_with_xnowcast(open_radar, files)


def _read_with_xnowcast(open_radar, files: list[Path]) -> np.ndarray:
    from xnowcast.units import convert_dataarray

    data = open_radar(files)
    if hasattr(data, "data_vars"):
        data = data[next(iter(data.data_vars))]
    data = convert_dataarray(data, "mm/h")
    return np.asarray(data.transpose(data.dims[0], ...).values, dtype=np.float64)


def _read_with_pysteps(path: Path, name: str) -> np.ndarray:
    """Fallback reader until ``xnowcast.io.open_radar`` exists."""
    from pysteps import utils
    from pysteps.io import importers

    if name.startswith("mch"):
        precip, _, meta = importers.import_mch_gif(str(path), "AQC", "mm", 5)
    elif name.startswith("fmi"):
        precip, _, meta = importers.import_fmi_pgm(str(path), gzipped=True)
    elif name.startswith("knmi"):
        precip, _, meta = importers.import_knmi_hdf5(str(path))
    else:
        return _read_odim_rate(path)
    precip, _ = utils.to_rainrate(precip, meta)
    return np.asarray(precip, dtype=np.float64)


def _read_odim_rate(path: Path) -> np.ndarray:
    """Minimal ODIM HDF5 reader (pysteps' needs pyproj, absent here)."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f["dataset1/data1/data"][()].astype(np.float64)
        attrs: dict = {}
        for group in ("what", "dataset1/what", "dataset1/data1/what"):  # innermost wins
            attrs.update(f[group].attrs if group in f else {})
    values = raw * float(attrs.get("gain", 1.0)) + float(attrs.get("offset", 0.0))
    if "undetect" in attrs:
        values[raw == float(attrs["undetect"])] = 0.0
    if "nodata" in attrs:
        values[raw == float(attrs["nodata"])] = np.nan
    return values


# --------------------------------------------------------------------------- forecasts


def xnowcast_forecast(model, frames: np.ndarray, steps: int) -> tuple[np.ndarray, float, float]:
    valid_np = np.isfinite(frames)
    x = torch.from_numpy(np.where(valid_np, frames, 0.0).astype(np.float32))[None, :, None]
    valid = torch.from_numpy(valid_np)[None, :, None]
    t0 = time.perf_counter()
    flow = model.motion(x, valid)
    t1 = time.perf_counter()
    out = semi_lagrangian(x[:, -1], flow, steps, valid=valid[:, -1])
    t2 = time.perf_counter()
    return out[0, :, 0].numpy().astype(np.float64), t1 - t0, t2 - t1


def pysteps_forecast(
    method: str, frames: np.ndarray, steps: int
) -> tuple[np.ndarray, float, float]:
    from pysteps import extrapolation, motion
    from pysteps.utils import transformation

    t0 = time.perf_counter()
    db, _ = transformation.dB_transform(
        frames.copy(), {"unit": "mm/h", "transform": None}, threshold=0.1, zerovalue=-15.0
    )
    db[~np.isfinite(db)] = -15.0
    if method == "proesmans":
        velocity = motion.get_method(method)(db[-2:])
    elif method == "darts":
        velocity = motion.get_method(method)(db, N_t=min(4, db.shape[0] - 2), verbose=False)
    else:
        velocity = motion.get_method(method)(db)
    t1 = time.perf_counter()
    out = extrapolation.get_method("semilagrangian")(
        frames[-1], velocity, steps, allow_nonfinite_values=True
    )
    t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


def available_pysteps(methods: list[str]) -> tuple[list[str], list[str]]:
    usable, notes = [], []
    for method in methods:
        if method == "lucaskanade":
            try:
                import cv2  # noqa: F401
            except ImportError:
                notes.append("pysteps lucaskanade skipped: it needs OpenCV (opencv-python)")
                continue
        usable.append(method)
    return usable, notes


# --------------------------------------------------------------------------- scoring


def contingency(forecast: np.ndarray, observed: np.ndarray, known: np.ndarray) -> np.ndarray:
    f = forecast[known] >= THRESHOLD
    o = observed[known] >= THRESHOLD
    return np.array([(f & o).sum(), (~f & o).sum(), (f & ~o).sum()], dtype=np.int64)


def csi(table: np.ndarray) -> float:
    hits, misses, false_alarms = table
    total = hits + misses + false_alarms
    return float(hits / total) if total else float("nan")


def run_event(data: Path, name: str, model, methods: list[str]) -> list[dict]:
    frames = load_event(data, name)
    n_in, steps = model.input_frames, ARGS.steps
    first, last = n_in - 1, frames.shape[0] - 1 - steps
    inits = np.unique(np.linspace(first, last, ARGS.inits).round().astype(int))
    systems = ["xnowcast", *(f"pysteps-{m}" for m in methods)]
    tables = {s: np.zeros((len(LEADS), 3), dtype=np.int64) for s in systems}
    seconds = {s: ([], []) for s in systems}
    xnowcast_forecast(model, frames[:n_in], 2)  # warm-up (first torch calls)
    for init in inits:
        window = frames[init - n_in + 1 : init + 1]
        observed = frames[init + 1 : init + 1 + steps]
        forecasts = {}
        forecasts["xnowcast"], tm, te = xnowcast_forecast(model, window, steps)
        seconds["xnowcast"][0].append(tm)
        seconds["xnowcast"][1].append(te)
        for method in methods:
            fc, tm, te = pysteps_forecast(method, window, steps)
            forecasts[f"pysteps-{method}"] = fc
            seconds[f"pysteps-{method}"][0].append(tm)
            seconds[f"pysteps-{method}"][1].append(te)
        for i, lead in enumerate(LEADS):
            known = np.isfinite(observed[lead - 1])
            for fc in forecasts.values():
                known &= np.isfinite(fc[lead - 1])
            for system, fc in forecasts.items():
                tables[system][i] += contingency(fc[lead - 1], observed[lead - 1], known)
    rows = []
    for system in systems:
        rows.append(
            {
                "event": name,
                "shape": "x".join(map(str, frames.shape[1:])),
                "system": system,
                "csi": [csi(t) for t in tables[system]],
                "motion_s": float(np.median(seconds[system][0])),
                "extrap_s": float(np.median(seconds[system][1])),
                "inits": len(inits),
            }
        )
    return rows


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    data = Path(ARGS.data).resolve()
    model = build_extrapolation(ARGS.config)
    methods, notes = available_pysteps(ARGS.pysteps)
    header = (
        f"{'event':<15} {'grid':<8} {'system':<21} {'CSI30':>6} {'CSI60':>6} {'CSI90':>6}"
        f" {'motion s':>9} {'18 steps s':>10} {'total s':>8}"
    )
    print(
        f"CSI at {THRESHOLD:g} mm/h, pooled over init times; median seconds, "
        f"{ARGS.threads} CPU threads; xnowcast config {ARGS.config!r} "
        f"(input_frames={model.input_frames})"
    )
    for note in notes:
        print(note)
    print(header)
    print("-" * len(header))
    for name in ARGS.events:
        for row in run_event(data, name, model, methods):
            c30, c60, c90 = row["csi"]
            total = row["motion_s"] + row["extrap_s"]
            print(
                f"{row['event']:<15} {row['shape']:<8} {row['system']:<21} {c30:6.3f} {c60:6.3f}"
                f" {c90:6.3f} {row['motion_s']:9.3f} {row['extrap_s']:10.3f} {total:8.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

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
import contextlib
import io
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

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
# Idle OpenMP threads sleep instead of spinning: on a machine shared with other jobs a
# spinning thread waits for a descheduled partner and multiplies run times (>10x seen
# here for torch with 2 threads). Set OMP_WAIT_POLICY=ACTIVE to measure without it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.environ.get("XNOWCAST_SRC", str(REPO)))
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
    from xnowcast.io import open_radar
    from xnowcast.units import convert_dataarray

    dataset = open_radar(files)
    variable = "precipitation" if "precipitation" in dataset else "reflectivity"
    rate = convert_dataarray(dataset[variable], "mm/h")  # dBZ: Marshall-Palmer
    return np.asarray(rate.transpose("time", ...).values, dtype=np.float64)


# --------------------------------------------------------------------------- forecasts


def _clock() -> np.ndarray:
    """(wall, CPU) seconds; CPU time is the process's, all threads together."""
    return np.array([time.perf_counter(), time.process_time()])


def xnowcast_forecast(model, frames: np.ndarray, steps: int) -> tuple[np.ndarray, Any, Any]:
    """Forecast, (wall, CPU) seconds for the motion field and for the extrapolation."""
    valid_np = np.isfinite(frames)
    x = torch.from_numpy(np.where(valid_np, frames, 0.0).astype(np.float32))[None, :, None]
    valid = torch.from_numpy(valid_np)[None, :, None]
    t0 = _clock()
    flow = model.motion(x, valid, full_resolution=False)
    t1 = _clock()
    out = model.advect(x[:, -1], flow, steps, valid[:, -1])
    t2 = _clock()
    return out[0, :, 0].numpy().astype(np.float64), t1 - t0, t2 - t1


def persistence_forecast(frames: np.ndarray, steps: int) -> tuple[np.ndarray, Any, Any]:
    return np.repeat(frames[-1:], steps, axis=0), np.zeros(2), np.zeros(2)


#: Input frames pysteps' methods get: LK as in the pysteps examples (3), DARTS
#: enough for its default N_t=4 Fourier modes in time, Proesmans exactly 2.
PYSTEPS_FRAMES = {"lucaskanade": 3, "darts": 9, "proesmans": 2}


def pysteps_forecast(method: str, frames: np.ndarray, steps: int) -> tuple[np.ndarray, Any, Any]:
    """pysteps motion on dB fields (as in its examples) + semi-Lagrangian extrapolation."""
    from pysteps import extrapolation, motion
    from pysteps.utils import transformation

    t0 = _clock()
    db, _ = transformation.dB_transform(
        frames.copy(), {"unit": "mm/h", "transform": None}, threshold=0.1, zerovalue=-15.0
    )
    db[~np.isfinite(db)] = -15.0
    kwargs = {"verbose": False} if method == "darts" else {}
    velocity = motion.get_method(method)(db, **kwargs)
    t1 = _clock()
    out = extrapolation.get_method("semilagrangian")(
        frames[-1], velocity, steps, allow_nonfinite_values=True
    )
    t2 = _clock()
    return out, t1 - t0, t2 - t1


def available_pysteps(methods: list[str]) -> tuple[list[str], list[str]]:
    with contextlib.redirect_stdout(io.StringIO()):  # its configuration-file banner
        import pysteps  # noqa: F401
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
    steps = ARGS.steps
    systems = {"xnowcast": (model.input_frames, partial(xnowcast_forecast, model))}
    for method in methods:
        systems[f"pysteps-{method}"] = (PYSTEPS_FRAMES[method], partial(pysteps_forecast, method))
    systems["persistence"] = (1, persistence_forecast)
    first = max(n for n, _ in systems.values()) - 1
    inits = np.unique(np.linspace(first, frames.shape[0] - 1 - steps, ARGS.inits).round())
    tables = {s: np.zeros((len(LEADS), 3), dtype=np.int64) for s in systems}
    seconds = {s: ([], []) for s in systems}
    xnowcast_forecast(model, frames[: model.input_frames], 2)  # warm-up (first torch calls)
    for init in inits.astype(int):
        observed = frames[init + 1 : init + 1 + steps]
        forecasts = {}
        for system, (n_in, forecast) in systems.items():
            forecasts[system], tm, te = forecast(frames[init - n_in + 1 : init + 1], steps)
            seconds[system][0].append(tm)
            seconds[system][1].append(te)
        for i, lead in enumerate(LEADS):
            known = np.isfinite(observed[lead - 1])
            for fc in forecasts.values():
                known &= np.isfinite(fc[lead - 1])
            for system, fc in forecasts.items():
                tables[system][i] += contingency(fc[lead - 1], observed[lead - 1], known)
    return [
        {
            "event": name,
            "shape": "x".join(map(str, frames.shape[1:])),
            "system": f"{system} ({n_in} fr)",
            "csi": [csi(t) for t in tables[system]],
            "motion_s": np.median(seconds[system][0], axis=0),
            "extrap_s": np.median(seconds[system][1], axis=0),
            "inits": len(inits),
        }
        for system, (n_in, _) in systems.items()
    ]


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    data = Path(ARGS.data).resolve()
    model = build_extrapolation(ARGS.config)
    methods, notes = available_pysteps(ARGS.pysteps)
    header = (
        f"{'event':<14} {'grid':<8} {'system':<24} {'CSI30':>5} {'CSI60':>5} {'CSI90':>5}"
        f" | {'motion':>6} {f'{ARGS.steps} steps':>8} {'total':>6}"
        f" | {'motion':>6} {f'{ARGS.steps} steps':>8} {'total':>6}"
    )
    print(
        f"CSI at {THRESHOLD:g} mm/h pooled over {ARGS.inits} init times per event, on pixels "
        f"known to all systems.\nMedian seconds, wall clock | CPU time (all threads), with "
        f"{ARGS.threads} CPU thread(s), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
        f"load average at start {os.getloadavg()[0]:.1f}.\n"
        f"xnowcast config {ARGS.config!r}: {model.config}"
    )
    for note in notes:
        print(note)
    print(f"{'':<76}wall seconds{'':<14}CPU seconds")
    print(header)
    print("-" * len(header))
    for name in ARGS.events:
        rows = run_event(data, name, model, methods)
        for row in rows:
            c30, c60, c90 = row["csi"]
            (mw, mc), (ew, ec) = row["motion_s"], row["extrap_s"]
            print(
                f"{row['event']:<14} {row['shape']:<8} {row['system']:<24} {c30:5.3f}"
                f" {c60:5.3f} {c90:5.3f} | {mw:6.3f} {ew:8.3f} {mw + ew:6.3f}"
                f" | {mc:6.3f} {ec:8.3f} {mc + ec:6.3f}",
                flush=True,
            )
        ours = rows[0]["motion_s"] + rows[0]["extrap_s"]
        for row in rows[1:-1]:
            theirs = row["motion_s"] + row["extrap_s"]
            print(
                f"{'':<24}xnowcast speed-up over {row['system']}: "
                f"{theirs[0] / ours[0]:.1f}x wall, {theirs[1] / ours[1]:.1f}x CPU"
            )


if __name__ == "__main__":
    main()

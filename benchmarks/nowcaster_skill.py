"""Skill of the deterministic deep nowcasters (``convlstm``, ``unet``) on held-out radar.

On the held-out RMI event (2021-07-04, never used in training; its rainiest crops
chose the kept checkpoint, see the weights' metadata), for ``--inits`` init times
spread over the event, 18 x 5-min forecasts from the preceding frames on the
central ``--size`` x ``--size`` km, made through the public API
(``da.nowcast.predict``), against persistence and extrapolation; all scored where
the radar and every forecast are known (one common mask):

* MAE (mm/h; the CRPS for a stochastic model with ``--members`` > 1) and CSI
  at 1 mm/h, raw and frequency-matched (each forecast's threshold moved so that
  it rains on as many pixels as observed: skill without the wet or dry bias),
  pooled over init times, pixels (and members), at 30/60/90 min;
* rain volume, forecast over observed;
* seconds per forecast (18 lead times, 1 CPU thread unless ``--threads``),
  and their ratio to extrapolation's measured in the same run.

The scoring is :mod:`dgmr_skill`'s (same sums, same masks).  ``--variant
NAME=MODEL:WEIGHTS`` adds another weights file of a model (e.g. an Eulerian
variant).  The printed Markdown goes to ``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/nowcaster_skill.py --data-root ../shared/data [--inits 4] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("XNOWCAST_SRC", str(REPO)))
sys.path.insert(0, str(REPO / "benchmarks"))
from cascast_skill_card import forecast as card_forecast  # noqa: E402
from dgmr_skill import EVENTS, LEADS, Scores, score_init, summary  # noqa: E402

BASELINES = ("persistence", "extrapolation")
LEARNED = ("convlstm", "unet")


#: Members of the stochastic systems (``--members``; seeded, 0).
MEMBERS = {"n": 1}


def forecast(da, model: str, weights: str, init) -> np.ndarray:
    """``(M, 18, H, W)`` forecast of ``model`` (with ``weights``) from ``init``.

    ``M`` is ``--members`` for stochastic models, else 1.
    """
    return card_forecast(da, model, weights, init, MEMBERS["n"], 0)


def run_event(
    root: Path, key: str, size: int, n_inits: int, systems: dict[str, tuple[str, str]]
) -> dict:
    """Scores and timings of every system (name -> (model, weights)) on one event."""
    from xnowcast.io import open_radar

    path, role = EVENTS[key]
    da = open_radar(root / path)["precipitation"].astype(np.float32)
    ny, nx = da.sizes["y"], da.sizes["x"]
    y0, x0 = max((ny - size) // 2, 0), max((nx - size) // 2, 0)
    da = da.isel(y=slice(y0, y0 + size), x=slice(x0, x0 + size)).load()
    idx = np.unique(np.linspace(3, da.sizes["time"] - 19, n_inits).round().astype(int))
    values = da.values
    scores = {name: Scores() for name in systems}
    seconds = dict.fromkeys(systems, 0.0)
    for model, weights in systems.values():  # build and load every model once
        forecast(da.isel(time=slice(0, 4)), model, weights, da.time.values[3])
    for i in idx:
        obs = values[i + 1 : i + 19]
        fcs = {}
        for name, (model, weights) in systems.items():
            start = time.perf_counter()
            fcs[name] = forecast(da, model, weights, da.time.values[i])
            seconds[name] += time.perf_counter() - start
        known = np.isfinite(obs) & np.isfinite(values[i])[None]
        for f in fcs.values():
            known &= np.isfinite(f).all(axis=0)
        for name, f in fcs.items():
            score_init(scores[name], f, obs, known, values[i])
    return {
        "event": key,
        "role": role,
        "inits": [str(t)[:16] for t in da.time.values[idx]],
        "size_km": size,
        "seconds_per_forecast": {k: v / len(idx) for k, v in seconds.items()},
        "scores": {name: summary(s) for name, s in scores.items()},
    }


def _leads(values: list[float]) -> str:
    return " / ".join(
        "-" if not np.isfinite(values[k - 1]) else f"{values[k - 1]:.3f}" for k in LEADS
    )


ROWS = (
    ("MAE (CRPS of an ensemble), mm/h", "crps_1km"),
    ("CSI >= 1 mm/h, raw", "csi_raw_1"),
    ("CSI >= 1 mm/h, frequency-matched", "csi_fm_1"),
    ("rain volume, forecast / observed", "volume_ratio"),
)


def table(result: dict) -> str:
    """Markdown: one row per score (30 / 60 / 90 min), one column per system."""
    names = list(result["scores"])
    lines = ["| 30 / 60 / 90 min | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key in ROWS:
        cells = [_leads(result["scores"][n][key]) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sec = result["seconds_per_forecast"]
    ref = sec.get("extrapolation") or 1.0
    cells = [f"{sec[n]:.2f} ({sec[n] / ref:.1f}x)" for n in names]
    lines.append("| seconds per forecast (x extrapolation) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(result: dict) -> list[str]:
    """Each learned system against persistence at 30 min and extrapolation at 30/60/90 min."""
    s = result["scores"]
    out = []
    for name in s:
        if name in BASELINES:
            continue
        for key, label, lower in (("crps_1km", "MAE", True), ("csi_fm_1", "CSI fm 1 mm/h", False)):
            mine = [s[name][key][k - 1] for k in LEADS]
            pers = s["persistence"][key][5]
            ext = [s["extrapolation"][key][k - 1] for k in LEADS]
            beats_p = mine[0] < pers if lower else mine[0] > pers
            ratio = " / ".join(f"{m / e:.3f}" for m, e in zip(mine, ext, strict=True))
            out.append(
                f"- {name}: {label} at 30 min {mine[0]:.3f} vs persistence {pers:.3f} "
                f"({'beats' if beats_p else 'does not beat'} persistence); "
                f"÷ extrapolation at 30/60/90 min: {ratio}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--events", nargs="+", default=["rmi-20210704"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--inits", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", default="default", help="weights of convlstm and unet")
    p.add_argument("--variant", nargs="*", default=[], metavar="NAME=MODEL:WEIGHTS")
    p.add_argument("--json", default=None, help="write the scores to this file")
    p.add_argument("--members", type=int, default=1, help="members of stochastic models")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    MEMBERS["n"] = a.members
    systems = {name: (name, "default") for name in BASELINES}
    systems.update({name: (name, a.weights) for name in LEARNED})
    for item in a.variant:
        name, _, rest = item.partition("=")
        model, _, weights = rest.partition(":")
        systems[name] = (model, weights)
    results = []
    for key in a.events:
        start = time.perf_counter()
        r = run_event(Path(a.data_root), key, a.size, a.inits, systems)
        r["wall_s"] = round(time.perf_counter() - start, 1)
        results.append(r)
        print(f"\n### {key} ({r['role']}), {len(r['inits'])} init times, {a.size} km, "
              f"{a.threads} thread(s) ({r['wall_s']} s)\n")  # fmt: skip
        print(table(r))
        print()
        print("\n".join(verdicts(r)))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

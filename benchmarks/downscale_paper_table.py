"""The FC-ZSM paper's table (Chen, Qin and Dai 2022, Tables 1-2) on the held-out RMI event.

Coarse input is made from the native RMI QPE (1 km / 5 min, 4 July 2021, never
seen in training) as in training: 2x2 block mean (a block with a missing cell
is missing) and every other frame, giving 2 km / 10 min.  The event is cut into
windows of 4 coarse frames (7 fine frames; consecutive windows share an end
frame, which is scored in both), each downscaled by

* trilinear interpolation (no parameters),
* the shipped U-Net, 3D U-Net, ZSM and FC-ZSM weights (``xnowcast/weights``).

Scores, over the fine cells whose target and coarse inputs are observed:

* MSE (total), MSE (t2: the inserted frames), MSE (t1+t3: the frames at input
  times), in (mm/h)^2;
* SSIM as in the paper (k1 = 0.01, k2 = 0.03, c3 = c2/2, uniform 7x7 windows,
  L = the data range of the targets), the mean over frames;
* the MSE reduction against trilinear.

The same columns are also printed in the paper's value space: reflectivity
(Marshall-Palmer) floored at 15 dBZ and scaled to [0, 1] over [15, 70] dBZ
(values above 70 dBZ kept), with L = 1 for SSIM.

Usage::

    python benchmarks/downscale_paper_table.py --data-root ../shared/data [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xnowcast.models.interpolation import RainTransform
from xnowcast.models.zsm import build_model
from xnowcast.training.pairs import block_mean, coarsen_window, load_rain_rate, static_fields
from xnowcast.training.supervised import HOLDOUT_EVENT, _ssim, load_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "xnowcast" / "weights"
MODELS = [
    ("Trilinear", None),
    ("UNet", "unet-compact.safetensors"),
    ("UNet3D", "unet3d-compact.safetensors"),
    ("ZSM", "zsm-compact.safetensors"),
    ("FC-ZSM", "fczsm-compact.safetensors"),
]


def windows(values: np.ndarray, window: int = 4, time_factor: int = 2) -> list[int]:
    """Start frames of the fine windows covering the event (consecutive ones share an end)."""
    span = (window - 1) * time_factor
    return list(range(0, values.shape[0] - span, span))


def run(data_root: Path, threads: int, max_windows: int | None) -> dict:
    torch.set_num_threads(threads)
    da = load_rain_rate(str(data_root / HOLDOUT_EVENT[1]))
    values = np.asarray(da.values, dtype=np.float32)
    h, w = (values.shape[1] // 2) * 2, (values.shape[2] // 2) * 2
    values = values[:, :h, :w]
    xf, yf = da["x"].values[:w], da["y"].values[:h]
    static = static_fields(
        block_mean(values[::2], 2), 2, xf[::2] + (xf[1] - xf[0]) / 2, yf[::2] + (yf[1] - yf[0]) / 2
    )
    starts = windows(values)[:max_windows]
    data = []
    for s in starts:
        fine = values[s : s + 7]
        coarse, mask = coarsen_window(fine, 2, 2)
        data.append((np.nan_to_num(coarse), fine, mask))
    target_range = float(np.nanmax(values) - np.nanmin(values))
    dbz = RainTransform("dbz")

    results: dict[str, dict] = {}
    for label, filename in MODELS:
        if filename is None:
            model = build_model("trilinear")
            info = {"parameters": 0}
        else:
            path = WEIGHTS / filename
            if not path.is_file():
                print(f"skipping {label}: no {path}")
                continue
            model = load_checkpoint(path)
            info = {
                "parameters": sum(p.numel() for p in model.parameters()),
                "steps": model.metadata["training"].get("steps"),
                "train_wall_s": model.metadata["training"].get("wall_s"),
            }
        sums = {k: np.zeros(2) for k in ("mm", "z")}
        parts = {f"{k}_{p}": np.zeros(2) for k in ("mm", "z") for p in ("ins", "orig")}
        ssim_mm, ssim_z = [], []
        started = time.perf_counter()
        for coarse, fine, mask in data:
            # Zero padding (bottom/right) to the model's spatial multiple, as the runtime does.
            m = int(model.spatial_multiple)
            ph, pw = (-coarse.shape[-2]) % m, (-coarse.shape[-1]) % m
            x = torch.nn.functional.pad(torch.from_numpy(coarse)[None, :, None], (0, pw, 0, ph))
            st = None
            if model.static_channels:
                st = torch.nn.functional.pad(torch.from_numpy(static)[None], (0, 2 * pw, 0, 2 * ph))
            with torch.no_grad():
                pred = model(x, st)[0, :, 0, : fine.shape[-2], : fine.shape[-1]]
            pred = pred.numpy().astype(np.float64)
            target = np.where(mask, fine, np.nan).astype(np.float64)
            predm = np.where(mask, pred, np.nan)
            z_pred = dbz(torch.from_numpy(np.nan_to_num(pred))).numpy()
            z_target = dbz(torch.from_numpy(np.nan_to_num(target))).numpy()
            z_pred = np.where(mask, z_pred, np.nan)
            z_target = np.where(mask, z_target, np.nan)
            for key, a, b in (("mm", predm, target), ("z", z_pred, z_target)):
                err = (a - b) ** 2
                for k in range(err.shape[0]):
                    sel = np.isfinite(err[k])
                    contrib = np.array([err[k][sel].sum(), sel.sum()])
                    sums[key] += contrib
                    parts[f"{key}_{'ins' if k % 2 else 'orig'}"] += contrib
            ssim_mm.append(_ssim(predm, target, target_range))
            ssim_z.append(_ssim(z_pred, z_target, 1.0))
        row = {
            "seconds": round(time.perf_counter() - started, 1),
            **info,
        }
        for key, ssim_values in (("mm", ssim_mm), ("z", ssim_z)):
            row[key] = {
                "mse": sums[key][0] / sums[key][1],
                "mse_t2": parts[f"{key}_ins"][0] / parts[f"{key}_ins"][1],
                "mse_t1t3": parts[f"{key}_orig"][0] / parts[f"{key}_orig"][1],
                "ssim": float(np.nanmean(np.concatenate(ssim_values))),
            }
        results[label] = row
        print(f"{label}: done in {row['seconds']} s", flush=True)
    for key in ("mm", "z"):
        base = results["Trilinear"][key]["mse"]
        for row in results.values():
            row[key]["reduction"] = 1 - row[key]["mse"] / base
    return {
        "event": HOLDOUT_EVENT[0],
        "windows": len(data),
        "fine_frames_scored": 7 * len(data),
        "grid": [h, w],
        "ssim_L_mm_per_h": target_range,
        "results": results,
    }


def table(out: dict, key: str) -> str:
    unit = "(mm/h)^2" if key == "mm" else "(normalised dBZ)^2 x 1e3"
    scale = 1.0 if key == "mm" else 1e3
    lines = [
        f"| model | MSE total | MSE t2 (inserted) | MSE t1+t3 (input times) | SSIM "
        f"| MSE reduction vs trilinear |   [{unit}]",
        "|---|---|---|---|---|---|",
    ]
    for label, row in out["results"].items():
        r = row[key]
        lines.append(
            f"| {label} | {scale * r['mse']:.4f} | {scale * r['mse_t2']:.4f} | "
            f"{scale * r['mse_t1t3']:.4f} | {r['ssim']:.4f} | {100 * r['reduction']:.1f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-windows", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = run(args.data_root, args.threads, args.max_windows)
    print(
        f"\nHeld-out event {out['event']}: {out['windows']} windows of 4 coarse (2 km, 10 min) "
        f"-> 7 fine (1 km, 5 min) frames on a {out['grid'][0]}x{out['grid'][1]} km grid\n"
    )
    print(f"Rain rate (SSIM L = {out['ssim_L_mm_per_h']:.1f} mm/h):\n")
    print(table(out, "mm"))
    print("\nThe paper's space: dBZ floored at 15, scaled over [15, 70] (SSIM L = 1):\n")
    print(table(out, "z"))
    print("\nModel sizes and training:")
    for label, row in out["results"].items():
        extra = ""
        if row.get("steps"):
            extra = f", {row['steps']} steps in {row['train_wall_s']} s"
        print(f"  {label}: {row['parameters']} parameters{extra}; scored in {row['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

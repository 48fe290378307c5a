"""Skill card of the downscaling models: the FC-ZSM paper's table with a ``flow`` row, per event.

For each real radar event (RMI 2021-07-04 is held out of every training run, the
OPERA CIRRUS composite of 2024-11-26 was never used at all;
the other events were *training* events of the learned models, so their rows
say how well the models fit what they saw, not how they generalise), the
384 x 384 km crop with the most rain (candidates every 32 km, >= 90 % of it
observed) of the native 1 km / 5 min radar is the truth; the input is its
2 x 2 block mean (a block with a missing cell is missing) at every other frame,
i.e. 2 km / 10 min.  Every model downscales the whole series through the public
pipeline (``DataArray.downscale``: windows, tiling, NaN handling as for a user).

Scores, over the fine cells where both the truth and the output are known:

* MSE (mm/h)^2 over all output frames, the inserted frames (t2 in the paper)
  and the frames at input times (t1 + t3);
* MSE in dBZ (Marshall-Palmer Z = 200 R^1.6, floored at 15 dBZ) over the cells
  where the truth is >= 15 dBZ (the FC-ZSM paper's convention);
* SSIM as in the paper (k1 = 0.01, k2 = 0.03, uniform 7 x 7 windows,
  L = the truth's range over the event), the mean over frames;
* power spectrum ratio 2-8 km: the radially averaged power spectrum of the
  output over that of the truth (both with missing cells set to 0), averaged
  over frames, then the geometric mean over wavelengths 2 to 8 km (1 = the
  right small-scale variability, < 1 = too smooth);
* seconds for the whole series, on the shared 2-core machine.

It also times ``flow`` on 400 x 400 coarse cells x 12 frames (-> 800 x 800 x 23)
with 2 threads, against trilinear in the same run.

Usage::

    python benchmarks/downscale_skill_card.py --data-root ../shared/data \\
        [--weights zsm=path.safetensors] [--events rmi-20210704 ...] \\
        [--json out.json] [--rst docs/downscale_skill_card.rst]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

import xnowcast
from xnowcast.metrics.spectral import rapsd, rapsd_wavenumbers
from xnowcast.training.pairs import block_mean, load_rain_rate
from xnowcast.training.supervised import DEFAULT_EVENTS, HOLDOUT_EVENT

#: Never trained, tuned or selected on: another season, network and radar quantity
#: (the pan-European maximum reflectivity, turned into mm/h with Marshall-Palmer).
UNSEEN_EVENTS = {"opera-cirrus-20241126": "radar/OPERA/20241126/CIRRUS"}
#: Rates above these (mm/h) are missing in the truth and so in the input: that night's
#: composite has one-frame spikes up to 800 mm/h (``benchmarks/unseen_event_card.py``).
MAX_RATE = {"opera-cirrus-20241126": 100.0}
EVENTS = {HOLDOUT_EVENT[0]: HOLDOUT_EVENT[1], **UNSEEN_EVENTS, **DEFAULT_EVENTS}
MODELS = ("trilinear", "flow", "unet", "unet3d", "zsm", "fczsm")
#: The models whose shipped weights were trained by ``xnowcast.training.longrun``.
TRAINED = ("zsm", "fczsm")
CROP = 384


def rainiest_crop(values: np.ndarray, size: int = CROP, stride: int = 32) -> tuple[int, int]:
    """Top-left corner of the ``size`` square with the most rain (>= 90 % observed).

    Window sums come from summed-area tables, so a continental composite costs
    no more than a national one.
    """
    frames, h, w = values.shape

    def window_sums(field: np.ndarray) -> np.ndarray:
        table = np.zeros((h + 1, w + 1))
        table[1:, 1:] = field.cumsum(axis=0).cumsum(axis=1)
        ys = np.arange(0, max(h - size, 0) + 1, stride)[:, None]
        xs = np.arange(0, max(w - size, 0) + 1, stride)[None, :]
        y1, x1 = np.minimum(ys + size, h), np.minimum(xs + size, w)
        return table[y1, x1] - table[ys, x1] - table[y1, xs] + table[ys, xs]

    rain = window_sums(np.nansum(values, axis=0, dtype=np.float64))
    known = window_sums(np.isfinite(values).sum(axis=0, dtype=np.float64))
    rain[known < 0.9 * frames * min(size, h) * min(size, w)] = -1.0
    iy, ix = np.unravel_index(int(np.argmax(rain)), rain.shape)
    return int(iy * stride), int(ix * stride)


def event_truth(data_root: Path, pattern: str, max_rate: float | None = None) -> xr.DataArray:
    """The rainiest 384 km crop of an event, an odd number of frames (1 km / 5 min).

    Rates above ``max_rate`` (when given) become missing.
    """
    da = load_rain_rate(str(data_root / pattern)).transpose("time", "y", "x")
    if max_rate is not None:
        da = da.where(~(da > max_rate))
    y0, x0 = rainiest_crop(np.asarray(da.values))
    frames = (da.sizes["time"] - 1) // 2 * 2 + 1
    return da.isel(time=slice(0, frames), y=slice(y0, y0 + CROP), x=slice(x0, x0 + CROP))


def coarsen(truth: xr.DataArray) -> xr.DataArray:
    """2 km / 10 min input: 2 x 2 block means (missing if any cell is) of every other frame."""
    frames = truth.isel(time=slice(None, None, 2))
    coarse = frames.coarsen(y=2, x=2).mean()  # the coordinates: block centres
    coarse = coarse.copy(data=block_mean(np.asarray(frames.values), 2))
    coarse.attrs = dict(truth.attrs)
    return coarse


def _dbz(rate: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.maximum(10 * np.log10(200 * np.maximum(rate, 0) ** 1.6), 15.0)


def scores(fine: xr.DataArray, truth: xr.DataArray, data_range: float) -> dict[str, float]:
    """The skill-card scores of ``fine`` against ``truth`` (both ``(T, Y, X)``, mm/h).

    MSE and SSIM through :func:`xnowcast.verify`, which matches the fields by time and
    grid; the dBZ MSE and the spectrum ratio (not ``verify`` metrics) by hand.
    """
    every = ["time", "y", "x"]  # pooled over the known cells of all frames

    def mse(frames: slice) -> float:
        found = xnowcast.verify(fine.isel(time=frames), truth, metrics="mse", dim=every)
        return float(found["mse"].sel(scale=1))

    out = {
        "mse": mse(slice(None)),
        "mse_inserted": mse(slice(1, None, 2)),
        "mse_input": mse(slice(0, None, 2)),
    }
    per_frame = xnowcast.verify(
        fine, truth, metrics="ssim", dim=["y", "x"], ssim_window=7, ssim_data_range=data_range
    )
    out["ssim"] = float(per_frame["ssim"].mean("time"))  # the mean over frames
    pred = np.asarray(fine.values, dtype=np.float64)
    target = np.asarray(truth.sel(time=fine.time).values, dtype=np.float64)
    known = np.isfinite(pred) & np.isfinite(target)
    heavy = known & (_dbz(np.nan_to_num(target)) >= 15.0)
    dz = (_dbz(np.nan_to_num(pred)) - _dbz(np.nan_to_num(target))) ** 2
    out["mse_dbz_ge15"] = float(dz[heavy].mean()) if heavy.any() else float("nan")
    power_p = rapsd(np.where(known, pred, 0.0)).mean(axis=0)
    power_t = rapsd(np.where(known, target, 0.0)).mean(axis=0)
    k = rapsd_wavenumbers(pred.shape[-2:])
    band = (k >= 1 / 8) & (k <= 1 / 2) & (power_t > 0)
    out["psd_ratio_2_8km"] = float(np.exp(np.mean(np.log(power_p[band] / power_t[band]))))
    return {key: float(value) for key, value in out.items()}


def run_event(
    name: str, truth: xr.DataArray, weights: dict[str, str], models: tuple[str, ...]
) -> dict[str, Any]:
    coarse = coarsen(truth)
    values = np.asarray(truth.values, dtype=np.float64)
    data_range = float(np.nanmax(values) - np.nanmin(values))
    rows: dict[str, Any] = {}
    for model in models:
        kwargs: dict[str, Any] = {"model": model, "progress": False}
        if model in weights:
            kwargs["weights"] = weights[model]
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a fallback to flow must not pass unnoticed
                fine = coarse.downscale(factor=2, time_factor=2, **kwargs).compute()
        except Exception as err:  # a model without weights here: say so, go on
            print(f"  {model}: skipped ({type(err).__name__}: {err})", flush=True)
            continue
        seconds = time.perf_counter() - started
        rows[model] = {
            **scores(fine, truth, data_range),
            "seconds": seconds,
            "weights": fine.attrs.get("xnowcast_weights", ""),
        }
        print(f"  {model}: mse {rows[model]['mse']:.4f} in {seconds:.1f} s", flush=True)
    relative(rows)
    return {
        "event": name,
        "held_out": name == HOLDOUT_EVENT[0],
        "unseen": name in UNSEEN_EVENTS,
        "frames_out": int(truth.sizes["time"]),
        "crop_km": CROP,
        "ssim_L": data_range,
        "rows": rows,
    }


def relative(rows: dict[str, Any]) -> None:
    """Add each row's MSE reduction against trilinear and ratio to flow (in place)."""
    for row in rows.values():
        for key in ("mse", "mse_inserted", "mse_input"):
            if "trilinear" in rows:
                row[f"{key}_reduction_vs_trilinear"] = 1 - row[key] / rows["trilinear"][key]
            if "flow" in rows:
                row[f"{key}_ratio_to_flow"] = row[key] / rows["flow"][key]


def merge(previous: dict[str, Any], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of a previous run (``--json``) with the rows of this run added / replaced."""
    new = {r["event"]: r for r in results}
    merged = []
    for old in previous["events"]:
        event = dict(old)
        rows = {**old["rows"], **new.pop(old["event"], {"rows": {}})["rows"]}
        event["rows"] = {m: rows[m] for m in MODELS if m in rows}
        relative(event["rows"])
        merged.append(event)
    return merged + list(new.values())


def flow_speed(threads: int = 2, repeats: int = 3) -> dict[str, float]:
    """Seconds for 400 x 400 coarse cells x 12 frames (model forward), flow vs trilinear."""
    from xnowcast.registry import build_model

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 12, 1, 400, 400, generator=gen) * 20
    frames = torch.where(frames > 12, frames, torch.zeros_like(frames))
    out: dict[str, float] = {}
    for name in ("trilinear", "flow"):
        model = build_model(name, task="downscale")
        times, cpu = [], []
        for _ in range(repeats):
            started, started_cpu = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                model(frames)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        out[name] = min(times)
        # CPU seconds per thread: what the wall time would be on 2 free cores
        out[f"{name}_cpu_per_thread"] = min(cpu) / threads
    out["threads"] = threads
    return out


_COLUMNS = (
    ("MSE total", "mse", "{:.4f}"),
    ("MSE t2 (inserted)", "mse_inserted", "{:.4f}"),
    ("MSE t1+t3 (input times)", "mse_input", "{:.4f}"),
    ("MSE dBZ (>= 15 dBZ)", "mse_dbz_ge15", "{:.2f}"),
    ("SSIM", "ssim", "{:.4f}"),
    ("PSD ratio 2-8 km", "psd_ratio_2_8km", "{:.3f}"),
    ("vs trilinear (total)", "mse_reduction_vs_trilinear", "{:+.1%}"),
    ("ratio to flow (total / t2 / t1+t3)", None, ""),
    ("seconds", "seconds", "{:.1f}"),
)


def _label(model: str, row: dict[str, Any]) -> str:
    """The model's name, marked when a learned model ran without weights (it is then flow)."""
    untrained = model in ("zsm", "fczsm") and str(row.get("weights", "")).startswith("none")
    return f"{model} (no weights: = flow)" if untrained else model


def _cells(row: dict[str, Any]) -> list[str]:
    cells = []
    for _, key, fmt in _COLUMNS:
        if key is None:
            cells.append(
                " / ".join(
                    f"{row.get(f'{k}_ratio_to_flow', float('nan')):.3f}"
                    for k in ("mse", "mse_inserted", "mse_input")
                )
            )
        else:
            cells.append(fmt.format(row.get(key, float("nan"))).replace("%", " %"))
    return cells


def markdown(result: dict[str, Any]) -> str:
    tag = _role(result, "a training event of the learned models")
    lines = [
        f"**{result['event']}** ({tag}; {result['frames_out']} output frames, "
        f"{result['crop_km']} km crop; MSE in (mm/h)^2, SSIM L = {result['ssim_L']:.1f} mm/h)",
        "",
        "| model | " + " | ".join(c for c, _, _ in _COLUMNS) + " |",
        "|---" * (len(_COLUMNS) + 1) + "|",
    ]
    for model, row in result["rows"].items():
        lines.append(f"| {_label(model, row)} | " + " | ".join(_cells(row)) + " |")
    return "\n".join(lines)


def training_record(weights: dict[str, str], model: str = "zsm") -> dict[str, Any]:
    """The training record in the metadata of ``model``'s weights (given, else shipped)."""
    from xnowcast.registry import get_spec, weights_metadata
    from xnowcast.weights import read_metadata

    meta = read_metadata(weights[model]) if model in weights else weights_metadata(get_spec(model))
    return {**meta.get("training", {}), "scores": meta.get("scores", {})}


def _changed(changes: list[dict[str, Any]], final: dict[str, Any]) -> list[str]:
    """``key before -> after`` of each recorded recipe change (``after``: the next record's)."""
    out = []
    for i, change in enumerate(changes):
        parts = []
        for key, before in change["before"].items():
            later = (c["before"][key] for c in changes[i + 1 :] if key in c["before"])
            after = next(later, final.get(key))
            if after != before:
                parts.append(f"{key} {before} -> {after}")
        out.append(", ".join(parts) or "no change")
    return out


def curve_lines(training: dict[str, Any]) -> list[str]:
    """Recipe and validation curve of a ``longrun`` record, as Markdown lines."""
    run = training.get("run", training)
    recipe = training.get("recipe", {})
    warm = training.get("warm_start") or {}
    cpu_h = float(run.get("cpu_s", training.get("cpu_s", float("nan")))) / 3600
    best = (training.get("best") or {}).get("step")
    # ``longrun --export-step last`` ships the last step, else the best validation step
    shipped = training.get("steps") if training.get("exported_step") == "last" else best
    which = "last" if training.get("exported_step") == "last" else "best"
    shipped_cpu = (
        f"; to the shipped step {shipped}: {float(training['cpu_s']) / 3600:.2f} CPU-hours, "
        f"{float(training['cpu_s_total']) / 3600:.2f} with the warm start's"
        if "cpu_s_total" in training
        else ""
    )
    warm_ratio = min((r for *_, r in warm.get("val_history") or []), default=float("nan"))
    warm_cpu = f", {float(warm['cpu_s']) / 3600:.2f} CPU-hours" if "cpu_s" in warm else ""
    lines = [
        f"Recipe: {training.get('loss', '?')}; mse_weight {recipe.get('mse_weight')}, "
        f"batch {recipe.get('batch_size')}, lr {recipe.get('lr')} (residual head x "
        f"{recipe.get('head_lr_mult', 1.0)}), pairs drawn ~ (flow SSE + mean)^"
        f"{recipe.get('sample_power', 0.0)}; {training.get('train_pairs')} pairs of "
        f"{training.get('crop')} x {training.get('crop')} coarse cells from "
        f"{', '.join(training.get('events', []))}; input steps "
        f"{training.get('time_steps_minutes')} min; {run.get('steps')} steps, "
        f"{float(run.get('wall_s', float('nan'))) / 3600:.2f} h wall, {cpu_h:.2f} CPU-hours"
        + shipped_cpu
        + (
            f"; warm-started from {warm.get('from')} ({warm.get('model', 'zsm')} weights of "
            f"{warm.get('steps')} steps{warm_cpu}, best val ratio to flow {warm_ratio:.4f})"
            if warm
            else ""
        )
        + ".",
        "",
    ]
    changes = run.get("recipe_changes") or training.get("recipe_changes") or []
    if changes:
        lines += [
            "Resumed with a new recipe at "
            + ", ".join(
                f"step {c['step']} ({what})"
                for c, what in zip(changes, _changed(changes, recipe), strict=True)
            )
            + ".",
            "",
        ]
    lines += [
        f"Validation on {training.get('val_pairs')} held-out {training.get('holdout')} pairs "
        "(MSE (mm/h)^2 and its ratio to ``flow`` on the same pairs; the best step was "
        f"{best}; the {which} step, {shipped}, is shipped):",
        "",
        "| step | val MSE | / flow |",
        "|---|---|---|",
    ]
    lines += [f"| {int(s)} | {m:.4f} | {r:.4f} |" for s, m, r in run.get("val_history", [])]
    return lines


def _role(result: dict[str, Any], training: str) -> str:
    if result["held_out"]:
        return "held out"
    if result.get("unseen"):
        return "never seen: no training, tuning or selection"
    return training


def rst(
    results: list[dict[str, Any]],
    speed: dict[str, float],
    command: str,
    training: dict[str, dict[str, Any]] | None = None,
) -> str:
    title = "Downscaling skill card"
    out = [
        ".. This page is written by benchmarks/downscale_skill_card.py: do not edit by hand.",
        "",
        title,
        "=" * len(title),
        "",
        "2 km / 10 min radar (2 x 2 block means of every other frame) downscaled to",
        "1 km / 5 min and compared with the native radar, on the 384 x 384 km crop with",
        "the most rain of each event, through ``DataArray.downscale``.  RMI 2021-07-04 is",
        "held out of all training, and the OPERA CIRRUS composite of 2024-11-26 (a",
        "November night, the pan-European maximum reflectivity; its one-frame spikes above",
        "100 mm/h count as missing) was never used at all; the",
        "learned models were trained on the other events, so their rows there measure fit,",
        "not generalisation.  Scores are defined in the",
        "script's docstring (the FC-ZSM paper's Table 1/3 columns, with a ``flow`` row).",
        "",
        f"Command: ``{command}`` (shared 2-core CPU machine; seconds are indicative).",
        "",
    ]
    for result in results:
        tag = _role(result, "training event of the learned models")
        heading = f"{result['event']} ({tag})"
        out += [heading, "-" * len(heading), ""]
        out += [".. list-table::", "   :header-rows: 1", ""]
        out.append("   * - model")
        out += [f"     - {c}" for c, _, _ in _COLUMNS]
        for model, row in result["rows"].items():
            out.append(f"   * - ``{_label(model, row)}``")
            out += [f"     - {cell}" for cell in _cells(row)]
        out.append("")
    out += [
        "Speed of ``flow``",
        "-----------------",
        "",
        f"400 x 400 coarse cells x 12 frames -> 800 x 800 x 23, {speed['threads']} threads: "
        f"``flow`` {speed['flow']:.2f} s wall ({speed['flow_cpu_per_thread']:.2f} CPU-s per "
        f"thread), ``trilinear`` {speed['trilinear']:.3f} s wall "
        f"({speed['trilinear_cpu_per_thread']:.3f} CPU-s per thread); best of 3, model forward "
        "only, on a machine shared with other jobs (wall times are inflated by them; the CPU "
        "time per thread is what the wall time would be on two free cores).",
        "",
    ]
    for model, record in (training or {}).items():
        heading = f"Training of the shipped ``{model}`` weights"
        out += [heading, "-" * len(heading), ""]
        for line in curve_lines(record):
            if line.startswith("|---"):
                continue
            if line.startswith("| step"):
                out += [".. list-table::", "   :header-rows: 1", ""]
            if line.startswith("|"):
                cells = [c.strip() for c in line.strip("|").split("|")]
                out += [f"   {'*' if i == 0 else ' '} - {c}" for i, c in enumerate(cells)]
            else:
                out.append(line)
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", type=Path)
    parser.add_argument("--events", nargs="+", default=list(EVENTS), choices=list(EVENTS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--weights", nargs="*", default=[], help="model=path.safetensors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rst", type=Path, default=None)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument(
        "--merge", type=Path, default=None, help="a previous --json: keep its rows and speed"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = dict(item.split("=", 1) for item in args.weights)
    results = []
    for name in args.events:
        print(f"{name}:", flush=True)
        truth = event_truth(args.data_root, EVENTS[name], MAX_RATE.get(name))
        results.append(run_event(name, truth, weights, tuple(args.models)))
        print(markdown(results[-1]) + "\n", flush=True)
    speed = {"threads": args.threads, "flow": float("nan"), "trilinear": float("nan")}
    if args.merge:
        previous = json.loads(args.merge.read_text())
        results, speed = merge(previous, results), previous["speed"]
        for result in results:
            print(markdown(result) + "\n")
    if not args.no_speed:
        speed = flow_speed(args.threads)
        print(
            f"flow, 400x400x12 coarse -> 800x800x23, {args.threads} threads: "
            f"{speed['flow']:.2f} s wall, {speed['flow_cpu_per_thread']:.2f} CPU-s per thread "
            f"(trilinear {speed['trilinear']:.3f} s, {speed['trilinear_cpu_per_thread']:.3f})"
        )
    if args.json:
        args.json.write_text(json.dumps({"events": results, "speed": speed}, indent=1))
    training = {model: training_record(weights, model) for model in TRAINED}
    if args.rst:
        args.rst.write_text(rst(results, speed, command_line(args), training))
    for model, record in training.items():
        print(f"\n{model}:\n" + "\n".join(curve_lines(record)))


def command_line(args: argparse.Namespace) -> str:
    """The command that made the page, and which rows a ``--merge`` run kept from before."""
    parts = ["python benchmarks/downscale_skill_card.py"]
    parts += [f"--weights {w}" for w in args.weights]
    if args.models != list(MODELS):
        parts.append("--models " + " ".join(args.models))
    if args.events != list(EVENTS):
        parts.append("--events " + " ".join(args.events))
    if args.merge:
        parts.append(f"--merge {args.merge.name}")
    if args.no_speed:
        parts.append("--no-speed")
    parts.append(f"--threads {args.threads}")
    command = " ".join(parts)
    if args.merge:
        command += (
            f" (rows of {', '.join(args.models)} rerun; the other rows and the speed from "
            f"{args.merge.name})"
        )
    return command


if __name__ == "__main__":
    main()

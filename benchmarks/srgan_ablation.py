"""``srgan`` against its baselines (and its loss variants) at factor 4, on held-out RMI
and a MeteoSwiss event.

The radar's 1 km frames of each ``--event`` (default: RMI 2021-07-04, never
trained on; ``mch-20160711`` or ``mch-20150515`` are MeteoSwiss events that
the shipped ``srgan`` weights and their encoder **were trained on**: the table
says so) are coarsened to 4 km by block means and downscaled back with
``downscale(..., factor=4, time_factor=1)`` through the public pipeline (NaN
outside radar range kept):

* ``bicubic``: plain bicubic interpolation (no consistency);
* ``bp-bicubic``: bicubic + back-projection + exact block means (= ``srgan``
  untrained, ``weights=None``);
* ``flow``: the ``flow`` downscaler (its spatial step, one back-projection);
* ``srgan[...]``: the shipped weights, and any variant passed with
  ``--weights NAME=PATH`` or trained here with ``--train VARIANT``
  (``mse``, ``mse_adv``, ``content_adv``; each from the same MSE pre-training,
  with the shipped encoder, in ``--workdir/VARIANT`` for ``--cpu-minutes``).

Scores over the known cells (one row per system): MSE (mm/h)^2 and its ratio to
``bp-bicubic``; SSIM (7 x 7, L = the radar's range); the radar-relative power
at wavelengths 2-6 km and 6-16 km (radially averaged spectra of the central
fully observed square); the 99.9th percentile relative to the radar's;
block-mean consistency (largest relative error of the 4 x 4 block means against
the input, over cells >= 0.1 mm/h; exact for one tile, while the linear blending
of overlapping tiles, ``tile_size`` 512 by default, leaves ~1 % in the overlaps); the learned AtmoDist distance to the radar;
the semivariogram ratio ``gamma_system(h) / gamma_radar(h)`` of ``log(1 + R)`` at
lags of 2, 4, 8 and 16 km (``vg_2km`` ...; pairs along x and y known in both,
pooled over frames; :mod:`xnowcast.metrics.variogram`).

Usage::

    python benchmarks/srgan_ablation.py --data-root ../shared/data --frames 13
    python benchmarks/srgan_ablation.py --train mse --train mse_adv --cpu-minutes 20
    python benchmarks/srgan_ablation.py --event rmi-20210704 --event mch-20160711 \
        --weights mse=/work/srgan-run/ablation/mse/srgan-mse.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

import xnowcast
from xnowcast.metrics import (
    atmodist_terms_array,
    rapsd,
    rapsd_wavenumbers,
    semivariogram_ratio_terms,
    ssim,
)
from xnowcast.training.pairs import load_rain_rate
from xnowcast.weights import read_metadata

FACTOR = 4
BANDS = {"power_2_6km": (2.0, 6.0), "power_6_16km": (6.0, 16.0)}
#: Semivariogram lags in cells (= km on these 1 km grids).
VARIOGRAM_LAGS = (2, 4, 8, 16)
#: The events this script can score (1 km, 5 min); the srgan runs hold out RMI.
EVENTS = {
    "rmi-20210704": "radar/rmi/radqpe/20210704/*",
    "mch-20160711": "radar/mch/20160711/*",
    "mch-20150515": "radar/mch/20150515/*",
}


def known_square(known: np.ndarray) -> tuple[slice, slice]:
    """The largest centred square (multiple of 8 cells) observed in every frame."""
    ny, nx = known.shape
    for half in range(min(ny, nx) // 2 // 8 * 8, 0, -8):
        ys = slice(ny // 2 - half, ny // 2 + half)
        xs = slice(nx // 2 - half, nx // 2 + half)
        if known[ys, xs].all():
            return ys, xs
    raise SystemExit("no fully observed square")


def band_power(fields: np.ndarray, low: float, high: float) -> float:
    psd = rapsd(fields).mean(axis=0)
    k = rapsd_wavenumbers(fields.shape[-2:])
    with np.errstate(divide="ignore"):
        wavelength = 1 / k
    band = (wavelength >= low) & (wavelength <= high)
    return float(psd[band].sum())


def scores(out: np.ndarray, truth: np.ndarray, coarse: np.ndarray, square: tuple) -> dict:
    known = np.isfinite(out) & np.isfinite(truth)
    err = np.where(known, out - truth, 0.0)
    result = {"mse": float((err**2).sum() / known.sum())}
    span = float(np.nanmax(truth) - np.nanmin(truth))
    result["ssim"] = float(np.nanmean(ssim(out, truth, data_range=span)))
    sub_o = np.nan_to_num(out[(slice(None), *square)])
    sub_t = truth[(slice(None), *square)]
    for name, (low, high) in BANDS.items():
        result[name] = band_power(sub_o, low, high) / band_power(sub_t, low, high)
    result["q999"] = float(np.quantile(out[known], 0.999) / np.quantile(truth[known], 0.999))
    t, h, w = out.shape
    means = out.reshape(t, h // FACTOR, FACTOR, w // FACTOR, FACTOR).mean(axis=(2, 4))
    wet = np.isfinite(means) & (coarse >= 0.1)
    result["block_err"] = float(np.max(np.abs(means[wet] / coarse[wet] - 1)))
    terms = atmodist_terms_array(out, truth)
    result["atmodist"] = float(terms[..., 0].sum() / terms[..., 1].sum())
    pooled = semivariogram_ratio_terms(out, truth, VARIOGRAM_LAGS).sum(axis=0)
    for lag, (system, radar) in zip(VARIOGRAM_LAGS, pooled, strict=True):
        result[f"vg_{lag}km"] = float(system / radar)
    return result


def training_events(systems: dict[str, dict]) -> dict[str, list[str]]:
    """The events each trained system's weights file says it was trained on."""
    out = {}
    for name, kwargs in systems.items():
        path = kwargs.get("weights", "default")
        if path is None:
            continue
        if path == "default":
            spec = xnowcast.registry.get_spec(kwargs["model"])
            if spec.default_weights is None:
                continue
            path = spec.weights[spec.default_weights].path
        out[name] = sorted(read_metadata(path).get("training", {}).get("events", []))
    return out


def event_truth(data_root: str, event: str, frames: int) -> xr.DataArray:
    """``frames`` frames of the event (every n-th, spanning it), cut to whole 4 x 4 blocks."""
    fine = load_rain_rate(str(Path(data_root) / EVENTS[event]))
    step = max(1, fine.sizes["time"] // frames)
    fine = fine.isel(time=slice(0, step * frames, step))
    ny, nx = (fine.sizes["y"] // FACTOR) * FACTOR, (fine.sizes["x"] // FACTOR) * FACTOR
    return fine.isel(y=slice(0, ny), x=slice(0, nx))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument(
        "--event", action="append", default=[], choices=list(EVENTS),
        help="event(s) to score (default rmi-20210704, the held-out one)",
    )  # fmt: skip
    parser.add_argument("--frames", type=int, default=13, help="frames per event (spanning it)")
    parser.add_argument("--weights", action="append", default=[], help="NAME=PATH")
    parser.add_argument(
        "--train", action="append", default=[], choices=["mse", "mse_adv", "content_adv"]
    )
    parser.add_argument("--workdir", default="/work/srgan-run/ablation")
    parser.add_argument("--cpu-minutes", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile-size", type=int, default=None, help="xnowcast tile_size option")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tile_size:
        xnowcast.set_options(tile_size=args.tile_size)

    systems: dict[str, dict] = {
        "bp-bicubic": {"model": "srgan", "weights": None},
        "flow": {"model": "flow"},
    }
    if xnowcast.registry.get_spec("srgan").default_weights:
        systems["srgan (shipped)"] = {"model": "srgan"}
    for item in args.weights:
        name, path = item.split("=", 1)
        systems[f"srgan[{name}]"] = {"model": "srgan", "weights": path}
    if args.train:
        from xnowcast.models.atmodist import ATMODIST_WEIGHTS
        from xnowcast.training.srgan_run import run
        from xnowcast.weights import PACKAGE_WEIGHTS_DIR

        encoder = str(PACKAGE_WEIGHTS_DIR / ATMODIST_WEIGHTS[0])
        for variant in args.train:
            work = Path(args.workdir) / variant
            run(data_root=args.data_root, workdir=work, cpu_minutes=args.cpu_minutes,
                variant=variant, encoder_weights=encoder)  # fmt: skip
            systems[f"srgan[{variant}]"] = {
                "model": "srgan",
                "weights": str(work / f"srgan-{variant}.safetensors"),
            }

    trained_on = training_events(systems)
    for event in args.event or ["rmi-20210704"]:
        score_event(args, event, systems, trained_on)


def score_event(
    args: argparse.Namespace, event: str, systems: dict[str, dict], trained_on: dict
) -> None:
    """Downscale the event with every system and print one table row per system."""
    fine = event_truth(args.data_root, event, args.frames)
    coarse = fine.coarsen(y=FACTOR, x=FACTOR).mean().assign_attrs(fine.attrs)
    truth = fine.transpose("time", "y", "x").values
    square = known_square(np.isfinite(truth).all(axis=0))
    c = np.nan_to_num(coarse.transpose("time", "y", "x").values)
    plain = F.interpolate(torch.from_numpy(c)[:, None], scale_factor=FACTOR, mode="bicubic")
    plain = np.where(np.isfinite(truth), plain[:, 0].clamp_min(0).numpy(), np.nan)

    rows = {"bicubic": scores(plain, truth, coarse.values, square)}
    timing = {}
    for name, kwargs in systems.items():
        # warm-up (model load, first-call allocations) outside the timing
        xnowcast.downscale(
            coarse[:1, 80:96, 80:96], factor=FACTOR, time_factor=1, progress=False, **kwargs
        )
        t0 = time.perf_counter()
        out = xnowcast.downscale(coarse, factor=FACTOR, time_factor=1, progress=False, **kwargs)
        timing[name] = time.perf_counter() - t0
        rows[name] = scores(out.transpose("time", "y", "x").values, truth, coarse.values, square)
    base = rows["bp-bicubic"]["mse"]
    cols = ["mse", "mse/bp", "ssim", "power_2_6km", "power_6_16km", "q999", "block_err",
            "atmodist", *(f"vg_{lag}km" for lag in VARIOGRAM_LAGS)]  # fmt: skip
    seen = sorted({name for name, events in trained_on.items() if event in events})
    status = (
        f"TRAINING EVENT of {', '.join(seen)} (not held out)"
        if seen
        else "held out (never trained on)"
    )
    print(f"\n{event}: {status}; {args.frames} frames, 4 km -> 1 km, "
          f"{fine.sizes['y']} x {fine.sizes['x']} km; square for spectra "
          f"{square[0].stop - square[0].start} km; torch {torch.__version__}")  # fmt: skip
    print("| system | " + " | ".join(cols) + " | seconds |")
    print("|---" * (len(cols) + 2) + "|")
    for name, r in rows.items():
        r["mse/bp"] = r["mse"] / base
        cells = " | ".join(f"{r[c]:.4g}" for c in cols)
        print(f"| {name} | {cells} | {timing.get(name, float('nan')):.2f} |", flush=True)


if __name__ == "__main__":
    main()

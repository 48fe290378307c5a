"""``srgan`` against its baselines (and its loss variants) on held-out RMI at factor 4.

The radar's 1 km frames (RMI 2021-07-04, never trained on) are coarsened to
4 km by block means and downscaled back with ``downscale(..., factor=4,
time_factor=1)`` through the public pipeline (NaN outside radar range kept):

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
of overlapping tiles, ``tile_size`` 512 by default, leaves ~1 % in the overlaps); the learned AtmoDist distance to the radar.

Usage::

    python benchmarks/srgan_ablation.py --data-root ../shared/data --frames 13
    python benchmarks/srgan_ablation.py --train mse --train mse_adv --cpu-minutes 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import xnowcast
from xnowcast.metrics import atmodist_terms_array, rapsd, rapsd_wavenumbers, ssim
from xnowcast.training.pairs import load_rain_rate

FACTOR = 4
BANDS = {"power_2_6km": (2.0, 6.0), "power_6_16km": (6.0, 16.0)}


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
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--frames", type=int, default=13, help="frames of the event (every 3rd)")
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

    fine = load_rain_rate(str(Path(args.data_root) / "radar/rmi/radqpe/20210704/*"))
    step = max(1, fine.sizes["time"] // args.frames)
    fine = fine.isel(time=slice(0, step * args.frames, step))
    ny, nx = (fine.sizes["y"] // FACTOR) * FACTOR, (fine.sizes["x"] // FACTOR) * FACTOR
    fine = fine.isel(y=slice(0, ny), x=slice(0, nx))
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
    cols = ["mse", "mse/bp", "ssim", "power_2_6km", "power_6_16km", "q999", "block_err", "atmodist"]
    print(f"held-out RMI 2021-07-04, {args.frames} frames, 4 km -> 1 km; "
          f"square for spectra {square[0].stop - square[0].start} km; torch {torch.__version__}")  # fmt: skip
    print("| system | " + " | ".join(cols) + " | seconds |")
    print("|---" * (len(cols) + 2) + "|")
    for name, r in rows.items():
        r["mse/bp"] = r["mse"] / base
        cells = " | ".join(f"{r[c]:.4g}" for c in cols)
        print(f"| {name} | {cells} | {timing.get(name, float('nan')):.2f} |")


if __name__ == "__main__":
    main()

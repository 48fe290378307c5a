"""Downscaling throughput: output frames per second at 400 x 400 output, against trilinear.

The input is the bundled real sample, coarsened to 2 km / 10 min (200 x 200 cells,
12 frames); every model downscales it with factor 2 and time_factor 2 through
``da.downscale`` (23 output frames of 400 x 400).

Run::

    python benchmarks/downscale_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import xarray as xr

import xnowcast


def _coarse_input() -> xr.DataArray:
    sample = xnowcast.open_dataset("sample")["precipitation"]
    tiled = np.tile(sample.values, (1, 2, 2))[:, :400, :400]  # 400 x 400 fine, real structure
    fine = xr.DataArray(
        tiled,
        dims=("time", "y", "x"),
        coords={
            "time": sample.time.values,
            "y": np.arange(400) * 1000.0,
            "x": np.arange(400) * 1000.0,
        },
        attrs=sample.attrs,
        name="precipitation",
    )
    coarse = fine.coarsen(y=2, x=2).mean().isel(time=slice(None, None, 2))
    coarse.attrs = sample.attrs
    return coarse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["trilinear", "flow", "unet", "unet3d", "zsm", "fczsm"]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    coarse = _coarse_input()
    rows = []
    for model in args.models:

        def run(model: str = model) -> xr.DataArray:
            return coarse.downscale(
                factor=2, time_factor=2, model=model, progress=False, device="cpu"
            )

        out = run()  # warm-up: model built and weights loaded once
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rows.append((model, out.sizes["time"], seconds, out.sizes["time"] / seconds))
    base = rows[0][3]
    print(
        f"downscale 200x200 x {coarse.sizes['time']} frames -> 400x400 x {rows[0][1]} frames, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print(f"{'model':>10} {'seconds':>8} {'frames/s':>9} {'vs ' + rows[0][0]:>13}")
    for model, _, seconds, fps in rows:
        print(f"{model:>10} {seconds:8.2f} {fps:9.1f} {fps / base:13.3f}")


if __name__ == "__main__":
    main()

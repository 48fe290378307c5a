"""Overhead of ``ds.nowcast.predict`` against the bare model forward on the same tensors.

The end-to-end call checks the input, converts units, builds windows, pads, runs
the model, masks NaN and rebuilds a CF DataArray; the bare forward is the model
call alone under ``torch.inference_mode``.  Both use the same model object (built
once), the same input frames and the same thread count.

Run::

    python benchmarks/accessor_overhead.py                     # 256 x 256 and full frame
    python benchmarks/accessor_overhead.py --model dgmr --config paper --sizes 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import xarray as xr

import xnowcast
from xnowcast.registry import resolve_model


def _field(size_y: int, size_x: int) -> xr.DataArray:
    """The bundled real sample, tiled up to the requested size (real rain structure)."""
    sample = xnowcast.open_dataset("sample")["precipitation"].isel(time=slice(0, 8))
    reps = (1, -(-size_y // sample.sizes["y"]), -(-size_x // sample.sizes["x"]))
    values = np.tile(sample.values, reps)[:, :size_y, :size_x]
    y = np.arange(size_y) * 1000.0
    x = np.arange(size_x) * 1000.0
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={"time": sample.time.values, "y": y, "x": x},
        attrs=sample.attrs,
        name="precipitation",
    )


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (model build, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dgmr")
    parser.add_argument("--config", default=None, help="config (default: the shipped weights')")
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--sizes", nargs="+", default=["256", "1536x1280"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = "default" if args.config is None else None
    request = resolve_model(args.model, config=args.config, weights=weights, device="cpu")
    model = request.load()
    frames = int(model.input_frames)
    rows = []
    for size in args.sizes:
        ny, nx = (int(v) for v in size.split("x")) if "x" in size else (int(size), int(size))
        field = _field(ny, nx)
        window = torch.from_numpy(field.values[-frames:].astype(np.float32))[None, :, None]

        def bare(window: torch.Tensor = window) -> None:
            with torch.inference_mode():
                generator = torch.Generator().manual_seed(0)
                model(window, args.steps, generator=generator)

        def accessor(field: xr.DataArray = field) -> None:
            field.nowcast.predict(
                model=args.model,
                steps=args.steps,
                seed=0,
                progress=False,
                weights=weights,
                config=args.config,
                device="cpu",
            )

        with xnowcast.set_options(tile_size=max(ny, nx)):
            t_bare = _median_seconds(bare, args.repeats)
            t_acc = _median_seconds(accessor, args.repeats)
        rows.append((f"{ny} x {nx}", t_bare, t_acc, 100 * (t_acc / t_bare - 1)))
    print(
        f"model {args.model} (config {model.config.get('name', args.config) if hasattr(model, 'config') else args.config}), "
        f"{args.steps} steps, {args.threads} threads, median of {args.repeats}"
    )
    print(f"{'domain':>12} {'bare forward s':>15} {'accessor s':>11} {'overhead %':>11}")
    for name, t_bare, t_acc, pct in rows:
        print(f"{name:>12} {t_bare:15.3f} {t_acc:11.3f} {pct:11.1f}")


if __name__ == "__main__":
    main()

"""Block means across tile seams: do tiled consistent downscalers keep them?

``flow``, ``srgan`` and ``zsm`` give outputs whose ``factor x factor`` block
means equal the input (at input times).  A domain larger than ``tile_size`` is
cut into overlapping tiles whose outputs are blended; this script measures how
far the blended output's block means are from the input, and how far the tiled
output is from the untiled one, on real radar (a 256 x 256 km crop of MeteoSwiss
2015-05-15, rows 352-607 and columns 448-703; ``factor x factor`` block means of
every other frame as input).

Columns: the largest block-mean error relative to the block's value (blocks
with >= 0.1 mm/h) and the largest absolute one in mm/h, over the frames at
input times; the largest |tiled - untiled| in mm/h over all output frames.

Usage::

    python benchmarks/tile_seams.py --data-root ../shared/data [--tile 64 --overlap 16]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import xnowcast
from xnowcast.training.pairs import block_mean, load_rain_rate

#: (model, factor, time_factor): the consistent downscalers and the refinement they do.
MODELS = (("flow", 2, 2), ("srgan", 4, 1), ("zsm", 2, 2))


def coarse_input(data_root: Path, factor: int, frames: int = 5, size: int = 256) -> xr.DataArray:
    """``frames`` input frames (every other 5-min frame), ``factor x factor`` block means."""
    da = load_rain_rate(str(data_root / "radar/mch/20150515/*")).transpose("time", "y", "x")
    fine = da.isel(time=slice(0, 2 * frames - 1, 2), y=slice(352, 352 + size))
    fine = fine.isel(x=slice(448, 448 + size))
    coarse = fine.coarsen(y=factor, x=factor).mean()
    return coarse.copy(data=block_mean(np.asarray(fine.values), factor))


def seam_errors(name: str, factor: int, time_factor: int, coarse: xr.DataArray, tile: int,
                overlap: int) -> dict[str, float]:  # fmt: skip
    """Block-mean errors of the tiled output, and its distance to the untiled output."""
    kwargs = {"model": name, "factor": factor, "time_factor": time_factor, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = coarse.downscale(**kwargs).values
        with xnowcast.set_options(tile_size=tile, tile_overlap=overlap):
            tiled = coarse.downscale(**kwargs).values
    at_inputs = tiled[::time_factor]
    means = block_mean(at_inputs, factor)
    truth = np.asarray(coarse.values)
    wet = np.isfinite(truth) & (truth >= 0.1)
    return {
        "rel": float(np.nanmax(np.abs(means - truth)[wet] / truth[wet])),
        "abs": float(np.nanmax(np.abs(means - truth))),
        "vs_untiled": float(np.nanmax(np.abs(tiled - whole))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", type=Path)
    parser.add_argument("--tile", type=int, default=64, help="tile_size (fine pixels)")
    parser.add_argument("--overlap", type=int, default=16, help="tile_overlap (fine pixels)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"tile_size {args.tile}, tile_overlap {args.overlap} (fine pixels); 256 km crop\n"
        "| model | factor x time | coarse grid | max rel. block-mean error | "
        "max abs. (mm/h) | max abs tiled - untiled (mm/h) |\n|---|---|---|---|---|---|"
    )
    for name, factor, time_factor in MODELS:
        coarse = coarse_input(args.data_root, factor)
        found = seam_errors(name, factor, time_factor, coarse, args.tile, args.overlap)
        print(
            f"| {name} | {factor} x {time_factor} | {coarse.sizes['y']} x {coarse.sizes['x']} | "
            f"{found['rel']:.2e} | {found['abs']:.2e} | {found['vs_untiled']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

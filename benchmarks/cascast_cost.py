"""Sampling cost of ``cascast`` per member against extrapolation, through the public API.

On a 256 x 256 km crop of the real RMI sample packaged with xnowcast, 18 x 5-min
lead times: seconds per forecast of ``extrapolation`` (the deterministic stage) and
seconds per member of ``cascast`` (``small`` config: deterministic stage, encoding,
``sampling_steps`` DDIM steps of the CasFormer denoiser, decoding) with 1 and
``--members`` members, for several numbers of DDIM steps and guidance 1 (one
denoiser pass per step) or 2 (two).  The cost does not depend on the weights'
values, so random ``small`` weights are used when ``--weights`` is not given.
Best of ``--repeat`` runs; ratios to extrapolation measured in the same run.

Usage::

    python benchmarks/cascast_cost.py [--threads 2] [--members 4] [--weights FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("XNOWCAST_SRC", str(REPO)))

import torch  # noqa: E402

import xnowcast  # noqa: E402
from xnowcast.models.cascast import build_cascast  # noqa: E402
from xnowcast.weights import save_weights  # noqa: E402


def best_of(repeat: int, call) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--sampling-steps", type=int, nargs="+", default=[20, 10])
    p.add_argument("--weights", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    da = xnowcast.open_dataset("sample").precipitation
    y0 = max((da.sizes["y"] - a.size) // 2, 0)
    x0 = max((da.sizes["x"] - a.size) // 2, 0)
    crop = da.isel(y=slice(y0, y0 + a.size), x=slice(x0, x0 + a.size)).load()
    weights = a.weights
    if weights is None:
        torch.manual_seed(0)
        model = build_cascast("small")
        weights = Path(tempfile.mkdtemp()) / "cascast-small-random.safetensors"
        save_weights(model.state_dict(), weights, {"model": "cascast", "config": model.config})
    kwargs = dict(steps=18, progress=False, device="cpu")
    ext = best_of(a.repeat, lambda: crop.nowcast.predict(model="extrapolation", **kwargs))
    print(f"cascast sampling cost, {crop.sizes['y']} x {crop.sizes['x']} km, 18 lead times, "
          f"{a.threads} threads, torch {torch.__version__}, best of {a.repeat}\n")  # fmt: skip
    print("| model | DDIM steps | guidance | members | s per member | x extrapolation |")
    print("|---|---|---|---|---|---|")
    print(f"| extrapolation | - | - | 1 | {ext:.2f} | 1.0 |")
    for steps in a.sampling_steps:
        for guidance in (1.0, 2.0):
            config = {**build_cascast("small").config, "sampling_steps": steps,
                      "guidance": guidance}  # fmt: skip
            for members in (1, a.members):
                seconds = best_of(
                    a.repeat,
                    lambda m=members, c=config: crop.nowcast.predict(
                        model="cascast", weights=weights, config=c, members=m, seed=0, **kwargs
                    ),
                )
                per = seconds / members
                print(f"| cascast | {steps} | {guidance:g} | {members} | {per:.2f} | "
                      f"{per / ext:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()

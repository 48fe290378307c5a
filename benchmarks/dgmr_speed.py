"""DGMR generator inference speed and peak memory on CPU (issue 8, items 1-2).

Prints a table: the ``paper`` config (random weights: speed does not depend on
them), 18 lead times, per (size, batch, precision, path): the median seconds
per call, the seconds per forecast and the peak resident memory of a fresh
process.  Every case runs in its own subprocess so that its peak RSS is its
own.

Paths
    ``xnowcast``: the shipped execution (lead times batched in chunks, the
    ConvGRU input half precomputed, channels-last, spectral norm without power
    iteration in eval).
    ``stepwise``: the same weights run one lead time at a time in NCHW
    layout, the execution order of the public PyTorch port (an in-run baseline;
    the port itself measured 3.7 s and 1.0 GB here at 256 x 256, batch 1,
    2 threads).

Usage::

    python benchmarks/dgmr_speed.py                       # 256 x 256, batch 1 and 8
    python benchmarks/dgmr_speed.py --full-frame          # also 1536 x 1280, 1 member
    python benchmarks/dgmr_speed.py --precision fp32 bf16 --threads 2

The machine is shared: the load average is printed with each row; only compare
rows of the same run.  ``OMP_WAIT_POLICY`` is passed on as set (``PASSIVE``
keeps waiting OpenMP threads from spinning, which helps on a loaded machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

REFERENCE = {
    "seconds": 3.7,
    "peak_gb": 1.0,
    "what": "public PyTorch port, 256x256, batch 1, 2 threads",
}


def _child(args: argparse.Namespace) -> None:
    import resource
    import statistics

    import torch

    torch.set_num_threads(args.threads)
    from xnowcast.models.dgmr import build_generator

    torch.manual_seed(0)
    g = build_generator("paper").eval()
    time_chunk = None
    if args.path == "stepwise":
        g = g.to(memory_format=torch.contiguous_format)
        time_chunk = 1
    h, w = args.size
    x = torch.rand(args.batch, 4, 1, h, w, generator=torch.Generator().manual_seed(0)) ** 3 * 20
    times = []
    load0 = os.getloadavg()[0]
    with (
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"),
    ):
        for i in range(args.repeats + 1):
            t = time.perf_counter()
            y = g(x, args.steps, generator=torch.Generator().manual_seed(i), time_chunk=time_chunk)
            dt = time.perf_counter() - t
            if i > 0 or args.repeats == 0:
                times.append(dt)
    assert y.shape == (args.batch, args.steps, 1, h, w) and torch.isfinite(y).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    med = statistics.median(times)
    print(
        json.dumps(
            {
                "median_s": med,
                "per_forecast_s": med / args.batch,
                "times": times,
                "peak_gb": peak / 1e9,
                "load": [load0, os.getloadavg()[0]],
            }
        )
    )


def _run_case(size, batch, precision, path, threads, repeats, steps) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--size", str(size[0]), str(size[1]),
        "--batch", str(batch),
        "--precision", precision,
        "--path", path,
        "--threads", str(threads),
        "--repeats", str(repeats),
        "--steps", str(steps),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, nargs=2, default=[256, 256])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    p.add_argument("--precision", default="fp32")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--path", default="xnowcast")
    p.add_argument("--paths", nargs="+", default=["xnowcast", "stepwise"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--full-frame", action="store_true", help="also 1536 x 1280, batch 1, once")
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    import torch

    print(
        f"DGMR generator, paper config, {args.steps} lead times, CPU {platform.processor() or ''}"
        f" {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}"
    )
    print(f"reference: {REFERENCE['seconds']} s, {REFERENCE['peak_gb']} GB ({REFERENCE['what']})")
    header = f"{'size':>11} {'batch':>5} {'prec':>5} {'path':>9} {'median s':>9} {'s/fcst':>7} {'peak GB':>8} {'load':>9}"
    print(header)
    print("-" * len(header))
    cases = [
        ((256, 256), b, prec, path, args.repeats)
        for b in args.batches
        for prec in args.precisions
        for path in args.paths
        if not (path == "stepwise" and (prec != "fp32" or b != 1))
    ]
    if args.full_frame:
        cases += [((1536, 1280), 1, prec, "xnowcast", 0) for prec in args.precisions]
    results = []
    for size, batch, prec, path, repeats in cases:
        r = _run_case(size, batch, prec, path, args.threads, repeats, args.steps)
        results.append({"size": size, "batch": batch, "precision": prec, "path": path, **r})
        name = f"{size[0]}x{size[1]}"
        if "error" in r:
            print(f"{name:>11} {batch:>5} {prec:>5} {path:>9}  error: {r['error']}")
            continue
        load = f"{r['load'][0]:.1f}/{r['load'][1]:.1f}"
        print(
            f"{name:>11} {batch:>5} {prec:>5} {path:>9} {r['median_s']:>9.2f} "
            f"{r['per_forecast_s']:>7.2f} {r['peak_gb']:>8.2f} {load:>9}",
            flush=True,
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A many-init-time hindcast on dask-backed input: 1 vs 2 workers of a LocalCluster.

The input is the bundled real sample, chunked in time; ``init_time`` covers every
time with enough history.  Each worker builds the model once (the registry caches
it per process); the table shows wall time, speed-up, and the peak memory of the
busiest worker.

Run::

    python benchmarks/dask_hindcast.py --model dgmr --steps 12
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import xnowcast


def _worker_rss(dask_worker) -> float:  # runs on a worker
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB


def _loaded_models(dask_worker) -> int:  # runs on a worker
    from xnowcast.registry import _load_cached

    return _load_cached.cache_info().currsize


def run(workers: int, model: str, steps: int, chunk: int) -> tuple[float, float, list[int], int]:
    from distributed import Client, LocalCluster

    ds = xnowcast.open_dataset("sample").chunk(time=4)
    obs = ds["precipitation"]
    inits = obs.time.values[5 : obs.sizes["time"]]
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("torch").set_num_threads(1))
        fc = obs.nowcast.predict(model=model, steps=steps, init_time=inits, seed=0, progress=False)
        fc = fc.chunk(init_time=chunk)
        start = time.perf_counter()
        values = fc.compute()
        seconds = time.perf_counter() - start
        rss = max(client.run(_worker_rss).values())
        loaded = list(client.run(_loaded_models).values())
    assert np.isfinite(values.values).any()
    return seconds, rss, loaded, len(inits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dgmr")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--chunk", type=int, default=2, help="init times per task")
    args = parser.parse_args()
    rows = [(n, *run(n, args.model, args.steps, args.chunk)) for n in (1, 2)]
    base = rows[0][1]
    print(
        f"hindcast: model {args.model}, {rows[0][4]} init times x {args.steps} steps, "
        "256 x 256 real sample, 1 thread per worker"
    )
    print(
        f"{'workers':>7} {'seconds':>8} {'speed-up':>9} {'peak RSS/worker MiB':>20} {'models built per worker':>24}"
    )
    for n, seconds, rss, loaded, _ in rows:
        print(f"{n:>7} {seconds:8.2f} {base / seconds:9.2f} {rss:20.0f} {loaded!s:>24}")


if __name__ == "__main__":
    main()

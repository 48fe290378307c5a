"""Scoring a hindcast against making it: ``verify`` seconds and memory on a real composite.

An ``extrapolation`` hindcast (N init times x 18 leads) of the MeteoSwiss
composite of 2015-05-15 (640 x 710, 1 km) is made, then scored with
``verify(metrics=["csi", "hss", "fss", "mae"], thresholds=[1, 4, 8])`` and with
each metric alone.  The table gives the seconds, the ratio to the forecast
seconds measured in the same run (forecast and verify alternate when
``--repeats`` > 1; the medians are shown), and the peak memory above the
process's memory before each step.  Then the same on a 2-worker
``dask.distributed`` LocalCluster (lazy input, lazy forecast, lazy scores),
and a long lazy hindcast (``--long-inits``, default 100 init times: the 6
forecasts repeated on later days) scored in a fresh process with 2 threads,
whose peak memory is reported against the size of the forecast it streams.

Run::

    python benchmarks/verify_hindcast.py --data /path/to/shared/data
    python benchmarks/verify_hindcast.py --reference   # also time the xskillscore/scores path
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import xarray as xr

METRICS = ["csi", "hss", "fss", "mae"]
THRESHOLDS = [1, 4, 8]
EVENT = Path("radar") / "mch" / "20150515"


class PeakMemory:
    """Peak resident memory (MiB) of this process above its level at entry, sampled."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0.0

    @staticmethod
    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self) -> PeakMemory:
        self.base = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss() - self.base)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self.base)


def timed(call):
    with PeakMemory() as memory:
        start = time.perf_counter()
        value = call()
        seconds = time.perf_counter() - start
    return value, seconds, memory.peak


def open_event(data: Path) -> xr.Dataset:
    from xnowcast.io import open_radar

    return open_radar(sorted(str(p) for p in (data / EVENT).glob("*.gif")))


def forecast(obs: xr.DataArray, inits: np.ndarray) -> xr.DataArray:
    fc = obs.nowcast.predict(model="extrapolation", steps=18, init_time=inits, progress=False)
    return fc.compute() if fc.chunks is not None else fc


def reference_scores(fc: xr.DataArray, ds: xr.Dataset) -> None:
    """CSI and HSS through ``xskillscore.Contingency`` per threshold (as verify did), and MAE."""
    from xnowcast import metrics as m
    from xnowcast.verification import align_observations

    obs = align_observations(fc, ds)
    dims = ["init_time", "y", "x"]
    for t in THRESHOLDS:
        m.categorical_scores(["csi", "hss"], fc, obs, t, dims)
    m.mae(fc, obs, dims)


def eager_table(data: Path, inits: int, repeats: int, reference: bool) -> list[tuple]:
    import torch

    from xnowcast.verification import verify

    torch.set_num_threads(2)
    ds = open_event(data)
    obs = ds["precipitation"]
    times = obs.time.values[4 : 4 + inits]
    forecast(obs, times[:1])  # warm-up: model build, first-call costs
    verify(forecast(obs, times[:1]), ds, metrics=METRICS, thresholds=THRESHOLDS)
    cases = {"all four": METRICS, **{name: [name] for name in METRICS}}
    runs: dict[str, list[tuple[float, float]]] = {"forecast": []}
    for _ in range(repeats):
        fc, seconds, peak = timed(lambda: forecast(obs, times))
        runs["forecast"].append((seconds, peak))
        for label, metrics in cases.items():
            _, seconds, peak = timed(
                lambda fc=fc, metrics=metrics: verify(
                    fc, ds, metrics=metrics, thresholds=THRESHOLDS
                )
            )
            runs.setdefault(label, []).append((seconds, peak))
        if reference:
            _, seconds, peak = timed(lambda fc=fc: reference_scores(fc, ds))
            runs.setdefault("reference: xskillscore csi+hss, mae", []).append((seconds, peak))
    return [
        (label, statistics.median(s for s, _ in r), max(p for _, p in r))
        for label, r in runs.items()
    ]


def peak_rss() -> float:
    """This process's peak resident memory in MiB (``VmHWM``).

    Not ``ru_maxrss``: Linux carries it across ``exec``, so a process started
    by a large parent would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        line = next(r for r in f if r.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024.0


def _worker_rss(dask_worker) -> float:  # runs on a worker
    return peak_rss()


def cluster_table(data: Path, inits: int, folder: Path) -> list[tuple]:
    from distributed import Client, LocalCluster

    from xnowcast.verification import verify

    path = folder / "event.nc"
    open_event(data).to_netcdf(path)
    ds = xr.open_dataset(path, chunks={"time": 8})
    obs = ds["precipitation"]
    times = obs.time.values[4 : 4 + inits]
    rows = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.run(lambda: __import__("torch").set_num_threads(1))
        lazy = obs.nowcast.predict(
            model="extrapolation", steps=18, init_time=times, progress=False
        ).chunk(init_time=1)
        start = time.perf_counter()
        fc = lazy.persist()
        fc.data.sum().compute()  # wait for the forecasts
        rows.append(("forecast (lazy, persisted)", time.perf_counter() - start))
        start = time.perf_counter()
        verify(fc, ds, metrics=METRICS, thresholds=THRESHOLDS).compute()
        rows.append(("verify, all four (lazy)", time.perf_counter() - start))
        rss = max(client.run(_worker_rss).values())
    return [(label, seconds, rss) for label, seconds in rows]


def _load(path: Path, index: dict, copy: int) -> np.ndarray:  # ``copy`` makes each key unique
    from xarray.backends.locks import HDF5_LOCK  # HDF5 reads are not thread-safe

    with HDF5_LOCK, xr.open_dataarray(path, lock=False) as da:
        return da.isel(index).values


def _streamed(path: Path, dim: str, copies: int, chunk: int, shift: np.timedelta64) -> xr.DataArray:
    """``copies`` copies of a netCDF field along ``dim`` (shifted by ``shift`` each), read
    lazily chunk by chunk, each chunk a task of its own (as from a long archive)."""
    import dask
    import dask.array as dsa

    with xr.open_dataarray(path) as template:
        n = template.sizes[dim]
        rest = template.shape[1:]
        blocks = []
        for k in range(copies):
            for start in range(0, n, chunk):
                index = {dim: slice(start, min(start + chunk, n))}
                shape = (min(chunk, n - start), *rest)
                load = dask.delayed(_load, pure=True)(path, index, k)
                blocks.append(dsa.from_delayed(load, shape, template.dtype))
        coords = {c: template[c] for c in template.coords if dim not in template[c].dims}
        times = np.concatenate([template[dim].values + k * shift for k in range(copies)])
        return xr.DataArray(
            dsa.concatenate(blocks), dims=template.dims, coords={**coords, dim: times},
            attrs=template.attrs, name=template.name,
        )  # fmt: skip


def long_hindcast(data: Path, inits: int, folder: Path) -> None:
    """Child process: score ``inits`` init times lazily, print seconds and peak RSS."""
    import dask

    from xnowcast.verification import verify

    obs_file = folder / "observations.nc"
    open_event(data)["precipitation"].to_netcdf(obs_file)
    with xr.open_dataarray(folder / "forecast.nc") as fc:
        copies = -(-inits // fc.sizes["init_time"])
    day = np.timedelta64(1, "D")
    long_fc = _streamed(folder / "forecast.nc", "init_time", copies, 1, day)
    long_fc = long_fc.isel(init_time=slice(0, inits))
    long_fc = long_fc.assign_coords(valid_time=long_fc.init_time + long_fc.lead_time)
    long_obs = _streamed(obs_file, "time", copies, 8, day)
    size = long_fc.size * long_fc.dtype.itemsize / 2**30
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        scores = verify(long_fc, long_obs, metrics=METRICS, thresholds=THRESHOLDS).compute()
    seconds = time.perf_counter() - start
    assert np.isfinite(scores.csi.values).all()
    peak = peak_rss() / 1024.0
    print(f"RESULT {inits} {size:.2f} {seconds:.1f} {peak:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("XNOWCAST_TEST_DATA", "../shared/data"))
    )
    parser.add_argument("--inits", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--long-inits", type=int, default=100)
    parser.add_argument("--reference", action="store_true", help="time the xskillscore path too")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        long_hindcast(args.data, args.long_inits, args.child)
        return

    rows = eager_table(args.data, args.inits, args.repeats, args.reference)
    base = rows[0][1]
    print(f"\nverify on a real composite: MeteoSwiss 2015-05-15, 640 x 710, extrapolation, "
          f"{args.inits} init times x 18 leads, thresholds {THRESHOLDS} mm/h, FSS window 5; "
          f"2 threads; median of {args.repeats} run(s)")  # fmt: skip
    print(f"{'eager (numpy)':<42} {'seconds':>8} {'/ forecast':>11} {'peak MiB':>9}")
    for label, seconds, peak in rows:
        print(f"{label:<42} {seconds:8.2f} {seconds / base:11.2f} {peak:9.0f}")

    if not args.skip_cluster:
        with tempfile.TemporaryDirectory() as folder:
            rows = cluster_table(args.data, args.inits, Path(folder))
        base = rows[0][1]
        print(f"\n{'2-worker LocalCluster (1 thread each)':<42} {'seconds':>8} {'/ forecast':>11} "
              f"{'peak RSS/worker MiB':>20}")  # fmt: skip
        for label, seconds, rss in rows:
            print(f"{label:<42} {seconds:8.2f} {seconds / base:11.2f} {rss:20.0f}")

    if args.long_inits:
        from xnowcast.verification import verify  # noqa: F401  (fail early)

        with tempfile.TemporaryDirectory() as folder:
            ds = open_event(args.data)
            obs = ds["precipitation"]
            fc = forecast(obs, obs.time.values[4 : 4 + args.inits])
            fc.to_netcdf(Path(folder) / "forecast.nc")
            command = [sys.executable, __file__, "--data", str(args.data), "--child", folder,
                       "--long-inits", str(args.long_inits)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            line = [r for r in done.stdout.splitlines() if r.startswith("RESULT")][-1]
            inits, size, seconds, peak = line.split()[1:]
        print(f"\nlazy hindcast of {inits} init times x 18 leads ({size} GiB of forecast, "
              f"read from netCDF in chunks of 1 init time), threaded scheduler, 2 threads:")  # fmt: skip
        print(f"verify seconds {seconds}, peak RSS of the scoring process {peak} GiB")


if __name__ == "__main__":
    main()

"""Per-step cost of the Lightning trainer against the earlier single-process supervised loop.

Both train ZSM (``flow-tiny``, factor 2, time factor 2) on real radar
(MeteoSwiss 2015-05-15, 40 frames of 640 x 710 km) with batch 2 and 32 x 32 km
fine crops, on one CPU thread.  The earlier loop (:func:`xnowcast.training.supervised.train`)
trains on pairs cut and held in memory beforehand; the Lightning path
(:func:`xnowcast.train`) reads each window lazily from a zarr store.  The
marginal cost of a step is ``(T(N) - T(1)) / (N - 1)`` for each, so start-up
(Trainer set-up and the sampler's pass over the data) stays out of it; ``T(1)``,
the time of a one-step run, shows that start-up (for the earlier loop without
the cutting of the pairs, done before the clock starts).

``--model atmodist`` compares the AtmoDist encoder's own loop
(:func:`xnowcast.training.atmodist.train_steps` on patch banks cut beforehand,
in memory) with ``xnowcast train atmodist`` (Lightning, 13-frame 48-px windows
read lazily), both the ``small`` config with 32 lag pairs a step (8 windows x 4
pairs on the Lightning path).

Run::

    OMP_NUM_THREADS=1 python benchmarks/train_lightning_overhead.py --data-root ../shared/data
    OMP_NUM_THREADS=1 python benchmarks/train_lightning_overhead.py --model atmodist --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _legacy(da, steps: int) -> float:
    from xnowcast.registry import build_model
    from xnowcast.training.pairs import make_pairs
    from xnowcast.training.supervised import TrainConfig, train

    pairs = make_pairs(da, window=4, factor=2, time_factor=2, crop=16, max_pairs=200)
    torch.manual_seed(0)
    model = build_model("zsm", "flow-tiny", task="downscale", factor=2, time_factor=2)
    cfg = TrainConfig(steps=steps, batch_size=2, val_every=0, checkpoint_every=0, log_every=0)
    start = time.perf_counter()
    train(model, pairs, None, cfg, None, progress=False)
    return time.perf_counter() - start


def _legacy_atmodist(da, steps: int) -> float:
    from xnowcast.models.atmodist import build_lag_classifier
    from xnowcast.training.atmodist import patch_bank, train_steps

    torch.manual_seed(0)
    net = build_lag_classifier("small")
    banks = [torch.from_numpy(patch_bank(da.values, int(net.config["patch"])))]
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.perf_counter()
    train_steps(net, optimiser, banks, torch.Generator().manual_seed(0), steps, batch_size=32)
    return time.perf_counter() - start


#: The Lightning run of each model: config, batch size and crop (None: the recipe's).
LIGHTNING_RUNS = {"zsm": ("flow-tiny", 2, 32), "atmodist": ("small", 8, None)}


def _lightning(store: Path, out: Path, steps: int, model: str = "zsm") -> float:
    import xnowcast

    config, batch_size, crop = LIGHTNING_RUNS[model]
    start = time.perf_counter()
    xnowcast.train(
        model,
        data=str(store),
        out=out,
        config=config,
        max_steps=steps,
        batch_size=batch_size,
        crop=crop,
        accelerator="cpu",
        progress=False,
        checkpoint_every=10_000,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model", choices=sorted(LIGHTNING_RUNS), default="zsm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from xnowcast.training.pairs import load_rain_rate

    da = load_rain_rate(str(Path(args.data_root) / "radar/mch/20150515/*"))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "mch.zarr"
        da.to_dataset(name="precipitation").chunk({"time": 1}).to_zarr(store, consolidated=False)
        rows = []
        legacy = (
            ("atmodist.train_steps (banks in memory)", lambda n: _legacy_atmodist(da, n))
            if args.model == "atmodist"
            else ("supervised.train (pairs in memory)", lambda n: _legacy(da, n))
        )
        for name, run in (
            legacy,
            (
                "xnowcast.train (Lightning, lazy zarr)",
                lambda n, t=tmp: _lightning(store, Path(t) / f"r{n}", n, args.model),
            ),
        ):
            one, many = run(1), run(args.steps)
            rows.append((name, one, (many - one) / (args.steps - 1)))
    base = rows[0][2]
    print(f"{'trainer':<40} {'T(1) s':>8} {'s/step':>8} {'ratio':>6}")
    for name, one, per_step in rows:
        print(f"{name:<40} {one:>8.2f} {per_step:>8.3f} {per_step / base:>6.2f}")


if __name__ == "__main__":
    main()

"""Where DGMR's rain volume drifts with lead time, and where the training crops' rain comes from.

Two tables (issue 14):

1. **Forecast**: on the held-out RMI event (central ``--size`` km, ``--inits``
   init times, ``--members`` members), per lead time, the rain volume of the
   observation, of DGMR and of DGMR over the pixels where the extrapolation is
   wet (>= 0.1 mm/h), each over the extrapolation's volume, and the rain DGMR
   puts where the extrapolation is dry (over the extrapolation's volume).
2. **Training crops** (``--crops``): importance-sampled crops of the training
   events as DGMR's training draws them; per lead time, the share of the crop
   whose extrapolation trajectory leaves the crop (the rain there comes from
   outside: :meth:`xnowcast.models.dgmr.Generator.extrapolate_reach`), the share
   of the observed rain that lies there, and observed over extrapolated rain.

Usage::

    python benchmarks/dgmr_volume_drift.py --data-root ../shared/data [--weights FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RMI = "radar/rmi/radqpe/20210704"
SHOWN = (2, 5, 8, 11, 14, 17)  # 15, 30, ..., 90 min


def forecast_table(root: Path, weights: str, size: int, n_inits: int, members: int) -> str:
    import torch

    from xnowcast.io import open_radar
    from xnowcast.registry import load_model

    g = load_model("dgmr", weights=weights).eval()
    da = open_radar(root / RMI)["precipitation"].astype(np.float32)
    ny, nx = da.sizes["y"], da.sizes["x"]
    y0, x0 = (ny - size) // 2, (nx - size) // 2
    v = da.isel(y=slice(y0, y0 + size), x=slice(x0, x0 + size)).values
    idx = np.unique(np.linspace(3, v.shape[0] - 19, n_inits).round().astype(int))
    sums = np.zeros((18, 5))
    for i in idx:
        x = torch.from_numpy(np.nan_to_num(v[i - 3 : i + 1]))[None, :, None]
        obs = v[i + 1 : i + 19]
        known = np.isfinite(obs) & np.isfinite(v[i])[None]
        gen = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            base = g.extrapolate(x, 18)
            fc = torch.cat([g(x, 18, generator=gen, base=base) for _ in range(members)])
        b, f = base[0, :, 0].numpy(), fc[:, :, 0].numpy()
        for t in range(18):
            kn = known[t]
            wet = kn & (b[t] >= 0.1)
            dry = kn & (b[t] < 0.1)
            sums[t] += [
                obs[t][kn].sum(),
                b[t][kn].sum(),
                f[:, t][:, kn].sum() / members,
                f[:, t][:, wet].sum() / members / max(b[t][wet].sum(), 1e-9),
                f[:, t][:, dry].sum() / members,
            ]
    rows = [
        f"RMI 2021-07-04 (held out), {len(idx)} init times, {size} km, {members} members",
        "",
        "| lead (min) | observed / extrap. | dgmr / extrap. | dgmr / extrap. where extrap. "
        "wet | dgmr rain where extrap. dry / extrap. |",
        "|---|---|---|---|---|",
    ]
    for t in SHOWN:
        s = sums[t]
        rows.append(
            f"| {(t + 1) * 5} | {s[0] / s[1]:.2f} | {s[2] / s[1]:.2f} | "
            f"{s[3] / len(idx):.2f} | {s[4] / s[1]:.2f} |"
        )
    return "\n".join(rows)


def crops_table(root: Path, crop: int, batches: int) -> str:
    from xnowcast.io import open_radar
    from xnowcast.models.dgmr import build_generator
    from xnowcast.training.data import SequenceCropSampler
    from xnowcast.training.gan_cli import EVENTS

    train = {k: open_radar(root / p) for k, p in EVENTS.items() if k != "rmi-20210704"}
    sampler = SequenceCropSampler(
        train, input_frames=4, lead_frames=18, crop=crop, stride=8, max_rate=128.0, seed=3
    )
    g = build_generator("small")
    sums = np.zeros((18, 4))
    for _ in range(batches):
        b = sampler.sample(4)
        base, reach = g.extrapolate_reach(b.inputs, 18)
        reach, base = reach[:, :, 0].numpy(), base[:, :, 0].numpy()
        o = np.where(b.valid[:, :18, 0].numpy(), b.targets[:, :18, 0].numpy(), 0.0)
        for t in range(18):
            outside = ~reach[:, t]
            sums[t] += [o[:, t].sum(), o[:, t][outside].sum(), outside.mean(), base[:, t].sum()]
    rows = [
        f"Training crops of {crop} px ({4 * batches} importance-sampled sequences)",
        "",
        "| lead (min) | crop share from outside | observed rain from outside | "
        "observed / extrap. |",
        "|---|---|---|---|",
    ]
    for t in SHOWN:
        s = sums[t]
        rows.append(
            f"| {(t + 1) * 5} | {s[2] / batches:.2f} | {s[1] / s[0]:.2f} | {s[0] / s[3]:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--weights", default="default", help="DGMR weights (file or name)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--inits", type=int, default=4)
    p.add_argument("--members", type=int, default=6)
    p.add_argument("--crops", nargs="*", type=int, default=[128, 256])
    p.add_argument("--batches", type=int, default=6)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(a.data_root)
    print(f"(DGMR weights: {a.weights})\n")
    print(forecast_table(root, a.weights, a.size, a.inits, a.members))
    for crop in a.crops:
        print()
        print(crops_table(root, crop, a.batches))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

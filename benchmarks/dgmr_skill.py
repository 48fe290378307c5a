"""DGMR skill on the held-out RMI event against persistence and optical-flow extrapolation.

For init times spread over the RMI 2021-07-04 event (held out of DGMR's
training), forecasts of 18 x 5 min from the 4 preceding frames on the central
672 x 672 km of the 700 x 700 km composite, scored against the radar at
30, 60 and 90 min:

* CSI at 1, 4 and 8 mm/h and FSS at 1 mm/h (9 km window), pooled over init
  times and pixels, for persistence, extrapolation, the DGMR ensemble mean and
  the DGMR members (mean of the per-member scores);
* CRPS of the DGMR ensemble (the MAE for the deterministic forecasts);
* the radially averaged power spectrum at 60 min relative to the radar's, per
  wavelength (DGMR should keep small-scale power that advection smooths away).

Scores use the pixels where the radar and every forecast are known.

Usage::

    python benchmarks/dgmr_skill.py --data-root ../shared/data [--members 8] [--inits 6]
    python benchmarks/dgmr_skill.py --data-root ../shared/data --weights path/to/dgmr.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

LEADS = (6, 12, 18)  # 30, 60, 90 min
THRESHOLDS = (1.0, 4.0, 8.0)
SIZE = 672


def load_generator(weights: str | None):
    """The DGMR generator: registered shipped weights, or a safetensors file."""
    import torch  # noqa: F401

    from xnowcast.models.dgmr import build_generator
    from xnowcast.weights import load_state_dict

    if weights is None:
        try:
            from xnowcast.models import load_model

            return load_model("dgmr"), "registry default"
        except Exception as err:  # not registered yet
            path = Path(__file__).resolve().parents[1] / "xnowcast/weights/dgmr-small.safetensors"
            print(f"(dgmr not in the registry: {err}; using {path})")
            weights = str(path)
    state, meta = load_state_dict(weights)
    g = build_generator(meta["config"])
    g.load_state_dict(state)
    return g.eval(), weights


def main(argv: list[str] | None = None) -> int:
    import torch

    from xnowcast.io import open_radar
    from xnowcast.metrics import crps, csi, fss, rapsd, rapsd_wavenumbers
    from xnowcast.models.extrapolation import build_extrapolation

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--weights", default=None)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--inits", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the scores to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    ds = open_radar(Path(a.data_root) / "radar/rmi/radqpe/20210704")
    da = ds["precipitation"]
    ny, nx = da.sizes["y"], da.sizes["x"]
    y0, x0 = (ny - SIZE) // 2, (nx - SIZE) // 2
    da = da.isel(y=slice(y0, y0 + SIZE), x=slice(x0, x0 + SIZE)).astype(np.float32)
    values = da.values  # (time, y, x), NaN outside the radars
    n_time = values.shape[0]
    starts = np.unique(np.linspace(0, n_time - 22, a.inits).round().astype(int))
    g, source = load_generator(a.weights)
    extrap = build_extrapolation("default")
    print(f"RMI 2021-07-04, {len(starts)} init times, {SIZE}x{SIZE} km, DGMR weights: {source}")

    fc = {"persistence": [], "extrapolation": [], "dgmr": []}
    obs = []
    t_dgmr = 0.0
    rng = torch.Generator().manual_seed(a.seed)
    for s in starts:
        inp = values[s : s + 4]
        frames = torch.from_numpy(np.nan_to_num(inp))[None, :, None]
        valid = torch.from_numpy(np.isfinite(inp))[None, :, None]
        obs.append(values[s + 4 : s + 22])
        fc["persistence"].append(np.broadcast_to(inp[-1], (18, SIZE, SIZE)))
        with torch.inference_mode():
            fc["extrapolation"].append(extrap(frames, 18, valid=valid)[0, :, 0].numpy())
            t = time.perf_counter()
            ens = g(frames.repeat(a.members, 1, 1, 1, 1), 18, generator=rng)[:, :, 0].numpy()
            t_dgmr += time.perf_counter() - t
        fc["dgmr"].append(ens)

    coords = {"init": starts, "lead": np.arange(1, 19) * 5}
    ob = xr.DataArray(np.stack(obs), dims=("init", "lead", "y", "x"), coords=coords)
    det = {
        k: xr.DataArray(np.stack(v), dims=("init", "lead", "y", "x"), coords=coords)
        for k, v in fc.items()
        if k != "dgmr"
    }
    ens = xr.DataArray(
        np.stack(fc["dgmr"]), dims=("init", "member", "lead", "y", "x"), coords=coords
    )
    known = ob.notnull() & det["extrapolation"].notnull()
    ob = ob.where(known)
    det = {k: v.where(known) for k, v in det.items()}
    ens = ens.where(known)
    det["dgmr mean"] = ens.mean("member")
    pooled = ["init", "y", "x"]

    rows = []
    for name in ("persistence", "extrapolation", "dgmr mean", "dgmr members"):
        row: dict = {"model": name}
        for lead in LEADS:
            m = lead * 5
            o = ob.sel(lead=m)
            if name == "dgmr members":
                f = ens.sel(lead=m)
                for thr in THRESHOLDS:
                    row[f"csi{thr:g}@{m}"] = float(csi(f, o, thr, dim=pooled).mean("member"))
                row[f"fss1@{m}"] = float(
                    fss(f, o, 1.0, 9, dim=["init"], padding="zeros").mean("member")
                )
                row[f"crps@{m}"] = float(crps(f, o, dim=pooled))
            else:
                f = det[name].sel(lead=m)
                for thr in THRESHOLDS:
                    row[f"csi{thr:g}@{m}"] = float(csi(f, o, thr, dim=pooled))
                row[f"fss1@{m}"] = float(fss(f, o, 1.0, 9, dim=["init"], padding="zeros"))
                row[f"crps@{m}"] = float(crps(f, o, dim=pooled))  # = MAE
        rows.append(row)

    # radially averaged power spectra at 60 min (NaN -> 0 identically in every field)
    def spectrum(arr: xr.DataArray) -> np.ndarray:
        v = np.nan_to_num(arr.transpose(..., "y", "x").values)
        return rapsd(v).reshape(-1, SIZE // 2).mean(axis=0)

    k = rapsd_wavenumbers((SIZE, SIZE))
    ref = spectrum(ob.sel(lead=60))
    spectra = {
        "persistence": spectrum(det["persistence"].sel(lead=60)),
        "extrapolation": spectrum(det["extrapolation"].sel(lead=60)),
        "dgmr mean": spectrum(det["dgmr mean"].sel(lead=60)),
        "dgmr members": spectrum(ens.sel(lead=60)),
    }
    wavelengths = [128, 64, 32, 16, 8, 4, 2]
    idx = [int(np.argmin(np.abs(k[1:] - 1.0 / w))) + 1 for w in wavelengths]

    cols = [f"csi{t:g}@{m * 5}" for m in LEADS for t in THRESHOLDS]
    print(f"\nDGMR inference: {t_dgmr / (len(starts) * a.members):.2f} s per member forecast")
    print("\nCSI (pooled over init times and pixels)")
    print(f"{'model':>14} " + " ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print(f"{r['model']:>14} " + " ".join(f"{r[c]:>10.3f}" for c in cols))
    cols2 = [f"fss1@{m * 5}" for m in LEADS] + [f"crps@{m * 5}" for m in LEADS]
    print("\nFSS at 1 mm/h (9 km), CRPS in mm/h (MAE for deterministic forecasts)")
    print(f"{'model':>14} " + " ".join(f"{c:>10}" for c in cols2))
    for r in rows:
        print(f"{r['model']:>14} " + " ".join(f"{r[c]:>10.3f}" for c in cols2))
    print("\nPower at 60 min relative to the radar's, by wavelength (km)")
    print(f"{'model':>14} " + " ".join(f"{w:>7}" for w in wavelengths))
    for name, sp in spectra.items():
        print(f"{name:>14} " + " ".join(f"{sp[i] / ref[i]:>7.3f}" for i in idx))
    if a.json:
        out = {
            "rows": rows,
            "psd_ratio_60min": {
                n: {str(w): float(sp[i] / ref[i]) for w, i in zip(wavelengths, idx, strict=True)}
                for n, sp in spectra.items()
            },
            "inits": starts.tolist(),
            "members": a.members,
            "weights": str(source),
        }
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

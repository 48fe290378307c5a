"""The main job: nowcast and downscale the bundled real radar sample.

``xnowcast demo`` (and ``bash ci/demo.sh``) runs it: on the 256 x 256 crop of
the RMI radar event of 4 July 2021 shipped with the package, it

1. nowcasts 90 minutes (18 x 5 min) from 4 observed frames with the headline
   model (DGMR with its shipped weights, an ensemble) and the baselines
   (persistence, extrapolation), and scores them against what was observed;
2. coarsens the observations to 2 km / 10 min, downscales them back to
   1 km / 5 min (the default downscale model, and trilinear) and scores that;
3. writes ``forecast.nc``, ``downscaled.nc`` and ``demo.png``, and prints a
   short score table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["pick_models", "run_demo"]

_INIT_INDEX = 5  # 6 frames of history before init; 18 lead times after it fit in 24 frames


def pick_models() -> tuple[str, str]:
    """The headline nowcast and downscale models that have shipped weights here."""
    from xnowcast.downscaling import AUTO_MODEL
    from xnowcast.registry import list_models, specs

    def shipped(task: str, name: str) -> bool:
        if name not in list_models(task):
            return False
        spec = next(s for s in specs(task) if s.name == name)
        return bool(spec.default_weights and spec.weights[spec.default_weights].path.is_file())

    nowcaster = "dgmr" if shipped("nowcast", "dgmr") else "extrapolation"
    weightless = next(s for s in specs("downscale") if s.name == AUTO_MODEL).default_weights is None
    downscaler = AUTO_MODEL if weightless or shipped("downscale", AUTO_MODEL) else "flow"
    return nowcaster, downscaler


def _score_table(rows: list[tuple[str, str, float]], header: tuple[str, str, str]) -> str:
    width = max(len(r[0]) for r in [*rows, header])
    lines = [f"{header[0]:<{width}}  {header[1]:>22}  {header[2]:>8}"]
    lines += [f"{name:<{width}}  {what:>22}  {value:8.3f}" for name, what, value in rows]
    return "\n".join(lines)


def run_demo(out_dir: Path, *, members: int = 4, progress: bool = True) -> dict[str, Any]:
    """Run the main job and write its outputs into ``out_dir``.

    Returns
    -------
    dict
        Paths written and the scores (for tests and notebooks).
    """
    import xnowcast
    from xnowcast.cf_output import to_cf_dataset
    from xnowcast.plot import plot_forecast_panel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    obs = xnowcast.open_dataset("sample")["precipitation"]
    init = obs.time.values[_INIT_INDEX]
    nowcaster, downscaler = pick_models()
    if nowcaster != "dgmr":
        print("note: no shipped DGMR weights found: the demo uses the extrapolation baseline")

    forecasts: dict[str, xr.DataArray] = {}
    for name in dict.fromkeys([nowcaster, "extrapolation", "persistence"]):
        stochastic = xnowcast.registry.get_spec(name, task="nowcast").stochastic
        forecasts[name] = obs.nowcast.predict(
            model=name,
            steps=18,
            members=members if stochastic else 1,
            init_time=init,
            seed=0,
            progress=progress,
        )
    rows: list[tuple[str, str, float]] = []
    for name, fc in forecasts.items():
        scores = fc.nowcast.verify(obs, metrics=["csi", "crps"], thresholds=[1.0, 4.0])
        scores = scores.sel(scale=1)
        for minutes in (30, 60, 90):
            lead = np.timedelta64(minutes, "m")
            csi = float(scores["csi"].sel(lead_time=lead, threshold=1.0))
            rows.append((name, f"CSI >=1 mm/h @ {minutes} min", csi))
        rows.append((name, "CRPS (mm/h), all leads", float(scores["crps"].mean())))

    forecast_path = out_dir / "forecast.nc"
    to_cf_dataset(forecasts[nowcaster], "precipitation").to_netcdf(forecast_path)

    coarse = obs.coarsen(y=2, x=2).mean().isel(time=slice(None, None, 2))
    coarse.attrs = obs.attrs
    downscaled: dict[str, xr.DataArray] = {}
    every = ["time", "y", "x"]  # one score over all frames (pooled over the known cells)
    for name in dict.fromkeys([downscaler, "trilinear"]):
        fine = coarse.downscale(factor=2, time_factor=2, model=name, progress=progress)
        downscaled[name] = fine
        # verify matches the fine fields to the observed radar frames by time and grid
        total = xnowcast.verify(fine, obs, metrics=["mse"], dim=every)
        inserted = xnowcast.verify(fine.isel(time=slice(1, None, 2)), obs, metrics="mse", dim=every)
        rows.append((name, "downscale MSE (mm/h)^2", float(total["mse"].sel(scale=1))))
        rows.append((name, "  inserted frames MSE", float(inserted["mse"].sel(scale=1))))
    downscaled_path = out_dir / "downscaled.nc"
    to_cf_dataset(downscaled[downscaler], "precipitation").to_netcdf(downscaled_path)

    picture = out_dir / "demo.png"
    fc = forecasts[nowcaster]
    fig = plot_forecast_panel(fc, obs, lead_times=[np.timedelta64(m, "m") for m in (30, 60, 90)])
    fig.suptitle(
        f"{nowcaster} nowcast from {np.datetime_as_string(init, unit='m')} UTC vs RMI radar"
    )
    fig.savefig(picture, dpi=110, bbox_inches="tight")

    print(_score_table(rows, ("model", "score", "value")))
    for path in (forecast_path, downscaled_path, picture):
        print(f"wrote {path}")
    return {
        "forecast": forecast_path,
        "downscaled": downscaled_path,
        "picture": picture,
        "scores": rows,
    }

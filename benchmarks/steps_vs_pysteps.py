"""STEPS in torch (xnowcast ``model="steps"``) against pysteps' STEPS, on real radar.

Both systems get the same input in the same run: the last three frames (rain
rate, mm/h, NaN outside radar range) of a square crop of each event, the same
motion field (xnowcast's optical flow, so that the comparison is of STEPS
itself), the same member count and lead times (18 x 5 min). pysteps runs with
its defaults (nonparametric noise, BPS motion perturbations, incremental mask,
CDF probability matching, 6 levels) on dB rain rate (threshold 0.1 mm/h, zero
value -15 dB), as in its STEPS example; xnowcast runs its default config.

Printed per event, pooled over the init times, on the pixels known to the
observation and to both forecasts:

* CRPS (mm/h) at 30/60/90 min, per pixel and average-pooled to 4 and 16 km,
  with :func:`xnowcast.verify`;
* spread/skill at 60 min: ensemble spread ``sqrt(mean variance * (M+1)/M)``
  over the RMSE of the ensemble mean (1 is calibrated);
* the rank histogram at 60 min (pixels where the observation or a member has
  rain, ties broken at random) summarised by its outer bins over their expected
  frequency (``low``, ``high``; their mean ``U``: 1 flat, > 1 a U, i.e.
  under-dispersed, < 1 a hump) and its flatness (largest / smallest bin); the
  summary prints ``|U - 1|`` of xnowcast minus pysteps' (> 0: more U or hump);
* power-spectrum ratio forecast / observation at 60 min in three wavelength
  bands (member average);
* seconds per 8-member forecast (wall clock, median over init times; xnowcast
  includes its motion estimate, pysteps gets the motion for free).

With ``--seeds N`` every event is run with the N seeds ``seed + 1000 i`` (init
``k`` of seed ``s`` uses ``s + k`` in both systems, so the seeds share no draws),
and a summary gives the CRPS ratio of the seed means with the range of the
per-seed ratios: the motion perturbation of a member is two Laplace draws, so a
forecast's CRPS at 90 min moves by 5-20 % from seed to seed.
``--common-motion-draws`` is a control run that removes that sampling difference
between the systems: xnowcast's members get the draws pysteps makes for the
same seed (everything else stays xnowcast's own).  ``--draws centred stratified``
scores xnowcast with each way of drawing its motion perturbations
(``motion_draws``) against one pysteps run per init time and seed (rows
``xn-centred``, ``xn-stratified``; the pixels scored are those known to all).

Usage::

    python benchmarks/steps_vs_pysteps.py [DATA] [--events rmi-20210704 mch-20150515 ...]
        [--inits 4] [--members 8] [--size 384] [--threads 2] [--speed-sizes 256 384]
        [--seed 0] [--seeds 1] [--common-motion-draws] [--draws centred stratified]

``DATA`` holds ``radar/`` (default ``$XNOWCAST_TEST_DATA`` or ``../shared/data``).
pysteps is needed only here.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("XNOWCAST_TEST_DATA", str(REPO / ".." / "shared" / "data"))
    parser.add_argument("data", nargs="?", default=default_data, help="folder holding radar/")
    parser.add_argument(
        "--events", nargs="+", default=["rmi-20210704", "mch-20150515", "mch-20160711"]
    )
    parser.add_argument("--inits", type=int, default=4, help="init times per event")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=18, help="lead times (5 min each)")
    parser.add_argument("--size", type=int, default=384, help="side of the square crop scored")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both systems")
    parser.add_argument(
        "--speed-sizes", nargs="*", type=int, default=[256], help="extra crop sides timed only"
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument(
        "--seeds", type=int, default=1, help="seeds per event: seed + 1000 i, i < seeds"
    )
    parser.add_argument(
        "--common-motion-draws",
        action="store_true",
        help="control run: xnowcast's members get the motion-perturbation draws pysteps makes",
    )
    parser.add_argument(
        "--draws",
        nargs="+",
        default=None,
        help="xnowcast motion_draws to compare (default: the model's own, one system)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for xnowcast")
    return parser.parse_args(argv)


ARGS = _parse_args(None if __name__ == "__main__" else [])
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

sys.path.insert(0, os.environ.get("XNOWCAST_SRC", str(REPO)))
sys.path.insert(0, str(REPO / "benchmarks"))
from extrapolation_vs_pysteps import load_event  # noqa: E402

import xnowcast  # noqa: E402
from xnowcast.metrics.spectral import rapsd, rapsd_wavenumbers  # noqa: E402
from xnowcast.models.steps import build_steps  # noqa: E402
from xnowcast.models.steps import nowcaster as steps_nowcaster  # noqa: E402

LEADS = (6, 12, 18)  # 30, 60, 90 min
SCALES = (1, 4, 16)  # km (1 km grids)
BANDS = ((2.0, 8.0), (8.0, 32.0), (32.0, 128.0))  # wavelength bands, km
SEED_STRIDE = 1000  # seed s runs init k with s + k: seeds this far apart share no draws


def crop_window(frames: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size`` square (on a 64-pixel lattice) with the most rain over the event."""
    wet = np.nan_to_num(frames) >= 0.1
    rate = wet.mean(axis=0)
    best, where = -1.0, (0, 0)
    for top in range(0, frames.shape[1] - size + 1, 64):
        for left in range(0, frames.shape[2] - size + 1, 64):
            score = rate[top : top + size, left : left + size].mean()
            if score > best:
                best, where = score, (top, left)
    return slice(where[0], where[0] + size), slice(where[1], where[1] + size)


def pysteps_motion_draws(members: int, seed: int) -> np.ndarray:
    """The two Laplace draws per member that pysteps' STEPS makes for ``seed``.

    pysteps seeds one random state per member in a chain (precipitation noise, then
    motion, each seeding the next) and draws the parallel and perpendicular factor of
    the motion perturbation from the motion state after it has drawn the next seed.
    """
    draws = []
    for _ in range(members):
        noise_state = np.random.RandomState(seed)
        seed = noise_state.randint(0, high=int(1e9))
        motion_state = np.random.RandomState(seed)
        seed = motion_state.randint(0, high=int(1e9))
        draws.append([motion_state.laplace(scale=1.0 / np.sqrt(2)) for _ in range(2)])
    return np.asarray(draws)


class _CommonDraws(steps_nowcaster.MotionPerturbation):
    """Motion perturbations with pysteps' draws (``--common-motion-draws`` control)."""

    seed = 0

    def __init__(self, flow, members, *args, **kwargs) -> None:
        super().__init__(flow, members, *args, **kwargs)
        draws = pysteps_motion_draws(members, _CommonDraws.seed)
        self.draws = torch.as_tensor(draws, dtype=self.draws.dtype, device=self.draws.device)


def xnowcast_forecast(model, frames: np.ndarray, members: int, seed: int, device: str):
    """``(members, steps, H, W)`` mm/h and wall seconds; also the motion (pixels/step)."""
    valid = np.isfinite(frames)
    x = torch.from_numpy(np.where(valid, frames, 0.0).astype(np.float32))[None, :, None]
    mask = torch.from_numpy(valid)[None, :, None]
    x, mask = x.expand(members, -1, -1, -1, -1).to(device), mask.expand(members, -1, -1, -1, -1)
    generator = torch.Generator(device=device).manual_seed(seed)
    _CommonDraws.seed = seed
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(x, ARGS.steps, valid=mask.to(device), generator=generator)
        if device != "cpu":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        flow = model.flow_model.motion(x[:1].cpu(), mask[:1], full_resolution=True)
    return out[:, :, 0].cpu().numpy(), seconds, flow[0].numpy().astype(np.float64)


def pysteps_forecast(frames: np.ndarray, velocity: np.ndarray, members: int, seed: int):
    """pysteps STEPS with its defaults on dB rain rate: ``(members, steps, H, W)`` mm/h."""
    from pysteps import nowcasts
    from pysteps.utils import transformation

    db, _ = transformation.dB_transform(
        frames.copy(), {"unit": "mm/h", "transform": None}, threshold=0.1, zerovalue=-15.0
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        out = nowcasts.get_method("steps")(
            db,
            velocity,
            ARGS.steps,
            n_ens_members=members,
            n_cascade_levels=6,
            precip_thr=-10.0,
            kmperpixel=1.0,
            timestep=5,
            noise_method="nonparametric",
            vel_pert_method="bps",
            mask_method="incremental",
            seed=seed,
            num_workers=ARGS.threads,
        )
    seconds = time.perf_counter() - start
    rate, _ = transformation.dB_transform(
        out,
        {"unit": "mm/h", "transform": "dB", "threshold": -10.0, "zerovalue": -15.0},
        inverse=True,
    )
    rate[rate < 0.1] = 0.0
    return rate, seconds


def as_forecast(values: np.ndarray, init_times: np.ndarray, leads: tuple[int, ...]) -> xr.DataArray:
    """``(init, member, lead, y, x)`` numpy at lead steps ``leads`` -> a nowcast DataArray."""
    _, members, _, ny, nx = values.shape
    lead = (np.array(leads) * np.timedelta64(5, "m")).astype("timedelta64[ns]")
    da = xr.DataArray(
        values.transpose(0, 2, 1, 3, 4),
        dims=("init_time", "lead_time", "member", "y", "x"),
        coords={
            "init_time": init_times,
            "lead_time": lead,
            "member": np.arange(members),
            "y": np.arange(ny) * 1000.0,
            "x": np.arange(nx) * 1000.0,
        },
        attrs={"units": "mm/h"},
    )
    da.y.attrs.update(units="m", standard_name="projection_y_coordinate", axis="Y")
    da.x.attrs.update(units="m", standard_name="projection_x_coordinate", axis="X")
    return da.assign_coords(valid_time=da.init_time + da.lead_time)


def as_observations(frames: np.ndarray, times: np.ndarray) -> xr.DataArray:
    ny, nx = frames.shape[1:]
    da = xr.DataArray(
        frames,
        dims=("time", "y", "x"),
        coords={"time": times, "y": np.arange(ny) * 1000.0, "x": np.arange(nx) * 1000.0},
        attrs={"units": "mm/h", "standard_name": "rainfall_rate"},
    )
    da.y.attrs.update(units="m", standard_name="projection_y_coordinate", axis="Y")
    da.x.attrs.update(units="m", standard_name="projection_x_coordinate", axis="X")
    return da


def spread_skill(ens: np.ndarray, obs: np.ndarray) -> float:
    """Spread / skill of ``(..., members, H, W)`` against ``(..., H, W)`` on finite points."""
    members = ens.shape[-3]
    variance = ens.var(axis=-3, ddof=1)
    error = (ens.mean(axis=-3) - obs) ** 2
    known = np.isfinite(variance) & np.isfinite(error)
    spread = np.sqrt(variance[known].mean() * (members + 1) / members)
    return float(spread / np.sqrt(error[known].mean()))


def rank_histogram(ens: np.ndarray, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relative frequency of the observation's rank among the members (ties at random)."""
    members = ens.shape[-3]
    ens = np.moveaxis(ens, -3, -1).reshape(-1, members)
    obs = obs.reshape(-1)
    known = np.isfinite(obs) & np.isfinite(ens).all(axis=1)
    known &= (obs >= 0.1) | (ens >= 0.1).any(axis=1)
    ens, obs = ens[known], obs[known]
    below = (ens < obs[:, None]).sum(axis=1)
    ties = (ens == obs[:, None]).sum(axis=1)
    rank = below + np.floor(rng.random(obs.size) * (ties + 1)).astype(int)
    counts = np.bincount(rank, minlength=members + 1)
    return counts / counts.sum()


def band_power_ratio(ens: np.ndarray, obs: np.ndarray) -> list[float]:
    """Forecast / observed power per wavelength band (fields with NaN set to 0)."""
    shape = obs.shape[-2:]
    wavelength = 1.0 / np.maximum(rapsd_wavenumbers(shape), 1e-12)
    observed = np.mean([rapsd(np.nan_to_num(o)) for o in obs.reshape(-1, *shape)], axis=0)
    forecast = np.mean([rapsd(np.nan_to_num(f)) for f in ens.reshape(-1, *shape)], axis=0)
    out = []
    for low, high in BANDS:
        band = (wavelength >= low) & (wavelength < high)
        out.append(float(forecast[band].sum() / observed[band].sum()))
    return out


def rank_shape(hist: np.ndarray) -> dict[str, float]:
    """Shape of a rank histogram of ``M + 1`` bins, each bin over its expected ``1 / (M + 1)``.

    ``low``/``high``: the outer bins (observation below / above every member); ``U``:
    their mean (1 flat, > 1 a U: under-dispersed, < 1 a hump: over-dispersed);
    ``flat``: largest over smallest bin.
    """
    bins = hist.size
    return {
        "low": float(hist[0] * bins),
        "high": float(hist[-1] * bins),
        "U": float((hist[0] + hist[-1]) * bins / 2),
        "flat": float(hist.max() / max(hist.min(), 1e-9)),
    }


def score_system(values, observed, known, obs_da, times, inits, rng, seconds) -> dict:
    """Scores of one system's forecasts ``(N, members, steps, H, W)`` (see the module doc)."""
    values = np.where(known[:, None], values, np.nan)
    obs_masked = obs_da.copy()
    per_init = []
    for n, init in enumerate(inits):  # one init at a time: xskillscore's CRPS copies a lot
        obs_masked[init + 1 : init + 1 + ARGS.steps] = observed[n]
        fc_da = as_forecast(values[n : n + 1][:, :, [k - 1 for k in LEADS]], times[[init]], LEADS)
        scores = xnowcast.verify(fc_da, obs_masked, metrics=["crps"], scales=list(SCALES))
        per_init.append(scores.crps)
    crps = xr.concat(per_init, dim="init").mean("init")
    at60 = values[:, :, LEADS[1] - 1]  # (N, members, H, W)
    obs60 = observed[:, LEADS[1] - 1]
    hist = rank_histogram(at60, obs60, rng)
    return {
        "crps": crps.transpose("scale", "lead_time").values,
        "spread_skill": spread_skill(at60, obs60),
        "rank": hist,
        **rank_shape(hist),
        "power": band_power_ratio(at60, obs60),
        "seconds": float(np.median(seconds)),
    }


def run_event(data: Path, name: str, models: dict, seed: int) -> dict:
    """All systems on ``ARGS.inits`` init times of event ``name``; init ``k`` uses ``seed + k``.

    ``models`` maps each xnowcast system's name to its model; pysteps runs once per init.
    """
    frames_all = load_event(data, name).astype(np.float32)
    ys, xs = crop_window(frames_all, ARGS.size)
    frames = frames_all[:, ys, xs]
    times = np.arange(frames.shape[0]) * np.timedelta64(5, "m") + np.datetime64("2000-01-01")
    times = times.astype("datetime64[ns]")
    steps, members = ARGS.steps, ARGS.members
    inits = np.unique(np.linspace(2, frames.shape[0] - 1 - steps, ARGS.inits).round().astype(int))
    systems = [*models, "pysteps"]
    values: dict[str, list] = {system: [] for system in systems}
    seconds: dict[str, list] = {system: [] for system in systems}
    for k, init in enumerate(inits):
        window = frames[init - 2 : init + 1]
        for system, model in models.items():  # the same motion for every way of drawing
            fc, sec, flow = xnowcast_forecast(model, window, members, seed + k, ARGS.device)
            values[system].append(fc)
            seconds[system].append(sec)
        fc, sec = pysteps_forecast(window, flow, members, seed + k)
        values["pysteps"].append(fc)
        seconds["pysteps"].append(sec)
        timing = ", ".join(f"{system} {seconds[system][-1]:.1f} s" for system in systems)
        print(f"  {name} seed {seed} init {init}: {timing}", flush=True)
    stacked = {system: np.stack(values[system]) for system in systems}
    observed = np.stack([frames[i + 1 : i + 1 + steps] for i in inits])  # (N, steps, H, W)
    known = np.isfinite(observed)
    for forecast in stacked.values():
        known &= np.isfinite(forecast).all(axis=1)
    observed = np.where(known, observed, np.nan)
    obs_da = as_observations(frames, times)
    rng = np.random.default_rng(0)
    result = {"event": name, "seed": seed}
    for system in systems:
        result[system] = score_system(
            stacked[system], observed, known, obs_da, times, inits, rng, seconds[system]
        )
    return result


def xnowcast_systems(row: dict) -> list[str]:
    """The xnowcast systems of a result row (every key but event, seed and pysteps)."""
    return [key for key in row if key not in ("event", "seed", "pysteps")]


def speed_rows(data: Path, model) -> list[tuple[int, float, float]]:
    """Seconds per forecast at extra crop sizes (RMI event, one init time)."""
    rows = []
    frames_all = load_event(data, "rmi-20210704").astype(np.float32)
    for size in ARGS.speed_sizes:
        ys, xs = crop_window(frames_all, size)
        window = frames_all[10:13, ys, xs]
        _, ours, flow = xnowcast_forecast(model, window, ARGS.members, 0, ARGS.device)
        _, theirs = pysteps_forecast(window, flow, ARGS.members, 0)
        rows.append((size, ours, theirs))
    return rows


def print_rows(results: list[dict]) -> None:
    """One table row per event, seed and system, and the CRPS ratio row."""
    head = (
        f"{'event':<14} {'seed':>4} {'system':<13} | CRPS 30/60/90 min: {'1 km':^17} "
        f"{'4 km':^17} {'16 km':^17} | spr/skl | rank U  flat | power 2-8/8-32/32-128 km | s/fc"
    )
    print(head)
    print("-" * len(head))
    for row in results:
        for system in [*xnowcast_systems(row), "pysteps"]:
            r = row[system]
            crps = " ".join(" ".join(f"{v:5.3f}" for v in scale) for scale in r["crps"])
            power = "/".join(f"{v:.2f}" for v in r["power"])
            print(
                f"{row['event']:<14} {row['seed']:>4} {system:<13} | {crps} | "
                f"{r['spread_skill']:7.2f} | {r['U']:6.2f} {r['flat']:4.1f} | {power:^24} | "
                f"{r['seconds']:5.1f}"
            )
        for system in xnowcast_systems(row):
            ratio = row[system]["crps"] / row["pysteps"]["crps"]
            label = "ratio" if system == "xnowcast" else f"/ {system[3:]}"
            print(
                f"{'':<14} {'':>4} {label[:13]:<13} | "
                + " ".join(" ".join(f"{v:5.3f}" for v in scale) for scale in ratio)
                + f" | speed-up {row['pysteps']['seconds'] / row[system]['seconds']:.1f}x"
            )


def print_summary(results: list[dict]) -> None:
    """Per event over the seeds: CRPS ratio of the seed means, per-seed range, rank shape."""
    ours_systems = xnowcast_systems(results[0])
    events = list(dict.fromkeys(row["event"] for row in results))
    print(
        "\nover the seeds, per event: CRPS ratio xnowcast / pysteps of the seed-mean CRPS "
        "[lowest-highest per-seed ratio], 30/60/90 min"
    )
    for event, system in ((e, s) for e in events for s in ours_systems):
        rows = [row for row in results if row["event"] == event]
        ours = np.stack([row[system]["crps"] for row in rows])  # (seeds, scale, lead)
        theirs = np.stack([row["pysteps"]["crps"] for row in rows])
        per_seed = ours / theirs
        mean_ratio = ours.mean(0) / theirs.mean(0)
        cells = []
        for s, scale in enumerate(SCALES):
            values = "/".join(f"{v:.3f}" for v in mean_ratio[s])
            ranges = "/".join(
                f"{lo:.3f}-{hi:.3f}"
                for lo, hi in zip(per_seed[:, s].min(0), per_seed[:, s].max(0), strict=True)
            )
            cells.append(f"{scale:>2} km {values} [{ranges}]")
        label = "" if system == "xnowcast" else f"{system} "
        print(f"  {event:<14} {label}{len(rows)} seeds: " + "; ".join(cells))
    print(
        "\nrank histogram at 60 min, bins over expected (1 = flat): outer bins low/high, "
        "U = their mean (> 1 a U, < 1 a hump), |U - 1| of xnowcast minus pysteps' "
        "(> 0: more U or hump than pysteps), mean [range] over the seeds"
    )
    for event in events:
        rows = [row for row in results if row["event"] == event]
        parts = []
        for system in [*ours_systems, "pysteps"]:
            low = np.mean([row[system]["low"] for row in rows])
            high = np.mean([row[system]["high"] for row in rows])
            u = [row[system]["U"] for row in rows]
            parts.append(
                f"{system} low {low:.2f} high {high:.2f} U {np.mean(u):.2f} "
                f"[{min(u):.2f}-{max(u):.2f}]"
            )
        for system in ours_systems:
            excess = [abs(row[system]["U"] - 1) - abs(row["pysteps"]["U"] - 1) for row in rows]
            label = "excess" if system == "xnowcast" else f"excess {system}"
            parts.append(f"{label} {np.mean(excess):+.3f} [{min(excess):+.3f}..{max(excess):+.3f}]")
        print(f"  {event:<14} " + "; ".join(parts))
        for system in [*ours_systems, "pysteps"]:
            hist = np.mean([row[system]["rank"] for row in rows], axis=0)
            print(f"    {system:<13} " + " ".join(f"{v:.3f}" for v in hist))
    print("\nspread/skill at 60 min over all events and seeds (mean, range):")
    for system in [*ours_systems, "pysteps"]:
        ss = [row[system]["spread_skill"] for row in results]
        print(f"  {system:<13} {np.mean(ss):.2f} ({min(ss):.2f}-{max(ss):.2f})")
    theirs = [row["pysteps"]["seconds"] for row in results]
    for system in ours_systems:
        ours = [row[system]["seconds"] for row in results]
        print(
            f"{system} speed-up at {ARGS.size}x{ARGS.size} (median s per forecast per event "
            f"and seed): {min(t / o for o, t in zip(ours, theirs, strict=True)):.1f}-"
            f"{max(t / o for o, t in zip(ours, theirs, strict=True)):.1f}x"
        )


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    with contextlib.redirect_stdout(io.StringIO()):
        import pysteps  # noqa: F401  (prints its configuration banner on import)
    data = Path(ARGS.data).resolve()
    if ARGS.draws:
        models = {
            f"xn-{draws}": build_steps({"motion_draws": draws}).to(ARGS.device)
            for draws in ARGS.draws
        }
    else:
        models = {"xnowcast": build_steps("default").to(ARGS.device)}
    model = next(iter(models.values()))
    if ARGS.common_motion_draws:  # a control run, not xnowcast's own ensemble
        steps_nowcaster.MotionPerturbation = _CommonDraws
    print(
        f"{ARGS.members} members, {ARGS.steps} x 5 min, {ARGS.inits} init times per event, "
        f"seeds {ARGS.seed} + {SEED_STRIDE} x 0..{ARGS.seeds - 1}, {ARGS.threads} CPU threads, "
        f"device {ARGS.device}, common motion draws {ARGS.common_motion_draws}, xnowcast "
        f"systems {list(models)}, load average at start {os.getloadavg()[0]:.1f}; torch "
        f"{torch.__version__}, pysteps {importlib.metadata.version('pysteps')}"
    )
    xnowcast_forecast(model, np.zeros((3, 64, 64), np.float32) + 1.0, 2, 0, ARGS.device)  # warm-up
    results = []
    for name in ARGS.events:
        for seed in range(ARGS.seed, ARGS.seed + SEED_STRIDE * ARGS.seeds, SEED_STRIDE):
            results.append(run_event(data, name, models, seed))
            ratios = ", ".join(
                f"{system} {np.round(results[-1][system]['crps'][0] / results[-1]['pysteps']['crps'][0], 3)}"
                for system in models
            )
            # a long run shows each event and seed as it finishes (the tables come at the end)
            print(f"  {name} seed {seed} done: 1-km CRPS ratio {ratios}", flush=True)
    print_rows(results)
    print_summary(results)
    for size, ours, theirs in speed_rows(data, model):
        print(
            f"speed {size}x{size}, {ARGS.members} members, {ARGS.steps} steps: xnowcast "
            f"{ours:.2f} s, pysteps {theirs:.2f} s, speed-up {theirs / ours:.1f}x"
        )


if __name__ == "__main__":
    main()

"""DGMR skill card: the ensemble against persistence, extrapolation (and ``steps``) on real radar.

On the held-out RMI event (2021-07-04, never used in training) and on the
MeteoSwiss, FMI and KNMI events (*training* events: in-sample checks; a
leave-one-event-out retraining per event would cost the 4+ CPU-hours of the
shipped weights each), for
init times spread over each event, 18 x 5-min forecasts from the preceding
frames on the central ``--size`` x ``--size`` km, made through the public API
(``da.nowcast.predict``) and scored against the radar where the radar and every
forecast are known:

* CSI at 1, 4 and 8 mm/h, raw and frequency-matched (each forecast field's
  threshold moved so that it rains on as many pixels as observed: skill
  without the wet or dry bias), pooled over init times and pixels; for an
  ensemble, pooled over its members;
* FSS at 1 mm/h in a 16 km window (pooled);
* CRPS at the pixel and pooled to 4 and 16 km (block means); the MAE for the
  deterministic forecasts;
* spread/skill (ensemble std over the RMSE of the ensemble mean, corrected
  for the number of members; 1 is calibrated);
* rain volume and area >= 1 mm/h, forecast over observed;
* power at 2-4 km wavelengths over the radar's at 60 min;
* the first-step jump (mean rain at 5 min over the last input's);
* latent sensitivity: median member std at 60 min where it rains >= 0.1 mm/h,
  and the mean |forecast(random latent) - forecast(zero latent)|.

The issue-14 targets are checked and printed (held-out RMI).  With
``--docs`` the card is written to ``docs/dgmr_skill_card.rst``; the printed
Markdown goes to ``benchmarks/RESULTS.md``.  A ``steps`` nowcaster is scored
too when the registry has one.

Usage::

    python benchmarks/dgmr_skill.py --data-root ../shared/data [--members 6] [--inits 4] [--docs]
    python benchmarks/dgmr_skill.py --data-root ../shared/data --weights path/to/dgmr.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

LEADS = (6, 12, 18)  # 30, 60, 90 min
THRESHOLDS = (1.0, 4.0, 8.0)
EVENTS = {
    "rmi-20210704": ("radar/rmi/radqpe/20210704", "held out"),
    "mch-20160711": ("radar/mch/20160711", "training event"),
    "mch-20150515": ("radar/mch/20150515", "training event"),
    "fmi-20160928": ("radar/fmi/pgm/20160928", "training event"),
    "knmi-20100826": ("radar/KNMI/2010/08", "training event"),
}
ENSEMBLES = ("dgmr", "steps")
FSS_WINDOW = 16


class Scores:
    """Sums over init times (and members) of everything the card reports, per lead time."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}

    def add(self, key: str, lead: int, value: float) -> None:
        arr = self.sums.setdefault(key, np.zeros(18))
        arr[lead] += value

    def get(self, key: str) -> np.ndarray:
        return self.sums.get(key, np.full(18, np.nan))


def block_mean(x: np.ndarray, known: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k x k`` block means of ``x`` (..., H, W) and where the whole block is known."""
    h, w = (s // k * k for s in x.shape[-2:])
    xs = np.where(known, x, 0.0)[..., :h, :w]
    kn = known[..., :h, :w]
    shape = (*x.shape[:-2], h // k, k, w // k, k)
    return xs.reshape(shape).mean(axis=(-3, -1)), kn.reshape(kn.shape[:-2] + shape[-4:]).all(
        axis=(-3, -1)
    )


def crps_members(f: np.ndarray, o: np.ndarray, fair: bool = False) -> np.ndarray:
    from xnowcast.training.gan_validation import crps_ensemble

    return crps_ensemble(f, o, fair=fair)


def score_init(
    scores: Scores, fc: np.ndarray, obs: np.ndarray, known: np.ndarray, last: np.ndarray
) -> None:
    """Add one init time: ``fc`` (M, T, H, W), ``obs`` and ``known`` (T, H, W), ``last`` (H, W).

    ``T`` is the number of lead times (18 on the cards; fewer on a shorter event).
    """
    from scipy.ndimage import uniform_filter

    from xnowcast.training.gan_validation import band_power

    m = fc.shape[0]
    for t in range(fc.shape[1]):
        kn, o = known[t], obs[t]
        f = fc[:, t]
        if not kn.any():
            continue
        ok = o[kn]
        fk = f[:, kn]
        n = kn.sum()
        for thr in THRESHOLDS:
            n_obs = int((ok >= thr).sum())
            for member in fk:
                for tag, cut in (("raw", thr), ("fm", _matched(member, n_obs))):
                    fy, oy = member >= cut, ok >= thr
                    scores.add(f"hit_{tag}_{thr:g}", t, np.sum(fy & oy))
                    scores.add(f"fa_{tag}_{thr:g}", t, np.sum(fy & ~oy))
                    scores.add(f"miss_{tag}_{thr:g}", t, np.sum(~fy & oy))
        po = uniform_filter(((o >= 1.0) & kn).astype(np.float64), FSS_WINDOW, mode="constant")
        for member in f:
            pf = uniform_filter(
                ((member >= 1.0) & kn).astype(np.float64), FSS_WINDOW, mode="constant"
            )
            scores.add("fss_num", t, np.sum((pf - po) ** 2))
            scores.add("fss_den", t, np.sum(pf**2 + po**2))
        scores.add("crps1", t, crps_members(fk, ok).sum())
        scores.add("crps1_fair", t, crps_members(fk, ok, fair=True).sum())
        scores.add("n1", t, n)
        for k in (4, 16):
            fb, kb = block_mean(f, np.broadcast_to(kn, f.shape), k)
            ob, _ = block_mean(o, kn, k)
            kb = kb[0]
            if kb.any():
                scores.add(f"crps{k}", t, crps_members(fb[:, kb], ob[kb]).sum())
                scores.add(f"n{k}", t, kb.sum())
        mean = fk.mean(axis=0)
        scores.add("sq_err", t, np.sum((mean - ok) ** 2))
        if m > 1:
            scores.add("var", t, np.sum(fk.var(axis=0, ddof=1)) * (m + 1) / m)
        scores.add("vol_f", t, fk.sum() / m)
        scores.add("vol_o", t, ok.sum())
        scores.add("area_f", t, (fk >= 1.0).sum() / m)
        scores.add("area_o", t, (ok >= 1.0).sum())
        scores.add("pow_f", t, band_power(np.where(kn, f, 0.0)))
        scores.add("pow_o", t, band_power(np.where(kn, o, 0.0)))
        scores.add("count", t, 1)
        if t == 0:
            scores.add("jump_f", 0, fk.sum() / m)
            scores.add("jump_in", 0, last[kn].sum())
        rains = kn & (o >= 0.1)
        if m > 1 and rains.any():
            scores.add("std_rain", t, np.median(f[:, rains].std(axis=0)))
            scores.add("std_count", t, 1)


def _matched(member: np.ndarray, n_obs: int) -> float:
    """The threshold at which ``member`` rains on ``n_obs`` pixels (inf when none is observed)."""
    if n_obs == 0:
        return np.inf
    return float(np.partition(member, member.size - n_obs)[member.size - n_obs])


def summary(s: Scores) -> dict[str, list[float]]:
    """Per-lead scores (18 values each) from the sums."""
    out: dict[str, list[float]] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for tag in ("raw", "fm"):
            for thr in THRESHOLDS:
                h = s.get(f"hit_{tag}_{thr:g}")
                d = h + s.get(f"fa_{tag}_{thr:g}") + s.get(f"miss_{tag}_{thr:g}")
                out[f"csi_{tag}_{thr:g}"] = (h / d).tolist()
        out["fss_1"] = (1 - s.get("fss_num") / s.get("fss_den")).tolist()
        for k in (1, 4, 16):
            out[f"crps_{k}km"] = (s.get(f"crps{k}") / s.get(f"n{k}")).tolist()
        out["crps_fair_1km"] = (s.get("crps1_fair") / s.get("n1")).tolist()
        out["spread_skill"] = np.sqrt(s.get("var") / s.get("sq_err")).tolist()
        out["volume_ratio"] = (s.get("vol_f") / s.get("vol_o")).tolist()
        out["area_ratio_1"] = (s.get("area_f") / s.get("area_o")).tolist()
        out["power_ratio_2_4km"] = (s.get("pow_f") / s.get("pow_o")).tolist()
        out["member_std_rain"] = (s.get("std_rain") / s.get("std_count")).tolist()
        out["first_step_jump"] = [float(s.get("jump_f")[0] / s.get("jump_in")[0])]
    return out


def forecast(da, name: str, inits, members: int, seed: int, weights: str | None) -> np.ndarray:
    """``(inits, members, 18, H, W)`` forecasts through the public API."""
    extra = {"weights": weights} if weights and name == "dgmr" else {}
    fc = da.nowcast.predict(
        model=name,
        steps=18,
        **extra,
        members=members,
        init_time=inits,
        seed=seed if members > 1 else None,
        progress=False,
    )
    if "member" not in fc.dims:
        fc = fc.expand_dims("member")
    if "init_time" not in fc.dims:
        fc = fc.expand_dims("init_time")
    return fc.transpose("init_time", "member", "lead_time", "y", "x").values.astype(np.float32)


def latent_effect(da, inits, members: int, seed: int, weights: str | None) -> float:
    """Mean |forecast(random latent) - forecast(zero latent)| at 60 min where it rains, mm/h."""
    import torch

    from xnowcast.registry import load_model

    g = load_model("dgmr", weights=weights or "default")
    diffs = []
    for t in inits:
        i = int(np.nonzero(da.time.values == t)[0][0])
        x = np.nan_to_num(da.isel(time=slice(i - 3, i + 1)).values.astype(np.float32))
        h, w = (s // 32 * 32 for s in x.shape[-2:])
        frames = torch.from_numpy(x[:, :h, :w])[None, :, None]
        gen = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            z = g.sample_noise(frames.repeat(members, 1, 1, 1, 1), gen)
            rand = g(frames.repeat(members, 1, 1, 1, 1), 12, noise=z)[:, -1, 0]
            zero = g(frames, 12, noise=torch.zeros_like(z[:1]))[:, -1, 0]
        wet = (rand.mean(0) >= 0.1) | (zero[0] >= 0.1)
        diffs.append(float((rand - zero).abs()[:, wet].mean()) if bool(wet.any()) else 0.0)
    return float(np.mean(diffs))


def central_window(root: Path, key: str, size: int):
    """The rain rate (mm/h, float32, lazy) of event ``key`` on its central ``size`` km; its role."""
    from xnowcast.io import open_radar
    from xnowcast.units import convert_dataarray

    path, role = EVENTS[key]
    ds = open_radar(root / path)
    da = ds["precipitation" if "precipitation" in ds else "reflectivity"]
    if da.attrs.get("units") != "mm/h":
        da = convert_dataarray(da, "mm/h")  # FMI and KNMI give dBZ
    da = da.astype(np.float32)
    ny, nx = da.sizes["y"], da.sizes["x"]
    y0, x0 = max((ny - size) // 2, 0), max((nx - size) // 2, 0)
    return da.isel(y=slice(y0, y0 + size), x=slice(x0, x0 + size)), role


def run_event(
    root: Path,
    key: str,
    size: int,
    n_inits: int,
    members: int,
    seed: int,
    systems: list[str],
    weights: str | None = None,
) -> dict:
    da, role = central_window(root, key, size)
    n_time = da.sizes["time"]
    idx = np.unique(np.linspace(3, n_time - 19, n_inits).round().astype(int))
    inits = da.time.values[idx]
    values = da.values
    scores = {name: Scores() for name in systems}
    timing = dict.fromkeys(systems, 0.0)
    for i, t0 in zip(idx, inits, strict=True):
        obs = values[i + 1 : i + 19]
        fcs = {}
        for name in systems:
            m = members if name in ENSEMBLES else 1
            start = time.perf_counter()
            fcs[name] = forecast(da, name, [t0], m, seed, weights)[0]
            timing[name] += time.perf_counter() - start
        known = np.isfinite(obs) & np.isfinite(values[i])[None]
        for f in fcs.values():
            known &= np.isfinite(f).all(axis=0)
        for name, f in fcs.items():
            score_init(scores[name], f, obs, known, values[i])
        if "dgmr" in fcs:
            mean = fcs["dgmr"].mean(axis=0, keepdims=True)
            scores.setdefault("dgmr mean", Scores())
            score_init(scores["dgmr mean"], mean, obs, known, values[i])
    result = {
        "event": key,
        "role": role,
        "inits": [str(t)[:16] for t in inits],
        "size_km": size,
        "members": members,
        "seconds_per_init": {k: v / len(idx) for k, v in timing.items()},
        "scores": {name: summary(s) for name, s in scores.items()},
    }
    if "dgmr" in systems:
        result["latent_effect_60"] = latent_effect(da, inits, members, seed, weights)
    return result


# ----------------------------------------------------------------------------- report


def _f(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _leads(values: list[float] | None) -> str:
    """A score at 30/60/90 min; ``-`` where a card written before it had none."""
    if values is None:
        return "-/-/-"
    return "/".join(_f(values[lead - 1]) for lead in LEADS)


ROWS = [
    *[(f"CSI {t:g} mm/h raw", f"csi_raw_{t:g}") for t in THRESHOLDS],
    *[(f"CSI {t:g} mm/h freq.-matched", f"csi_fm_{t:g}") for t in THRESHOLDS],
    (f"FSS 1 mm/h, {FSS_WINDOW} km", "fss_1"),
    ("CRPS pixel (mm/h)", "crps_1km"),
    ("CRPS pixel, fair estimator", "crps_fair_1km"),
    ("CRPS 4 km", "crps_4km"),
    ("CRPS 16 km", "crps_16km"),
    ("spread/skill", "spread_skill"),
    ("volume ratio", "volume_ratio"),
    ("area >= 1 mm/h ratio", "area_ratio_1"),
    ("power 2-4 km ratio", "power_ratio_2_4km"),
    ("member std where rain (mm/h)", "member_std_rain"),
]


def table(result: dict) -> list[list[str]]:
    """Rows: a score at 30/60/90 min for every system."""
    names = list(result["scores"])
    rows = [["score (30/60/90 min)", *names]]
    for label, key in ROWS:
        rows.append([label, *(_leads(result["scores"][n].get(key)) for n in names)])
    rows.append(
        ["first-step jump", *(_f(result["scores"][n]["first_step_jump"][0]) for n in names)]
    )
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def rst(rows: list[list[str]]) -> str:
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in rows:
        out.append("   * - " + row[0])
        out += [f"     - {c}" for c in row[1:]]
    return "\n".join(out)


def targets(result: dict) -> list[tuple[str, str, bool]]:
    """The issue-14 'done when' targets on this event: (target, measured, met)."""
    s = result["scores"]["dgmr"]
    w = [lead - 1 for lead in range(6, 19)]  # 30 ... 90 min
    vol = [s["volume_ratio"][i] for i in w]
    area = [s["area_ratio_1"][i] for i in w]
    power = s["power_ratio_2_4km"][11]
    std = s["member_std_rain"][11]
    out = [
        (
            "volume 0.8-1.25x at 30-90 min",
            f"{min(vol):.2f}-{max(vol):.2f}",
            0.8 <= min(vol) and max(vol) <= 1.25,
        ),
        (
            "area >= 1 mm/h 0.7-1.4x at 30-90 min",
            f"{min(area):.2f}-{max(area):.2f}",
            0.7 <= min(area) and max(area) <= 1.4,
        ),
        ("2-4 km power within 10x radar (60 min)", f"{power:.2f}", 0.1 <= power <= 10),
        ("median member std at 60 min >= 0.05 mm/h", f"{std:.3f}", std >= 0.05),
    ]
    for lead in (12, 18):
        c = s["crps_1km"][lead - 1]
        p = result["scores"]["persistence"]["crps_1km"][lead - 1]
        e = result["scores"]["extrapolation"]["crps_1km"][lead - 1]
        out.append(
            (
                f"CRPS < persistence and < extrapolation MAE at {lead * 5} min",
                f"{c:.3f} vs {p:.3f} / {e:.3f}",
                c < p and c < e,
            )
        )
    return out


def print_targets(title: str, rows: list[tuple[str, str, bool]]) -> None:
    """Print (target, measured, met) rows as a Markdown table headed by ``title``."""
    print(f"\n| target ({title}) | measured | met |\n|---|---|---|")
    for name, value, met in rows:
        print(f"| {name} | {value} | {'yes' if met else 'no'} |")


def main(argv: list[str] | None = None) -> int:
    import torch

    import xnowcast

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--events", nargs="+", default=list(EVENTS))
    p.add_argument("--weights", default=None, help="score this DGMR weights file")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--members", type=int, default=6)
    p.add_argument("--inits", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the scores to this file")
    p.add_argument("--docs", action="store_true", help="write docs/dgmr_skill_card.rst")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.weights:
        print(f"(DGMR weights: {a.weights} instead of the shipped ones)")
    systems = ["persistence", "extrapolation", "dgmr"]
    if "steps" in xnowcast.list_models():
        systems.append("steps")
    results = []
    for key in a.events:
        start = time.perf_counter()
        r = run_event(
            Path(a.data_root), key, a.size, a.inits, a.members, a.seed, systems, a.weights
        )
        r["wall_s"] = round(time.perf_counter() - start, 1)
        results.append(r)
        print(
            f"\n### {key} ({r['role']}), {len(r['inits'])} init times, {a.size} km, "
            f"{a.members} members ({r['wall_s']} s)\n"
        )
        print(markdown(table(r)))
        print(f"\nlatent effect at 60 min: {r.get('latent_effect_60', float('nan')):.3f} mm/h")
        if r["role"] == "held out":
            print_targets("issue 14", targets(r))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    if a.docs:
        write_docs(results, a)
    return 0


def _provenance(training: dict) -> str:
    """Sentences on the recipe and on the run the weights were fine-tuned from, if any."""
    out = []
    init = training.get("initialised_from")
    if init:
        recipe = ", ".join(f"{k} {v}" for k, v in init.get("recipe", {}).items())
        out.append(
            f"They were fine-tuned from the generator of an earlier run after {init.get('steps')} "
            f"steps ({recipe}); steps count from there ({training.get('steps_trained', '?')} "
            "trained in all)."
        )
    if training.get("resumed_at"):
        out.append(f"The run was resumed at steps {', '.join(map(str, training['resumed_at']))}.")
    recipe = (
        f"Last recipe: grid-cell weight ``{training.get('grid_weight_mode')}``, "
        f"volume term weight {training.get('volume_weight', 0)}, inflow mask "
        f"{'on' if training.get('inflow_mask') else 'off'}, generator lr "
        f"{training.get('lr_generator')}"
    )
    if training.get("crps_weight"):
        recipe += f", ensemble CRPS term weight {training['crps_weight']}"
    if training.get("ema_decay"):
        recipe += f", moving average of the generator (decay {training['ema_decay']})"
    recipe += f", kept step {training.get('selected_step', '?')}"
    if training.get("curve_since_step") is not None:
        recipe += f" (validation curve from step {training['curve_since_step']})"
    out.append(recipe + ".")
    return " ".join(out)


def _curve_start(training: dict) -> str:
    """What the first row of the training curve is."""
    since = training.get("curve_since_step")
    if since is None:
        return "Step 0 is the untrained generator, i.e. the extrapolation nowcast."
    return (
        f"The curve starts at step {since}, where the run was resumed with another recipe "
        "and validation set (the generator before the change); earlier validations were on "
        "other crops and do not compare."
    )


def write_docs(results: list[dict], a: argparse.Namespace) -> None:
    """docs/dgmr_skill_card.rst from the results."""
    from xnowcast.registry import get_spec
    from xnowcast.weights import read_metadata

    spec = get_spec("dgmr")
    weights = Path(__file__).resolve().parents[1] / "xnowcast" / "weights"
    # the weights scored: a --weights file, else the shipped default
    scored = Path(a.weights) if a.weights else weights / spec.weights[spec.default_weights].filename
    meta = read_metadata(scored)
    training = meta.get("training", {})
    lines = [
        "DGMR skill card",
        "===============",
        "",
        "Generated by ``python benchmarks/dgmr_skill.py --docs`` "
        f"(``--size {a.size} --members {a.members} --inits {a.inits}``) on a shared 2-core CPU.",
        f"Weights: ``{scored.name if a.weights else spec.default_weights}`` "
        f"({training.get('steps', '?')} generator steps, "
        f"crops of {training.get('crop', '?')} px, {training.get('wall_time_s', '?')} s of "
        "training; events " + ", ".join(training.get("events", [])) + "; RMI 2021-07-04 held out).",
        _provenance(training),
        "",
        "Scores at 30/60/90 min where the radar and every forecast are known; an ensemble is",
        "scored member by member (CSI, FSS) and as an ensemble (CRPS, spread/skill).  See the",
        "docstring of ``benchmarks/dgmr_skill.py`` for the definitions.",
        "",
    ]
    for r in results:
        title = f"{r['event']} ({r['role']})"
        lines += [title, "-" * len(title), ""]
        lines += [
            f"Init times {', '.join(r['inits'])}; central {r['size_km']} km; "
            f"{r['members']} members.  Latent effect at 60 min: "
            f"{r.get('latent_effect_60', float('nan')):.3f} mm/h.",
            "",
            rst(table(r)),
            "",
        ]
        if r["role"] == "held out":
            rows = [["target (issue 14)", "measured", "met"]]
            rows += [[n, v, "yes" if m else "no"] for n, v, m in targets(r)]
            lines += [rst(rows), ""]
    curve = training.get("curve", [])
    if curve:
        from xnowcast.training.gan import CURVE_KEYS

        rows = [["step", *CURVE_KEYS]]
        rows += [[str(c["step"]), *(_f(c.get(k, float("nan"))) for k in CURVE_KEYS)] for c in curve]
        lines += [
            "Training curve (held-out RMI validation crops)",
            "----------------------------------------------",
            "",
            _curve_start(training),
            "",
            rst(rows),
            "",
        ]
    out = Path(__file__).resolve().parents[1] / "docs" / "dgmr_skill_card.rst"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())

"""One resumable run that trains the AtmoDist encoder, then ``srgan`` (pre-training + GAN).

Phases, each given a share of a CPU-time budget (``time.process_time``, so the
budget means the same on a loaded machine):

1. ``encoder``: the time-lag pretext task (:mod:`xnowcast.training.atmodist`);
   at its end ``distance_scale`` is calibrated and ``atmodist-radar.safetensors``
   written (config, recipe, data, steps, curves, held-out lag accuracy and the
   mean distance per lag on held-out RMI);
2. ``pretrain``: the generator with the pixel loss alone;
3. ``gan``: the generator with the loss of ``--variant`` and the discriminator;
   at its end ``srgan-<variant>.safetensors`` is written (the CPU of each
   session's data preparation counts against the budget).

Everything goes to ``--workdir``: event arrays (``data/``), ``state.pt``
(every network, optimiser, random generator and the record; written atomically
every ``--checkpoint-every`` steps) and ``record.json``.  Running the same
command again continues where it stopped; raising ``--cpu-minutes`` continues a
finished run (e.g. on a GPU, or in a later session).  RMI 2021-07-04 is held out.

Command line::

    nice -n 19 env OMP_NUM_THREADS=1 python -m xnowcast.training.srgan_run \\
        --data-root ../shared/data --workdir /work/srgan-run --cpu-minutes 30
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PHASE_SHARES", "load_event", "main", "run"]

#: Share of the CPU budget of each phase (the rest of a phase's share carries over).
PHASE_SHARES = {"encoder": 0.32, "pretrain": 0.2, "gan": 0.48}


def load_event(data_root: str | os.PathLike[str], pattern: str, cache: Path) -> np.ndarray:
    """``(T, H, W)`` float32 rain rate (mm/h, NaN missing) on the canonical orientation."""
    if cache.is_file():
        return np.load(cache)
    from xnowcast import conventions as cv
    from xnowcast.training.pairs import load_rain_rate

    da = load_rain_rate(str(Path(data_root) / pattern)).transpose("time", "y", "x")
    da = cv.flip_axes(da, cv.orientation_flips(da, cv.Axes("time", "y", "x")))
    values = np.asarray(da.values, dtype=np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, values)
    return values


def _save_state(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def run(
    *,
    data_root: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    cpu_minutes: float = 30.0,
    variant: str = "content_adv",
    encoder_config: str = "default",
    generator_config: str = "default",
    seed: int = 0,
    checkpoint_every: int = 25,
    val_every: int = 100,
    events: dict[str, str] | None = None,
    holdout: tuple[str, str] | None = None,
    encoder_weights: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Train (or continue) the three phases in ``workdir``; see the module docstring.

    ``encoder_weights``: use this trained encoder and skip phase 1 (the ablation
    variants share the shipped encoder).  ``threads``: torch CPU threads (the
    budget is process CPU time, so more threads spend it sooner in wall-clock time;
    each session's thread count is kept in the record).

    Returns
    -------
    dict
        The run's record.
    """
    import torch

    from xnowcast.models.atmodist import build_lag_classifier, load_encoder
    from xnowcast.models.srgan import PatchDiscriminator, build_srgan
    from xnowcast.training import atmodist as ad
    from xnowcast.training import srgan as sg
    from xnowcast.training.supervised import DEFAULT_EVENTS, HOLDOUT_EVENT
    from xnowcast.weights import save_weights

    start_cpu = time.process_time()
    events = dict(events or DEFAULT_EVENTS)
    holdout = holdout or HOLDOUT_EVENT
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    classifier = build_lag_classifier(encoder_config)
    patch, lags = int(classifier.config["patch"]), classifier.lags
    cfg = sg.GanConfig(variant=variant)
    data: dict[str, Any] = {"banks": [], "crops": []}
    arrays = {}
    for name, pattern in {**events, holdout[0]: holdout[1]}.items():
        arrays[name] = load_event(data_root, pattern, work / "data" / f"{name}.npy")
    for name in events:
        data["banks"].append(torch.from_numpy(ad.patch_bank(arrays[name], patch)))
        data["crops"].append(torch.from_numpy(sg.fine_crops(arrays[name], cfg.crop, 384, rng)))
    val_bank = torch.from_numpy(ad.patch_bank(arrays[holdout[0]], patch))
    val_pairs = ad.fixed_pairs([val_bank], lags, 384, seed=1234)
    val_crops = torch.from_numpy(
        sg.fine_crops(arrays[holdout[0]], cfg.crop, 64, np.random.default_rng(1234))
    )
    crops = torch.cat(data["crops"])
    del arrays

    gen = build_srgan(generator_config, factor=4, time_factor=1)
    disc = PatchDiscriminator(int(gen.config["nf"]))
    opt_c = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    rand = torch.Generator().manual_seed(seed)
    record: dict[str, Any] = {
        "variant": variant,
        "gan": asdict(cfg),
        "seed": seed,
        "train_events": sorted(events),
        "holdout": holdout[0],
        "encoder_places": [int(b.shape[0]) for b in data["banks"]],
        "train_crops": int(crops.shape[0]),
        "val_crops": int(val_crops.shape[0]),
        "cpu_s": {"data": 0.0, "encoder": 0.0, "pretrain": 0.0, "gan": 0.0},
        "steps": {"encoder": 0, "pretrain": 0, "gan": 0},
        "curves": {"encoder_loss": [], "encoder_val": [], "pretrain": [], "gan": [], "val": []},
        "done": [],
    }
    state_path = work / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        classifier.load_state_dict(state["classifier"])
        gen.load_state_dict(state["generator"])
        disc.load_state_dict(state["discriminator"])
        for opt, key in ((opt_c, "opt_c"), (opt_g, "opt_g"), (opt_d, "opt_d")):
            opt.load_state_dict(state[key])
        rand.set_state(state["random"])
        record = state["record"]
    record["cpu_s"]["data"] += time.process_time() - start_cpu
    record.setdefault("sessions", []).append(
        {"threads": threads, "cpu_minutes": cpu_minutes, "steps_at_start": dict(record["steps"])}
    )
    if encoder_weights is not None:
        classifier.encoder = load_encoder(encoder_weights)
        record["encoder_weights"] = str(encoder_weights)
        record["done"] = sorted({*record["done"], "encoder"})
    budget = 60.0 * cpu_minutes - record["cpu_s"]["data"]

    def save() -> None:
        _save_state(
            state_path,
            {
                "classifier": classifier.state_dict(),
                "generator": gen.state_dict(),
                "discriminator": disc.state_dict(),
                "opt_c": opt_c.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "random": rand.get_state(),
                "record": record,
            },
        )
        (work / "record.json").write_text(json.dumps(record, indent=1, default=float))

    def allowance(phase: str) -> float:
        """CPU seconds left to ``phase``: its share plus what earlier phases left unused."""
        spent_before, share = 0.0, 0.0
        for name, part in PHASE_SHARES.items():
            share += part
            if name == phase:
                break
            spent_before += record["cpu_s"][name]
        return share * budget - spent_before - record["cpu_s"][phase]

    def timed(phase: str, work_fn: Any) -> Any:
        t0 = time.process_time()
        out = work_fn()
        record["cpu_s"][phase] += time.process_time() - t0
        return out

    # phase 1: the encoder
    if "encoder" not in record["done"]:
        while allowance("encoder") > 0:
            losses = timed(
                "encoder",
                lambda: ad.train_steps(classifier, opt_c, data["banks"], rand, checkpoint_every),
            )
            record["steps"]["encoder"] += checkpoint_every
            step = record["steps"]["encoder"]
            record["curves"]["encoder_loss"].append((step, float(np.mean(losses))))
            if step % val_every == 0:
                scores = timed("encoder", lambda: ad.lag_accuracy(classifier, val_pairs))
                record["curves"]["encoder_val"].append((step, scores))
                print(f"encoder step {step} val {scores}", flush=True)
            save()
        raw = ad.calibrate_distance(classifier, data["banks"], rand)
        held_out = ad.lag_accuracy(classifier, val_pairs)
        by_lag = ad.distance_by_lag(classifier, val_pairs)
        record["encoder"] = {
            "raw_distance_60min": raw,
            "heldout_lag_accuracy": held_out,
            "heldout_distance_by_lag_minutes": {5 * k: v for k, v in by_lag.items()},
        }
        save_weights(
            classifier.state_dict(),
            work / "atmodist-radar.safetensors",
            {
                "model": "atmodist",
                "config": classifier.config,
                "training": {
                    "task": "classify the time lag (5..60 min) between two patches of one "
                    "5-minute radar sequence at the same place",
                    "recipe": "Adam lr 1e-3, batch 32, cross-entropy, dihedral augmentation, "
                    "random order, log1p(R)/log1p(10) inside",
                    "events": sorted(events),
                    "holdout": holdout[0],
                    "places": record["encoder_places"],
                    "steps": record["steps"]["encoder"],
                    "cpu_s": record["cpu_s"]["encoder"],
                    "loss_curve": record["curves"]["encoder_loss"],
                    "val_curve": record["curves"]["encoder_val"],
                },
                "scores": record["encoder"],
            },
        )
        record["done"].append("encoder")
        save()
        print(f"encoder done: {record['encoder']}", flush=True)
    encoder = classifier.encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)

    # phase 2: MSE pre-training; phase 3: the GAN
    def generator_steps(phase: str) -> list[dict[str, float]]:
        logs = []
        gen.train()
        for _ in range(checkpoint_every):
            coarse, fine, factor = sg.coarse_batch(crops, cfg.batch_size, cfg.p_factor4, rand)
            fake = gen.refine_frames(coarse, factor)
            terms: dict[str, float] = {}
            if phase == "gan" and variant != "mse":
                terms["disc"] = sg.discriminator_step(gen, disc, opt_d, coarse, fake, fine)
            step_cfg = cfg if phase == "gan" else sg.GanConfig(variant="mse")
            loss, parts = sg.generator_loss(gen, disc, encoder, coarse, fake, fine, step_cfg)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
            opt_g.step()
            logs.append({**terms, **parts})
        return logs

    for phase in ("pretrain", "gan"):
        if phase in record["done"]:  # the GAN phase is never done: more budget continues it
            continue
        while allowance(phase) > 0:
            logs = timed(phase, lambda phase=phase: generator_steps(phase))
            record["steps"][phase] += checkpoint_every
            step = record["steps"][phase]
            mean = {k: float(np.mean([g[k] for g in logs])) for k in logs[0]}
            record["curves"][phase].append((step, mean))
            if step % val_every == 0:
                scores = timed(phase, lambda: sg.validate(gen, encoder, val_crops))
                record["curves"]["val"].append((phase, step, scores))
                print(f"{phase} step {step} {mean} val {scores}", flush=True)
            save()
        if phase == "pretrain":
            record["done"].append(phase)
            save()
    final = sg.validate(gen, encoder, val_crops)
    record["final_val"] = final
    save_weights(
        gen.state_dict(),
        work / f"srgan-{variant}.safetensors",
        {
            "model": "srgan",
            "config": gen.config,
            "training": {
                "variant": variant,
                "gan": asdict(cfg),
                "events": sorted(events),
                "holdout": holdout[0],
                "grid_spacing_m": [2000.0, 4000.0],
                "steps": record["steps"]["pretrain"] + record["steps"]["gan"],
                "steps_by_phase": record["steps"],
                "cpu_s": record["cpu_s"],
                "curves": {k: record["curves"][k] for k in ("pretrain", "gan", "val")},
                "encoder": record.get("encoder_weights", "atmodist-radar.safetensors"),
            },
            "scores": {"heldout_rmi_factor4_crops": final},
        },
    )
    save()
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cpu-minutes", type=float, default=30.0)
    parser.add_argument(
        "--variant", default="content_adv", choices=["mse", "mse_adv", "content_adv"]
    )
    parser.add_argument("--encoder-weights", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    record = run(
        data_root=args.data_root,
        workdir=args.workdir,
        cpu_minutes=args.cpu_minutes,
        variant=args.variant,
        encoder_weights=args.encoder_weights,
        seed=args.seed,
        threads=args.threads,
    )
    print(json.dumps({k: record[k] for k in ("steps", "cpu_s")}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

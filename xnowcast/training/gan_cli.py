"""``python -m xnowcast.training.gan_cli``: train DGMR on the real radar events of the shared archive.

Also ``xnowcast train dgmr``.  RMI 2021-07-04 is held out for validation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from xnowcast.training.gan import train_dgmr

__all__ = ["EVENTS", "main"]

#: The real events of the shared archive (paths under its ``radar/`` folder).
EVENTS = {
    "mch-20150515": "radar/mch/20150515",
    "mch-20160711": "radar/mch/20160711",
    "fmi-20160928": "radar/fmi/pgm/20160928",
    "knmi-20100826": "radar/KNMI/2010/08",
    "rmi-20210704": "radar/rmi/radqpe/20210704",
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xnowcast.training.gan_cli --data-root DIR --out DIR ...``: train on the real events."""
    import argparse
    import subprocess

    from xnowcast.io import open_radar

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data-root", default=None, help="folder holding radar/ (the shared data)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, weights)")
    p.add_argument("--train", nargs="+", default=[e for e in EVENTS if e != "rmi-20210704"])
    p.add_argument("--val", default="rmi-20210704")
    p.add_argument("--config", default="small")
    p.add_argument("--steps", type=int, default=500_000)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lead-steps", type=int, default=18)
    p.add_argument("--grid-samples", type=int, default=6)
    p.add_argument("--grid-weight-mode", default="plus_one", choices=["clip", "plus_one", "none"])
    p.add_argument("--init-weights", default=None, help="start from these generator weights")
    p.add_argument("--no-augment", action="store_true", help="no dihedral augmentation")
    p.add_argument("--volume-weight", type=float, default=0.0, help="weight of the volume term")
    p.add_argument(
        "--ema-decay", type=float, default=0.0, help="moving average of the generator (0: none)"
    )
    p.add_argument(
        "--crps-weight", type=float, default=0.0, help="weight of the ensemble CRPS term"
    )
    p.add_argument(
        "--no-inflow-mask",
        action="store_true",
        help="also score the pixels whose extrapolation trajectory leaves the crop",
    )
    p.add_argument("--lr-generator", type=float, default=5e-5)
    p.add_argument("--lr-discriminator", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--val-crops", type=int, default=4)
    p.add_argument("--val-crop", type=int, default=256)
    p.add_argument("--val-members", type=int, default=4)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--time-budget", type=float, default=None, help="seconds")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--resume", default=None)
    p.add_argument(
        "--export",
        default=None,
        metavar="WEIGHTS",
        help="write the best validated generator of the run in --out to WEIGHTS, then exit",
    )
    p.add_argument(
        "--curve-since",
        type=int,
        default=None,
        metavar="STEP",
        help="with --export: keep the validation curve from this step on (the last validation "
        "at it), e.g. where a run resumed with another validation set",
    )
    a = p.parse_args(argv)
    if a.export:
        from xnowcast.training.gan import CURVE_KEYS
        from xnowcast.training.gan_checkpoint import export_best_weights

        sha = export_best_weights(a.out, a.export, curve_keys=CURVE_KEYS, curve_since=a.curve_since)
        print(json.dumps({"weights": a.export, "sha256": sha}))
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.data_root is None:
        p.error("--data-root is required to train")
    root = Path(a.data_root)
    train = {name: open_radar(root / EVENTS[name]) for name in a.train}
    val = {a.val: open_radar(root / EVENTS[a.val])} if a.val else None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    result = train_dgmr(
        train,
        config=a.config,
        steps=a.steps,
        crop=a.crop,
        batch_size=a.batch_size,
        lead_steps=a.lead_steps,
        grid_samples=a.grid_samples,
        grid_weight_mode=a.grid_weight_mode,
        lr_generator=a.lr_generator,
        lr_discriminator=a.lr_discriminator,
        seed=a.seed,
        val_data=val,
        val_every=a.val_every,
        val_crops=a.val_crops,
        val_crop=a.val_crop,
        val_members=a.val_members,
        augment=not a.no_augment,
        checkpoint_every=a.checkpoint_every,
        out_dir=a.out,
        time_budget=a.time_budget,
        resume=a.resume,
        precision=a.precision,
        init_weights=a.init_weights,
        inflow_mask=not a.no_inflow_mask,
        volume_weight=a.volume_weight,
        crps_weight=a.crps_weight,
        ema_decay=a.ema_decay,
        metadata={"held_out": a.val, "commit": commit, "data": "pysteps-data eaa59fb"},
    )
    print(
        json.dumps(
            {
                "weights": str(result.weights),
                "sha256": result.sha256,
                "steps": result.steps,
                "wall_time": result.wall_time,
                "scores": result.scores,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

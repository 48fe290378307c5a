"""The ``xnowcast`` command: a thin layer over :mod:`xnowcast.api`.

Errors a user can fix are printed as one line on stderr with exit code 2.  Output
files are CF-1.10 (:func:`xnowcast.to_cf_dataset`) and written whole or not at all
(:mod:`xnowcast.atomic_write`): ``-o`` is checked before any model runs, and Ctrl-C
(exit code 130) or a failed write (exit code 1) leaves the previous file as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xnowcast.atomic_write import AtomicOutput, OutputPathError

__all__ = ["build_parser", "main"]


class UsageError(Exception):
    """A bad command line (reported as one line, exit code 2)."""


class RegisteredModels:
    """The registered model names of a task, as argparse ``choices`` (shown by ``--help``).

    Read from the registry when the help is printed, so that building the parser
    (every command) imports no torch.  Every name passes argparse: the library checks
    it, with the one-line error that lists the same registered names (exit code 2).
    """

    def __init__(self, task: str, extra: tuple[str, ...] = ()) -> None:
        self.task, self.extra = task, extra

    def names(self) -> list[str]:
        from xnowcast.registry import list_models

        return [*self.extra, *list_models(self.task)]

    def __contains__(self, name: object) -> bool:
        return True  # checked by the library (a one-line error naming the valid models)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _open(path: str, var: str | None = None) -> Any:
    """A NetCDF/zarr file, a radar file glob, or a dataset name (``sample``, ``rmi-20210704``)."""
    import xarray as xr

    import xnowcast
    from xnowcast.cf_output import grid_mappings_as_coords

    p = Path(path)
    if p.suffix == ".zarr" or (p.is_dir() and (p / ".zmetadata").exists()):
        return grid_mappings_as_coords(xr.open_zarr(p))
    if p.suffix in (".nc", ".nc4", ".netcdf") and p.exists():
        return grid_mappings_as_coords(xr.open_dataset(p))
    if any(ch in path for ch in "*?[") or p.exists():
        # one file per time chunk: big composites (OPERA CIRRUS, 130 MB a frame) stay lazy
        return xnowcast.open_radar(path, chunks={})
    if path in {d["name"] for d in xnowcast.list_datasets()}:
        return xnowcast.open_dataset(path)
    raise UsageError(
        f"cannot open {path!r}: not a NetCDF/zarr file, radar files, or a dataset name"
    )


def _write(obj: Any, output: AtomicOutput) -> None:
    """Write ``obj`` as a CF file into the output's temporary, then put it in place."""
    from xnowcast.cf_output import to_cf_dataset

    out = to_cf_dataset(obj)
    if output.target.suffix == ".zarr":
        out.to_zarr(output.temporary, mode="w")
    else:
        out.to_netcdf(output.temporary)
    output.commit()
    print(f"wrote {output.target}")


def _add_check_values(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-check-values",
        dest="check_values",
        action="store_false",
        help="skip the plausibility checks of the input values (no-data codes, range)",
    )


def _cmd_predict(args: argparse.Namespace) -> None:
    import xnowcast

    ds = _open(args.input)
    init = args.init_time
    fc = xnowcast.nowcast(
        ds,
        model=args.model,
        steps=args.steps,
        members=args.members,
        init_time=None if init is None else (init[0] if len(init) == 1 else init),
        var=args.var,
        device=args.device,
        seed=args.seed,
        weights=args.weights,
        on_missing=args.on_missing,
        check_values=args.check_values,
        units=args.units,
    )
    _write(fc, args.atomic_output)


def _cmd_downscale(args: argparse.Namespace) -> None:
    import xnowcast

    ds = _open(args.input)
    fine = xnowcast.downscale(
        ds,
        factor=args.factor,
        time_factor=args.time_factor,
        model=args.model,
        var=args.var,
        device=args.device,
        weights=args.weights,
        check_values=args.check_values,
        units=args.units,
    )
    _write(fine, args.atomic_output)


def _cmd_verify(args: argparse.Namespace) -> None:
    import xnowcast

    fc = _open(args.forecast)
    obs = _open(args.observations)
    scores = xnowcast.verify(
        fc, obs, metrics=args.metrics, thresholds=args.thresholds, var=args.var
    )
    print(scores.to_dataframe().to_string() if scores.sizes else scores)
    if args.atomic_output is not None:
        _write(scores, args.atomic_output)


def _cmd_datasets(args: argparse.Namespace) -> None:
    import xnowcast

    if args.action == "list":
        for d in xnowcast.list_datasets():
            print(f"{d['name']:<16} {d.get('description', d.get('source', ''))}")
        return
    if not args.name:
        raise UsageError("datasets fetch needs a NAME (see `xnowcast datasets list`)")
    ds = xnowcast.open_dataset(args.name)
    print(f"{args.name}: {dict(ds.sizes)}")


def _cmd_models(args: argparse.Namespace) -> None:
    from xnowcast.registry import specs

    for spec in specs():
        weights = spec.default_weights or ("required" if spec.weights_required else "-")
        print(
            f"{spec.name:<14} {spec.task:<14} weights: {weights:<12} units: {spec.units:<6} "
            f"normalisation: {spec.normalisation}; {spec.summary}"
        )


#: ``xnowcast train`` options that shape a training run, meaningless for ``--reexport``.
_TRAINING_ONLY = ("config", "max_steps", "max_time", "resume", "batch_size", "crop", "lr")


def _cmd_reexport(args: argparse.Namespace) -> None:
    from xnowcast.errors import TrainingError
    from xnowcast.training.command import reexport

    given = [f"--{k.replace('_', '-')}" for k in _TRAINING_ONLY if getattr(args, k) is not None]
    if given or args.devices != 1 or args.strategy != "auto" or args.precision != "32":
        raise TrainingError(
            f"--reexport trains nothing: drop {', '.join(given) or 'the training options'} "
            "(it takes --data, --out, --factor, --time-factor, --seed, --accelerator, --var)"
        )
    accelerator = "cpu" if args.accelerator == "auto" else args.accelerator
    done = reexport(
        args.model,
        args.reexport,
        out=args.out,
        data=args.data,
        factor=args.factor,
        time_factor=args.time_factor,
        seed=args.seed,
        accelerator=accelerator,
        var=args.var,
    )
    from xnowcast.training.lightning.reexport import comparable_scores

    print(f"xnowcast train --reexport: {done.source} (sha256 {done.source_sha256[:12]})")
    print(f"  -> {done.path} (sha256 {done.sha256})")
    print("  same tensors; the written file scores as the source on the held-out windows")
    for row in comparable_scores(done.stored_scores, done.heldout_scores):
        better = "" if row["better"] == "none" else f"{row['better']} is better; "
        print(
            f"  {row['metric']:<36} stored {row['stored']:.4g}   Lightning held-out "
            f"{row['lightning']:.4g}   ({better}other windows)"
        )


def _cmd_train(args: argparse.Namespace) -> None:
    from xnowcast.training.command import train

    if args.reexport is not None:
        _cmd_reexport(args)
        return
    weights = train(
        args.model,
        data=args.data,
        out=args.out,
        config=args.config,
        max_steps=args.max_steps,
        max_time=args.max_time,
        devices=args.devices,
        accelerator=args.accelerator,
        strategy=args.strategy,
        precision=args.precision,
        batch_size=args.batch_size,
        crop=args.crop,
        resume=args.resume,
        seed=args.seed,
        lr=args.lr,
        factor=args.factor,
        time_factor=args.time_factor,
        checkpoint_every=args.checkpoint_every,
        num_workers=args.workers,
        var=args.var,
        progress=not args.quiet,
    )
    if weights is not None:
        print(f"xnowcast train: weights written to {weights}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from xnowcast.demo import run_demo

    run_demo(Path(args.out), members=args.members, progress=not args.quiet)


_UNITS_HELP = "units of the input when its units attribute is missing or wrong (e.g. 'mm/h')"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``xnowcast`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="xnowcast",
        description="Deep-learning precipitation nowcasting and downscaling for xarray.",
        formatter_class=fmt,
        epilog="Run `xnowcast COMMAND --help` for the options and examples of each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, examples: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            formatter_class=fmt,
            epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        )
        return p

    p = add(
        "predict",
        "Nowcast from radar frames.",
        """
        xnowcast predict radar.nc --model dgmr --steps 18 --members 8 -o forecast.nc
        xnowcast predict 'radar/*.h5' --model extrapolation -o forecast.nc
        xnowcast predict sample --model persistence --steps 6 -o persistence.nc
    """,
    )
    p.add_argument("input", help="NetCDF/zarr file, radar files (glob), or a dataset name")
    p.add_argument(
        "--model",
        default="dgmr",
        choices=RegisteredModels("nowcast"),
        help="a registered nowcast model (default: dgmr)",
    )
    p.add_argument("--steps", type=int, default=18, help="lead times (default: 18)")
    p.add_argument("--members", type=int, default=1, help="ensemble members (default: 1)")
    p.add_argument(
        "--init-time", nargs="+", default=None, help="initialisation time(s); default: the last"
    )
    p.add_argument("--var", default=None, help="variable name in the input Dataset")
    p.add_argument("--units", default=None, help=_UNITS_HELP)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--weights", default="default", help="shipped weights name or a .safetensors path"
    )
    p.add_argument(
        "--on-missing",
        choices=["nan", "raise"],
        default="nan",
        help="init times (of several) whose input has a gap: NaN forecasts (default) or an error",
    )
    _add_check_values(p)
    p.add_argument("-o", "--output", required=True, help="output .nc or .zarr")
    p.set_defaults(func=_cmd_predict)

    p = add(
        "downscale",
        "Downscale coarse, infrequent fields to fine, frequent ones.",
        """
        xnowcast downscale coarse.nc --factor 2 --time-factor 2 -o fine.nc
        xnowcast downscale coarse.nc --model trilinear -o fine.nc
    """,
    )
    p.add_argument("input")
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--time-factor", type=int, default=2)
    p.add_argument(
        "--model",
        default="auto",
        choices=RegisteredModels("downscale", extra=("auto",)),
        help="a registered downscale model, or auto (default: the best measured)",
    )
    p.add_argument("--var", default=None)
    p.add_argument("--units", default=None, help=_UNITS_HELP)
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="default")
    _add_check_values(p)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_cmd_downscale)

    p = add(
        "verify",
        "Score a forecast against observations.",
        """
        xnowcast verify forecast.nc radar.nc --metrics csi fss crps
        xnowcast verify forecast.nc sample --thresholds 1 4 8 -o scores.nc
    """,
    )
    p.add_argument("forecast")
    p.add_argument("observations")
    p.add_argument("--metrics", nargs="+", default=["csi", "hss", "fss", "crps"])
    p.add_argument("--thresholds", nargs="+", type=float, default=[1.0, 4.0, 8.0])
    p.add_argument("--var", default=None)
    p.add_argument("-o", "--output", default=None)
    p.set_defaults(func=_cmd_verify)

    p = add(
        "train",
        "Train a model on radar data with PyTorch Lightning (the train extra); write its weights.",
        """
        xnowcast train zsm --data events.zarr --config tiny --max-steps 3 --out run/
        xnowcast train zsm --resume run/ --max-steps 5
        xnowcast train dgmr --data 's3://bucket/radar.zarr' --devices 8 --accelerator gpu \\
            --precision bf16-mixed --max-time 08:00:00 --out dgmr-run/
        xnowcast train fczsm --data 'radar/mch/*/*.gif' --max-steps 2000 --out fczsm-run/
        xnowcast train dgmr --reexport old/dgmr.safetensors --data rmi-20210704 --out new/
    """,
    )
    p.add_argument("model", nargs="?", default=None, help="model to train (optional with --resume)")
    p.add_argument("--data", default=None, help="radar glob, NetCDF, zarr (path/URL), dataset name")
    p.add_argument("--out", default=None, help="run folder (default: the --resume folder)")
    p.add_argument("--config", default=None, help="model config (every trainable model: tiny)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps in total")
    p.add_argument("--max-time", default=None, help="stop after HH:MM:SS in this call")
    p.add_argument("--devices", type=int, default=1, help="data-parallel processes (default 1)")
    p.add_argument("--accelerator", default="auto", choices=["cpu", "gpu", "auto"])
    p.add_argument("--strategy", default="auto", choices=["auto", "ddp"])
    p.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    p.add_argument("--batch-size", type=int, default=None, help="windows per batch and device")
    p.add_argument("--crop", type=int, default=None, help="window side in pixels of the data")
    p.add_argument("--resume", default=None, help="continue the run in this folder")
    p.add_argument("--seed", type=int, default=None, help="seed of the whole run (default 0)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (not dgmr)")
    p.add_argument("--factor", type=int, default=None, help="downscaling factor (default 2)")
    p.add_argument("--time-factor", type=int, default=None, help="time factor (default 2)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--workers", type=int, default=0, help="data-loader processes per device")
    p.add_argument("--var", default=None, help="variable of a Dataset to train on")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--reexport",
        default=None,
        metavar="WEIGHTS",
        help="write these weights (of an older trainer) through the Lightning path, untrained: "
        "held-out scores on --data (default rmi-20210704), --out file or folder",
    )
    p.set_defaults(func=_cmd_train)

    p = add(
        "datasets",
        "List or fetch the real radar events.",
        """
        xnowcast datasets list
        xnowcast datasets fetch rmi-20210704
    """,
    )
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_cmd_datasets)

    p = add(
        "models",
        "List the models and their shipped weights.",
        """
        xnowcast models list
    """,
    )
    p.add_argument("action", choices=["list"])
    p.set_defaults(func=_cmd_models)

    p = add(
        "demo",
        "Nowcast and downscale the bundled real radar sample; write NetCDF and a PNG.",
        """
        xnowcast demo --out demo-output
    """,
    )
    p.add_argument("--out", default="demo-output")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    from xnowcast.errors import XnowcastError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # the output path is checked, and its temporary made, before any model runs;
        # any failure (Ctrl-C included) removes the temporary and keeps the old file
        output = getattr(args, "output", None)
        args.atomic_output = None if output is None else AtomicOutput(output)
        with args.atomic_output or contextlib.nullcontext():
            args.func(args)
    except KeyboardInterrupt:
        kept = (
            f"; {args.output} was not written or changed" if getattr(args, "output", None) else ""
        )
        print(f"xnowcast {args.command}: interrupted{kept}", file=sys.stderr)
        return 130
    except (UsageError, XnowcastError, OutputPathError, FileNotFoundError, ValueError) as err:
        print(f"xnowcast {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a failure while writing: the previous output is intact
        print(f"xnowcast {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    return 0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())

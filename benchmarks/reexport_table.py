"""The shipped weights re-exported through the Lightning path: hashes and held-out scores.

Reads only the metadata of the files in ``xnowcast/weights/`` (what
``xnowcast train MODEL --reexport`` wrote: the source's sha256, its stored scores
and the Lightning held-out scores) and prints a markdown table, one row per
metric of the same name in both.  Files not re-exported are listed below it.

With ``--same-output REV`` it also runs every re-exported file and its source
(the file as it was at git revision ``REV``) through ``nowcast`` / ``downscale``
on the packaged real sample and says whether the outputs are identical.

    python benchmarks/reexport_table.py [--same-output 9230ed5]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from xnowcast.training.lightning.reexport import comparable_scores
from xnowcast.weights import PACKAGE_WEIGHTS_DIR, file_sha256, read_metadata


def _baselines(held: dict) -> str:
    """The model's MSE against each baseline's on the same Lightning windows."""
    if "lag_accuracy" in held:  # a self-supervised encoder: no baseline but chance
        return f"chance {held['lag_accuracy']['chance']:.3g}"
    key = "mse" if "trilinear" in held else "mse_of_mean"
    model = held["model"][key]
    parts = [
        f"{name} {model / entry[key]:.3f}"
        for name, entry in held.items()
        if name != "model" and isinstance(entry, dict) and entry.get(key)
    ]
    return "MSE / " + ", ".join(parts)


def rows(folder: Path = PACKAGE_WEIGHTS_DIR) -> tuple[list[list[str]], list[str]]:
    """Table rows of the re-exported files, and the names of the others."""
    out, others = [], []
    for path in sorted(folder.glob("*.safetensors")):
        meta = read_metadata(path)
        training = meta.get("training") or {}
        if "reexported_from_sha256" not in training:
            others.append(path.name)
            continue
        held = training["heldout_scores"]
        stored = {k: v for k, v in meta["scores"].items() if k != "lightning_heldout"}
        shas = f"`{training['reexported_from_sha256'][:12]}` -> `{file_sha256(path)[:12]}`"
        count = f"{held['pairs']} pairs" if "pairs" in held else f"{held.get('windows')} windows"
        windows = f"{count}; {_baselines(held)}"
        for k, row in enumerate(comparable_scores(stored, held)):
            out.append(
                [
                    f"`{path.name}`" if k == 0 else "",
                    shas if k == 0 else "",
                    row["metric"],
                    f"{row['stored']:.4g}",
                    f"{row['lightning']:.4g}",
                    windows if k == 0 else "",
                ]
            )
    return out, others


#: Registered name, task and the downscaling factors tried of each shipped weights file.
RUNS = {
    "convlstm-small": ("convlstm", "nowcast", [{}]),
    "unet-nowcast-small": ("unet", "nowcast", [{}]),
    "unet-compact": ("unet", "downscale", [{"factor": 2, "time_factor": 2}]),
    "unet3d-compact": ("unet3d", "downscale", [{"factor": 2, "time_factor": 2}]),
    "zsm-flowprior": ("zsm", "downscale", [{"factor": 2, "time_factor": 2}]),
    "srgan-radar": (
        "srgan",
        "downscale",
        [{"factor": 2, "time_factor": 2}, {"factor": 4, "time_factor": 1}],
    ),
    "atmodist-radar": ("atmodist", "representation", [{}]),
}


def same_output(rev: str) -> list[str]:
    """Lines saying whether each re-exported file forecasts as its source at ``rev`` did."""
    import xnowcast

    sample = xnowcast.open_dataset("sample")["precipitation"]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for stem, (name, task, settings) in RUNS.items():
            old = Path(tmp) / f"{stem}.safetensors"
            blob = subprocess.run(
                ["git", "show", f"{rev}:xnowcast/weights/{old.name}"],
                capture_output=True,
                check=True,
            ).stdout
            old.write_bytes(blob)
            for kw in settings:
                outs = []
                for weights in (str(old), str(PACKAGE_WEIGHTS_DIR / old.name)):
                    if task == "representation":  # verify's learned distance
                        radar = sample.isel(time=slice(0, 4))
                        fc = xnowcast.nowcast(radar, model="extrapolation", steps=6)
                        fc = xnowcast.verify(
                            fc, sample, metrics=["atmodist"], atmodist_weights=weights
                        ).atmodist
                    elif task == "nowcast":
                        radar = sample.isel(time=slice(0, 4))
                        fc = xnowcast.nowcast(radar, model=name, steps=6, weights=weights)
                    else:
                        f, tf = kw["factor"], kw["time_factor"]
                        coarse = sample.isel(time=slice(0, 9)).coarsen(y=f, x=f).mean()[::tf]
                        fc = xnowcast.downscale(coarse, model=name, weights=weights, **kw)
                    outs.append(fc.values)
                same = np.array_equal(outs[0], outs[1], equal_nan=True)
                lines.append(f"{task} {name} {kw or ''} with {old.name}: identical = {same}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--same-output", metavar="REV", default=None)
    args = parser.parse_args()
    table, others = rows()
    head = ["file", "sha256 before -> after", "metric", "stored", "Lightning held-out", "same run"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in table:
        print("| " + " | ".join(row) + " |")
    print(f"\nnot re-exported: {', '.join(others) or 'none'}")
    if args.same_output:
        print()
        for line in same_output(args.same_output):
            print(f"- {line}")


if __name__ == "__main__":
    main()

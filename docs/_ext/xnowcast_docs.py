"""Sphinx directives that read xnowcast's model registry at build time.

The models page must say what this build of xnowcast really ships, so its
tables are not written by hand:

``.. xnowcast-models::``
    One row per registered model (:func:`xnowcast.registry.specs`): name,
    task, what it is, source paper, input (frames; factors, window, static
    fields), time step, units and normalisation, ensembles, default weights.
``.. xnowcast-weights-summary::``
    Overview tables of the shipped weights: training record and headline scores.
``.. xnowcast-weights::``
    For every shipped weights file: its size and sha256 (checked against the
    registry), and the config, training record and scores stored in its
    metadata (:func:`xnowcast.registry.weights_metadata`).
``.. xnowcast-configs:: module:DICT``
    A table of a model module's named configurations.
``.. xnowcast-cli::``
    The help of the ``xnowcast`` command and of each subcommand.

Also home of :func:`reset_example`, which sphinx-gallery runs before every
example.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

__all__ = [
    "cli_lines",
    "configs_lines",
    "models_lines",
    "reset_example",
    "setup",
    "summary_lines",
    "weights_lines",
]

logger = logging.getLogger(__name__)


def reset_example(gallery_conf: dict[str, Any], fname: str) -> None:
    """Quiet, CPU-only, seeded settings before each gallery example."""
    import torch

    import xnowcast

    torch.manual_seed(0)
    xnowcast.set_options(progress=False, device="cpu")


# ---------------------------------------------------------------------------- helpers


def _cell(text: Any) -> str:
    """One line of table text; a leading list marker is escaped so it stays text."""
    line = " ".join(str(text).split()) or "-"
    if line[0] in "-*+#|" and line != "-":
        line = "\\ " + line
    return line


def _list_table(header: list[str], rows: Iterable[list[str]], widths: str = "auto") -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {_cell(row[0])}")
        lines.extend(f"     - {_cell(value)}" for value in row[1:])
    lines.append("")
    return lines


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", "1")]``; long lists (histories) are summarised."""
    if isinstance(value, Mapping):
        out: list[tuple[str, str]] = []
        for key, item in value.items():
            out.extend(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list | tuple):
        if len(value) > 8:
            return [(prefix, f"({len(value)} entries)")]
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return [(prefix, ", ".join(_number(v) for v in value) or "-")]
        return [(prefix, json.dumps(value))]
    return [(prefix, _number(value))]


class _RstDirective(SphinxDirective):
    """A directive that renders the reStructuredText lines of :meth:`lines`."""

    def lines(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        text = StringList(self.lines(), source=f"<{self.name}>")
        nested_parse_with_titles(self.state, text, container, self.content_offset)
        return container.children


# ---------------------------------------------------------------------------- content


def _interface(spec: Any) -> str:
    """What a model takes, as its spec declares it."""
    if spec.task == "nowcast":
        return f"{spec.input_frames} frame{'s' if spec.input_frames > 1 else ''}"
    factors = ", ".join(map(str, spec.factors)) or "any"
    time_factors = ", ".join(map(str, spec.time_factors)) or "any"
    window = f"windows of {spec.window}" if spec.window else "the whole series"
    static = f"; {spec.static_channels} static fields" if spec.static_channels else ""
    return f"factor {factors}; time_factor {time_factors}; {window}{static}"


def models_lines() -> list[str]:
    """A list-table of the registered models, read from their specs."""
    from xnowcast.registry import specs

    rows = []
    for task in ("nowcast", "downscale"):
        for spec in specs(task):
            step = "any" if spec.time_step_minutes is None else f"{spec.time_step_minutes:g} min"
            rows.append(
                [
                    f"``{spec.name}``",
                    task,
                    spec.summary,
                    spec.reference,
                    _interface(spec),
                    step,
                    f"{spec.units}; {spec.normalisation}",
                    "yes" if spec.stochastic else "no",
                    spec.default_weights
                    or (
                        "none shipped: trained weights required (``weights=PATH``)"
                        if spec.weights_required
                        else "none (parameter-free or untrained)"
                    ),
                ]
            )
    header = [
        "name", "task", "what it is", "reference", "input", "step", "units; normalisation",
        "ensembles", "default weights",
    ]  # fmt: skip
    return _list_table(header, rows, "8 7 24 16 12 5 12 5 11")


def _specs(models: Mapping[str, Any] | None) -> list[Any]:
    """The specs of ``models`` (``{name: spec}``), or every registered one."""
    from xnowcast.registry import specs

    return specs() if models is None else [models[name] for name in sorted(models)]


def weights_lines(models: Mapping[str, Any] | None = None) -> list[str]:
    """Size, sha256 and stored metadata (config, training, scores) of every shipped file.

    A file whose sha256 differs from the registry's is a build warning (an error
    under ``-W``): the docs must not describe weights the package would refuse.
    """
    from xnowcast.registry import weights_metadata
    from xnowcast.weights import file_sha256

    out: list[str] = []
    for spec in _specs(models):
        name = spec.name
        for label, entry in spec.weights.items():
            title = f"``{name}``: ``{label}`` (``{entry.filename}``)"
            out += [title, "~" * len(title), ""]
            default = (
                " These are the model's default weights." if label == spec.default_weights else ""
            )
            if not entry.path.is_file():
                out += [
                    "The registry names this file, but it is not in this build "
                    f"(expected at ``xnowcast/weights/{entry.filename}``).{default}",
                    "",
                ]
                continue
            digest = file_sha256(entry.path)
            if digest != entry.sha256:
                logger.warning(
                    "xnowcast weights %s: sha256 %s differs from the registry's %s",
                    entry.filename, digest, entry.sha256,
                )  # fmt: skip
            size = entry.path.stat().st_size / 1e6
            out += [f"{size:.2f} MB, sha256 ``{digest}``.{default}", ""]
            meta = weights_metadata(spec, label)
            for section in ("config", "training", "scores"):
                if meta.get(section) in (None, {}, ""):
                    continue
                out += [f"**{section}** (stored in the file)", ""]
                rows = [[f"``{key}``", value] for key, value in _flatten(meta[section])]
                out += _list_table(["key", "value"], rows, "40 60")
    if not out:
        out = [
            "No registered model ships trained weights in this build: the registered "
            "models are parameter-free.",
            "",
        ]
    return out


def _shipped(models: Mapping[str, Any] | None = None) -> list[tuple[str, str, Any, dict]]:
    """``(model, label, entry, metadata)`` of every shipped weights file present in this build."""
    from xnowcast.registry import weights_metadata

    out = []
    for spec in _specs(models):
        for label, entry in spec.weights.items():
            if entry.path.is_file():
                out.append((spec.name, label, entry, weights_metadata(spec, label)))
    return out


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) not in (None, ""):
            return mapping[key]
    return "-"


def summary_lines(models: Mapping[str, Any] | None = None) -> list[str]:
    """Overview tables of the shipped weights: how each was trained, and its headline scores.

    The downscaling weights (metadata ``format`` ``xnowcast-downscale-1``) store
    MSE and SSIM on held-out pairs for the model and for trilinear interpolation;
    they get a scores table of their own.  Other formats are summarised by
    their training record; their full metadata follow in the per-file sections.
    """
    shipped = _shipped(models)
    if not shipped:
        return []
    rows = []
    for name, _label, entry, meta in shipped:
        training = meta.get("training", {}) or {}
        events = training.get("events", training.get("train_events", "-"))
        if isinstance(events, list | tuple):
            events = ", ".join(map(str, events))
        rows.append(
            [
                f"``{name}``",
                f"``{entry.filename}``",
                f"{entry.path.stat().st_size / 1e6:.2f}",
                _number(_first(training, "parameters", "generator_parameters")),
                events,
                _first(training, "holdout", "held_out"),
                _number(_first(training, "steps")),
                _number(_first(training, "wall_s", "wall_time_s", "wall_time")),
            ]
        )
    out = _list_table(
        ["model", "file", "MB", "parameters", "trained on", "held out", "steps", "wall time (s)"],
        rows,
        "9 20 5 9 27 11 7 9",
    )
    down = [
        (name, meta)
        for name, _, _, meta in shipped
        if meta.get("format") == "xnowcast-downscale-1" and "model" in meta.get("scores", {})
    ]
    if down:
        rows = []
        for name, meta in down:
            scores = meta["scores"]
            model, base = scores["model"], scores.get("trilinear", {})
            rows.append(
                [
                    f"``{name}``",
                    _number(model.get("mse")),
                    _number(model.get("mse_inserted")),
                    _number(model.get("mse_original")),
                    _number(model.get("ssim")),
                    _number(base.get("mse", "-")),
                    _number(base.get("ssim", "-")),
                    "-"
                    if scores.get("mse_reduction_vs_trilinear") is None
                    else f"{100 * scores['mse_reduction_vs_trilinear']:.1f} %",
                    _number(scores.get("pairs", "-")),
                ]
            )
        out += [
            "Downscaling scores stored with the weights, on held-out pairs (2x space, "
            "2x time) cut from the held-out event; MSE in (mm/h)², SSIM as in the "
            "FC-ZSM paper:",
            "",
        ]
        out += _list_table(
            [
                "model",
                "MSE",
                "MSE inserted frames",
                "MSE original frames",
                "SSIM",
                "trilinear MSE",
                "trilinear SSIM",
                "MSE reduction vs trilinear",
                "pairs",
            ],
            rows,
        )
    nowcast = [
        (name, meta)
        for name, _, _, meta in shipped
        if meta.get("format") == "xnowcast-dgmr-generator-1" and meta.get("scores")
    ]
    for name, meta in nowcast:
        scores = meta["scores"]
        thresholds = sorted(
            {key.rsplit("_", 1)[1] for key in scores if key.startswith("csi_")}, key=float
        )
        rows = []
        for kind, label in (
            ("member", f"``{name}`` ensemble (CSI: mean over its members)"),
            ("mean", f"``{name}``, ensemble mean"),
            ("persistence", "persistence"),
        ):
            crps_key = "crps" if kind != "persistence" else "crps_persistence"
            crps = scores.get(crps_key, "-") if kind != "mean" else "-"
            rows.append(
                [label]
                + [_number(scores.get(f"csi_{kind}_{t}", "-")) for t in thresholds]
                + [_number(crps)]
            )
        out += [
            f"``{name}`` validation scores stored with the weights, on crops of the held-out "
            "event, pooled over all lead times (CRPS in mm/h; for persistence it is the MAE):",
            "",
        ]
        out += _list_table(["forecast", *[f"CSI >= {t} mm/h" for t in thresholds], "CRPS"], rows)
        if "mean_rate_forecast" in scores and "mean_rate_observed" in scores:
            out += [
                f"Mean rain rate of the ensemble mean {_number(scores['mean_rate_forecast'])} "
                f"mm/h, observed {_number(scores['mean_rate_observed'])} mm/h.",
                "",
            ]
    return out


def configs_lines(target: str) -> list[str]:
    """A table of the named configurations ``module:DICT`` (rows: keys; columns: configs)."""
    module_name, _, attribute = target.partition(":")
    configs = getattr(importlib.import_module(module_name), attribute)
    aliases = {
        name: cfg["preset"]
        for name, cfg in configs.items()
        if set(cfg) == {"preset"} and cfg["preset"] in configs
    }
    names = [n for n in configs if n not in aliases]
    keys: list[str] = []
    for name in names:
        keys.extend(k for k in configs[name] if k not in keys)
    rows = [
        [f"``{key}``"] + [_number(configs[name].get(key, "-")) for name in names] for key in keys
    ]
    out = _list_table(["key", *[f"``{n}``" for n in names]], rows)
    if aliases:
        said = ", ".join(f"``{a}`` is ``{p}``" for a, p in aliases.items())
        out += [f"({said}.)", ""]
    return out


def cli_lines() -> list[str]:
    """``xnowcast --help`` and the help of each subcommand, as literal blocks with titles."""
    import argparse
    import os

    from xnowcast.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        out = ["Overview", "--------", "", ".. code-block:: text", ""]
        out += ["   " + line for line in parser.format_help().splitlines()] + [""]
        for name, command in sub.choices.items():
            title = f"``xnowcast {name}``"
            out += [title, "-" * len(title), "", ".. code-block:: text", ""]
            out += ["   " + line for line in command.format_help().splitlines()] + [""]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return out


# ---------------------------------------------------------------------------- directives


class ModelsDirective(_RstDirective):
    def lines(self) -> list[str]:
        return models_lines()


class WeightsDirective(_RstDirective):
    def lines(self) -> list[str]:
        return weights_lines()


class WeightsSummaryDirective(_RstDirective):
    def lines(self) -> list[str]:
        return summary_lines()


class ConfigsDirective(_RstDirective):
    required_arguments = 1

    def lines(self) -> list[str]:
        return configs_lines(self.arguments[0])


class CliDirective(_RstDirective):
    def lines(self) -> list[str]:
        return cli_lines()


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("xnowcast-models", ModelsDirective)
    app.add_directive("xnowcast-weights", WeightsDirective)
    app.add_directive("xnowcast-weights-summary", WeightsSummaryDirective)
    app.add_directive("xnowcast-configs", ConfigsDirective)
    app.add_directive("xnowcast-cli", CliDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

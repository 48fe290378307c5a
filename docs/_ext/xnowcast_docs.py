"""Sphinx directives that read xnowcast's model registry at build time.

The models page must say what this build of xnowcast really ships, so its
tables are not written by hand:

``.. xnowcast-models::``
    One row per registered model (:data:`xnowcast.registry.MODELS`): name,
    task, what it is, source paper, time step, default weights.
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
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

__all__ = ["reset_example", "setup"]


def reset_example(gallery_conf: dict[str, Any], fname: str) -> None:
    """Quiet, CPU-only, seeded settings before each gallery example."""
    import torch

    import xnowcast

    torch.manual_seed(0)
    xnowcast.set_options(progress=False, device="cpu")


# ---------------------------------------------------------------------------- helpers


def _cell(text: Any) -> str:
    """One line of table text (no bars that would break a list-table)."""
    return " ".join(str(text).split()) or "-"


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
    """A directive that renders generated reStructuredText."""

    def lines(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        text = StringList(self.lines(), source=f"<{self.name}>")
        nested_parse_with_titles(self.state, text, container, self.content_offset)
        return container.children


# ---------------------------------------------------------------------------- directives


class ModelsDirective(_RstDirective):
    """Table of the registered models."""

    def lines(self) -> list[str]:
        from xnowcast.registry import MODELS

        rows = []
        for task in ("nowcast", "downscale"):
            for name in sorted(n for n, s in MODELS.items() if s.task == task):
                spec = MODELS[name]
                step = (
                    f"{spec.time_step_minutes:g} min"
                    if spec.time_step_minutes is not None
                    else "any"
                )
                weights = spec.default_weights or "none (parameter-free or untrained)"
                rows.append(
                    [
                        f"``{name}``",
                        task,
                        spec.summary,
                        spec.reference,
                        step,
                        "yes" if spec.stochastic else "no",
                        weights,
                    ]
                )
        header = ["name", "task", "what it is", "reference", "step", "ensembles", "default weights"]
        return _list_table(header, rows, "10 8 30 22 6 7 17")


class WeightsDirective(_RstDirective):
    """Shipped weights, their hashes and the metadata stored with them."""

    def lines(self) -> list[str]:
        from xnowcast.registry import MODELS, weights_metadata
        from xnowcast.weights import file_sha256

        out: list[str] = []
        for name in sorted(MODELS):
            spec = MODELS[name]
            for label, entry in spec.weights.items():
                path = entry.path
                title = f"``{name}``: weights ``{label}`` (``{entry.filename}``)"
                out += [title, "~" * len(title), ""]
                if not path.is_file():
                    out += [
                        f"The registry names this file, but it is not in this build "
                        f"(expected at ``xnowcast/weights/{entry.filename}``).",
                        "",
                    ]
                    continue
                digest = file_sha256(path)
                check = "matches the registry" if digest == entry.sha256 else "DOES NOT match"
                size = path.stat().st_size / 1e6
                out += [
                    f"{size:.2f} MB, sha256 ``{digest[:16]}...`` ({check}).",
                    "",
                ]
                meta = weights_metadata(spec, label)
                for section in ("config", "training", "scores"):
                    if meta.get(section) in (None, {}, ""):
                        continue
                    out += [f"**{section}** (from the file's metadata)", ""]
                    rows = [[f"``{k}``", v] for k, v in _flatten(meta[section])]
                    out += _list_table(["key", "value"], rows, "40 60")
        if not out:
            out = [
                "No model in this build ships trained weights yet: the registered models are "
                "parameter-free, or untrained until weights are trained and registered.",
                "",
            ]
        return out


class ConfigsDirective(_RstDirective):
    """Table of the named configurations of a model module (``module:DICT``)."""

    required_arguments = 1

    def lines(self) -> list[str]:
        module_name, _, attribute = self.arguments[0].partition(":")
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
            [f"``{key}``"] + [_number(configs[name].get(key, "-")) for name in names]
            for key in keys
        ]
        out = _list_table(["key", *[f"``{n}``" for n in names]], rows)
        if aliases:
            said = ", ".join(f"``{a}`` is ``{p}``" for a, p in aliases.items())
            out += [f"({said}.)", ""]
        return out


class CliDirective(_RstDirective):
    """``xnowcast --help`` and the help of every subcommand, from the real parser."""

    def lines(self) -> list[str]:
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


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("xnowcast-models", ModelsDirective)
    app.add_directive("xnowcast-weights", WeightsDirective)
    app.add_directive("xnowcast-configs", ConfigsDirective)
    app.add_directive("xnowcast-cli", CliDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

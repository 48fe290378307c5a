"""The model registry: one :class:`ModelSpec` per ``(task, name)``, and what a name resolves to.

Every model module in :mod:`xnowcast.models` declares its own spec beside the model
(``register(ModelSpec(...))`` at module level); the registry imports those modules on
the first lookup, so ``import xnowcast`` imports no torch.  Names are unique per task
(``unet`` may be both a nowcaster and a downscaler).  Besides the nowcasters and
downscalers there is a third task, ``representation``: self-supervised encoders
(``atmodist``) that the metrics use and ``xnowcast train`` trains; the nowcast and
downscale pipelines never run them.

A name is resolved once, by :func:`resolve_model`, into a :class:`ResolvedModel`:
the spec, the weights record (file, sha256, metadata) and the config.  That one
object travels through a pipeline (to dask workers too: it is small and picklable),
builds its module once per process (:meth:`ResolvedModel.load`), and writes the
output's provenance (:meth:`ResolvedModel.provenance`).

The model interfaces (what a module takes and returns) are in
:mod:`xnowcast.models.base`; the contributor guide (``docs/contributing.rst``) lists
what a spec must declare.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xnowcast.errors import ModelError, WeightsError
from xnowcast.module_cache import file_stamp as _file_stamp
from xnowcast.module_cache import load_cached as _load_cached
from xnowcast.weights import PACKAGE_WEIGHTS_DIR, file_sha256, read_metadata

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODELS",
    "TASKS",
    "ModelRegistry",
    "ModelSpec",
    "ResolvedModel",
    "WeightsFile",
    "WeightsRecord",
    "build_model",
    "get_spec",
    "list_models",
    "load_model",
    "register",
    "resolve_model",
    "resolve_weights",
    "specs",
    "unregister",
    "weights_metadata",
    "weights_record",
]

TASKS = ("nowcast", "downscale", "representation")
#: Interface attributes a spec declares and a built module must have, per task.
INTERFACE: dict[str, tuple[str, ...]] = {
    "nowcast": ("input_frames",),
    "downscale": ("window", "in_channels", "static_channels"),
    "representation": (),
}


@dataclass(frozen=True)
class WeightsFile:
    """A weights file shipped inside the package (``xnowcast/weights/``)."""

    filename: str
    sha256: str

    @property
    def path(self) -> Path:
        return PACKAGE_WEIGHTS_DIR / self.filename


@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs to know about a model, declared beside it.

    Attributes
    ----------
    name, task
        Registry name (unique per task) and ``"nowcast"``, ``"downscale"`` or
        ``"representation"`` (a self-supervised encoder: used by metrics, trained by
        ``xnowcast train``, never run by the nowcast/downscale pipelines).
    builder
        ``"module:function"`` building the ``nn.Module``: ``function(config, **kwargs)``
        (downscalers get ``factor=`` and ``time_factor=``).
    summary, reference
        One line of description and the source paper.
    time_step_minutes
        The time step the model was trained for; the runtime refuses other steps
        (None: any regular step).  A downscaler's weights may also record the steps
        and spacings they were trained on (``training.time_steps_minutes``,
        ``training.grid_spacing_m`` in their metadata): outside them the runtime
        falls back to ``flow``.
    units
        The units the module reads and writes; the runtime converts the data to them
        and the output back to the data's units.
    normalisation
        How the module normalises values internally (documentation: shown by
        ``xnowcast models list`` and the models page; the module applies it).
    default_config
        Config used when building without weights (weights carry their own).
    weights, default_weights
        Shipped weights by name, and the one used by default (None: untrained).
    stochastic
        Whether outputs depend on a random latent (ensembles make sense).
    input_frames
        Nowcasters: input frames the default config reads (required).
    factors, time_factors
        Downscalers: the factors supported (empty: any integer >= 1).  The builders
        check them through :meth:`check_factors`, so they are stated only here.
    window, in_channels, static_channels
        Downscalers: frames per window the runtime feeds (None: the whole series),
        input channels (precipitation + dynamic fields) and static fields on the
        fine grid, for the default config.
    interface
        For models whose interface attributes depend on the config in another way
        than through config keys of the same names: ``interface(config) -> dict``.
    weights_required
        For models that cannot run untrained and ship no weights yet: how to train
        them.  Resolving such a model without a weights file raises
        :class:`~xnowcast.errors.WeightsError` with this text (building it for
        training, :func:`build_model`, still works).
    """

    name: str
    task: Literal["nowcast", "downscale", "representation"]
    builder: str
    summary: str
    reference: str
    time_step_minutes: float | None = None
    units: str = "mm/h"
    normalisation: str = "none"
    default_config: str | None = None
    weights: dict[str, WeightsFile] = field(default_factory=dict)
    default_weights: str | None = None
    stochastic: bool = False
    input_frames: int | None = None
    factors: tuple[int, ...] = ()
    time_factors: tuple[int, ...] = ()
    window: int | None = None
    in_channels: int = 1
    static_channels: int = 0
    interface: Callable[[Any], dict[str, int]] | None = None
    weights_required: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {TASKS}, not {self.task!r}")
        if not self.name or self.name != self.name.lower() or " " in self.name:
            problems.append("name must be a non-empty lower-case word")
        if self.builder.count(":") != 1:
            problems.append(f"builder must be 'module:function', not {self.builder!r}")
        if self.task == "nowcast" and (self.input_frames is None or self.input_frames < 1):
            problems.append("a nowcaster must declare input_frames >= 1")
        if self.task != "downscale" and (self.factors or self.time_factors or self.window):
            problems.append("factors, time_factors and window are for downscalers")
        if self.default_weights is not None and self.default_weights not in self.weights:
            problems.append(f"default_weights {self.default_weights!r} is not in weights")
        if problems:
            raise ModelError(f"Invalid ModelSpec {self.name!r}: " + "; ".join(problems) + ".")

    def __hash__(self) -> int:  # the weights dict is not hashable; equality compares all
        return hash((self.task, self.name, self.builder))

    @property
    def key(self) -> tuple[str, str]:
        """``(task, name)``, the registry key."""
        return (self.task, self.name)

    def build(self, config: str | dict[str, Any] | None = None, **kwargs: Any) -> torch.nn.Module:
        """Build an untrained model (``config`` defaults to ``default_config``)."""
        module_name, _, function = self.builder.partition(":")
        builder = getattr(importlib.import_module(module_name), function)
        cfg = self.default_config if config is None else config
        return builder(cfg, **kwargs) if cfg is not None else builder(**kwargs)

    def check_factors(self, factor: Any, time_factor: Any) -> None:
        """Raise :class:`ModelError` naming the supported values unless both are supported."""
        for label, value, allowed in (
            ("factor", factor, self.factors),
            ("time_factor", time_factor, self.time_factors),
        ):
            whole = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            if allowed and value not in allowed:
                raise ModelError(
                    f"Model {self.name!r} supports {label} in {list(allowed)}, not {value!r}."
                )
            if not whole:
                raise ModelError(
                    f"Model {self.name!r} cannot do {label}={value!r}; supported: any integer >= 1."
                )

    def declared(self, config: str | Mapping[str, Any] | None = None) -> dict[str, int | None]:
        """The interface attributes (:data:`INTERFACE`) a module built from ``config`` has.

        The spec's values, overridden by config keys of the same names (a config dict,
        e.g. the one stored with weights), or by :attr:`interface`.
        """
        out = {name: getattr(self, name) for name in INTERFACE[self.task]}
        if self.interface is not None:
            out.update(self.interface(config))
        elif isinstance(config, Mapping):
            out.update({k: int(config[k]) for k in out if config.get(k) is not None})
        return out


class ModelRegistry(Mapping[tuple[str, str], ModelSpec]):
    """The registered specs by ``(task, name)``; the model modules are imported on first use."""

    def __init__(self, package: str = "xnowcast.models") -> None:
        self._package = package
        self._specs: dict[tuple[str, str], ModelSpec] = {}
        self._discovered = False
        self._lock = threading.RLock()

    def _discover(self) -> None:
        """Import every module of the models package (each registers its own specs)."""
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            package = importlib.import_module(self._package)
            for info in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self._package}.{info.name}")

    def register(self, spec: ModelSpec) -> ModelSpec:
        from xnowcast.units import unit_kind

        unit_kind(spec.units)  # a precipitation unit, or a clear error
        with self._lock:
            if spec.key in self._specs:
                raise ModelError(f"A {spec.task} model named {spec.name!r} is already registered.")
            self._specs[spec.key] = spec
        return spec

    def unregister(self, name: str, task: str | None = None) -> ModelSpec:
        spec = self.lookup(name, task)
        with self._lock:
            del self._specs[spec.key]
        return spec

    def lookup(self, name: str, task: str | None = None) -> ModelSpec:
        self._discover()
        key = str(name).lower()
        found = [s for (t, n), s in self._specs.items() if n == key and task in (None, t)]
        if len(found) == 1:
            return found[0]
        if found:
            tasks = " or ".join(f"task={s.task!r}" for s in found)
            raise ModelError(f"{name!r} names models of several tasks: pass {tasks}.")
        if task is not None and task not in TASKS:
            raise ModelError(f"task must be one of {TASKS}, not {task!r}.")
        kind = f"{task} " if task else ""
        valid = ", ".join(self.names(task))
        raise ModelError(f"Unknown {kind}model {name!r}. Valid {kind}models: {valid}.")

    def specs(self, task: str | None = None) -> list[ModelSpec]:
        self._discover()
        return [self._specs[k] for k in sorted(self._specs) if task in (None, k[0])]

    def names(self, task: str | None = None) -> list[str]:
        return sorted({spec.name for spec in self.specs(task)})

    def __getitem__(self, key: tuple[str, str] | str) -> ModelSpec:
        self._discover()
        if isinstance(key, str):  # a bare name, as before task keys (unambiguous names only)
            try:
                return self.lookup(key)
            except ModelError:
                raise KeyError(key) from None
        return self._specs[key]

    def pop(self, key: tuple[str, str] | str, default: Any = None) -> ModelSpec | Any:
        """Remove and return a spec (by key or bare name), or ``default``; see :func:`unregister`."""
        try:
            spec = self[key]
        except KeyError:
            return default
        _load_cached.cache_clear()
        return self.unregister(spec.name, spec.task)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self._discover()
        return iter(sorted(self._specs))

    def __len__(self) -> int:
        self._discover()
        return len(self._specs)


#: Every registered model, by ``(task, name)``.
MODELS = ModelRegistry()


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec (call it at the top level of the model's module); returns the spec."""
    return MODELS.register(spec)


def unregister(name: str, task: str | None = None) -> ModelSpec:
    """Remove a registered spec (tests and plugins); returns it."""
    _load_cached.cache_clear()
    return MODELS.unregister(name, task)


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, optionally of one task (``"nowcast"``, ``"downscale"``, ...)."""
    return MODELS.names(task)


def specs(task: str | None = None) -> list[ModelSpec]:
    """Registered specs, sorted by task then name, optionally of one task."""
    return MODELS.specs(task)


def get_spec(name: str, task: str | None = None) -> ModelSpec:
    """The spec of ``name``; an unknown name (or one of the wrong task) lists the valid ones.

    ``task`` is needed when the name is registered for both tasks.
    """
    return MODELS.lookup(name, task)


def resolve_weights(
    spec: ModelSpec, weights: str | os.PathLike[str] | None
) -> tuple[Path | None, str | None]:
    """``(path, expected sha256)`` for ``weights``: "default", a shipped name, a path, or None."""
    if weights is None:
        return None, None
    if weights == "default":
        if spec.default_weights is None:
            return None, None
        weights = spec.default_weights
    if isinstance(weights, str) and weights in spec.weights:
        entry = spec.weights[weights]
        return entry.path, entry.sha256
    path = Path(weights)
    if path.is_file():
        return path, None
    shipped = ", ".join(spec.weights) or "none"
    raise WeightsError(
        f"Weights {str(weights)!r} for {spec.name!r} are neither a shipped name ({shipped}) "
        "nor an existing file."
    )


@dataclass(frozen=True)
class WeightsRecord:
    """The weights a resolved model uses: file, sha256 and metadata (each read once).

    ``sha256`` is the registry's for shipped weights; for a file of your own it is
    computed once per process (:func:`xnowcast.weights.file_sha256` remembers it, and
    loading the file computes it from the bytes it reads).
    """

    path: Path | None = None
    expected_sha256: str | None = None

    @functools.cached_property
    def sha256(self) -> str | None:
        if self.path is None:
            return None
        return self.expected_sha256 or file_sha256(self.path)

    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        """Config, training record and scores stored with the weights ({} without weights)."""
        return read_metadata(self.path) if self.path is not None else {}

    def attrs(self) -> dict[str, str]:
        """What an output's attrs say about these weights (name and sha256)."""
        if self.path is None:
            return {"weights": "none (untrained or parameter-free)"}
        return {"weights": self.path.name, "weights_sha256": str(self.sha256)}


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved once: spec, weights record, config, builder arguments, device.

    Small and picklable; :meth:`load` builds the module once per process (cached).
    """

    spec: ModelSpec
    weights: WeightsRecord
    config: str | dict[str, Any] | None
    build_kwargs: tuple[tuple[str, Any], ...] = ()
    device: str = "auto"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def units(self) -> str:
        return self.spec.units

    @functools.cached_property
    def interface(self) -> dict[str, int | None]:
        """The declared interface of the module this resolves to (no module is built)."""
        return self.spec.declared(self.config)

    @property
    def input_frames(self) -> int:
        """Nowcasters: the frames of each forecast's input window."""
        return int(self.interface.get("input_frames") or 1)

    @property
    def window(self) -> int | None:
        """Downscalers: frames per window (None: the whole series)."""
        return self.interface.get("window")

    @property
    def in_channels(self) -> int:
        """Downscalers: precipitation + dynamic fields."""
        return int(self.interface.get("in_channels") or 1)

    @property
    def static_channels(self) -> int:
        """Downscalers: static fields on the fine grid."""
        return int(self.interface.get("static_channels") or 0)

    def provenance(self) -> dict[str, str]:
        """The output attributes naming the model and its weights (``xnowcast_*``)."""
        record = {"model": self.name, **self.weights.attrs()}
        return {f"xnowcast_{k}": v for k, v in record.items()}

    def load(self, device: str | None = None) -> torch.nn.Module:
        """The module, built and its weights loaded once per process, in eval mode.

        ``device`` (default: this object's) is resolved here, where the model runs: a
        dask worker with a GPU may serve a client without one.  The built module must
        have the interface its spec declares.
        """
        from xnowcast.runtime import resolve_device

        where = str(resolve_device(self.device if device is None else device))
        config_json = json.dumps(self.config, sort_keys=True) if self.config is not None else None
        record = self.weights
        return _load_cached(
            self.spec,
            config_json,
            None if record.path is None else str(record.path),
            record.expected_sha256,
            where,
            json.dumps(dict(self.build_kwargs), sort_keys=True),
            _file_stamp(record.path),
        )


def resolve_model(
    name: str,
    *,
    task: str | None = None,
    weights: str | os.PathLike[str] | None = "default",
    config: str | dict[str, Any] | None = None,
    device: str = "auto",
    **build_kwargs: Any,
) -> ResolvedModel:
    """Resolve a model name once: spec, weights record and config (no module is built).

    Parameters
    ----------
    name, task
        A registered model (``task`` needed when the name exists for both tasks).
    weights
        ``"default"`` (the shipped weights, if any), a shipped name, a path to a
        ``.safetensors`` file, or None for an untrained model.
    config
        A config name or dict; by default the one stored with the weights, else the
        spec's default.
    device
        Torch device string, resolved where the model is loaded (``"auto"``: CUDA
        when available).
    **build_kwargs
        Extra builder arguments (``factor=2, time_factor=2`` for downscalers).
    """
    spec = get_spec(name, task)
    path, sha256 = resolve_weights(spec, weights)
    if path is None and spec.weights_required:
        raise WeightsError(
            f"Model {spec.name!r} needs trained weights and none are shipped in this build: "
            f"{spec.weights_required}."
        )
    record = WeightsRecord(path, sha256)
    if config is None:
        stored = record.metadata.get("config")
        config = stored if isinstance(stored, (dict, str)) else spec.default_config
    return ResolvedModel(spec, record, config, tuple(sorted(build_kwargs.items())), device)


def load_model(
    name: str,
    *,
    config: str | dict[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = "default",
    device: str = "cpu",
    task: str | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build a model and load its weights (cached: built once per process).

    Parameters
    ----------
    name
        A registered model (see :func:`list_models`).
    config, weights, task
        As in :func:`resolve_model`.
    device
        Torch device string.
    **kwargs
        Extra builder arguments (e.g. ``factor=2, time_factor=2`` for downscaling).

    Returns
    -------
    torch.nn.Module
        In eval mode, gradients off.  Shared between calls: do not modify it.
    """
    resolved = resolve_model(name, task=task, weights=weights, config=config, **kwargs)
    return resolved.load(device)


def build_model(
    name: str, config: str | dict[str, Any] | None = None, *, task: str | None = None, **kwargs: Any
) -> torch.nn.Module:
    """An untrained module of a registered model, in training mode (not cached).

    ``kwargs`` are the builder's (``factor=``, ``time_factor=`` for downscalers).
    """
    return get_spec(name, task).build(config, **kwargs)


def weights_record(spec: ModelSpec, weights: str | os.PathLike[str] | None) -> dict[str, str]:
    """What to write in an output's attrs about the weights used (name and sha256)."""
    return WeightsRecord(*resolve_weights(spec, weights)).attrs()


def weights_metadata(
    spec: ModelSpec, weights: str | os.PathLike[str] | None = "default"
) -> dict[str, Any]:
    """The metadata (config, training recipe, scores) stored with a model's weights."""
    return WeightsRecord(*resolve_weights(spec, weights)).metadata

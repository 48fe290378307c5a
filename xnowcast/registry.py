"""The model registry: one :class:`ModelSpec` per model, and :func:`load_model`.

A spec is the written contract between a model and the runtime: its task, how
to build it, the time step it was made for, the weights that ship with it and
their sha256.  Builders are named by import path so that listing models never
imports torch.

Model contract (enforced by the runtime, documented in ``docs/models.rst``):

``nowcast``
    ``model(frames[B, T_in, 1, H, W], steps, *, generator=None[, valid=...])``
    -> ``[B, steps, 1, H, W]``, all in mm/h; attributes ``input_frames``,
    ``spatial_multiple``; ``accepts_mask`` when it takes ``valid``;
    ``accepts_geometry`` when it takes ``grid_spacing_km`` and
    ``time_step_minutes`` (keywords, None when unknown); ``batches_members`` when
    all members of an initialisation should come in one call.
``downscale``
    ``model(frames[B, T, C, h, w], static=None)`` ->
    ``[B, (T-1)*time_factor + 1, 1, h*factor, w*factor]`` in mm/h; attributes
    ``factor``, ``time_factor``, ``window``, ``spatial_multiple``,
    ``in_channels``, ``static_channels``.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xnowcast.errors import ModelError, WeightsError
from xnowcast.weights import PACKAGE_WEIGHTS_DIR, file_sha256, load_state_dict, read_metadata

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODELS",
    "ModelSpec",
    "WeightsFile",
    "get_spec",
    "list_models",
    "load_model",
    "resolve_weights",
]


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
    """What the runtime needs to know about a model.

    Attributes
    ----------
    name, task
        Registry name and ``"nowcast"`` or ``"downscale"``.
    builder
        ``"module:function"`` building the ``nn.Module`` from a config.
    summary, reference
        One line of description and the source paper.
    time_step_minutes
        The time step the model was trained for (None: any regular step).
    units, normalisation
        The units the model reads and writes, and how it normalises internally.
    default_config
        Config used when building without weights.
    weights, default_weights
        Shipped weights by name, and the one used by default (None: untrained).
    stochastic
        Whether outputs depend on a random latent (ensembles make sense).
    factors, time_factors
        Downscaling factors the model supports.
    """

    name: str
    task: Literal["nowcast", "downscale"]
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
    factors: tuple[int, ...] = ()
    time_factors: tuple[int, ...] = ()

    def build(self, config: str | dict[str, Any] | None = None, **kwargs: Any) -> torch.nn.Module:
        """Build an untrained model (``config`` defaults to ``default_config``)."""
        module_name, _, function = self.builder.partition(":")
        builder = getattr(importlib.import_module(module_name), function)
        cfg = self.default_config if config is None else config
        return builder(cfg, **kwargs) if cfg is not None else builder(**kwargs)


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec to the registry (names are unique)."""
    if spec.name in MODELS:
        raise ModelError(f"A model named {spec.name!r} is already registered.")
    MODELS[spec.name] = spec
    return spec


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, optionally of one task (``"nowcast"``/``"downscale"``)."""
    return sorted(name for name, spec in MODELS.items() if task in (None, spec.task))


def get_spec(name: str, task: str | None = None) -> ModelSpec:
    """The spec of ``name``; an unknown name (or one of the wrong task) lists the valid ones."""
    spec = MODELS.get(str(name).lower())
    if spec is None or (task is not None and spec.task != task):
        valid = ", ".join(list_models(task))
        kind = f"{task} " if task else ""
        raise ModelError(f"Unknown {kind}model {name!r}. Valid {kind}models: {valid}.")
    return spec


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


@functools.lru_cache(maxsize=8)
def _load_cached(
    name: str,
    config_json: str | None,
    path: str | None,
    sha256: str | None,
    device: str,
    kwargs_json: str,
) -> torch.nn.Module:
    spec = get_spec(name)
    config = json.loads(config_json) if config_json is not None else None
    kwargs = json.loads(kwargs_json)
    state = None
    if path is not None:
        state, metadata = load_state_dict(path, sha256=sha256, device="cpu")
        if config is None:
            config = metadata.get("config")
    model = spec.build(config, **kwargs)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsError(
                f"Weights {path} do not fit model {name!r}: missing {list(missing)[:5]}, "
                f"unexpected {list(unexpected)[:5]}."
            )
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(device)


def load_model(
    name: str,
    *,
    config: str | dict[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = "default",
    device: str = "cpu",
    **kwargs: Any,
) -> torch.nn.Module:
    """Build a model and load its weights (cached: built once per process).

    Parameters
    ----------
    name
        A registered model (see :func:`list_models`).
    config
        A config name or dict; by default the one stored with the weights, else the
        spec's default.
    weights
        ``"default"`` (the shipped weights, if any), a shipped name, a path to a
        ``.safetensors`` file, or None for an untrained model.
    device
        Torch device string.
    **kwargs
        Extra builder arguments (e.g. ``factor=2, time_factor=2`` for downscaling).

    Returns
    -------
    torch.nn.Module
        In eval mode, gradients off.  Shared between calls: do not modify it.
    """
    spec = get_spec(name)
    path, sha256 = resolve_weights(spec, weights)
    config_json = json.dumps(config, sort_keys=True) if config is not None else None
    return _load_cached(
        spec.name,
        config_json,
        str(path) if path else None,
        sha256,
        device,
        json.dumps(kwargs, sort_keys=True),
    )


def weights_record(spec: ModelSpec, weights: str | os.PathLike[str] | None) -> dict[str, str]:
    """What to write in an output's attrs about the weights used (name and sha256)."""
    path, sha256 = resolve_weights(spec, weights)
    if path is None:
        return {"weights": "none (untrained or parameter-free)"}
    return {"weights": path.name, "weights_sha256": sha256 or file_sha256(path)}


def weights_metadata(
    spec: ModelSpec, weights: str | os.PathLike[str] | None = "default"
) -> dict[str, Any]:
    """The metadata (config, training recipe, scores) stored with a model's weights."""
    path, _ = resolve_weights(spec, weights)
    return read_metadata(path) if path is not None else {}


_MIN = 5.0

register(
    ModelSpec(
        name="persistence",
        task="nowcast",
        builder="xnowcast.models.persistence:build_persistence",
        summary="The last observed frame held for every lead time: the floor every model must beat.",
        reference="-",
    )
)
register(
    ModelSpec(
        name="extrapolation",
        task="nowcast",
        builder="xnowcast.models.extrapolation:build_extrapolation",
        summary="Dense optical flow (torch) + semi-Lagrangian backward advection with grid_sample.",
        reference="Germann & Zawadzki (2002), Mon. Wea. Rev. 130; Lucas & Kanade (1981)",
        default_config="default",
    )
)
register(
    ModelSpec(
        name="steps",
        task="nowcast",
        builder="xnowcast.models.steps:build_steps",
        summary=(
            "STEPS ensemble: optical flow + FFT cascade with an AR(2) per level, "
            "spectrally shaped noise, motion perturbations, incremental mask and "
            "probability matching, batched over members in torch."
        ),
        reference=(
            "Bowler, Pierce & Seed (2006), Q. J. R. Meteorol. Soc. 132; "
            "Seed, Pierce & Norman (2013), Water Resour. Res. 49"
        ),
        normalisation="dB of rain rate (threshold 0.1 mm/h, zero value -15 dB) inside the module",
        default_config="default",
        stochastic=True,
    )
)
register(
    ModelSpec(
        name="trilinear",
        task="downscale",
        builder="xnowcast.models.interpolation:build_trilinear",
        summary="Linear interpolation in time, bilinear in space: the interpolation baseline.",
        reference="Chen, Qin & Dai (2022), Front. Earth Sci. 10:887842 (baseline)",
        default_config="default",
    )
)
register(
    ModelSpec(
        name="flow",
        task="downscale",
        builder="xnowcast.models.flow:build_flow",
        summary=(
            "Optical flow between coarse frames, two-way semi-Lagrangian interpolation of the "
            "inserted frames, bicubic refinement whose block means equal the input."
        ),
        reference="Lucas & Kanade (1981); Germann & Zawadzki (2002); Irani & Peleg (1991)",
        default_config="default",
    )
)
register(
    ModelSpec(
        name="dgmr",
        task="nowcast",
        builder="xnowcast.models.dgmr:build_generator",
        summary=(
            "Deep Generative Model of Radar: a conditional GAN generator forecasting a residual "
            "over extrapolation; ensembles by latent sampling."
        ),
        reference="Ravuri et al. (2021), Nature 597, 672-677",
        time_step_minutes=_MIN,
        units="mm/h",
        normalisation="log1p of mm/h in; residual over extrapolation in log1p space out",
        default_config="small",
        weights={
            "small": WeightsFile(
                "dgmr-small.safetensors",
                "b4f90e7e030647e752c0197386afe974268fefcd9de84dccccb63d734ffc144f",
            )
        },
        default_weights="small",
        stochastic=True,
    )
)

_DOWNSCALE_REFERENCE = "Chen, Qin & Dai (2022), Front. Earth Sci. 10:887842"
_RESIDUAL_OVER_TRILINEAR = "log1p inside the module; output is a residual over trilinear"
_RESIDUAL_OVER_FLOW = "log1p(R)/log1p(10) inside the module; residual over the flow baseline"
# ZSM / FC-ZSM stand on the ``flow`` baseline (flow-guided offsets, residual output): their
# weights are named ``*-flowprior`` and their presets ``flow-*``, so that the retired
# ``*-compact`` weights of the old trilinear-residual architecture are never loaded into them.
_LEARNED_DOWNSCALERS: tuple[tuple[str, str, str, str, str, dict[str, WeightsFile]], ...] = (
    (
        "unet",
        "xnowcast.models.unet:build_unet",
        "2-D U-Net with time folded into channels (residual over trilinear): a paper baseline.",
        f"Ronneberger et al. (2015); {_DOWNSCALE_REFERENCE} (baseline)",
        _RESIDUAL_OVER_TRILINEAR,
        {
            "compact": WeightsFile(
                "unet-compact.safetensors",
                "8ac4bf0338022eec02568510285a81f5d0567689a93807548c0b57649e61050e",
            )
        },
    ),
    (
        "unet3d",
        "xnowcast.models.unet:build_unet3d",
        "3-D U-Net over (time, y, x) (residual over trilinear): a paper baseline.",
        f"Cicek et al. (2016); {_DOWNSCALE_REFERENCE} (baseline)",
        _RESIDUAL_OVER_TRILINEAR,
        {
            "compact": WeightsFile(
                "unet3d-compact.safetensors",
                "347e6341c14fd908db0a0b571606ccd6bc51b731d29bc3fae3b69060085370ae",
            )
        },
    ),
    (
        "zsm",
        "xnowcast.models.zsm:build_zsm",
        "Zooming Slow-Mo on the flow prior: flow-guided deformable interpolation + bidirectional "
        "deformable ConvLSTM, a residual over the flow baseline.",
        "Xiang et al. (2020), CVPR; " + _DOWNSCALE_REFERENCE,
        _RESIDUAL_OVER_FLOW,
        {
            "flowprior": WeightsFile(
                "zsm-flowprior.safetensors",
                "cbed0e2a21e602ee09af7a8615d35abdbc01465cb8b62d8de8dce454135b53fe",
            )
        },
    ),
    (
        "fczsm",
        "xnowcast.models.zsm:build_fczsm",
        "Feature-Constrained ZSM on the flow prior: static fields (coverage, x, y) steer the "
        "flow-guided deformable offsets.",
        _DOWNSCALE_REFERENCE,
        _RESIDUAL_OVER_FLOW,
        {},
    ),
)
for _name, _builder, _summary, _reference, _norm, _weights in _LEARNED_DOWNSCALERS:
    register(
        ModelSpec(
            name=_name,
            task="downscale",
            builder=_builder,
            summary=_summary,
            reference=_reference,
            units="mm/h",
            normalisation=_norm,
            default_config="default",
            weights=_weights,
            default_weights=next(iter(_weights), None),
            factors=(1, 2, 3, 4),
            time_factors=(1, 2, 3, 4),
        )
    )

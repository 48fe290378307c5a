"""Configurations of DGMR (:mod:`xnowcast.models.dgmr`): named configs and their checking."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["CONFIGS", "count_parameters", "resolve_config"]

#: Model configurations.  ``paper`` has the published widths; ``small`` is the
#: CPU-trainable one the shipped weights use (1/6 of the paper's generator
#: widths, 1/4 of its discriminator widths); ``tiny`` is for tests.  All use the same architecture
#: (see the module docstring of :mod:`xnowcast.models.dgmr`): a residual over
#: the extrapolation forecast in log-rain space (``base="extrapolation"``;
#: ``"none"`` forecasts from scratch as the paper does), replicate padding and
#: a resize-convolution output head.
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {
        "input_frames": 4,
        "context_channels": 384,  # ConvGRU state width at the coarsest scale (48 ... 384)
        "latent_channels": 768,  # latent stack output width (sampler widths 768 ... 48)
        "noise_channels": 8,  # channels of the Gaussian latent (at 1/4 resolution, pooled)
        "attention": True,
        "discriminator_channels": 48,  # first D block width (48 ... 768)
        "spatial_frames": 8,  # lead frames drawn for the spatial discriminator
        "temporal_crop_fraction": 0.5,  # temporal discriminator crop (128 of 256)
        "max_rate": 128.0,  # mm/h: inputs clipped to [0, max_rate], outputs at most max_rate
        "base": "extrapolation",  # "extrapolation": residual over it; "none": from scratch
        "padding_mode": "replicate",  # generator convolutions ("zeros" as the paper)
    },
    "small": {
        "input_frames": 4,
        "context_channels": 64,
        "latent_channels": 128,
        "noise_channels": 8,
        "attention": True,
        "discriminator_channels": 12,
        "spatial_frames": 8,
        "temporal_crop_fraction": 0.5,
        "max_rate": 128.0,
        "base": "extrapolation",
        "padding_mode": "replicate",
    },
    # For tests and smoke runs of the training (about 0.1 M generator parameters).
    "tiny": {
        "input_frames": 4,
        "context_channels": 16,
        "latent_channels": 32,
        "noise_channels": 2,
        "attention": False,
        "discriminator_channels": 4,
        "spatial_frames": 2,
        "temporal_crop_fraction": 0.5,
        "max_rate": 128.0,
        "base": "extrapolation",
        "padding_mode": "replicate",
    },
}


def resolve_config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """A full config dict from a name in :data:`CONFIGS` or a (partial) dict over ``paper``."""
    if isinstance(config, str):
        if config not in CONFIGS:
            known = ", ".join(sorted(CONFIGS))
            raise ValueError(f"unknown DGMR config {config!r}; known configs: {known}")
        return copy.deepcopy(CONFIGS[config])
    unknown = set(config) - set(CONFIGS["paper"])
    if unknown:
        raise ValueError(
            f"unknown DGMR config keys {sorted(unknown)} (weights written before the "
            "extrapolation-residual generator cannot be loaded: retrain or use the shipped ones)"
        )
    full = copy.deepcopy(CONFIGS["paper"])
    full.update(config)
    if full["base"] not in ("extrapolation", "none"):
        raise ValueError(f"DGMR base must be 'extrapolation' or 'none', got {full['base']!r}")
    if full["padding_mode"] not in ("zeros", "replicate"):
        raise ValueError(
            f"DGMR padding_mode must be 'zeros' or 'replicate', got {full['padding_mode']!r}"
        )
    json.dumps(full)  # configs travel in weights metadata: must be JSON
    return full


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (spectral-norm weights counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

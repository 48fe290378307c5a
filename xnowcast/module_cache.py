"""Built models, cached per process: one module per model, config, weights file and device.

The registry (:mod:`xnowcast.registry`) resolves a name to a spec and a weights file;
this module builds it, loads and checks the weights, and keeps the result, so that a
model is built once per process (and once per dask worker).  The cache key includes
the weights file's modification time and size: a file rewritten in place is loaded
again.
"""

from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING, Any

from xnowcast.errors import ModelError, WeightsError
from xnowcast.weights import load_state_dict

if TYPE_CHECKING:
    import torch

    from xnowcast.registry import ModelSpec

__all__ = ["check_interface", "file_stamp", "load_cached"]


def file_stamp(path: Any) -> tuple[int, int] | None:
    """``(modification time in ns, size)`` of a weights file: a rewritten file is reloaded."""
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None  # the loader names the missing file
    return info.st_mtime_ns, info.st_size


def check_interface(spec: ModelSpec, config: Any, model: Any) -> None:
    """A built module must have the interface attributes its spec declares."""
    for key, value in spec.declared(config).items():
        actual = getattr(model, key, None)
        if value is not None and actual is not None and int(actual) != int(value):
            raise ModelError(
                f"Model {spec.name!r}: the built module has {key}={actual} but its spec "
                f"declares {value}. Declare it in the ModelSpec (or its interface function)."
            )


@functools.lru_cache(maxsize=8)
def load_cached(
    spec: ModelSpec,
    config_json: str | None,
    path: str | None,
    sha256: str | None,
    device: str,
    kwargs_json: str,
    stamp: tuple[int, int] | None = None,
) -> torch.nn.Module:
    """The module of a resolved model (the spec it carries: no second lookup), cached.

    ``stamp`` (see :func:`file_stamp`) is only part of the cache key, so that a weights
    file rewritten at the same path in this process is loaded again, not served stale.
    """
    name = spec.name
    config = json.loads(config_json) if config_json is not None else None
    state = None
    if path is not None:
        state, _ = load_state_dict(path, sha256=sha256, device="cpu")
    model = spec.build(config, **json.loads(kwargs_json))
    check_interface(spec, config, model)
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

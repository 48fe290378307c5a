"""Fixtures of the bad-input catalogue (``docs/bad_inputs.rst``)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
import xarray as xr
from bad_input_calls import ToyNowcaster, build_toy

from xnowcast import registry
from xnowcast.registry import ModelSpec
from xnowcast.testing import moving_storm


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every model run (the runtime's run_nowcast / run_downscale)."""
    import xnowcast.runtime as runtime

    calls: list[str] = []
    for name in ("run_nowcast", "run_downscale"):
        real = getattr(runtime, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(runtime, name, spy)
    return calls


@pytest.fixture
def storm() -> xr.DataArray:
    return moving_storm(frames=6, shape=(24, 24), velocity=(1.0, 1.0))


@pytest.fixture
def toy() -> Iterator[type[ToyNowcaster]]:
    """Register ``toy-nowcast`` (5-min step, multiple of 8, stochastic) and ``toy-factors``."""
    module = types.ModuleType("_xnowcast_toy_models")
    module.build = build_toy  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    toys = [
        ModelSpec(
            name="toy-nowcast",
            task="nowcast",
            builder=f"{module.__name__}:build",
            summary="test double",
            reference="-",
            time_step_minutes=5.0,
            stochastic=True,
            input_frames=ToyNowcaster.input_frames,
        ),
        ModelSpec(
            name="toy-factors",
            task="downscale",
            builder="xnowcast.models.interpolation:build_trilinear",
            summary="trilinear, restricted to factors 2 and 4 and time factors 1 and 2",
            reference="-",
            default_config="default",
            factors=(2, 4),
            time_factors=(1, 2),
            window=4,
        ),
    ]
    for spec in toys:
        registry.register(spec)
    ToyNowcaster.seen = []
    try:
        yield ToyNowcaster
    finally:
        for spec in toys:
            registry.unregister(spec.name, spec.task)
        sys.modules.pop(module.__name__, None)

"""The model contract and the one registry: specs beside the models, read by the runtime.

Every test goes through the public API (``xnowcast.nowcast`` / ``downscale`` /
``verify``, :mod:`xnowcast.registry`); the toy models are registered for a test and
removed after it.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import xnowcast
from xnowcast import registry, weights
from xnowcast.errors import ModelError
from xnowcast.models.base import NowcastModel
from xnowcast.registry import ModelSpec
from xnowcast.testing import moving_storm

MODULE = "_xnowcast_registry_toys"


class FluxPersistence(NowcastModel):
    """Persistence that records the values it is given (to see the units it runs in)."""

    input_frames = 2
    label = "flux-persistence"
    accepts_mask = False
    seen: ClassVar[list[float]] = []

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = dict(config or {})
        self.input_frames = int(self.config.get("input_frames", 2))

    def forward(self, frames: torch.Tensor, steps: int, *, generator: Any = None) -> torch.Tensor:
        frames, _ = self.check_inputs(frames, steps)
        FluxPersistence.seen.append(float(frames.max()))
        return frames[:, -1:].expand(-1, steps, -1, -1, -1).clone()


def _build(config: dict[str, Any] | None = None) -> FluxPersistence:
    return FluxPersistence(config)


def _spec(name: str, **kwargs: Any) -> ModelSpec:
    fields = {
        "task": "nowcast",
        "builder": f"{MODULE}:build",
        "summary": "test double",
        "reference": "-",
        "input_frames": 2,
    }
    return ModelSpec(name=name, **{**fields, **kwargs})


@pytest.fixture
def toys() -> Iterator[list[ModelSpec]]:
    """A module for toy builders; the specs a test registers are removed after it."""
    module = types.ModuleType(MODULE)
    module.build = _build  # type: ignore[attr-defined]
    sys.modules[MODULE] = module
    registered: list[ModelSpec] = []
    FluxPersistence.seen = []
    try:
        yield registered
    finally:
        for spec in registered:
            registry.unregister(spec.name, spec.task)
        sys.modules.pop(MODULE, None)


def test_every_registered_module_has_the_interface_its_spec_declares() -> None:
    """What the runtime reads from a spec before building (input frames, window, channels)
    is what the built module has, for every registered model and its default config."""
    specs = registry.specs()
    assert {s.task for s in specs} == {"nowcast", "downscale", "representation"}
    for spec in specs:
        kwargs = {"factor": 2, "time_factor": 2} if spec.task == "downscale" else {}
        module = spec.build(**kwargs)
        for key, value in spec.declared(spec.default_config).items():
            assert getattr(module, key) == value, (spec.name, key)
        if spec.task == "representation":  # an encoder the metrics use: no pipeline interface
            assert spec.declared(spec.default_config) == {}
            continue
        base = "NowcastModel" if spec.task == "nowcast" else "DownscaleModel"
        assert base in {cls.__name__ for cls in type(module).__mro__}, spec.name
        if spec.task == "downscale":
            with pytest.raises(ModelError, match=spec.name):
                spec.check_factors(0, 1)


def test_names_are_unique_per_task(toys: list[ModelSpec]) -> None:
    """A nowcaster may share a downscaler's name; the task then picks it, everywhere."""
    toys.append(registry.register(_spec("flow")))
    with pytest.raises(ModelError, match="already registered"):
        registry.register(_spec("flow"))
    with pytest.raises(ModelError, match="task='downscale' or task='nowcast'"):
        registry.get_spec("flow")
    assert registry.get_spec("flow", "nowcast").builder == f"{MODULE}:build"
    assert "flow" in xnowcast.list_models("nowcast") and "flow" in xnowcast.list_models("downscale")
    storm = moving_storm(frames=6, shape=(32, 32))
    fc = xnowcast.nowcast(storm, model="flow", steps=2, progress=False)
    assert fc.attrs["xnowcast_model"] == "flow" and "lead_time" in fc.dims
    fine = xnowcast.downscale(storm, model="flow", factor=2, time_factor=1, progress=False)
    assert fine.sizes["x"] == 64 and fine.attrs["xnowcast_model"] == "flow"


def test_a_spec_must_declare_what_the_runtime_needs() -> None:
    with pytest.raises(ModelError, match="input_frames"):
        _spec("no-frames", input_frames=None)
    with pytest.raises(ModelError, match="for downscalers"):
        _spec("bad", factors=(2,))
    with pytest.raises(ModelError, match="default_weights"):
        _spec("bad", default_weights="small")
    with pytest.raises(xnowcast.UnitsError):
        registry.register(_spec("bad-units", units="kelvin"))


def test_the_runtime_runs_a_model_in_its_specs_units(toys: list[ModelSpec]) -> None:
    """A model declaring kg m-2 s-1 gets a flux and returns one; the output is in mm/h."""
    toys.append(registry.register(_spec("flux-persistence", units="kg m-2 s-1")))
    storm = moving_storm(frames=4, shape=(32, 32))
    fc = xnowcast.nowcast(storm, model="flux-persistence", steps=2, progress=False)
    peak = float(storm.isel(time=slice(-2, None)).max())
    assert FluxPersistence.seen == [pytest.approx(peak / 3600.0, rel=1e-5)]
    np.testing.assert_allclose(fc.isel(lead_time=0).values, storm.isel(time=-1).values, rtol=1e-5)
    assert fc.attrs["units"] == storm.attrs["units"]


def test_input_frames_come_from_the_spec_and_the_config(toys: list[ModelSpec]) -> None:
    """The window cut for each forecast is the spec's (a config key overrides it)."""
    toys.append(registry.register(_spec("flux-persistence")))
    storm = moving_storm(frames=5, shape=(32, 32))
    kwargs = {"model": "flux-persistence", "steps": 1, "progress": False}
    with pytest.raises(xnowcast.TimeAxisError, match="needs 4 input frames"):
        xnowcast.nowcast(storm, init_time=storm.time[2], config={"input_frames": 4}, **kwargs)
    xnowcast.nowcast(storm, init_time=storm.time[2], **kwargs)  # 2 frames: enough


def test_a_module_that_differs_from_its_spec_is_refused(toys: list[ModelSpec]) -> None:
    toys.append(registry.register(_spec("liar", input_frames=3)))
    with pytest.raises(ModelError, match="input_frames=2 but its spec declares 3"):
        xnowcast.nowcast(moving_storm(frames=5, shape=(32, 32)), model="liar", progress=False)


def test_a_model_name_is_resolved_once_and_lazy_input_builds_no_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One registry lookup per call; with dask input no module is built until computed."""
    lookups: list[str] = []
    real = registry.MODELS.lookup

    def counting(name: str, task: str | None = None) -> ModelSpec:
        lookups.append(name)
        return real(name, task)

    monkeypatch.setattr(registry.MODELS, "lookup", counting)
    registry._load_cached.cache_clear()
    storm = moving_storm(frames=6, shape=(32, 32), chunks={"time": 3})
    fc = xnowcast.nowcast(storm, model="extrapolation", steps=2, init_time=storm.time[3:])
    fine = xnowcast.downscale(storm, model="trilinear", factor=2, time_factor=2, progress=False)
    assert lookups == ["extrapolation", "trilinear"]
    assert registry._load_cached.cache_info().currsize == 0  # nothing built on the client
    fc.compute(), fine.compute()
    assert registry._load_cached.cache_info().currsize == 2
    assert lookups == ["extrapolation", "trilinear"]  # the workers did not look them up


@pytest.fixture
def unet_weights(tmp_path: Path) -> Path:
    """Weights of a tiny U-Net downscaler (a user's own file, not shipped)."""
    model = registry.build_model("unet", "tiny", task="downscale", factor=2, time_factor=2)
    path = tmp_path / "unet-tiny.safetensors"
    weights.save_weights(model.state_dict(), path, {"config": model.config, "model": "unet"})
    return path


def test_a_users_weights_file_is_hashed_once_and_named_in_the_output(
    unet_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = hashlib.sha256

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(weights, "_DIGESTS", {})
    monkeypatch.setattr(weights, "hashlib", types.SimpleNamespace(sha256=counting))
    registry._load_cached.cache_clear()
    storm = moving_storm(frames=5, shape=(32, 32), step="10min")
    fine = xnowcast.downscale(storm, model="unet", weights=unet_weights, progress=False)
    monkeypatch.undo()
    assert len(calls) == 1
    assert fine.attrs["xnowcast_weights"] == unet_weights.name
    assert fine.attrs["xnowcast_weights_sha256"] == real(unet_weights.read_bytes()).hexdigest()
    # the config stored with the weights says what the runtime feeds the model
    assert (
        registry.resolve_model("unet", task="downscale", weights=unet_weights).interface["window"]
        == 4
    )


def test_a_weights_file_rewritten_at_the_same_path_is_loaded_again(unet_weights: Path) -> None:
    """Retraining into the same file within one process must not serve the old module."""
    registry._load_cached.cache_clear()
    first = registry.load_model("unet", task="downscale", weights=unet_weights)
    again = registry.load_model("unet", task="downscale", weights=unet_weights)
    assert again is first  # unchanged file: built once per process
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in first.state_dict().items()}
    weights.save_weights(state, unet_weights, {"config": first.config, "model": "unet"})
    reloaded = registry.load_model("unet", task="downscale", weights=unet_weights)
    assert reloaded is not first
    name, value = next((k, v) for k, v in reloaded.state_dict().items() if v.is_floating_point())
    torch.testing.assert_close(value, first.state_dict()[name] + 1.0)


def test_scores_name_the_forecasts_model_and_weights_after_a_file_roundtrip(
    tmp_path: Path,
) -> None:
    """nowcast -> CF file -> verify: the scores say which model and weights made it."""
    obs = xnowcast.open_dataset("sample")["precipitation"].isel(y=slice(0, 64), x=slice(0, 64))
    fc = obs.nowcast.predict(model="dgmr", steps=2, init_time=obs.time[5], progress=False, seed=0)
    path = tmp_path / "forecast.nc"
    xnowcast.to_cf_dataset(fc).to_netcdf(path)
    import xarray as xr

    with xr.open_dataset(path) as stored:
        scores = xnowcast.verify(stored, obs, metrics=["mae"])  # the public verify
    spec = registry.get_spec("dgmr", "nowcast")
    assert scores.attrs["forecast_model"] == "dgmr"
    assert scores.attrs["forecast_weights"] == spec.weights["small"].filename
    assert scores.attrs["forecast_weights_sha256"] == spec.weights["small"].sha256


def test_the_models_mapping_is_keyed_by_task_and_name(toys: list[ModelSpec]) -> None:
    """``MODELS[(task, name)]``; a bare name still works where it is unambiguous."""
    assert registry.MODELS["dgmr"] is registry.MODELS["nowcast", "dgmr"]
    assert ("downscale", "zsm") in registry.MODELS and "zsm" in registry.MODELS
    assert all(key == spec.key for key, spec in registry.MODELS.items())
    spec = registry.register(_spec("flow"))
    assert "flow" not in registry.MODELS  # ambiguous: a nowcaster and a downscaler
    assert registry.MODELS.pop(("nowcast", "flow")) == spec
    assert registry.MODELS.pop("no-such-model") is None
    assert registry.get_spec("flow").task == "downscale"


@pytest.mark.parametrize(
    ("module", "builder"),
    [
        ("xnowcast.models.extrapolation", "build_extrapolation"),
        ("xnowcast.models.steps", "build_steps"),
        ("xnowcast.models.convlstm", "build_convlstm"),
        ("xnowcast.models.cascast", "build_cascast"),
        ("xnowcast.models.casformer", "build_casformer"),
        ("xnowcast.models.frame_autoencoder", "build_frame_autoencoder"),
    ],
)
def test_a_misspelt_setting_is_refused_with_the_valid_ones(module: str, builder: str) -> None:
    """Every model's settings go through one check: a typo is an error, never ignored."""
    import importlib

    build = getattr(importlib.import_module(module), builder)
    with pytest.raises(
        ModelError, match=r"unknown settings \['lead_framez'\]; valid ones are \["
    ) as e:
        build({"lead_framez": 3})
    assert "'" in str(e.value).split("valid ones are", 1)[1]  # the valid keys are listed

"""Every model runs on one canonical orientation (north up, x east): flipped in, flipped out.

Through the public API, on a rainy 64 x 64 km crop of the real RMI radar sample packaged
with xnowcast: reversing the input's y (ascending instead of descending) or x gives the
output reversed the same way, with the same numbers (to 1e-4 mm/h), for every registered
model, stochastic ones with a fixed seed; eager and dask-backed, tiled or not, with
FC-ZSM's static fields (terrain, land-sea mask) given in either orientation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr

import xnowcast
from xnowcast.registry import get_spec, specs
from xnowcast.testing import random_weights

FLIPS = {"y": ("y",), "x": ("x",), "yx": ("y", "x")}


@pytest.fixture(scope="module")
def radar() -> xr.DataArray:
    """The real RMI sample (y descending, x ascending: north up), a rainy 64 x 64 km crop."""
    da = xnowcast.open_dataset("sample").precipitation
    crop = da.isel(time=slice(-8, None), y=slice(64, 128), x=slice(96, 160)).load()
    assert float((crop > 1).mean()) > 0.3  # it rains: orientation matters
    assert crop.y.values[0] > crop.y.values[-1] and crop.x.values[0] < crop.x.values[-1]
    return crop


def coarse(da: xr.DataArray) -> xr.DataArray:
    """2 km / 10 min input of the downscalers (4 frames, 32 x 32)."""
    return da.coarsen(y=2, x=2).mean().isel(time=slice(1, None, 2)).assign_attrs(da.attrs)


@pytest.fixture(autouse=True, scope="module")
def _weights_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where models that cannot run untrained (cascast) get random "tiny" weights."""
    _WEIGHTS_DIR.append(tmp_path_factory.mktemp("required-weights"))


_WEIGHTS_DIR: list[Any] = []


def run(model: str, da: xr.DataArray, task: str | None = None, **kwargs: Any) -> xr.DataArray:
    spec = get_spec(model, task)
    if spec.weights_required and "weights" not in kwargs:
        kwargs["weights"] = random_weights(spec.name, _WEIGHTS_DIR[-1], task=spec.task)
    if spec.task == "nowcast":
        return da.nowcast.predict(model=model, steps=2, seed=0, progress=False, **kwargs)
    return coarse(da).downscale(model=model, factor=2, time_factor=2, progress=False, **kwargs)


def flip(obj: Any, dims: tuple[str, ...]) -> Any:
    return obj.isel({d: slice(None, None, -1) for d in dims})


def assert_flipped(out: xr.DataArray, reference: xr.DataArray, dims: tuple[str, ...]) -> None:
    """``out`` is ``reference`` reversed along ``dims``: coordinates exact, values to 1e-4."""
    expected = flip(reference, dims)
    assert out.dims == expected.dims
    for dim in out.dims:
        np.testing.assert_array_equal(out[dim].values, expected[dim].values)
    np.testing.assert_allclose(out.values, expected.values, rtol=0, atol=1e-4)


_REFERENCE: dict[tuple[str | None, str], xr.DataArray] = {}


def reference(model: str, radar: xr.DataArray, task: str | None = None) -> xr.DataArray:
    """The model's output on the north-up crop (computed once per model)."""
    if (task, model) not in _REFERENCE:
        _REFERENCE[task, model] = run(model, radar, task)
    return _REFERENCE[task, model]


#: Every model the nowcast and downscale pipelines run (not the metrics' encoders).
PIPELINE_SPECS = [s for s in specs() if s.task in ("nowcast", "downscale")]


@pytest.mark.parametrize("flipped", list(FLIPS))
@pytest.mark.parametrize(
    ("task", "model"),
    [s.key for s in PIPELINE_SPECS],
    ids=[f"{s.task}/{s.name}" for s in PIPELINE_SPECS],
)
def test_flipped_input_gives_the_flipped_output(
    radar: xr.DataArray, task: str, model: str, flipped: str
) -> None:
    dims = FLIPS[flipped]
    expected = reference(model, radar, task)
    assert np.isfinite(expected.values).mean() > 0.9
    assert_flipped(run(model, flip(radar, dims), task), expected, dims)


@pytest.mark.parametrize("model", ["dgmr", "zsm"])
def test_orientation_is_restored_on_dask_input(radar: xr.DataArray, model: str) -> None:
    dims = ("y",)
    lazy = run(model, flip(radar, dims).chunk({"time": 2}))
    assert lazy.chunks is not None
    assert_flipped(lazy.compute(), reference(model, radar), dims)


@pytest.mark.parametrize(
    ("task", "model"),
    [
        ("nowcast", "dgmr"),
        ("nowcast", "convlstm"),
        ("nowcast", "cascast"),
        ("downscale", "unet"),
        ("downscale", "fczsm"),
    ],
)
def test_tiled_domains_keep_the_orientation_rule(
    radar: xr.DataArray, task: str, model: str
) -> None:
    """Domains above ``tile_size`` are tiled on the canonical grid: flipping still commutes."""
    with xnowcast.set_options(tile_size=32, tile_overlap=8):
        tiled = run(model, radar, task)
        for dims in FLIPS.values():
            assert_flipped(run(model, flip(radar, dims), task), tiled, dims)


def _static_fields(fine: xr.DataArray) -> list[xr.DataArray]:
    """Terrain height and a land-sea mask on the fine grid: neither symmetric in y nor x."""
    yy, xx = xr.broadcast(fine.y, fine.x)
    km_y, km_x = (yy - yy.min()) / 1000.0, (xx - xx.min()) / 1000.0
    terrain = (50.0 + 12.0 * km_y + 3.0 * np.sin(km_x / 5.0)).rename("terrain")
    land = (km_x + 0.5 * km_y > 30.0).astype(np.float32).rename("land_sea_mask")
    return [terrain, land, (km_y / km_y.max()).rename("y_scaled")]


def test_fczsm_static_fields_follow_the_data(radar: xr.DataArray) -> None:
    """Terrain and land-sea mask are placed by their coordinates, in any orientation."""
    grid = run("trilinear", radar)  # the fine grid's coordinates
    static = _static_fields(grid.isel(time=0, drop=True))
    expected = run("fczsm", radar, static=static)
    for dims in FLIPS.values():
        flipped = flip(radar, dims)
        # static fields flipped with the data, or left north up: the same forecast
        for given in (static, [flip(s, dims) for s in static]):
            assert_flipped(run("fczsm", flipped, static=given), expected, dims)


def _perturbed_fczsm(path: Any) -> Any:
    """FC-ZSM weights whose learned residual is not zero (untrained FC-ZSM equals ``flow``)."""
    import torch

    from xnowcast.weights import save_weights

    net = get_spec("fczsm", "downscale").build()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    config = dict(net.config) if isinstance(net.config, dict) else net.config
    save_weights(net.state_dict(), path, {"model": "fczsm", "config": config})
    return path


def test_fczsm_static_fields_steer_a_trained_model_in_any_orientation(
    radar: xr.DataArray, tmp_path: Any
) -> None:
    """With a non-zero learned part the static fields matter, and still follow the data."""
    weights = _perturbed_fczsm(tmp_path / "fczsm-perturbed.safetensors")
    grid = run("trilinear", radar)
    static = _static_fields(grid.isel(time=0, drop=True))
    expected = run("fczsm", radar, static=static, weights=weights)
    other = [static[0][::-1].assign_coords(y=static[0].y), *static[1:]]
    changed = run("fczsm", radar, static=other, weights=weights)
    assert float(abs(changed - expected).max()) > 1e-3
    for dims in FLIPS.values():
        flipped = [flip(s, dims) for s in static]
        assert_flipped(
            run("fczsm", flip(radar, dims), static=flipped, weights=weights), expected, dims
        )


def test_training_data_are_north_up(radar: xr.DataArray) -> None:
    """The trainers see the orientation the pipeline runs models on, whatever the files'."""
    from xnowcast.training.data import as_rain_rate
    from xnowcast.training.pairs import make_pairs

    for dims in FLIPS.values():
        flipped = flip(radar, dims)
        xr.testing.assert_identical(as_rain_rate(flipped), as_rain_rate(radar))
        kwargs: dict[str, Any] = dict(window=2, crop=16, max_pairs=4, seed=0)
        reference, pairs = make_pairs(radar, **kwargs), make_pairs(flipped, **kwargs)
        for name in ("coarse", "fine", "mask", "static"):
            assert bool((getattr(pairs, name) == getattr(reference, name)).all()), name

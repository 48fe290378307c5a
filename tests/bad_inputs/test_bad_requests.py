"""The bad-input catalogue of ``docs/bad_inputs.rst``: Datasets, requests, dask input,
outputs and seeds.

One test (or more) per row; the rules every test follows are in
:mod:`bad_input_calls`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import xarray as xr
from bad_input_calls import (
    ALL_CALLS,
    NOWCAST_CALLS,
    Call,
    ToyNowcaster,
    accept,
    assert_unchanged,
    persist,
    refuse,
    toy_nowcast,
    trilinear,
)

from xnowcast import registry
from xnowcast.errors import (
    DatasetError,
    DataValueError,
    ModelError,
    TimeAxisError,
    UnitsError,
)
from xnowcast.registry import specs
from xnowcast.testing import assert_identical_outputs, moving_storm

# === Datasets ========================================================================================


@pytest.mark.parametrize("call", ALL_CALLS)
def test_dataset_without_precipitation(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    ds = xr.Dataset({"t2m": storm.assign_attrs(standard_name="air_temperature", units="K")})
    refuse(ds, call, DatasetError, "No precipitation variable", "['t2m']", "var='name'", runs=runs)


def test_dataset_with_several_precipitation_variables(storm: xr.DataArray, runs: list[str]) -> None:
    ds = xr.Dataset({"radar": storm, "gauges": storm * 2})
    refuse(ds, persist, DatasetError, "Several precipitation variables", "var='name'", runs=runs)
    refuse(ds, persist, DatasetError, "no variable 'rain'", runs=runs, var="rain")
    out = accept(ds, persist, var="gauges")
    np.testing.assert_array_equal(out.isel(lead_time=0).values, 2 * storm[-1].values)


def test_dataset_precipitation_found_by_standard_name(storm: xr.DataArray) -> None:
    ds = xr.Dataset(
        {
            "rr": storm,
            "t2m": storm.assign_attrs(standard_name="air_temperature", units="K"),
            "orography": storm.isel(time=0, drop=True).assign_attrs(
                standard_name="surface_altitude", units="m"
            ),
        }
    )
    out = accept(ds, persist)
    assert out.name == "rr"
    np.testing.assert_array_equal(out.isel(lead_time=0).values, storm[-1].values)
    assert accept(ds, trilinear).name == "rr"


# === requests ========================================================================================


@pytest.mark.parametrize("call", NOWCAST_CALLS)
def test_init_time_outside_the_data(storm: xr.DataArray, call: Call, runs: list[str]) -> None:
    refuse(
        storm,
        call,
        TimeAxisError,
        "init_time 2030-01-01T00:00:00 is not a time of the data",
        "2021-07-04T15:00:00 to 2021-07-04T15:25:00",
        runs=runs,
        init_time=np.datetime64("2030-01-01"),
    )
    refuse(
        storm,
        call,
        TimeAxisError,
        "No data times fall in init_time",
        runs=runs,
        init_time=slice("2030-01-01", "2030-01-02"),
    )
    refuse(
        storm,
        call,
        TimeAxisError,
        "not a time of the data",
        runs=runs,
        init_time="2021-07-04T15:22",  # between two frames
    )


def test_unreadable_init_time(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(
        storm,
        persist,
        TimeAxisError,
        "Cannot read init_time='yesterday' as a time",
        "2021-07-04T15:00 to 2021-07-04T15:25",
        runs=runs,
        init_time="yesterday",
    )


@pytest.mark.parametrize("steps", [0, -1, 2.5, True, "3"])
@pytest.mark.parametrize("call", NOWCAST_CALLS)
def test_steps_not_positive(storm: xr.DataArray, call: Call, steps: Any, runs: list[str]) -> None:
    refuse(
        storm,
        call,
        ModelError,
        f"steps must be a positive integer, not {steps!r}",
        runs=runs,
        steps=steps,
    )


@pytest.mark.parametrize("members", [0, -2])
def test_members_not_positive(storm: xr.DataArray, members: int, runs: list[str]) -> None:
    refuse(
        storm,
        persist,
        ModelError,
        f"members must be a positive integer, not {members}",
        runs=runs,
        members=members,
    )


@pytest.mark.parametrize("call", NOWCAST_CALLS)
def test_members_for_a_deterministic_model(
    storm: xr.DataArray, call: Call, runs: list[str]
) -> None:
    refuse(
        storm,
        call,
        ModelError,
        "is deterministic",
        "members=1",
        "stochastic model",
        runs=runs,
        members=4,
    )


def test_factor_the_model_does_not_support(
    storm: xr.DataArray, toy: type[ToyNowcaster], runs: list[str]
) -> None:
    def restricted(obj: Any, **kwargs: Any) -> xr.DataArray:
        return obj.downscale(model="toy-factors", progress=False, **kwargs)

    refuse(
        storm,
        restricted,
        ModelError,
        "supports factor in [2, 4], not 3",
        runs=runs,
        factor=3,
        time_factor=2,
    )
    refuse(
        storm,
        restricted,
        ModelError,
        "supports time_factor in [1, 2], not 4",
        runs=runs,
        factor=2,
        time_factor=4,
    )
    out = accept(storm, restricted, factor=4, time_factor=1)
    assert out.shape == (6, 96, 96)


@pytest.mark.parametrize("factor", [0, -2, 1.5, "2"])
def test_factor_not_positive(storm: xr.DataArray, factor: Any, runs: list[str]) -> None:
    refuse(
        storm,
        trilinear,
        ModelError,
        f"factor must be a positive integer, not {factor!r}",
        runs=runs,
        factor=factor,
    )
    refuse(
        storm,
        trilinear,
        ModelError,
        f"time_factor must be a positive integer, not {factor!r}",
        runs=runs,
        factor=2,
        time_factor=factor,
    )


LIMITED_FACTORS = sorted(spec.name for spec in specs("downscale") if spec.factors)


@pytest.mark.parametrize(
    "name",
    LIMITED_FACTORS
    or [
        pytest.param(
            "zsm",
            marks=pytest.mark.skip(reason="no registered downscale model limits its factors yet"),
        )
    ],
)
def test_factor_a_registered_model_does_not_support(
    storm: xr.DataArray, name: str, runs: list[str]
) -> None:
    bad = max(registry.get_spec(name, "downscale").factors) + 1
    refuse(
        storm,
        lambda obj: obj.downscale(model=name, factor=bad, time_factor=1, progress=False),
        ModelError,
        f"not {bad}",
        runs=runs,
    )


def test_unknown_model_or_wrong_task(storm: xr.DataArray, runs: list[str]) -> None:
    refuse(
        storm,
        lambda obj: obj.nowcast.predict(model="dgmr2"),
        ModelError,
        "Unknown nowcast model 'dgmr2'",
        "persistence",
        runs=runs,
    )
    refuse(
        storm,
        lambda obj: obj.downscale(model="persistence"),
        ModelError,
        "Unknown downscale model 'persistence'",
        "trilinear",
        runs=runs,
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"batch_size": 0}, "batch_size must be 'auto' or a positive integer, not 0"),
        ({"batch_size": "big"}, "batch_size must be 'auto' or a positive integer, not 'big'"),
        ({"batch_size": True}, "batch_size must be 'auto' or a positive integer, not True"),
        ({"precision": "fp16"}, "precision must be 'auto', 'float32' or 'bf16', not 'fp16'"),
        ({"device": "tpu9"}, "Unknown device 'tpu9': use 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ],
    ids=["batch_size=0", "batch_size=big", "batch_size=True", "precision=fp16", "device=tpu9"],
)
def test_invalid_runtime_settings(
    storm: xr.DataArray, kwargs: dict[str, Any], needle: str, runs: list[str]
) -> None:
    refuse(storm, persist, ModelError, needle, runs=runs, **kwargs)
    if "precision" not in kwargs:  # downscale() has no precision argument
        refuse(storm, trilinear, ModelError, needle, runs=runs, **kwargs)


# === dask-backed input ===============================================================================


def test_dask_input_structure_checked_at_call_values_at_compute(
    storm: xr.DataArray, runs: list[str]
) -> None:
    lazy = storm.chunk({"time": 2})
    bare = lazy.copy()
    del bare.attrs["units"]
    refuse(bare, persist, UnitsError, "no units", runs=runs)
    refuse(lazy.isel(time=[0, 1, 1, 2]), persist, TimeAxisError, "Duplicate", runs=runs)
    # value checks need the values: they run when the result is computed, before the model
    coded = lazy.where(lazy.x != lazy.x[0], -9999.0)
    for call in (persist, trilinear):
        out = accept(coded, call)
        assert out.chunks is not None
        with pytest.raises(DataValueError, match="-9999"):
            out.compute()
    assert runs == []


def test_dask_downscale_with_an_all_missing_block_equals_eager() -> None:
    field = moving_storm(frames=30, shape=(16, 16))
    field[:15] = np.nan
    eager = trilinear(field, factor=1, time_factor=1)
    lazy = trilinear(field.chunk({"time": 10}), factor=1, time_factor=1).compute()
    assert_identical_outputs(lazy, eager)  # history is stamped to the second: not compared


# === outputs are new objects ==========================================================================


def test_changing_the_output_never_changes_the_input(storm: xr.DataArray) -> None:
    before = copy.deepcopy(storm)
    for out in (persist(storm), trilinear(storm)):
        out.attrs["units"] = "changed"
        for name in out.coords:
            out[name].attrs["changed"] = True
        out.values[...] = -1.0
    assert_unchanged(storm, before)


@pytest.mark.parametrize("call", [ALL_CALLS[0], ALL_CALLS[2]])
def test_mutable_attribute_values_are_not_shared(storm: xr.DataArray, call: Call) -> None:
    out = call(storm)
    out.attrs["velocity_cells_per_step"].append(99.0)
    assert storm.attrs["velocity_cells_per_step"] == [1.0, 1.0]


# === stochastic models: seeds ========================================================================


def test_same_seed_same_forecast(toy: type[ToyNowcaster]) -> None:
    field = moving_storm(frames=4, shape=(16, 16))
    noisy = {"config": {"noise": 1.0}, "members": 3}
    first = accept(field, toy_nowcast, seed=7, **noisy)
    again = toy_nowcast(field, seed=7, **noisy)
    other = toy_nowcast(field, seed=8, **noisy)
    np.testing.assert_array_equal(first.values, again.values)
    assert not np.array_equal(first.values, other.values)
    # members differ from each other, and the noise is on top of persistence
    assert not np.array_equal(first.isel(member=0).values, first.isel(member=1).values)
    excess = first.values - field[-1].values
    assert excess.min() >= 0.0 and excess.max() <= 1.0

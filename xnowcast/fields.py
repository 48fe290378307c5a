"""Shared steps of the xarray pipelines: find the field, check it, describe the output."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import xarray as xr

from xnowcast import conventions as cv
from xnowcast.cf_output import provenance_attrs, with_dataset_context
from xnowcast.errors import CoordinateError, ModelError
from xnowcast.registry import ResolvedModel
from xnowcast.units import units_of

__all__ = [
    "is_dask",
    "output_attrs",
    "package_version",
    "positive_int",
    "prepare_field",
    "restore_orientation",
    "spatial_coords",
]


def package_version() -> str:
    """The installed xnowcast version."""
    from xnowcast import __version__

    return __version__


def prepare_field(
    obj: xr.Dataset | xr.DataArray, *, var: str | None = None, units: str | None = None
) -> tuple[xr.DataArray, cv.Axes, str]:
    """The precipitation field as ``(time, y, x)``, its axes and its units.

    Length-1 extra dims are squeezed; longer extra dims are an error; the grid is
    checked to be regular and the units to be a precipitation quantity.  From a
    Dataset, the grid-mapping variable comes along as a coordinate and the global
    provenance attributes (licence included) as attributes.
    """
    da = with_dataset_context(cv.find_precipitation(obj, var), obj)
    axes = cv.find_axes(da)
    extra = [d for d in da.dims if d not in axes]
    squeezable = [d for d in extra if da.sizes[d] == 1]
    longer = [d for d in extra if da.sizes[d] > 1]
    if longer:
        raise CoordinateError(
            f"Unexpected dims {longer} (sizes {[da.sizes[d] for d in longer]}) besides time/y/x: "
            f"select one value, e.g. da.isel({longer[0]}=0), or loop over them."
        )
    if squeezable:
        da = da.squeeze(squeezable, drop=True)
    da = da.transpose(axes.time, axes.y, axes.x)
    cv.check_regular_grid(da, axes)
    found_units = units_of(
        da, units, advice="Or pass units=... to the call (--units on the command line)."
    )
    return da, axes, found_units


def restore_orientation(out: xr.DataArray, flips: tuple[str, ...]) -> xr.DataArray:
    """A result computed on the canonical orientation, back in the caller's (same numbers).

    In-memory values are made contiguous again, so that they are not a reversed view.
    """
    if not flips:
        return out
    out = cv.flip_axes(out, flips)
    return out if is_dask(out.data) else out.copy(data=np.ascontiguousarray(out.data))


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ModelError(f"{name} must be a positive integer, not {value!r}.")
    return int(value)


def spatial_coords(da: xr.DataArray, axes: cv.Axes) -> dict[str, xr.DataArray]:
    """Coordinates of ``da`` that do not depend on time (spatial coords, crs, aux lat/lon)."""
    return {name: coord for name, coord in da.coords.items() if axes.time not in coord.dims}


def output_attrs(da: xr.DataArray, model: ResolvedModel, line: str, units: str) -> dict[str, Any]:
    """The output's attrs: the input's (deep-copied), the units the values are in, the model,
    its weights (as resolved: sha256 computed once) and the package version, a ``title``
    and ``source`` where the input has none, and a ``history`` line."""
    attrs = {k: copy.deepcopy(v) for k, v in da.attrs.items() if k != "history"}
    attrs.update(
        {
            **provenance_attrs(
                da.attrs, model=model.name, task=model.task, version=package_version()
            ),
            "units": units,
            **model.provenance(),
            "xnowcast_version": package_version(),
        }
    )
    if "history" in da.attrs:
        attrs["history"] = da.attrs["history"]
    return cv.append_history(attrs, line)


def check_run_options(device: Any, batch_size: Any, precision: Any) -> None:
    """Refuse bad ``device``/``batch_size``/``precision`` values before any work is done."""
    import torch

    if not (
        batch_size == "auto"
        or (
            isinstance(batch_size, (int, np.integer))
            and not isinstance(batch_size, bool)
            and batch_size > 0
        )
    ):
        raise ModelError(f"batch_size must be 'auto' or a positive integer, not {batch_size!r}.")
    if precision not in ("auto", "float32", "fp32", "bf16", "bfloat16"):
        raise ModelError(f"precision must be 'auto', 'float32' or 'bf16', not {precision!r}.")
    if device != "auto":
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise ModelError(
                f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'."
            ) from None


def is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask")

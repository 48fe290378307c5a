"""CF-complete outputs: the grid mapping travels, coordinates carry no fill value, files
have their global attributes and the input's licence.

The pipelines call :func:`with_dataset_context` on the way in (a Dataset's grid-mapping
variable and provenance attributes follow its precipitation variable),
:func:`provenance_attrs` and :func:`without_coordinate_fill` on the way out, and
:func:`to_cf_dataset` turns any output into the Dataset a NetCDF file is written from
(the CLI writes every file through it).  This module never imports torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import xarray as xr

__all__ = [
    "CF_CONVENTIONS",
    "GLOBAL_ATTRS",
    "grid_mapping_names",
    "grid_mappings_as_coords",
    "merge_provenance",
    "place_grid_mappings",
    "provenance_attrs",
    "scores_attrs",
    "to_cf_dataset",
    "with_dataset_context",
    "without_coordinate_fill",
]

CF_CONVENTIONS = "CF-1.10"

#: Attributes that describe a whole file (CF 2.6.2, plus ``license`` and ``references``):
#: moved to the global attributes when an output becomes a Dataset.
GLOBAL_ATTRS = ("title", "institution", "source", "history", "references", "license")

#: Global attributes of an input Dataset that travel to its outputs (the licence of the
#: RMI data, for instance, forbids commercial use and must follow every derived file).
_CARRIED = ("title", "institution", "source", "references", "license", "history")


def grid_mapping_names(attrs: Mapping[str, Any]) -> list[str]:
    """The variable names a ``grid_mapping`` attribute refers to.

    Both CF forms are read: ``"crs"`` and ``"crs: x y crs_wgs84: lat lon"``.
    """
    text = str(attrs.get("grid_mapping") or "").strip()
    if not text:
        return []
    if ":" not in text:
        return text.split()
    return [token[:-1] for token in text.split() if token.endswith(":")]


def with_dataset_context(da: xr.DataArray, obj: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """``da`` with what its Dataset ``obj`` knows about it attached (a new object).

    The grid-mapping variable(s) named by ``da.attrs["grid_mapping"]`` become scalar
    coordinates, so that they stay with the field through every operation and are
    written with it; the Dataset's provenance attributes (title, institution, source,
    references, license, history) are added where the variable has none of its own.  A
    ``grid_mapping`` that xarray moved to the encoding (``decode_coords="all"``) comes
    back to the attributes, where the outputs look for it.
    """
    out = da.copy(deep=False)
    if "grid_mapping" not in out.attrs and out.encoding.get("grid_mapping"):
        out.attrs = {**out.attrs, "grid_mapping": out.encoding["grid_mapping"]}
    if not isinstance(obj, xr.Dataset):
        return out
    extra = {
        name: obj[name]
        for name in grid_mapping_names(out.attrs)
        if name in obj.variables and name not in out.coords and obj[name].ndim == 0
    }
    if extra:
        out = out.assign_coords(extra)
    out.attrs = merge_provenance(out.attrs, obj.attrs)
    return out


def grid_mappings_as_coords(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the scalar grid-mapping variables its data variables name made
    coordinates, so that ``ds[name]`` keeps them (``grid_mapping`` stays an attribute,
    unlike with xarray's ``decode_coords="all"``)."""
    names = {
        ref
        for var in ds.data_vars.values()
        for ref in grid_mapping_names(var.attrs)
        if ref in ds.data_vars and ds[ref].ndim == 0
    }
    return ds.set_coords(sorted(names)) if names else ds


def merge_provenance(attrs: Mapping[str, Any], file_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``attrs`` with the provenance attributes of ``file_attrs`` it lacks."""
    out = dict(attrs)
    for key in _CARRIED:
        if key not in out and file_attrs.get(key):
            out[key] = file_attrs[key]
    return out


def provenance_attrs(
    attrs: Mapping[str, Any], *, model: str, task: str, version: str
) -> dict[str, str]:
    """The ``title`` and ``source`` an output of ``model`` lacks, so that its file has both.

    The input's own ``title`` and ``source`` are kept (outputs carry the input's
    attributes, and they name where the data came from); the model is recorded in
    ``xnowcast_model`` and the ``history`` line either way.
    """
    defaults = {
        "title": f"xnowcast {model} {task}",
        "source": f"xnowcast {version}, model {model!r} ({task})",
    }
    return {key: value for key, value in defaults.items() if not attrs.get(key)}


def without_coordinate_fill(obj: Any) -> Any:
    """``obj`` (a new object) with every coordinate marked to be written without
    ``_FillValue``: CF 2.5.1 forbids one on coordinate variables, and xarray adds NaN to
    float coordinates by default.  Values, attributes and the input are untouched.
    """
    replaced = {}
    for name, coord in obj.coords.items():
        variable = coord.variable.copy(deep=False)
        variable.encoding = {**variable.encoding, "_FillValue": None}
        replaced[name] = variable
    return obj.assign_coords(replaced)


def place_grid_mappings(scores: xr.Dataset, spatial_dims: set[str]) -> xr.Dataset:
    """Score maps (variables over both spatial dims) name the grid mapping the forecast
    carried; when every score is reduced over space the grid mapping is dropped."""
    names = [name for name in scores.coords if "grid_mapping_name" in scores[name].attrs]
    if not names:
        return scores
    maps = [v for v, da in scores.data_vars.items() if spatial_dims <= set(map(str, da.dims))]
    if not maps:
        return scores.drop_vars(names)
    out = scores.copy(deep=False)
    for var in maps:
        out[var].attrs = {**out[var].attrs, "grid_mapping": " ".join(map(str, names))}
    return out


def _unique_values(key: str, *attrs: Mapping[str, Any]) -> str | None:
    found: list[str] = []
    for mapping in attrs:
        value = mapping.get(key)
        if value and str(value) not in found:
            found.append(str(value))
    return "; ".join(found) or None


def scores_attrs(
    attrs: Mapping[str, Any], forecast: Any, observations: Any, *, version: str
) -> dict[str, Any]:
    """Global attributes of a score Dataset: its own, plus the institution, references and
    licence of the forecast and the observations (both, when they differ), and a
    ``source`` naming what was scored."""
    inputs = [getattr(forecast, "attrs", {}), getattr(observations, "attrs", {})]
    inputs += [
        getattr(var, "attrs", {})
        for obj in (forecast, observations)
        if isinstance(obj, xr.Dataset)
        for var in obj.data_vars.values()
    ]
    out = dict(attrs)
    for key in ("institution", "references", "license"):
        value = _unique_values(key, *inputs)
        if value and key not in out:
            out[key] = value
    scored = _unique_values("source", getattr(forecast, "attrs", {}))
    out.setdefault(
        "source", f"xnowcast {version} verification" + (f" of: {scored}" if scored else "")
    )
    return out


def _drop_dangling_grid_mappings(ds: xr.Dataset) -> None:
    """Drop (with a warning) ``grid_mapping`` attributes naming variables ``ds`` lacks: a
    reference to a missing variable is a CF error (5.6)."""
    for name, var in ds.data_vars.items():
        missing = [ref for ref in grid_mapping_names(var.attrs) if ref not in ds.variables]
        if missing:
            warnings.warn(
                f"{name!r} refers to the grid mapping {missing[0]!r}, which it does not hold "
                "(it was probably a data variable of the Dataset the field was taken from): "
                "the grid_mapping attribute is left out of the file. Keep the projection "
                f"by selecting the field with ds.set_coords({missing[0]!r})[{name!r}].",
                UserWarning,
                stacklevel=3,
            )
            var.attrs = {k: v for k, v in var.attrs.items() if k != "grid_mapping"}


def to_cf_dataset(obj: xr.DataArray | xr.Dataset, name: str | None = None) -> xr.Dataset:
    """The CF Dataset a forecast, downscaled field or score set is written from.

    A DataArray becomes a one-variable Dataset (named ``name``, else its own name, else
    ``precipitation``); its grid-mapping coordinate is written as a variable; the
    file-level attributes (title, institution, source, history, references, license)
    move to the global attributes, where ``Conventions = "CF-1.10"`` is set; no
    coordinate gets a ``_FillValue``; a ``grid_mapping`` attribute naming a variable
    the field does not hold is left out, with a warning.  The input is not modified.

    Examples
    --------
    >>> fc = ds.nowcast.predict(model="persistence", steps=6)        # doctest: +SKIP
    >>> xnowcast.to_cf_dataset(fc).to_netcdf("forecast.nc")           # doctest: +SKIP
    """
    if isinstance(obj, xr.DataArray):
        var = name or (str(obj.name) if obj.name is not None else "precipitation")
        ds = obj.to_dataset(name=var, promote_attrs=False)
        attrs = dict(ds[var].attrs)
        file_attrs = {key: attrs.pop(key) for key in GLOBAL_ATTRS if key in attrs}
        ds[var].attrs = attrs
        ds.attrs = file_attrs
    else:
        ds = obj.copy(deep=False)
    _drop_dangling_grid_mappings(ds)
    ds.attrs = {
        "Conventions": CF_CONVENTIONS,
        "title": "xnowcast output",
        "source": "xnowcast",
        **{key: value for key, value in ds.attrs.items() if key != "Conventions"},
    }
    return without_coordinate_fill(ds)

"""Units: the one pint registry, rain rate <-> reflectivity, unit parsing.

The registry is cf-xarray's (so CF strings such as ``kg m-2 s-1`` and
``mm h-1`` parse), extended with

* ``dBZ``, a logarithmic unit of the reflectivity factor
  (``dBZ = 10 log10(Z / 1 mm6 m-3)``), so ``dBZ <-> mm6 m-3`` converts;
* a ``water`` context that turns a mass flux (``kg m-2 s-1``) into a rain
  rate (``mm/h``) through the density of liquid water (1000 kg m-3).

Quantities are grouped into *kinds*: a rain rate (``[length]/[time]``), a mass
flux, an accumulation over the time step (``mm`` with a time step, or
``mm/(5 min)``), a linear reflectivity factor (``mm6 m-3``) and the
logarithmic reflectivity (``dBZ``).  :func:`convert_values` converts between
any two of them; rain rate and reflectivity are linked by the Z-R relation
``Z = a R**b`` (Marshall-Palmer ``a=200, b=1.6`` by default).

This module never imports torch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xnowcast.errors import UnitsError

if TYPE_CHECKING:
    import pint

__all__ = [
    "MARSHALL_PALMER",
    "ZRRelation",
    "convert_dataarray",
    "convert_values",
    "dbz_to_rain_rate",
    "get_registry",
    "parse_units",
    "rain_rate_to_dbz",
    "to_data_units",
    "unit_kind",
    "units_of",
]
# ``ureg`` (the registry) is also importable: ``from xnowcast.units import ureg``


@functools.cache
def get_registry() -> pint.UnitRegistry:
    """The one registry: cf-xarray's, with ``dBZ``, ``Zmm`` (mm6 m-3) and a ``water`` context.

    Built on first use (building a pint registry takes a few hundred ms, which
    ``import xnowcast`` does not pay) and set up for pint-xarray.
    """
    import cf_xarray.units
    import pint
    import pint_xarray

    registry = cf_xarray.units.units
    if "Zmm" not in registry:
        registry.define("Zmm = millimeter ** 6 / meter ** 3")
        registry.define("dBZ = 1 * Zmm; logbase: 10; logfactor: 10 = dbz")
        water = pint.Context("water")
        density = registry.Quantity(1000.0, "kg / m ** 3")
        water.add_transformation(
            "[mass] / [length] ** 2 / [time]", "[length] / [time]", lambda reg, x: x / density
        )
        water.add_transformation(
            "[length] / [time]", "[mass] / [length] ** 2 / [time]", lambda reg, x: x * density
        )
        registry.add_context(water)
        pint_xarray.setup_registry(registry)
    return registry


@functools.cache
def _kinds() -> tuple[tuple[str, Any], ...]:
    reg = get_registry()
    return (
        ("rate", reg.Unit("mm/h").dimensionality),
        ("flux", reg.Unit("kg m-2 s-1").dimensionality),
        ("depth", reg.Unit("mm").dimensionality),
        ("linear_z", reg.Unit("Zmm").dimensionality),
    )


def __getattr__(name: str) -> Any:
    if name == "ureg":
        return get_registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_HOW_TO_SET = (
    "Set them with da.attrs['units'] = 'mm/h' (or 'dBZ', 'kg m-2 s-1', 'mm', ...) "
    "or pass units=... to the call."
)


@dataclass(frozen=True)
class ZRRelation:
    """The power law ``Z = a * R**b`` linking reflectivity (mm6 m-3) and rain rate (mm/h)."""

    a: float = 200.0
    b: float = 1.6


MARSHALL_PALMER = ZRRelation(200.0, 1.6)


def _is_dbz(text: str) -> bool:
    return text.strip().replace(" ", "").lower() in {"dbz", "dbz_h", "dbzh"}


def parse_units(units: str | pint.Unit | None) -> pint.Quantity:
    """Parse a unit string into a pint Quantity of magnitude *scale*.

    A scale factor is allowed (``"mm/(5 min)"`` parses as 1/5 mm/min), which is how
    accumulations over a time step can be written.

    Raises
    ------
    UnitsError
        When ``units`` is missing or pint cannot parse it.
    """
    if units is None or (isinstance(units, str) and not units.strip()):
        raise UnitsError(f"The data have no units. {_HOW_TO_SET}")
    import pint

    if isinstance(units, pint.Unit):
        return get_registry().Quantity(1.0, units)
    if _is_dbz(str(units)):
        return get_registry().Quantity(1.0, "dBZ")
    try:
        parsed = get_registry().parse_expression(str(units))
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, Exception) as err:
        raise UnitsError(f"Unknown units {units!r} ({err}). {_HOW_TO_SET}") from None
    if not isinstance(parsed, pint.Quantity):
        parsed = get_registry().Quantity(float(parsed), "dimensionless")
    return parsed


def unit_kind(units: str | pint.Unit | None) -> str:
    """Classify units as ``rate``, ``flux``, ``depth``, ``linear_z`` or ``dbz``.

    Raises
    ------
    UnitsError
        For units that are not a precipitation quantity (a temperature, say).
    """
    q = parse_units(units)
    if str(q.units) == "dBZ":
        return "dbz"
    dim = q.dimensionality
    for kind, ref in _kinds():
        if dim == ref:
            return kind
    raise UnitsError(
        f"Units {units!r} ({dim}) are not a precipitation quantity: expected a rain rate "
        "(mm/h, m s-1), a mass flux (kg m-2 s-1), an accumulation over the time step (mm), "
        f"or a reflectivity (dBZ, mm6 m-3). {_HOW_TO_SET}"
    )


def _step_hours(time_step: Any) -> float:
    if time_step is None:
        raise UnitsError(
            "An accumulation (units of length, e.g. 'mm') needs the time step it was "
            "accumulated over: pass time_step=np.timedelta64(5, 'm'), or write the units "
            "as a rate such as 'mm/(5 min)' or 'mm/h'."
        )
    import pint

    if isinstance(time_step, pint.Quantity):
        return float(time_step.to("h").magnitude)
    return float(np.timedelta64(time_step, "ns").astype("int64")) / 3.6e12


def rain_rate_to_dbz(rate: Any, zr: ZRRelation = MARSHALL_PALMER) -> np.ndarray:
    """Rain rate in mm/h to reflectivity in dBZ through ``Z = a R**b``.

    Zero rain gives ``-inf`` dBZ; NaN stays NaN.
    """
    rate = np.asarray(rate, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(zr.a) + 10.0 * zr.b * np.log10(rate)


def dbz_to_rain_rate(dbz: Any, zr: ZRRelation = MARSHALL_PALMER) -> np.ndarray:
    """Reflectivity in dBZ to rain rate in mm/h, the inverse of :func:`rain_rate_to_dbz`."""
    dbz = np.asarray(dbz, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return (10.0 ** (dbz / 10.0) / zr.a) ** (1.0 / zr.b)


def _to_mm_per_h(values: np.ndarray, units: str, time_step: Any, zr: ZRRelation) -> np.ndarray:
    kind = unit_kind(units)
    q = parse_units(units)
    if kind == "dbz":
        return dbz_to_rain_rate(values, zr)
    if kind == "linear_z":
        z = values * q.to("Zmm").magnitude
        with np.errstate(invalid="ignore"):
            return (z / zr.a) ** (1.0 / zr.b)
    if kind == "depth":
        return values * q.to("mm").magnitude / _step_hours(time_step)
    with get_registry().context("water"):
        return values * q.to("mm/h").magnitude


def _from_mm_per_h(rate: np.ndarray, units: str, time_step: Any, zr: ZRRelation) -> np.ndarray:
    kind = unit_kind(units)
    q = parse_units(units)
    if kind == "dbz":
        return rain_rate_to_dbz(rate, zr)
    if kind == "linear_z":
        return zr.a * rate**zr.b / q.to("Zmm").magnitude
    if kind == "depth":
        return rate * _step_hours(time_step) / q.to("mm").magnitude
    with get_registry().context("water"):
        return rate / q.to("mm/h").magnitude


def convert_values(
    values: Any,
    from_units: str,
    to_units: str,
    *,
    time_step: Any = None,
    zr: ZRRelation = MARSHALL_PALMER,
) -> np.ndarray:
    """Convert precipitation values between any two supported units.

    Parameters
    ----------
    values
        Array-like of values in ``from_units``.
    from_units, to_units
        Unit strings (CF style or pint style), e.g. ``"mm h-1"``, ``"kg m-2 s-1"``,
        ``"dBZ"``, ``"mm6 m-3"``, ``"mm"`` (an accumulation, needs ``time_step``).
    time_step
        The accumulation interval for depth units (``numpy.timedelta64`` or a pint
        time quantity).
    zr
        The Z-R relation used between reflectivity and rain rate.

    Returns
    -------
    numpy.ndarray
        The converted values (float64 for mixed kinds; NaN stays NaN).
    """
    values = np.asarray(values)
    kf, kt = unit_kind(from_units), unit_kind(to_units)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if kf == kt:
        if kf == "dbz":
            return values.copy()
        context = ("water",) if kf == "flux" else ()
        with get_registry().context(*context):
            factor = parse_units(from_units).to(parse_units(to_units).units).magnitude
        return values * (factor / parse_units(to_units).magnitude)
    if {kf, kt} == {"dbz", "linear_z"}:
        if kf == "dbz":
            return (
                get_registry().Quantity(values, "dBZ").to("Zmm").magnitude
                / parse_units(to_units).to("Zmm").magnitude
            )
        linear = values * parse_units(from_units).to("Zmm").magnitude
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(linear)
    return _from_mm_per_h(_to_mm_per_h(values, from_units, time_step, zr), to_units, time_step, zr)


def units_of(obj: Any, units: str | None = None) -> str:
    """The units of a DataArray (``attrs['units']``) or the override ``units``.

    Raises
    ------
    UnitsError
        When there are none, or they are unknown or not a precipitation quantity.
    """
    found = units if units is not None else getattr(obj, "attrs", {}).get("units")
    name = getattr(obj, "name", None)
    if found is None or not str(found).strip():
        raise UnitsError(f"The data {name!r} have no units attribute. {_HOW_TO_SET}")
    unit_kind(found)
    return str(found)


def convert_dataarray(
    da: Any,
    to_units: str,
    *,
    units: str | None = None,
    time_step: Any = None,
    zr: ZRRelation = MARSHALL_PALMER,
) -> Any:
    """A new DataArray in ``to_units``; coords and attrs kept, ``units`` updated.

    Dask-backed input stays lazy.  For depth units without ``time_step`` the time
    step is read from a regular ``time`` coordinate.
    """
    import xarray as xr

    src = units_of(da, units)
    if time_step is None and "depth" in (unit_kind(src), unit_kind(to_units)):
        time_step = _infer_step(da)
    out = xr.apply_ufunc(
        convert_values,
        da,
        kwargs={"from_units": src, "to_units": to_units, "time_step": time_step, "zr": zr},
        dask="parallelized",
        output_dtypes=[np.result_type(da.dtype, np.float32)],
        keep_attrs=True,
    )
    out = out.astype(np.result_type(da.dtype, np.float32), copy=False)
    out.attrs = {**da.attrs, "units": to_units}
    return out


def _infer_step(da: Any) -> Any:
    for name in ("time",):
        if name in da.coords and da.sizes.get(name, 0) > 1:
            diffs = np.diff(da[name].values)
            if np.all(diffs == diffs[0]):
                return diffs[0]
    return None


_THRESHOLD = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(.*)$")


def to_data_units(
    value: Any, data_units: str, *, time_step: Any = None, zr: ZRRelation = MARSHALL_PALMER
) -> float:
    """A threshold in the data's units.

    ``value`` is a number (already in the data's units), a string with units
    (``"1 mm/h"``, ``"35 dBZ"``) or a pint Quantity.
    """
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        match = _THRESHOLD.match(value)
        if match is None:
            raise UnitsError(
                f"Cannot read the threshold {value!r}: write a number and units, e.g. '1 mm/h'."
            )
        magnitude, unit_text = float(match.group(1)), match.group(2).strip()
        if not unit_text:
            return magnitude
        return float(convert_values(magnitude, unit_text, data_units, time_step=time_step, zr=zr))
    import pint

    if isinstance(value, pint.Quantity):
        return float(
            convert_values(
                value.magnitude, str(value.units), data_units, time_step=time_step, zr=zr
            )
        )
    raise UnitsError(
        f"A threshold must be a number, a string like '1 mm/h' or a pint Quantity, not {value!r}."
    )

"""Units: the one pint registry, rain rate <-> reflectivity, unit parsing.

The registry is cf-xarray's (so CF strings such as ``kg m-2 s-1`` and
``mm h-1`` parse), extended with

* ``dBZ``, a logarithmic unit of the reflectivity factor
  (``dBZ = 10 log10(Z / 1 mm6 m-3)``), so ``dBZ <-> mm6 m-3`` converts;
* a ``water`` context that turns a mass flux (``kg m-2 s-1``) into a rain
  rate (``mm/h``), and an amount (``kg m-2``) into a depth (``mm``), through the
  density of liquid water (1000 kg m-3).

Quantities are grouped into *kinds*: a rain rate (``[length]/[time]``), a mass
flux, an accumulation over the time step (``mm`` or ``kg m-2`` with a time step,
or ``mm/(5 min)``), a linear reflectivity factor (``mm6 m-3``) and the
logarithmic reflectivity (``dBZ``).  Unknown units get case-insensitive "did you
mean" suggestions (``MM/H`` is megamolar per henry to pint: "did you mean 'mm/h'?").  :func:`convert_values` converts between
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
    "QUANTITY_NAMES",
    "ZRRelation",
    "convert_dataarray",
    "convert_values",
    "dbz_to_rain_rate",
    "get_registry",
    "parse_units",
    "quantity_names",
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
        # an amount of water (kg m-2, CF's precipitation_amount) is a depth (mm)
        water.add_transformation("[mass] / [length] ** 2", "[length]", lambda reg, x: x / density)
        water.add_transformation("[length]", "[mass] / [length] ** 2", lambda reg, x: x * density)
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
        ("depth", reg.Unit("kg m-2").dimensionality),  # an amount of water: 1 kg m-2 = 1 mm
        ("linear_z", reg.Unit("Zmm").dimensionality),
    )


def __getattr__(name: str) -> Any:
    if name == "ureg":
        return get_registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_HOW_TO_SET = "Set them with da.attrs['units'] = 'mm/h' (or 'dBZ', 'kg m-2 s-1', 'mm', ...)."

#: Precipitation units as usually written: the vocabulary of "did you mean" suggestions.
_COMMON_UNITS = (
    "mm/h",
    "mm h-1",
    "mm hr-1",
    "mm/hr",
    "m s-1",
    "m/s",
    "kg m-2 s-1",
    "kg m-2 h-1",
    "mm",
    "m",
    "kg m-2",
    "mm/(5 min)",
    "mm/day",
    "mm d-1",
    "dBZ",
    "mm6 m-3",
)


@dataclass(frozen=True)
class ZRRelation:
    """The power law ``Z = a * R**b`` linking reflectivity (mm6 m-3) and rain rate (mm/h)."""

    a: float = 200.0
    b: float = 1.6


MARSHALL_PALMER = ZRRelation(200.0, 1.6)


def _is_dbz(text: str) -> bool:
    return text.strip().replace(" ", "").lower() in {"dbz", "dbz_h", "dbzh"}


def parse_units(units: str | pint.Unit | None, *, advice: str = "") -> pint.Quantity:
    """Parse a unit string into a pint Quantity of magnitude *scale*.

    A scale factor is allowed (``"mm/(5 min)"`` parses as 1/5 mm/min), which is how
    accumulations over a time step can be written.  ``advice`` is added to the error
    message (where the caller takes an override, e.g. "or pass units=... to the call.").

    Raises
    ------
    UnitsError
        When ``units`` is missing or pint cannot parse it (with a "did you mean" when
        another spelling or case is a precipitation unit).
    """
    if units is None or (isinstance(units, str) and not units.strip()):
        raise UnitsError(_join("The data have no units.", _HOW_TO_SET, advice))
    import pint

    if isinstance(units, pint.Unit):
        return get_registry().Quantity(1.0, units)
    if _is_dbz(str(units)):
        return get_registry().Quantity(1.0, "dBZ")
    parsed = _parse_or_none(str(units))
    if parsed is None:
        try:
            get_registry().parse_expression(str(units))
        except Exception as err:
            reason = str(err)
        else:  # pragma: no cover  (parsed above)
            reason = "cannot be parsed"
        raise UnitsError(
            _join(
                f"Unknown units {units!r} ({reason}).", _suggestion(str(units)), _HOW_TO_SET, advice
            )
        ) from None
    return parsed


def _parse_or_none(text: str) -> pint.Quantity | None:
    import pint

    try:
        parsed = get_registry().parse_expression(text)
    except Exception:
        return None
    if not isinstance(parsed, pint.Quantity):
        parsed = get_registry().Quantity(float(parsed), "dimensionless")
    return parsed


def _kind_or_none(text: str) -> str | None:
    if _is_dbz(text):
        return "dbz"
    parsed = _parse_or_none(text)
    if parsed is None:
        return None
    return next((kind for kind, ref in _kinds() if parsed.dimensionality == ref), None)


def _suggestion(text: str) -> str:
    """ "Did you mean ...?" for units that are not a precipitation quantity as written but
    are in another case (``MM/H``) or close to a usual spelling; "" when nothing fits.

    Only ever a suggestion: units are case-sensitive (``Mm/h`` is a valid megametre per
    hour, ``mm/h`` a millimetre per hour) and are never changed silently.
    """
    import difflib

    candidates = []
    lowered = text.strip().lower()
    if lowered != text.strip() and _kind_or_none(lowered) is not None:
        candidates.append(lowered)
    folded = {unit.lower().replace(" ", ""): unit for unit in _COMMON_UNITS}
    key = lowered.replace(" ", "")
    if key in folded:
        candidates.append(folded[key])
    candidates += [
        folded[m] for m in difflib.get_close_matches(key, list(folded), n=2, cutoff=0.75)
    ]
    unique = [c for i, c in enumerate(candidates) if c not in candidates[:i] and c != text]
    if not unique:
        return ""
    shown = " or ".join(repr(c) for c in unique[:3])
    if any(c.lower().replace(" ", "") == key for c in unique):
        return f"Did you mean {shown}? Unit symbols are case-sensitive (M is mega, H is henry)."
    return f"Did you mean {shown}?"


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def unit_kind(units: str | pint.Unit | None, *, advice: str = "") -> str:
    """Classify units as ``rate``, ``flux``, ``depth``, ``linear_z`` or ``dbz``.

    ``depth`` is an accumulation over the time step: a length (``mm``) or an amount of
    water (``kg m-2``, CF's ``precipitation_amount``).

    Raises
    ------
    UnitsError
        For units that are not a precipitation quantity (a temperature, say), with a
        "did you mean" when another case or spelling is one (``MM/H``: ``mm/h``).
    """
    q = parse_units(units, advice=advice)
    if str(q.units) == "dBZ":
        return "dbz"
    dim = q.dimensionality
    for kind, ref in _kinds():
        if dim == ref:
            return kind
    raise UnitsError(
        _join(
            f"Units {units!r} ({dim}) are not a precipitation quantity: expected a rain rate "
            "(mm/h, m s-1), a mass flux (kg m-2 s-1), an accumulation over the time step "
            "(mm, kg m-2), or a reflectivity (dBZ, mm6 m-3).",
            _suggestion(str(units)),
            _HOW_TO_SET,
            advice,
        )
    )


def _step_hours(time_step: Any) -> float:
    if time_step is None:
        raise UnitsError(
            "An accumulation (units of length or amount, e.g. 'mm' or 'kg m-2') needs the "
            "time step it was "
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
    with get_registry().context("water"):
        if kind == "depth":
            return values * q.to("mm").magnitude / _step_hours(time_step)
        return values * q.to("mm/h").magnitude


def _from_mm_per_h(rate: np.ndarray, units: str, time_step: Any, zr: ZRRelation) -> np.ndarray:
    kind = unit_kind(units)
    q = parse_units(units)
    if kind == "dbz":
        return rain_rate_to_dbz(rate, zr)
    if kind == "linear_z":
        return zr.a * rate**zr.b / q.to("Zmm").magnitude
    with get_registry().context("water"):
        if kind == "depth":
            return rate * _step_hours(time_step) / q.to("mm").magnitude
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
        context = ("water",) if kf in ("flux", "depth") else ()
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


def units_of(obj: Any, units: str | None = None, *, advice: str = "") -> str:
    """The units of a DataArray (``attrs['units']``) or the override ``units``.

    ``advice`` ends the error messages: the caller's own way to give the units (e.g.
    "Or pass units=... to the call."), so that no message names an option that does not
    exist where it is raised.

    Raises
    ------
    UnitsError
        When there are none, or they are unknown or not a precipitation quantity.
    """
    found = units if units is not None else getattr(obj, "attrs", {}).get("units")
    name = getattr(obj, "name", None)
    if found is None or not str(found).strip():
        raise UnitsError(_join(f"The data {name!r} have no units attribute.", _HOW_TO_SET, advice))
    unit_kind(found, advice=advice)
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

    Attributes that give values in the old units (``valid_range``, ``valid_min``,
    ``valid_max``, ``actual_range``) are dropped.  When the quantity changes
    (reflectivity to rain rate, a rate to an accumulation), its CF ``standard_name``
    and ``long_name`` become the new quantity's (:func:`quantity_names`) and
    ``comment`` says how it was converted (with the Z-R relation for reflectivity).

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
    stale = _RANGE_ATTRS if str(src) != str(to_units) else ()
    out.attrs = {k: v for k, v in da.attrs.items() if k not in stale}
    out.attrs["units"] = to_units
    from_kind, to_kind = unit_kind(src), unit_kind(to_units)
    if from_kind != to_kind:
        out.attrs.pop("standard_name", None)
        out.attrs.update(quantity_names(to_units))
        note = f"converted from {src} to {to_units}"
        if {from_kind, to_kind} & {"dbz", "linear_z"}:
            note += f" with Z = {zr.a:g} R^{zr.b:g} (Z in mm6 m-3, R in mm/h)"
        out.attrs["comment"] = "; ".join(filter(None, [da.attrs.get("comment"), note]))
    return out


#: Attributes that state values in the old units: a converted array drops them.
_RANGE_ATTRS = ("valid_range", "valid_min", "valid_max", "actual_range")


#: CF names of each kind of precipitation quantity (:func:`unit_kind`), shared with the
#: readers (:mod:`xnowcast.io._cf`).  Linear reflectivity has no CF standard name, and an
#: accumulation's depends on its units (:func:`quantity_names`).
QUANTITY_NAMES: dict[str, dict[str, str]] = {
    "rate": {"standard_name": "rainfall_rate", "long_name": "rain rate"},
    "flux": {"standard_name": "precipitation_flux", "long_name": "precipitation flux"},
    "depth": {
        "standard_name": "lwe_thickness_of_precipitation_amount",
        "long_name": "precipitation amount over the time step",
    },
    "dbz": {
        "standard_name": "equivalent_reflectivity_factor",
        "long_name": "equivalent radar reflectivity factor",
    },
    "linear_z": {"long_name": "equivalent radar reflectivity factor (linear)"},
}


def quantity_names(units: str) -> dict[str, str]:
    """CF ``standard_name`` (where CF has one) and ``long_name`` of a quantity in ``units``.

    An amount of water per area (``kg m-2``) is CF's ``precipitation_amount``, a depth
    (``mm``) its ``lwe_thickness_of_precipitation_amount``.
    """
    kind = unit_kind(units)
    names = dict(QUANTITY_NAMES[kind])
    mass = get_registry().Unit("kg m-2").dimensionality
    if kind == "depth" and parse_units(units).dimensionality == mass:
        names["standard_name"] = "precipitation_amount"
    return names


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

"""Value checks on input fields, run before any model sees them.

Radar archives are messy: no-data codes left in the data, raw counts not yet
scaled, negative rain rates, values too large for the float32 the models run in.
Each check raises a :class:`~xnowcast.errors.DataValueError` that names the
problem, where it is (the time of the first frame holding it, when known) and the
fix.  The plausibility checks (no-data codes, negative rain, rain rates above
:data:`MAX_RAIN_RATE`, reflectivities outside :data:`DBZ_RANGE`) can be skipped
with ``check_values=False``; values that a float32 cast would turn into
infinities, and ``+inf`` itself, are always refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xnowcast.errors import DataValueError
from xnowcast.units import convert_values, unit_kind

__all__ = [
    "ARTEFACT_PIXELS",
    "ARTEFACT_SHARE",
    "DBZ_RANGE",
    "FILL_CODES",
    "MAX_RAIN_RATE",
    "RAIN_RATE_CEILING",
    "check_has_data",
    "check_precipitation_values",
]

#: The largest plausible rain rate, in mm/h.  The world record over an hour is
#: ~300 mm; radar-derived rates of a few hundred mm/h occur in hail cores.  Above
#: this are no-data codes (65535, 9999 ...), raw counts not yet scaled, or wrong units.
MAX_RAIN_RATE = 500.0

#: Rain rates above :data:`MAX_RAIN_RATE` are accepted as the artefacts of real
#: composites (clutter, hail: OPERA's 2018-08-24 composite has 5 such pixels, one at
#: 8647 mm/h) when they are isolated: float data, below :data:`RAIN_RATE_CEILING` (mm/h),
#: at most :data:`ARTEFACT_PIXELS` pixels or :data:`ARTEFACT_SHARE` of the valid pixels
#: of a frame, whichever is more.  Integer data above the maximum are raw counts.
RAIN_RATE_CEILING = 1e4
ARTEFACT_PIXELS = 4
ARTEFACT_SHARE = 1e-3

#: The plausible range of reflectivity, in dBZ: below are no-data codes (-99,
#: -327.68 = int16 -32768 x 0.01, -1e4 ...), above are raw byte codes (255 ...).
#: ``-inf`` dBZ is the reflectivity of no rain and is accepted.
DBZ_RANGE = (-35.0, 95.0)

#: Usual no-data codes, named in the messages when they are found.
FILL_CODES = (
    -32768.0,
    -10000.0,
    -9999.0,
    -999.0,
    -327.68,
    -200.0,
    -100.0,
    -99.0,
    255.0,
    9999.0,
    10000.0,
    65535.0,
)

_SKIP = "or pass check_values=False (command line: --no-check-values) to skip the value checks"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_has_data(values: np.ndarray) -> None:
    """Refuse input that is entirely NaN (nothing to run a model on)."""
    if not (~np.isnan(np.asarray(values))).any():
        raise DataValueError(
            "The input is entirely NaN (no valid radar data): check the selection, or the "
            "masking of no-data values when the data were read."
        )


def _where(mask: np.ndarray, times: np.ndarray | None) -> str:
    """`` (first at <time>)`` for the first 2-D field of ``mask`` holding True, if times are known."""
    if times is None or mask.ndim < 2:
        return ""
    fields = np.asarray(mask).reshape(*mask.shape[:-2], -1).any(axis=-1).ravel()
    hit = np.flatnonzero(fields)
    if not hit.size:
        return ""
    when = np.asarray(times).ravel()[hit[0]]
    return f" (first at {np.datetime_as_string(np.datetime64(when, 's'), unit='s')})"


def _fill_code(values: np.ndarray) -> float | None:
    """The no-data code most of ``values`` equal, if any."""
    unique, counts = np.unique(values, return_counts=True)
    value = float(unique[np.argmax(counts)])
    for code in FILL_CODES:
        if np.isclose(value, code, rtol=1e-6, atol=0):
            return code
    return None


def _code_error(values: np.ndarray, code: float, where: str, hint: str = "") -> DataValueError:
    hits = int(np.count_nonzero(np.isclose(values, code, rtol=1e-6, atol=0)))
    return DataValueError(
        f"The input holds {hits} values equal to {code:g}{where}, a usual no-data code: "
        f"mask them first, e.g. da = da.where(da != {code:g}), so they are treated as "
        f"missing{hint}; {_SKIP}."
    )


def check_precipitation_values(
    values: np.ndarray,
    units: str,
    *,
    times: np.ndarray | None = None,
    time_step: Any = None,
    require_data: bool = True,
    check_values: bool = True,
) -> None:
    """Refuse values that cannot be right.

    Parameters
    ----------
    values
        The input field (any shape, 2-D fields last), NaN where missing, in ``units``.
    units
        Its units.
    times
        The time of each 2-D field (shape ``values.shape[:-2]``), named in the messages.
    time_step
        The data's time step (for accumulations, to compare them with a rain rate).
    require_data
        Refuse input that is entirely NaN.  False for one block of a longer, lazily
        processed series, where an all-missing block is legitimate (its output is NaN).
    check_values
        Run the plausibility checks (no-data codes, negative rain, rain rates above
        :data:`MAX_RAIN_RATE` beyond a few isolated pixels, reflectivity outside
        :data:`DBZ_RANGE`).

    Raises
    ------
    DataValueError
        For all-NaN input, values a float32 cast would lose, infinite values, and
        (with ``check_values``) implausible values.

    Notes
    -----
    Only NaN means missing.  ``-inf`` dBZ is the reflectivity of no rain (what
    :func:`~xnowcast.units.rain_rate_to_dbz` gives for 0 mm/h), so it counts as data.
    """
    values = np.asarray(values)
    if require_data:
        check_has_data(values)
    if values.dtype.kind == "f" and values.dtype.itemsize > 4:
        huge = np.abs(values) > _FLOAT32_MAX
        huge &= np.isfinite(values)
        if huge.any():
            example = float(values[huge].flat[0])
            raise DataValueError(
                f"{int(huge.sum())} values are too large for float32 (e.g. {example:g}"
                f"{_where(huge, times)}): the models run in float32, where they would become "
                "infinite. They are not radar values: mask them as missing, e.g. "
                "da = da.where(abs(da) < 1e30)."
            )
    present = ~np.isnan(values)
    if not present.any():
        return
    data = values[present]
    positive_inf = int(np.count_nonzero(np.isposinf(data)))
    if positive_inf:
        raise DataValueError(
            f"The input holds {positive_inf} infinite values{_where(np.isposinf(values), times)}: "
            "mask them as missing first, e.g. da = da.where(np.isfinite(da))."
        )
    if check_values:
        _check_plausible(values, data, units, times, time_step)


def _check_plausible(
    values: np.ndarray, data: np.ndarray, units: str, times: np.ndarray | None, time_step: Any
) -> None:
    kind = unit_kind(units)
    if kind in ("dbz", "linear_z"):
        _check_reflectivity(values, data, units, kind, times)
        return
    lowest, highest = float(data.min()), float(data.max())
    if lowest < 0:
        low = values < 0
        code = _fill_code(values[low])
        if code is not None:
            raise _code_error(values, code, _where(low, times))
        raise DataValueError(
            f"{int(low.sum())} negative rain values (min {lowest:g} {units}{_where(low, times)}): "
            "rain cannot be negative. Mask no-data values as NaN (da.where(da >= 0)) or clip "
            f"noise (da.clip(min=0)); {_SKIP}."
        )
    limit = float(
        np.asarray(convert_values(np.array([MAX_RAIN_RATE]), "mm/h", units, time_step=time_step))[0]
    )
    if highest > limit * (1 + 1e-6):
        _check_high_rain(values, units, limit, highest, times)
    # a large rate below the limit is suspicious only when frequent (e.g. byte code 255)
    for code in (c for c in FILL_CODES if 0 < c <= limit):
        if np.count_nonzero(data == code) > 0.01 * data.size:
            raise _code_error(values, code, _where(values == code, times))


def _check_high_rain(
    values: np.ndarray, units: str, limit: float, highest: float, times: np.ndarray | None
) -> None:
    """Rain above ``limit`` (:data:`MAX_RAIN_RATE` in the data's units): refused unless it is a
    few isolated pixels of float data below the ceiling (the artefacts of real composites)."""
    high = values > limit
    code = _fill_code(values[high])
    if code is not None:
        raise _code_error(values, code, _where(high, times))
    fields = high.reshape(-1, high.shape[-2] * high.shape[-1]).sum(axis=1)
    valid = (~np.isnan(values)).reshape(fields.size, -1).sum(axis=1)
    tolerated = np.maximum(ARTEFACT_PIXELS, ARTEFACT_SHARE * valid)
    ceiling = limit * RAIN_RATE_CEILING / MAX_RAIN_RATE
    integers = values.dtype.kind in "iu"
    if not (integers or highest >= ceiling or (fields > tolerated).any()):
        return
    same = np.isclose(limit, MAX_RAIN_RATE) and unit_kind(units) == "rate"
    what = "integer values (raw counts?)" if integers else "values"
    raise DataValueError(
        f"{int(high.sum())} {what} above {limit:g} {units}"
        f"{'' if same else f' (= {MAX_RAIN_RATE:g} mm/h)'}, the largest plausible rain "
        f"rate, up to {highest:g} {units}{_where(high, times)}: no-data codes, raw counts "
        "not yet scaled (apply the file's gain and offset), or wrong units. Mask them as "
        f"missing, e.g. da = da.where(da <= {limit:g}), or fix the units; {_SKIP}."
    )


def _check_reflectivity(
    values: np.ndarray, data: np.ndarray, units: str, kind: str, times: np.ndarray | None
) -> None:
    low, high = DBZ_RANGE
    if kind == "linear_z":
        if float(data.min()) < 0:
            bad = values < 0
            raise DataValueError(
                f"{int(bad.sum())} negative reflectivity factors{_where(bad, times)}: Z cannot "
                f"be negative. Mask no-data values as NaN (da.where(da >= 0)); {_SKIP}."
            )
        with np.errstate(divide="ignore"):
            dbz = 10 * np.log10(values)
        data = dbz[np.isfinite(dbz)]
        if not data.size:
            return
    else:
        dbz = values
        finite = data[np.isfinite(data)]
        if not finite.size:
            return
        data = finite
    if float(data.min()) >= low and float(data.max()) <= high:
        return
    bad = np.isfinite(dbz) & ((dbz < low) | (dbz > high))
    code = _fill_code(values[bad])
    where = _where(bad, times)
    if code is not None:
        hint = (
            f" (if {code:g} means 'no echo' rather than 'no data', set it to -inf dBZ, "
            f"which is no rain: da.where(da != {code:g}, -np.inf))"
            if code < 0 and kind == "dbz"
            else ""
        )
        raise _code_error(values, code, where, hint)
    shown = f"{float(np.nanmin(dbz[bad])):g} to {float(np.nanmax(dbz[bad])):g} dBZ"
    lo, hi = (low, high) if kind == "dbz" else (10 ** (low / 10), 10 ** (high / 10))
    raise DataValueError(
        f"{int(bad.sum())} reflectivities outside the plausible range {low:g} to {high:g} dBZ "
        f"({shown}{where}): no-data codes, raw counts not yet scaled (apply the file's gain "
        f"and offset), or wrong units. Mask them as missing, e.g. da = da.where((da >= {lo:g}) "
        f"& (da <= {hi:g})); {_SKIP}."
    )

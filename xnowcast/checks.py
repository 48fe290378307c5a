"""Value checks on input fields, run before any model sees them.

Radar archives are messy: no-data codes left in the data, negative rain rates,
frames that are entirely missing.  Each check raises a
:class:`~xnowcast.errors.DataValueError` that names the problem and the fix.
"""

from __future__ import annotations

import numpy as np

from xnowcast.errors import DataValueError
from xnowcast.units import unit_kind

__all__ = ["FILL_CODES", "check_precipitation_values"]

FILL_CODES = (-9999.0, -999.0, -200.0, -100.0, -32768.0, 65535.0, 255.0)


def check_precipitation_values(
    values: np.ndarray, units: str, *, frame_axis: int | None = 1, require_data: bool = True
) -> None:
    """Refuse values that cannot be right.

    Parameters
    ----------
    values
        The input field (any shape), NaN where missing.
    units
        Its units; negative values are refused unless they are dBZ.
    frame_axis
        The axis of time frames: a frame that is entirely NaN is refused (it is a
        gap, not missing pixels).  None skips that check.
    require_data
        Refuse input that is entirely NaN.  False for one block of a longer, lazily
        processed series, where an all-missing block is legitimate (its output is NaN).

    Raises
    ------
    DataValueError
        For all-NaN input, an all-NaN frame, leftover no-data codes, infinite values,
        or negative rain.

    Notes
    -----
    Only NaN means missing.  ``-inf`` dBZ is the reflectivity of no rain (what
    :func:`~xnowcast.units.rain_rate_to_dbz` gives for 0 mm/h), so it counts as data.
    """
    values = np.asarray(values)
    present = ~np.isnan(values)
    if not present.any():
        if not require_data:
            return
        raise DataValueError(
            "The input is entirely NaN (no valid radar data): check the selection, or the "
            "masking of no-data values when the data were read."
        )
    if frame_axis is not None and values.ndim > 2:
        per_frame = present.any(axis=(-2, -1))
        if not per_frame.all():
            missing = int((~per_frame).sum())
            raise DataValueError(
                f"{missing} input frame(s) are entirely NaN: a missing radar frame is a gap in "
                "the time series. Choose an init_time whose input frames all exist, or fill the "
                "gap (e.g. interpolate in time) first."
            )
    data = values[present]
    kind = unit_kind(units)
    positive_inf = int(np.count_nonzero(np.isposinf(data)))
    if positive_inf:
        raise DataValueError(
            f"The input holds {positive_inf} infinite values: mask them as missing first, "
            "e.g. da = da.where(np.isfinite(da))."
        )
    for code in FILL_CODES:
        hits = np.count_nonzero(data == code)
        # a negative code is never rain and no echo reaches 100 dBZ; a large positive rain
        # rate is suspicious only when frequent
        impossible = code < 0 or (kind == "dbz" and code >= 100)
        if hits and (impossible or hits > 0.01 * data.size):
            raise DataValueError(
                f"The input holds {hits} values equal to {code:g}, a usual no-data code: mask "
                f"them first, e.g. da = da.where(da != {code:g}), so they are treated as missing."
            )
    if kind != "dbz":
        minimum = float(data.min())
        if minimum < 0:
            count = int(np.count_nonzero(data < 0))
            raise DataValueError(
                f"{count} negative rain values (min {minimum:g} {units}): rain cannot be negative. "
                "Mask no-data values as NaN (da.where(da >= 0)) or clip noise (da.clip(min=0))."
            )

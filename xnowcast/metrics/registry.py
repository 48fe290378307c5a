"""Metric metadata: what each score measures, which way is better, its units.

The registry is the single list of the scores :func:`xnowcast.verification.verify`
knows.  Each entry says how to read the number (``better`` and ``perfect``),
what units the result carries (dimensionless, or the data's units, or their
square) and what the score needs (a threshold) or does with ensemble members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xnowcast.errors import MetricError

__all__ = ["METRICS", "MetricError", "MetricInfo", "available_metrics", "metric_info"]


Kind = Literal["categorical", "continuous", "probabilistic", "neighbourhood", "structural"]


@dataclass(frozen=True)
class MetricInfo:
    """What a score is and how to read it.

    Attributes
    ----------
    name
        Short name used in ``verify(metrics=[...])`` and as the variable name.
    long_name
        Human-readable name (the CF ``long_name`` of the result).
    better
        ``"higher"``, ``"lower"`` or ``"closer"`` (closer to ``perfect`` is better).
    perfect
        The value of a perfect forecast.
    units
        ``"1"`` (dimensionless), ``"data"`` (the data's units) or ``"data2"``
        (their square).
    kind
        ``categorical`` (contingency table of events ``>= threshold``),
        ``continuous`` (point-wise errors), ``probabilistic`` (scores the ensemble
        as a distribution), ``neighbourhood`` (FSS) or ``structural`` (SSIM, the
        learned distance, the semivariogram ratio).
    needs_threshold
        Computed at each threshold (a ``threshold`` dim in the result).
    needs_ensemble
        True when the score is undefined without members.  No score here needs
        one: CRPS treats a deterministic forecast as a one-member ensemble
        (and equals the MAE then).
    probabilistic
        True when members are scored together as a distribution (CRPS).  For the
        other scores each member is scored as a deterministic forecast and the
        member dim is reduced with the others (pooled contingency tables, mean
        errors): the skill of a randomly drawn member.
    poolable
        Computed after pooling at each ``scale`` (a ``scale`` dim in the result),
        as the pooled CSI and CRPS of the DGMR paper.
    """

    name: str
    long_name: str
    better: Literal["higher", "lower", "closer"]
    perfect: float
    units: Literal["1", "data", "data2"]
    kind: Kind
    needs_threshold: bool = False
    needs_ensemble: bool = False
    probabilistic: bool = False
    poolable: bool = True

    def result_units(self, data_units: str) -> str:
        """The units of the score for data in ``data_units``."""
        if self.units == "1":
            return "1"
        if self.units == "data":
            return data_units
        return _squared(data_units)

    def cf_attrs(self, data_units: str) -> dict[str, object]:
        """CF-style attributes of a result variable."""
        return {
            "long_name": self.long_name,
            "units": self.result_units(data_units),
            "better": self.better,
            "perfect_score": self.perfect,
            "metric": self.name,
        }


def _squared(units: str) -> str:
    from xnowcast.units import parse_units

    try:
        return f"{parse_units(units).units ** 2:cf}"
    except Exception:  # a unit pint cannot square (logarithmic ones): say it plainly
        return f"({units})2"


_ENTRIES = (
    MetricInfo("csi", "critical success index", "higher", 1.0, "1", "categorical", True),
    MetricInfo("hss", "Heidke skill score", "higher", 1.0, "1", "categorical", True),
    MetricInfo("pod", "probability of detection", "higher", 1.0, "1", "categorical", True),
    MetricInfo("far", "false alarm ratio", "lower", 0.0, "1", "categorical", True),
    MetricInfo("fbias", "frequency bias", "closer", 1.0, "1", "categorical", True),
    MetricInfo("ets", "equitable threat score", "higher", 1.0, "1", "categorical", True),
    MetricInfo(
        "crps",
        "continuous ranked probability score",
        "lower",
        0.0,
        "data",
        "probabilistic",
        probabilistic=True,
    ),
    MetricInfo(
        "crps_fair",
        "fair continuous ranked probability score (Ferro 2014)",
        "lower",
        0.0,
        "data",
        "probabilistic",
        probabilistic=True,
    ),
    MetricInfo("mse", "mean squared error", "lower", 0.0, "data2", "continuous"),
    MetricInfo("mae", "mean absolute error", "lower", 0.0, "data", "continuous"),
    MetricInfo("rmse", "root mean squared error", "lower", 0.0, "data", "continuous"),
    MetricInfo(
        "bias", "mean error (forecast minus observation)", "closer", 0.0, "data", "continuous"
    ),
    MetricInfo(
        "fss", "fractions skill score", "higher", 1.0, "1", "neighbourhood", True, poolable=False
    ),
    MetricInfo(
        "ssim", "structural similarity index", "higher", 1.0, "1", "structural", poolable=False
    ),
    MetricInfo(
        "atmodist",
        "learned AtmoDist distance (1 = radar fields 60 min apart)",
        "lower",
        0.0,
        "1",
        "structural",
        poolable=False,
    ),
    MetricInfo(
        "semivariogram_ratio",
        "semivariogram of the forecast over the observation's, by lag, of log(1 + R)",
        "closer",
        1.0,
        "1",
        "structural",
        poolable=False,
    ),
)

METRICS: dict[str, MetricInfo] = {m.name: m for m in _ENTRIES}


def available_metrics() -> tuple[str, ...]:
    """The names :func:`metric_info` and ``verify`` accept."""
    return tuple(METRICS)


def metric_info(name: str) -> MetricInfo:
    """The metadata of metric ``name`` (case-insensitive).

    Raises
    ------
    MetricError
        For an unknown name; the message lists the valid names.
    """
    key = str(name).strip().lower()
    if key in METRICS:
        return METRICS[key]
    hint = ""
    if key in {"psd", "rapsd", "spectrum", "power_spectrum"}:
        hint = (
            " The power spectrum is not a score reduced over space: use "
            "xnowcast.verification.power_spectrum(field) and xnowcast.plot.plot_psd."
        )
    elif key in {"semivariogram", "variogram", "variogram_ratio"}:
        hint = (
            " verify reports the semivariogram of the forecast over the observation's as "
            "'semivariogram_ratio'; the curve itself is xnowcast.verification.semivariogram(field) "
            "(xnowcast.plot.plot_semivariogram draws it)."
        )
    elif key in {"frequency_bias", "bias_score"}:
        hint = " The frequency bias is called 'fbias'; 'bias' is the mean error."
    raise MetricError(
        f"Unknown metric {name!r}. Valid metrics: {', '.join(available_metrics())}.{hint}"
    )

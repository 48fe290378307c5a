"""Exceptions raised by xnowcast.

Every error a user can trigger with bad input is a subclass of
:class:`XnowcastError` *and* of the builtin it specialises (``ValueError`` or
``TypeError``), so ``except ValueError`` keeps working.  Messages name the
problem and the fix.
"""

from __future__ import annotations

__all__ = [
    "CoordinateError",
    "DataValueError",
    "DatasetError",
    "MissingDataWarning",
    "ModelError",
    "RadarFormatError",
    "TimeAxisError",
    "TrainingError",
    "UnitsError",
    "WeightsError",
    "XnowcastError",
]


class XnowcastError(Exception):
    """Base class of every error raised on purpose by xnowcast."""


class UnitsError(XnowcastError, ValueError):
    """Missing, unknown or physically wrong units."""


class CoordinateError(XnowcastError, ValueError):
    """Missing, irregular or badly ordered spatial coordinates, or wrong dims."""


class TimeAxisError(XnowcastError, ValueError):
    """Irregular, duplicated or gapped time axis; too few frames; wrong time step."""


class DataValueError(XnowcastError, ValueError):
    """Values that cannot be right: all-NaN, negative rain, unmasked fill codes."""


class ModelError(XnowcastError, ValueError):
    """Unknown model name or a request a model cannot do (factor, steps, members)."""


class WeightsError(XnowcastError, ValueError):
    """Weights that fail their hash check, are not safetensors, or do not fit."""


class DatasetError(XnowcastError, ValueError):
    """Unknown dataset name, or a Dataset without a precipitation variable."""


class RadarFormatError(XnowcastError, ValueError):
    """A radar file that cannot be decoded."""


class MetricError(XnowcastError, ValueError):
    """An unknown metric name, or a metric asked for something it cannot do."""


class TrainingError(XnowcastError, ValueError):
    """Training options that cannot work together, or a run that cannot be resumed."""


class MissingDataWarning(UserWarning):
    """Some results are NaN because their input is missing (e.g. hindcast init times
    whose input window has a gap or an entirely missing frame)."""

"""xnowcast: deep-learning precipitation nowcasting and downscaling for xarray.

Importing the package registers the ``.nowcast`` and ``.downscale`` accessors on
DataArray and Dataset.  It imports no torch (models load on first use), touches no
network and reads no configuration file.

>>> import xnowcast
>>> ds = xnowcast.open_dataset("sample")                         # doctest: +SKIP
>>> fc = ds.nowcast.predict(model="extrapolation", steps=18)      # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from xnowcast import accessors as _accessors  # noqa: F401  (registers .nowcast/.downscale)
from xnowcast.api import downscale, nowcast, verify
from xnowcast.cf_output import to_cf_dataset
from xnowcast.datasets import list_datasets, open_dataset
from xnowcast.errors import (
    CoordinateError,
    DatasetError,
    DataValueError,
    MetricError,
    MissingDataWarning,
    ModelError,
    RadarFormatError,
    TimeAxisError,
    TrainingError,
    UnitsError,
    WeightsError,
    XnowcastError,
)
from xnowcast.io import open_radar
from xnowcast.options import set_options
from xnowcast.registry import list_models, load_model
from xnowcast.training.command import train

try:
    __version__ = _version("xnowcast")
except PackageNotFoundError:  # pragma: no cover  (running from a source tree)
    __version__ = "0.0.0+unknown"

__all__ = [
    "CoordinateError",
    "DataValueError",
    "DatasetError",
    "MetricError",
    "MissingDataWarning",
    "ModelError",
    "RadarFormatError",
    "TimeAxisError",
    "TrainingError",
    "UnitsError",
    "WeightsError",
    "XnowcastError",
    "__version__",
    "downscale",
    "list_datasets",
    "list_models",
    "load_model",
    "nowcast",
    "open_dataset",
    "open_radar",
    "set_options",
    "to_cf_dataset",
    "train",
    "verify",
]

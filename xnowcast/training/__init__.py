"""Training: data windows from xarray, losses and loops for the nowcasting and downscaling models.

* :mod:`xnowcast.training.data` - importance-sampled ``(input + lead)``-frame crops
  from radar DataArrays through xbatcher (:class:`SequenceCropSampler`);
* :mod:`xnowcast.training.losses` - DGMR's hinge losses and grid-cell regulariser;
* :mod:`xnowcast.training.gan` - DGMR's adversarial training (:func:`train_dgmr`),
  safetensors checkpoints, resumable;
* :mod:`xnowcast.training.pairs` and :mod:`xnowcast.training.supervised` - the
  downscaling models' data and trainer;
* :mod:`xnowcast.training.lightning` and :mod:`xnowcast.training.command` - every
  trainable model on PyTorch Lightning (``xnowcast train``, :func:`xnowcast.train`).

Importing this package imports neither torch nor the submodules; the names
below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SequenceCropSampler", "TrainResult", "train_dgmr"]

_LAZY = {
    "SequenceCropSampler": "xnowcast.training.data",
    "TrainResult": "xnowcast.training.gan",
    "train_dgmr": "xnowcast.training.gan",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xnowcast.training' has no attribute {name!r}")

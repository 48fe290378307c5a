"""Training on PyTorch Lightning (the ``train`` extra): ``xnowcast train`` / :func:`xnowcast.train`.

* :mod:`~xnowcast.training.lightning.sources` - any xarray source opened lazily, held-out split;
* :mod:`~xnowcast.training.lightning.windows` - importance-sampled windows read chunk by chunk;
* :mod:`~xnowcast.training.lightning.datamodule` - :class:`RadarDataModule`, the one data module;
* :mod:`~xnowcast.training.lightning.modules` - :class:`SupervisedModule`, :class:`AdversarialModule`,
  :class:`RepresentationModule` (self-supervised encoders);
* :mod:`~xnowcast.training.lightning.models` - which registered models train, their recipes;
* :mod:`~xnowcast.training.lightning.heldout` - held-out scores with :mod:`xnowcast.metrics`;
* :mod:`~xnowcast.training.lightning.run` - the Lightning run, checkpoints, logs, weights.

Importing this package imports nothing heavy; the submodules import torch and lightning.
"""

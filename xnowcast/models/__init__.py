"""The models: plain ``torch.nn.Module`` classes that never import xarray.

One module (or subpackage) per model family, each registering its own
:class:`~xnowcast.registry.ModelSpec` beside the model; :mod:`.base` is the
contract.  Importing this package does not import torch: the registry imports the
model modules on its first lookup (:func:`list_models`, :func:`get_spec`,
:func:`load_model`).
"""

from xnowcast.registry import get_spec, list_models, load_model

__all__ = ["get_spec", "list_models", "load_model"]

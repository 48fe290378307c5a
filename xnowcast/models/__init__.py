"""The models: plain ``torch.nn.Module`` classes that never import xarray.

Use :func:`list_models` and :func:`load_model`; importing this package does not
import torch (the model modules are imported when a model is built).
"""

from xnowcast.registry import get_spec, list_models, load_model

__all__ = ["get_spec", "list_models", "load_model"]

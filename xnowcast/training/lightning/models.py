"""Which models train and how: the training layer's only contact with the model registry.

:func:`build_trainable` resolves a registry name and a config into the modules to
train, the training family and the data task; :data:`RECIPES` hold each
family's default optimisation settings (``tiny``: for tests and smoke runs).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from xnowcast.errors import ModelError
from xnowcast.training.lightning.datamodule import DownscaleTask, LagTask, NowcastTask

__all__ = ["RECIPES", "Trainable", "build_trainable", "load_written", "recipe_for"]

#: Config names that mean another preset of a model (every trainable model has ``tiny``).
CONFIG_ALIASES: dict[str, dict[str, str]] = {
    "zsm": {"tiny": "flow-tiny", "compact": "flow-compact", "paper": "flow-paper"},
    "fczsm": {"tiny": "flow-tiny", "compact": "flow-compact", "paper": "flow-paper"},
}

#: Models trained adversarially, and the builder of their discriminator.
DISCRIMINATORS: dict[str, str] = {
    "dgmr": "xnowcast.models.dgmr_discriminator:build_discriminator",
}

#: Default optimisation settings per family; ``"<family>:tiny"`` overrides them for tiny configs.
RECIPES: dict[str, dict[str, Any]] = {
    "supervised": {
        "batch_size": 4,
        "crop": 128,
        "lr": 5e-4,
        "lr_decay_steps": 20_000,  # cosine to 5 % over these steps, whenever the run stops
        "grad_clip": 1.0,
        "lead_steps": 12,
    },
    "supervised:tiny": {"batch_size": 2, "crop": 32, "lead_steps": 4, "lr_decay_steps": 100},
    "adversarial": {
        "batch_size": 16,
        "crop": 256,
        "lead_steps": 18,
        "grid_samples": 6,
        "grid_weight": 20.0,
        # as the shipped small weights (session 3): the plain grid-cell L1 (``plus_one``
        # drifted wet), the volume term, and inflow pixels left out of every loss
        "grid_weight_mode": "none",
        "volume_weight": 20.0,
        "inflow_mask": True,
        "disc_steps": 2,
        "lr_generator": 5e-5,
        "lr_discriminator": 2e-4,
        "betas": (0.0, 0.999),
        "val_members": 4,
    },
    "adversarial:tiny": {
        "batch_size": 1,
        "crop": 128,
        "lead_steps": 4,
        "grid_samples": 2,
        "disc_steps": 1,
        "val_members": 2,
    },
    # as xnowcast.training.atmodist / srgan_run: Adam 1e-3, 32 pairs per step (8 windows x 4);
    # the crop is the config's patch; up to 48 held-out windows x 16 pairs (RMI: 27 x 16)
    "representation": {
        "batch_size": 8,
        "pairs_per_window": 4,
        "lr": 1e-3,
        "val_windows": 48,
        "val_pairs_per_window": 16,
        "calibration_windows": 64,
    },
    "representation:tiny": {"batch_size": 2, "val_windows": 4, "calibration_windows": 4},
}


@dataclass
class Trainable:
    """A model ready to train.

    Attributes
    ----------
    name, config_name
        Registry name and the config asked for.
    task, family
        ``"nowcast"``/``"downscale"``/``"representation"`` and
        ``"supervised"``/``"adversarial"``/``"representation"``.
    model
        The ``nn.Module`` whose weights ship (the generator of a GAN; the lag
        classifier of a self-supervised encoder, whose encoder the metrics use).
    discriminator
        The adversary (adversarial family), else None.
    """

    name: str
    config_name: str
    task: str
    family: str
    model: nn.Module
    discriminator: nn.Module | None = None

    def data_task(self, recipe: dict[str, Any]) -> NowcastTask | DownscaleTask | LagTask:
        """How the data module cuts windows for this model (lead times, pairs: ``recipe``)."""
        m = self.model
        if self.task == "representation":
            return LagTask(
                tuple(int(v) for v in m.lags),
                int(recipe["pairs_per_window"]),
                int(recipe["val_pairs_per_window"]),
            )
        if self.task == "downscale":
            return DownscaleTask(
                int(m.window),
                int(m.factor),
                int(m.time_factor),
                int(m.static_channels),
                int(getattr(m, "spatial_multiple", 1)),
            )
        return NowcastTask(
            int(m.input_frames),
            int(recipe["lead_steps"]),
            float(getattr(m, "config", {}).get("max_rate", 128.0)),
            int(getattr(m, "spatial_multiple", 1)),
        )


def _build(path: str, config: Any) -> nn.Module:
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)(config)


def build_trainable(
    name: str, config: str | dict[str, Any] = "default", factor: int = 2, time_factor: int = 2
) -> Trainable:
    """Build a registered model (and its discriminator) for training.

    Parameters
    ----------
    name
        A registered model with trainable parameters; ``"TASK/NAME"`` (e.g.
        ``"downscale/unet"``) for a name that both tasks use.
    config
        A config name of the model (``"tiny"`` for every trainable model) or a dict.
    factor, time_factor
        Refinement of a downscaling model.

    Raises
    ------
    ModelError
        For an unknown model, or one with nothing to train (a physical baseline).
    """
    from xnowcast.registry import get_spec

    task, _, bare = str(name).rpartition("/")  # "downscale/unet": a name both tasks use
    try:
        spec = get_spec(bare, task or None)
    except ModelError as err:
        if "several tasks" in str(err):
            raise ModelError(
                f"{bare!r} names models of several tasks: train 'nowcast/{bare}' or "
                f"'downscale/{bare}'."
            ) from None
        raise
    config_name = config if isinstance(config, str) else "custom"
    if isinstance(config, str):
        config = CONFIG_ALIASES.get(spec.name, {}).get(config, config)
    if config == "default" and spec.default_config is not None:
        config = spec.default_config
    if spec.task == "downscale":
        model = spec.build(config, factor=factor, time_factor=time_factor)
    else:
        model = spec.build(config)
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelError(
            f"{spec.name!r} has no trainable parameters (a physical baseline): nothing to train"
        )
    discriminator = None
    family = "supervised"
    if spec.task == "representation":
        family = "representation"
    elif spec.name in DISCRIMINATORS:
        family = "adversarial"
        discriminator = _build(DISCRIMINATORS[spec.name], dict(model.config))
    elif spec.stochastic:
        raise ModelError(f"{spec.name!r} is stochastic and has no training family yet")
    return Trainable(spec.name, config_name, spec.task, family, model, discriminator)


def recipe_for(trainable: Trainable) -> dict[str, Any]:
    """The default optimisation settings of a trainable's family (and of its tiny config).

    A self-supervised encoder's crop is the patch of its config.
    """
    family = trainable.family
    recipe = dict(RECIPES[family])
    if trainable.config_name == "tiny":
        recipe.update(RECIPES[f"{family}:tiny"])
    if family == "representation":
        recipe["crop"] = int(trainable.model.config["patch"])
    return recipe


def load_written(trainable: Trainable, path: Any, device: str = "cpu") -> nn.Module:
    """The weights file ``path`` of ``trainable``'s model as the runtime loads it.

    Through the registry, as ``predict``/``downscale(..., weights=path)`` do (config
    from the file's metadata; a downscaler with the trainable's factors).
    """
    from xnowcast.registry import load_model

    kwargs: dict[str, Any] = {}
    if trainable.task == "downscale":
        m = trainable.model
        kwargs = {"factor": int(m.factor), "time_factor": int(m.time_factor)}
    return load_model(
        trainable.name, task=trainable.task, weights=str(path), device=device, **kwargs
    )

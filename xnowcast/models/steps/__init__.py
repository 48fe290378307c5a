"""STEPS in torch: cascade, AR(2) per level, noise, masks and probability matching.

:mod:`.nowcaster` holds the model; the other modules hold its parts.
"""

from xnowcast.models.steps.nowcaster import CONFIGS, Steps, build_steps

__all__ = ["CONFIGS", "Steps", "build_steps"]

"""An exponential moving average of a module's weights, for validation and export.

Diffusion models (and GAN generators) sample better from an average of their
recent weights than from the last step's: the average smooths the noise of
small batches.  :class:`WeightAverage` keeps the average beside the trained
module, saves and restores it with the run's checkpoint, and swaps it in for
validation and export::

    average = WeightAverage(model.denoiser, decay=0.999)
    ...  # after every optimiser step
    average.update(model.denoiser)
    with average.applied(model.denoiser):
        score = validate(model)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` after every update.

    Parameters
    ----------
    module
        The trained module; the average starts from its current weights.
    decay
        In ``(0, 1)``; ``1 / (1 - decay)`` steps is the average's memory.
    """

    #: Prefix of the average's tensors in a checkpoint.
    prefix = "average"

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average toward ``module``'s weights (integer buffers are copied)."""
        for key, now in module.state_dict().items():
            avg = self.state[key]
            if avg.is_floating_point():
                avg.lerp_(now.detach(), 1.0 - self.decay)
            else:
                avg.copy_(now)

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """``module`` with the average's weights inside the block, its own after it."""
        own = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.state)
        try:
            yield module
        finally:
            module.load_state_dict(own)

    def tensors(self) -> dict[str, Tensor]:
        """The average as checkpoint tensors (keys under :attr:`prefix`)."""
        return {f"{self.prefix}.{k}": v for k, v in self.state.items()}

    def load(self, tensors: Mapping[str, Tensor]) -> bool:
        """Restore the average from checkpoint tensors; False when they hold none."""
        head = f"{self.prefix}."
        found = {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}
        if not found:
            return False
        if set(found) != set(self.state):
            raise ValueError("the checkpoint's weight average does not match the module")
        self.state = {k: v.to(self.state[k].device, copy=True) for k, v in found.items()}
        return True

"""Global options: the one place where process-wide settings live.

>>> import xnowcast
>>> with xnowcast.set_options(progress=False, device="cpu"):
...     pass
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["OPTIONS", "get_options", "set_options"]

OPTIONS: dict[str, Any] = {
    "device": "auto",
    "progress": True,
    "tile_size": 512,
    "tile_overlap": 64,
    "max_batch_size": 8,
}

_VALIDATORS: dict[str, Callable[[Any], bool]] = {
    "device": lambda v: isinstance(v, str),
    "progress": lambda v: isinstance(v, bool),
    "tile_size": lambda v: isinstance(v, int) and v >= 32,
    "tile_overlap": lambda v: isinstance(v, int) and v >= 0,
    "max_batch_size": lambda v: isinstance(v, int) and v >= 1,
}

_DESCRIPTIONS = {
    "device": "'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', ...",
    "progress": "show tqdm progress bars for long work (bool)",
    "tile_size": "largest square tile (pixels) a model sees; larger domains are tiled (int >= 32)",
    "tile_overlap": "overlap between tiles, blended linearly (int >= 0; by coarse block when downscaling)",
    "max_batch_size": "largest batch sent to a model when batch_size='auto' (int >= 1)",
}


class set_options:
    """Set global options, for a ``with`` block or for the rest of the session.

    Parameters
    ----------
    **kwargs
        ``device``, ``progress``, ``tile_size``, ``tile_overlap``, ``max_batch_size``.

    Raises
    ------
    ValueError
        For an unknown option or an invalid value (the message lists the valid ones).
    """

    def __init__(self, **kwargs: Any) -> None:
        self._old: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key not in OPTIONS:
                valid = ", ".join(f"{k} ({d})" for k, d in _DESCRIPTIONS.items())
                raise ValueError(f"Unknown option {key!r}. Valid options: {valid}.")
            if not _VALIDATORS[key](value):
                raise ValueError(
                    f"Invalid value {value!r} for option {key!r}: {_DESCRIPTIONS[key]}."
                )
        size = kwargs.get("tile_size", OPTIONS["tile_size"])
        if kwargs.get("tile_overlap", OPTIONS["tile_overlap"]) >= size:
            raise ValueError(
                f"tile_overlap must be smaller than tile_size ({size}): tiles would barely advance."
            )
        for key, value in kwargs.items():
            self._old[key] = OPTIONS[key]
            OPTIONS[key] = value

    def __enter__(self) -> set_options:
        return self

    def __exit__(self, *exc: object) -> None:
        OPTIONS.update(self._old)


def get_options() -> dict[str, Any]:
    """A copy of the current options."""
    return dict(OPTIONS)

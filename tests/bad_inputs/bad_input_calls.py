"""Shared pieces of the bad-input catalogue: the public calls, refuse/accept, a toy model.

The catalogue (``docs/bad_inputs.rst``) is tested by the three ``test_bad_*`` modules of
this folder, one test (or more) per row, through the public API only
(``da.nowcast.predict``, ``da.downscale``).  A refused input must raise an xnowcast
exception (a ``ValueError``/``TypeError`` subclass) whose message names the problem and
the fix, before any model runs; an accepted one must give the right values.  No call ever
modifies its input: every call goes through :func:`refuse` or :func:`accept`, which
deep-copy the input first and compare afterwards.

A gap found here in a file the suite's author does not own is first recorded as an
``xfail(strict=True)`` test whose reason names the file and the fix; when the fix lands
the test XPASSes, which fails the run, and the mark is removed.  The seven gaps found so
far (off-grid times, unreadable init_time, run options, units= on outputs, missing cells
leaking as no rain, lazy all-missing blocks, shared attrs) are fixed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
import xarray as xr

from xnowcast.errors import (
    XnowcastError,
)

Call = Callable[..., xr.DataArray]


# --- the three public calls -------------------------------------------------------------------------


def persist(obj: Any, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("steps", 3)
    return obj.nowcast.predict(model="persistence", progress=False, **kwargs)


def extrapolate(obj: Any, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("steps", 3)
    return obj.nowcast.predict(model="extrapolation", progress=False, **kwargs)


def trilinear(obj: Any, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("factor", 2)
    kwargs.setdefault("time_factor", 2)
    return obj.downscale(model="trilinear", progress=False, **kwargs)


ALL_CALLS = [
    pytest.param(persist, id="persistence"),
    pytest.param(extrapolate, id="extrapolation"),
    pytest.param(trilinear, id="trilinear"),
]
NOWCAST_CALLS = ALL_CALLS[:2]


# --- helpers: refused / accepted, input never modified -------------------------------------------


def assert_unchanged(obj: xr.DataArray | xr.Dataset, before: xr.DataArray | xr.Dataset) -> None:
    """Values, dtypes, attrs, coords (with their attrs) and name exactly as before."""
    xr.testing.assert_identical(obj, before)
    ds_now = obj.to_dataset(name="_") if isinstance(obj, xr.DataArray) else obj
    ds_before = before.to_dataset(name="_") if isinstance(before, xr.DataArray) else before
    for name, var in ds_before.variables.items():
        assert ds_now.variables[name].dtype == var.dtype, f"dtype of {name} changed"
        assert ds_now.variables[name].attrs == var.attrs, f"attrs of {name} changed"
    assert obj.attrs == before.attrs


def refuse(
    obj: xr.DataArray | xr.Dataset,
    call: Call,
    exc: type[XnowcastError],
    *needles: str,
    runs: list[str],
    **kwargs: Any,
) -> str:
    """``call(obj, **kwargs)`` raises ``exc`` naming every needle; no model ran; obj unchanged."""
    before = copy.deepcopy(obj)
    with pytest.raises(exc) as info:
        call(obj, **kwargs)
    error = info.value
    assert isinstance(error, XnowcastError)
    assert isinstance(error, (ValueError, TypeError))
    message = str(error)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert runs == [], f"a model ran before the error: {runs}"
    assert_unchanged(obj, before)
    return message


def accept(obj: xr.DataArray | xr.Dataset, call: Call, **kwargs: Any) -> xr.DataArray:
    """``call(obj, **kwargs)`` works and leaves obj unchanged."""
    before = copy.deepcopy(obj)
    out = call(obj, **kwargs)
    assert_unchanged(obj, before)
    return out


# --- test doubles: registered models with a fixed step, a spatial multiple, limited factors ------


class ToyNowcaster(torch.nn.Module):
    """Persistence plus seeded noise, with a spatial multiple and no mask (so it is tiled).

    ``seen`` records the shape of every input, to check padding and tiling.
    """

    input_frames = 2
    accepts_mask = False
    seen: ClassVar[list[tuple[int, ...]]] = []

    def __init__(self, spatial_multiple: int = 8, noise: float = 0.0) -> None:
        super().__init__()
        self.spatial_multiple = spatial_multiple
        self.noise = noise

    def forward(
        self, frames: torch.Tensor, steps: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        h, w = frames.shape[-2:]
        if h % self.spatial_multiple or w % self.spatial_multiple:
            raise RuntimeError(f"unpadded input {h}x{w}")
        ToyNowcaster.seen.append(tuple(frames.shape))
        out = frames[:, -1:].expand(-1, steps, -1, -1, -1)
        if self.noise:
            out = out + self.noise * torch.rand(out.shape, generator=generator)
        return out.clone()


def build_toy(config: dict[str, Any] | None = None) -> ToyNowcaster:
    return ToyNowcaster(**(config or {}))


def toy_nowcast(obj: Any, **kwargs: Any) -> xr.DataArray:
    kwargs.setdefault("steps", 2)
    return obj.nowcast.predict(model="toy-nowcast", progress=False, **kwargs)

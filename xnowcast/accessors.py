"""The ``.nowcast`` and ``.downscale`` accessors: argument passing only.

They hold no state, do no maths and never modify the object they are attached
to; every call returns a new object from :mod:`xnowcast.api`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import xarray as xr

from xnowcast.downscaling import downscale
from xnowcast.nowcasting import nowcast

__all__ = ["DownscaleAccessor", "NowcastAccessor"]


class NowcastAccessor:
    """``obj.nowcast``: nowcast, verify and plot radar fields.

    Examples
    --------
    >>> fc = ds.nowcast.predict(model="dgmr", steps=18, members=8)   # doctest: +SKIP
    >>> scores = fc.nowcast.verify(ds, metrics=["csi", "crps"])      # doctest: +SKIP
    """

    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def predict(
        self,
        model: str = "dgmr",
        steps: int = 18,
        members: int = 1,
        init_time: Any = None,
        var: str | None = None,
        device: str = "auto",
        batch_size: int | str = "auto",
        precision: str = "auto",
        seed: int | None = None,
        progress: bool | None = None,
        weights: Any = "default",
        on_missing: str = "nan",
        check_values: bool = True,
        **kwargs: Any,
    ) -> xr.DataArray:
        """Nowcast from this field; see :func:`xnowcast.nowcast` for the parameters."""
        return nowcast(
            self._obj,
            model=model,
            steps=steps,
            members=members,
            init_time=init_time,
            var=var,
            device=device,
            batch_size=batch_size,
            precision=precision,
            seed=seed,
            progress=progress,
            weights=weights,
            on_missing=on_missing,
            check_values=check_values,
            **kwargs,
        )

    def verify(
        self,
        observations: xr.DataArray | xr.Dataset,
        metrics: Sequence[str] = ("csi", "hss", "fss", "crps"),
        **kwargs: Any,
    ) -> xr.Dataset:
        """Score this forecast against observations; see :func:`xnowcast.verify`."""
        from xnowcast.api import verify

        return verify(self._obj, observations, metrics=metrics, **kwargs)

    def plot(self, observations: xr.DataArray | xr.Dataset | None = None, **kwargs: Any) -> Any:
        """Forecast maps (against observations when given); see :func:`xnowcast.plot.plot_forecast_panel`."""
        from xnowcast.plot import plot_forecast_panel

        return plot_forecast_panel(self._obj, observations, **kwargs)


class DownscaleAccessor:
    """``obj.downscale(...)``: spatiotemporal downscaling; ``obj.downscale.models()`` lists models.

    Examples
    --------
    >>> fine = da.downscale(factor=2, time_factor=2)                  # doctest: +SKIP
    """

    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def __call__(
        self,
        factor: int = 2,
        time_factor: int = 2,
        model: str = "auto",
        static: Any = None,
        dynamic: Any = None,
        device: str = "auto",
        batch_size: int | str = "auto",
        progress: bool | None = None,
        weights: Any = "default",
        check_values: bool = True,
        **kwargs: Any,
    ) -> xr.DataArray:
        """Downscale this field; see :func:`xnowcast.downscale` for the parameters."""
        return downscale(
            self._obj,
            factor=factor,
            time_factor=time_factor,
            model=model,
            static=static,
            dynamic=dynamic,
            device=device,
            batch_size=batch_size,
            progress=progress,
            weights=weights,
            check_values=check_values,
            **kwargs,
        )

    @staticmethod
    def models() -> list[str]:
        """The downscaling models available."""
        from xnowcast.registry import list_models

        return list_models("downscale")


def _share_docs(method: Any, function: Any, intro: str) -> None:
    """Give an accessor method the documentation of the function it delegates to."""
    body = (function.__doc__ or "").split("\n", 1)[1] if function.__doc__ else ""
    method.__doc__ = f"{intro}\n{body}"


_share_docs(
    NowcastAccessor.predict, nowcast, "Nowcast from this field (see :func:`xnowcast.nowcast`)."
)
_share_docs(
    DownscaleAccessor.__call__,
    downscale,
    "Downscale this field (see :func:`xnowcast.downscale`).",
)
xr.register_dataarray_accessor("nowcast")(NowcastAccessor)
xr.register_dataset_accessor("nowcast")(NowcastAccessor)
xr.register_dataarray_accessor("downscale")(DownscaleAccessor)
xr.register_dataset_accessor("downscale")(DownscaleAccessor)

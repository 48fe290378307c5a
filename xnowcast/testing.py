"""Synthetic CF fields whose right answer is known, for tests and examples.

:func:`moving_storm` makes rain cells carried by a known uniform wind, so an
extrapolation nowcast must reproduce the future frames almost exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from xnowcast.units import convert_values

__all__ = [
    "assert_identical_grid",
    "assert_identical_outputs",
    "moving_storm",
    "random_weights",
]


def _cells(
    yy: np.ndarray,
    xx: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    peaks: np.ndarray,
) -> np.ndarray:
    field = np.zeros_like(yy, dtype=np.float64)
    for (cy, cx), r, p in zip(centres, radii, peaks, strict=True):
        field += p * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * r**2))
    return field


def moving_storm(
    *,
    frames: int = 12,
    shape: tuple[int, int] = (64, 64),
    velocity: tuple[float, float] = (1.0, 2.0),
    step: str = "5min",
    start: str = "2021-07-04T15:00",
    spacing: float = 1000.0,
    cells: int = 4,
    peak: float = 30.0,
    units: str = "mm/h",
    seed: int = 0,
    name: str = "precipitation",
    rain_floor: float = 0.1,
    chunks: dict[str, int] | None = None,
) -> xr.DataArray:
    """Rain cells moved by a known uniform wind, as a CF DataArray.

    Parameters
    ----------
    frames
        Number of time steps.
    shape
        ``(ny, nx)`` grid size.
    velocity
        ``(vy, vx)`` in grid cells per time step (positive = towards larger index).
    step
        Time step (pandas frequency string).
    spacing
        Grid spacing in metres.
    cells, peak
        Number of Gaussian rain cells and the largest peak rain rate in mm/h.
    units
        Units of the returned values (converted from mm/h; e.g. ``"dBZ"``).
    seed
        Seed of the random cell placement.
    rain_floor
        Rain rates (mm/h) below this are set to exactly 0 ("no rain").
    chunks
        Chunk the result with dask when given.

    Returns
    -------
    xarray.DataArray
        Dims ``(time, y, x)``, projection coordinates in metres, a ``crs`` grid
        mapping coordinate and CF attributes; frame ``t`` equals frame 0 shifted by
        ``t * velocity`` (periodic in space, so nothing flows in or out).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    centres = rng.uniform([0.25 * ny, 0.25 * nx], [0.75 * ny, 0.75 * nx], size=(cells, 2))
    radii = rng.uniform(0.04, 0.09, size=cells) * min(ny, nx)
    peaks = peak * rng.uniform(0.4, 1.0, size=cells)
    peaks[0] = peak
    yy, xx = np.meshgrid(
        np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij"
    )
    data = np.empty((frames, ny, nx), dtype=np.float32)
    for t in range(frames):
        # periodic images of the cells keep the domain free of in/outflow
        dy, dx = t * velocity[0], t * velocity[1]
        field = np.zeros((ny, nx))
        for oy in (-ny, 0, ny):
            for ox in (-nx, 0, nx):
                moved = np.empty_like(centres)
                moved[:, 0] = (centres[:, 0] + dy) % ny + oy
                moved[:, 1] = (centres[:, 1] + dx) % nx + ox
                field += _cells(yy, xx, moved, radii, peaks)
        field[field < rain_floor] = 0.0
        data[t] = field
    if units not in ("mm/h", "mm h-1"):
        data = convert_values(data, "mm/h", units, time_step=pd.Timedelta(step).to_timedelta64())
        data = data.astype(np.float32)
    times = pd.date_range(start, periods=frames, freq=step).values.astype("datetime64[ns]")
    y = (np.arange(ny) + 0.5) * spacing
    x = (np.arange(nx) + 0.5) * spacing
    da = xr.DataArray(
        data,
        dims=("time", "y", "x"),
        coords={
            "time": ("time", times, {"standard_name": "time", "axis": "T"}),
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"}),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"}),
            "crs": (
                (),
                np.int32(0),
                {
                    "grid_mapping_name": "transverse_mercator",
                    "long_name": "coordinate reference system",
                    "scale_factor_at_central_meridian": 0.9996,
                    "longitude_of_central_meridian": 3.0,
                    "latitude_of_projection_origin": 0.0,
                    "false_easting": 500000.0,
                    "false_northing": 0.0,
                },
            ),
        },
        name=name,
        attrs={
            "units": units,
            "standard_name": "equivalent_reflectivity_factor"
            if units == "dBZ"
            else "rainfall_rate",
            "long_name": "synthetic rain cells moved by a uniform wind",
            "grid_mapping": "crs",
            "velocity_cells_per_step": list(velocity),
        },
    )
    if chunks:
        da = da.chunk(chunks)
    return da


def assert_identical_grid(
    a: xr.DataArray, b: xr.DataArray, dims: Sequence[str] = ("y", "x")
) -> None:
    """Assert that ``a`` and ``b`` share the spatial coordinates ``dims`` exactly."""
    for dim in dims:
        np.testing.assert_array_equal(
            a[dim].values, b[dim].values, err_msg=f"coordinate {dim} differs"
        )
        assert a[dim].attrs == b[dim].attrs, f"attrs of coordinate {dim} differ"


_HISTORY_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: ", flags=re.MULTILINE)


def _unstamped(obj: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    history = obj.attrs.get("history")
    if history is None:
        return obj
    assert len(_HISTORY_STAMP.findall(history)) == history.count("\n") + 1, (
        f"a history line without its time stamp: {history!r}"
    )
    return obj.assign_attrs(history=_HISTORY_STAMP.sub("", history))


def assert_identical_outputs(a: xr.DataArray | xr.Dataset, b: xr.DataArray | xr.Dataset) -> None:
    """Assert that two xnowcast outputs are identical (values, coordinates, attributes)
    except for the time stamps of their ``history`` lines, which record when each was made
    (two runs a second apart differ there and nowhere else)."""
    xr.testing.assert_identical(_unstamped(a), _unstamped(b))


def random_weights(
    name: str, directory: str | Path, *, task: str = "nowcast", seed: int = 0
) -> Path:
    """Weights of an untrained model's ``"tiny"`` config, written to ``directory``.

    For tests of models that cannot run untrained (their spec's ``weights_required``,
    e.g. ``cascast``): ``predict(model=name, weights=random_weights(name, tmp))``.
    """
    import torch

    from xnowcast.registry import get_spec
    from xnowcast.weights import save_weights

    spec = get_spec(name, task)
    torch.manual_seed(seed)
    net = spec.build("tiny")
    path = Path(directory) / f"{spec.name}-tiny-{seed}.safetensors"
    if not path.exists():
        save_weights(net.state_dict(), path, {"model": spec.name, "config": net.config})
    return path

"""Running models on arrays: device and precision, batching, tiling, progress.

Everything here takes and returns numpy arrays in the model's units (its spec's ``units``) with
NaN for missing data; :mod:`xnowcast.api` does the xarray side.  Functions are
module-level and their arguments picklable, so dask workers can call them: the
model is built and its weights loaded once per process (see
:func:`xnowcast.registry.load_model`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from xnowcast.errors import ModelError
from xnowcast.options import OPTIONS
from xnowcast.registry import ResolvedModel
from xnowcast.tensors import (
    fill_missing,
    fill_nearest,
    pad_to_multiple,
    run_tiled,
    to_batch_tensor,
)

__all__ = [
    "ModelRequest",
    "auto_batch_size",
    "precision_context",
    "resolve_device",
    "run_downscale",
    "run_nowcast",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else as torch reads it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = OPTIONS["device"]
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"device={device!r} was asked for but CUDA is not available here: use 'cpu' or 'auto'."
        )
    return resolved


def precision_context(
    device: torch.device, precision: str
) -> contextlib.AbstractContextManager[Any]:
    """Autocast for ``precision="bf16"``; float32 for ``"auto"``/``"float32"``."""
    if precision in ("auto", "float32", "fp32"):
        return contextlib.nullcontext()
    if precision in ("bf16", "bfloat16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'auto', 'float32' or 'bf16', not {precision!r}.")


def auto_batch_size(height: int, width: int) -> int:
    """Rows per forward pass: about four 256 x 256 fields' worth, within ``max_batch_size``."""
    return int(max(1, min(OPTIONS["max_batch_size"], (4 * 256 * 256) // max(height * width, 1))))


#: What the runtime runs: a model name resolved once (spec, weights, config, device).
ModelRequest = ResolvedModel


def _init_generators(
    seed: int | None, keys: int | np.ndarray, device: torch.device
) -> list[torch.Generator]:
    """One generator per initialisation, seeded from ``(seed, key)``; none without a seed."""
    if seed is None:
        return []
    keys = np.arange(keys) if np.ndim(keys) == 0 else np.asarray(keys)
    generators = []
    for key in keys:
        state = np.random.SeedSequence([int(seed), int(key) & (2**63 - 1)]).generate_state(2)
        generator = torch.Generator(device=device)
        generator.manual_seed(int(state[0]) << 32 | int(state[1]))
        generators.append(generator)
    return generators


def _batches(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled or total < 2, leave=False)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _forward_with_split(forward: Any, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run ``forward(rows)``; on GPU out-of-memory split the batch in two and retry."""
    try:
        return [(rows, forward(rows))]
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not _is_oom(err) or len(rows) == 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        warnings.warn(
            f"Out of memory with a batch of {len(rows)}: splitting it in two and retrying.",
            RuntimeWarning,
            stacklevel=3,
        )
        half = len(rows) // 2
        return _forward_with_split(forward, rows[:half]) + _forward_with_split(forward, rows[half:])


def run_nowcast(
    windows: np.ndarray,
    request: ResolvedModel,
    *,
    steps: int,
    members: int = 1,
    seed: int | None = None,
    precision: str = "auto",
    batch_size: int | str = "auto",
    progress: bool = True,
    init_keys: np.ndarray | None = None,
    geometry: dict[str, float | None] | None = None,
) -> np.ndarray:
    """Nowcast from input windows.

    Parameters
    ----------
    windows
        ``(N, T_in, H, W)`` input frames in the model's units (NaN where missing), one window per
        initialisation time.
    request
        Which model to run.
    steps, members
        Lead times and ensemble members per window.
    seed
        Seeds the model's random latent (None: not reproducible).  Each window's
        members are drawn from their own generator, seeded by ``(seed, init key)``, so
        a forecast does not depend on dask chunking or on which other initialisation
        times are computed with it (it does depend on the device and ``batch_size``).
    precision, batch_size, progress
        See :func:`xnowcast.api.nowcast`.
    init_keys
        One integer per window identifying its initialisation (e.g. the init time in
        ns); default: the window index.
    geometry
        ``grid_spacing_km`` and ``time_step_minutes`` of the windows (None where
        unknown), passed on to models with ``accepts_geometry``.

    Returns
    -------
    numpy.ndarray
        ``(N, members, steps, H, W)`` float32 in mm/h, NaN where the answer is
        unknown (outside the radar coverage of the last input frame, or where the
        model says so).
    """
    model = request.load()
    device = resolve_device(request.device)
    n, _, h, w = windows.shape
    filled, valid = fill_missing(windows)
    accepts_mask = bool(getattr(model, "accepts_mask", False))
    multiple = int(getattr(model, "spatial_multiple", 1))
    # models that reason over the whole field with its mask (flow, persistence) are not tiled
    tileable = not accepts_mask
    tile = max(multiple, OPTIONS["tile_size"] // multiple * multiple)
    overlap = OPTIONS["tile_overlap"]
    if hasattr(model, "crop_noise"):
        # tiles cut their latent from one field per member: starts on the model's multiple
        overlap = min(-(-overlap // multiple) * multiple, tile - multiple)
    size = auto_batch_size(min(h, tile), min(w, tile)) if batch_size == "auto" else int(batch_size)
    if batch_size == "auto" and getattr(model, "batches_members", False):
        size = members  # one call per initialisation: the members share its estimation
    rows_init = np.repeat(np.arange(n), members)
    out = np.empty((n * members, steps, h, w), dtype=np.float32)
    generators = _init_generators(seed, n if init_keys is None else init_keys, device)

    def forward(rows: np.ndarray) -> np.ndarray:
        x = to_batch_tensor(filled[rows_init[rows]], device)
        # with a seed, a batch holds members of one init time and uses its generator
        kwargs: dict[str, Any] = {
            "generator": generators[rows_init[rows[0]]] if generators else None
        }
        if accepts_mask:
            kwargs["valid"] = torch.from_numpy(valid[rows_init[rows]]).unsqueeze(2).to(device)
        if geometry and getattr(model, "accepts_geometry", False):
            kwargs.update(geometry)
        x, _ = pad_to_multiple(x, multiple)
        if "valid" in kwargs:
            kwargs["valid"], _ = pad_to_multiple(kwargs["valid"], multiple)

        # a latent model draws one field per member for the whole domain; tiles cut theirs from it
        noise = model.sample_noise(x, kwargs["generator"]) if hasattr(model, "crop_noise") else None

        def call(tile_x: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
            if noise is not None:
                extra = {key: value for key, value in kwargs.items() if key != "generator"}
                return model(tile_x, steps, noise=model.crop_noise(noise, ys, xs), **extra)
            return model(tile_x, steps, **kwargs)

        with torch.inference_mode(), precision_context(device, precision):
            if tileable:
                y = run_tiled(call, x, tile=tile, overlap=overlap)
            else:
                y = call(x, slice(None), slice(None))
        return y[:, :, 0, :h, :w].float().cpu().numpy()

    if generators:
        batches = [rows + init * members for init in range(n) for rows in _batches(members, size)]
    else:
        batches = list(_batches(n * members, size))
    with _progress(len(batches), f"{request.name} nowcast", progress) as bar:
        for rows in batches:
            for done_rows, result in _forward_with_split(forward, rows):
                out[done_rows] = result
            bar.update()
    out = out.reshape(n, members, steps, h, w)
    if not accepts_mask:
        coverage = valid[:, -1]
        out = np.where(coverage[:, None, None], out, np.float32(np.nan))
    return out


def run_downscale(
    windows: np.ndarray,
    request: ResolvedModel,
    *,
    static: np.ndarray | None = None,
    precision: str = "auto",
    batch_size: int | str = "auto",
    progress: bool = True,
) -> np.ndarray:
    """Downscale windows of coarse frames.

    Parameters
    ----------
    windows
        ``(N, T, C, h, w)`` coarse frames (channel 0 precipitation in mm/h, NaN where
        missing; channels 1.. dynamic fields).
    request
        Which model to run.
    static
        ``(S, h*factor, w*factor)`` static fields on the fine grid, or None.

    Returns
    -------
    numpy.ndarray
        ``(N, (T-1)*time_factor + 1, h*factor, w*factor)`` float32 mm/h (NaN is
        restored by the caller, which knows the coverage).
    """
    model = request.load()
    device = resolve_device(request.device)
    n, _, _, h, w = windows.shape
    factor = int(model.factor)
    multiple = int(getattr(model, "spatial_multiple", 1))
    filled = fill_nearest(windows)  # missing cells must not pull their neighbours to 0
    tile = max(multiple, OPTIONS["tile_size"] // factor // multiple * multiple)
    overlap = max(OPTIONS["tile_overlap"] // factor, 0)
    size = (
        auto_batch_size(min(h, tile) * factor, min(w, tile) * factor)
        if batch_size == "auto"
        else int(batch_size)
    )
    static_t = None
    if static is not None:
        static_t = torch.from_numpy(np.ascontiguousarray(static, dtype=np.float32)).to(device)
        static_t, _ = pad_to_multiple(static_t, multiple * factor)

    def forward(rows: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(filled[rows])).to(device)
        x, _ = pad_to_multiple(x, multiple)

        def call(tile_x: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
            tile_static = None
            if static_t is not None:
                fy = slice(ys.start * factor, ys.stop * factor)
                fx = slice(xs.start * factor, xs.stop * factor)
                tile_static = static_t[None, :, fy, fx].expand(tile_x.shape[0], -1, -1, -1)
            return model(tile_x, static=tile_static)

        with torch.inference_mode(), precision_context(device, precision):
            y = run_tiled(call, x, tile=tile, overlap=overlap, scale=factor)
        return y[:, :, 0, : h * factor, : w * factor].float().cpu().numpy()

    results: list[tuple[np.ndarray, np.ndarray]] = []
    batches = list(_batches(n, size))
    with _progress(len(batches), f"{request.name} downscale", progress) as bar:
        for rows in batches:
            results.extend(_forward_with_split(forward, rows))
            bar.update()
    first = results[0][1]
    out = np.empty((n, *first.shape[1:]), dtype=np.float32)
    for rows, result in results:
        out[rows] = result
    return out

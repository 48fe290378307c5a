"""Model weights as data: safetensors files, sha256-checked before use.

Only two formats are ever read, and neither can run code:

* ``.safetensors`` (the format shipped and written by xnowcast), with the
  training recipe, data and scores in its string metadata;
* ``.pt``/``.pth`` through ``torch.load(weights_only=True)``.

A file whose sha256 differs from the expected one raises :class:`WeightsError`
and is never loaded.  Remote weights are fetched by pooch into
``$XNOWCAST_CACHE_DIR`` (default: the OS cache) and verified again on every use.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xnowcast.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = [
    "PACKAGE_WEIGHTS_DIR",
    "cache_dir",
    "fetch_weights",
    "file_sha256",
    "load_state_dict",
    "read_metadata",
    "save_weights",
]

PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


#: Digests computed in this process, by (path, size, modification time in ns): a weights
#: file is hashed once per process (a changed file has a new size or time: hashed again).
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _stat_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    stat = os.stat(path)
    return (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks (computed once per process)."""
    key = _stat_key(path)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def cache_dir() -> Path:
    """Where downloaded weights and datasets are cached (``$XNOWCAST_CACHE_DIR``)."""
    import pooch

    configured = os.environ.get("XNOWCAST_CACHE_DIR")
    return Path(configured) if configured else Path(pooch.os_cache("xnowcast"))


def fetch_weights(url: str, sha256: str) -> Path:
    """Download ``url`` into the cache (once) and return its verified path."""
    import pooch

    try:
        path = pooch.retrieve(url, known_hash=f"sha256:{sha256}", path=cache_dir() / "weights")
    except ValueError as err:  # pooch raises ValueError on a hash mismatch
        raise WeightsError(
            f"Downloaded weights from {url} failed their hash check: {err}"
        ) from None
    return Path(path)


def _read_checked(path: Path, sha256: str | None) -> bytes:
    """The file's bytes, checked against ``sha256``; hashed as read unless this process
    already hashed this file (same size and modification time)."""
    key = _stat_key(path)
    data = path.read_bytes()
    actual = _DIGESTS.get(key) or hashlib.sha256(data).hexdigest()
    _DIGESTS[key] = actual
    if sha256 is not None and actual != sha256:
        raise WeightsError(
            f"The weights file {path} has sha256 {actual}, expected {sha256}: it is corrupted or "
            "has been modified. Delete it and fetch it again; it was not loaded."
        )
    return data


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a safetensors file, JSON values decoded."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as err:
        raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out


def load_state_dict(
    path: str | os.PathLike[str], *, sha256: str | None = None, device: str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify and load a weights file.

    Parameters
    ----------
    path
        A ``.safetensors`` file, or a ``.pt``/``.pth`` file holding only tensors.
    sha256
        The expected digest; the file is refused unless it matches.
    device
        Where to place the tensors.

    Returns
    -------
    (state_dict, metadata)

    Raises
    ------
    WeightsError
        On a hash mismatch, an unreadable file, or a file that would need unpickling
        of arbitrary objects.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"No weights file at {path}.")
    data = _read_checked(path, sha256)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load

        try:
            state = {k: v.to(device) for k, v in load(data).items()}
        except Exception as err:
            raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
        return state, read_metadata(path)
    if suffix in (".pt", ".pth"):
        import torch

        try:
            state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
        except Exception as err:
            raise WeightsError(
                f"{path} could not be loaded safely (weights_only=True): {err}. "
                "Convert it to safetensors."
            ) from None
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise WeightsError(
                f"{path} does not hold a state dict of tensors (name -> tensor): save "
                "model.state_dict() only, or convert it to safetensors."
            )
        return state, {}
    raise WeightsError(f"Weights must be .safetensors (or .pt/.pth tensors only), not {path.name}.")


def _encode_metadata(value: Any) -> str:
    """A metadata value as text: JSON, except plain strings that JSON would not read back."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except (json.JSONDecodeError, ValueError):
            return value  # stays readable as plain text by other safetensors tools
    return json.dumps(value)


def save_weights(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: dict[str, Any],
) -> str:
    """Write a safetensors file with JSON-encoded metadata; return its sha256."""
    from safetensors.torch import save_file

    encoded = {k: _encode_metadata(v) for k, v in metadata.items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=encoded)
    return file_sha256(path)

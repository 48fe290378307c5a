"""Weights: safetensors with sha256 checked before use; nothing that can run code is loaded."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from xnowcast import registry
from xnowcast.errors import WeightsError
from xnowcast.weights import (
    fetch_weights,
    file_sha256,
    load_state_dict,
    read_metadata,
    save_weights,
)

METADATA = {
    "model": "zsm",
    "config": {"factor": 2, "time_factor": 2, "static_names": ["orography"]},
    "scores": {"csi_1mm": 0.61, "fss": [0.5, 0.7]},
    "epochs": 12,
    "version": "1.0",  # a string that JSON would read as a number
    "flag": "true",  # ... or as a boolean
    "recipe": "Adam, lr 1e-4, 12 epochs on rmi-20210704",
}


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "encoder.weight": torch.randn(8, 4, 3, 3, generator=generator),
        "encoder.bias": torch.randn(8, generator=generator),
        "steps": torch.arange(5),
    }


@pytest.fixture
def saved(tmp_path: Path, state: dict[str, torch.Tensor]) -> tuple[Path, str]:
    path = tmp_path / "model.safetensors"
    return path, save_weights(state, path, METADATA)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_save_returns_the_files_sha256(saved: tuple[Path, str]) -> None:
    path, digest = saved
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)


def test_save_then_load_keeps_tensors_and_metadata(
    saved: tuple[Path, str], state: dict[str, torch.Tensor]
) -> None:
    path, digest = saved
    loaded, metadata = load_state_dict(path, sha256=digest)
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)
    assert metadata == METADATA
    assert isinstance(metadata["version"], str) and isinstance(metadata["flag"], str)
    assert read_metadata(path) == METADATA


def test_no_expected_hash_loads_without_checking(saved: tuple[Path, str]) -> None:
    path, _ = saved
    loaded, _ = load_state_dict(path)
    assert "encoder.weight" in loaded


@pytest.fixture
def safetensors_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every call of safetensors' loaders (so a refused file is provably not read).

    Files are deserialised from the bytes that were hashed (``safetensors.torch.load``).
    """
    import safetensors.torch

    calls: list[str] = []
    for name in ("load_file", "load"):
        real = getattr(safetensors.torch, name)

        def spy(source: object, *args: object, _real: Any = real, **kwargs: object) -> object:
            calls.append(str(source) if isinstance(source, (str, Path)) else "<bytes>")
            return _real(source, *args, **kwargs)

        monkeypatch.setattr(safetensors.torch, name, spy)
    return calls


def test_flipped_byte_is_refused_and_not_loaded(
    saved: tuple[Path, str], safetensors_reads: list[str]
) -> None:
    path, digest = saved
    _flip_byte(path, path.stat().st_size - 10)  # inside the tensor data
    with pytest.raises(WeightsError, match="corrupted or has been modified") as info:
        load_state_dict(path, sha256=digest)
    assert digest in str(info.value) and "it was not loaded" in str(info.value)
    assert safetensors_reads == []
    # the same file still loads when no hash is asked for: the check, not luck, refused it
    load_state_dict(path)
    assert len(safetensors_reads) == 1


def test_tampered_metadata_is_refused(saved: tuple[Path, str]) -> None:
    path, digest = saved
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"epochs":"12"', b'"epochs":"99"'))
    assert path.read_bytes() != data
    with pytest.raises(WeightsError, match="expected " + digest):
        load_state_dict(path, sha256=digest)


def test_wrong_hash_is_refused(saved: tuple[Path, str], safetensors_reads: list[str]) -> None:
    path, _ = saved
    with pytest.raises(WeightsError, match="expected " + "0" * 64):
        load_state_dict(path, sha256="0" * 64)
    assert safetensors_reads == []


def test_truncated_file_without_hash_is_a_weights_error(saved: tuple[Path, str]) -> None:
    path, _ = saved
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_state_dict(path)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        read_metadata(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="No weights file"):
        load_state_dict(tmp_path / "absent.safetensors")


# --- pickles ------------------------------------------------------------------------------------------

EXECUTED: list[str] = []


def _record(message: str) -> str:
    EXECUTED.append(message)
    return message


class Payload:
    """Unpickling this calls :func:`_record`: code would run on load."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_record, ("unpickled",))


class Custom:
    def __init__(self) -> None:
        self.weight = torch.ones(2)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: {"weight": torch.ones(2), "payload": Payload()}, id="reduce-payload"),
        pytest.param(lambda: {"model": Custom()}, id="custom-class"),
        pytest.param(lambda: Custom(), id="bare-object"),
    ],
)
def test_pickle_with_objects_is_refused(tmp_path: Path, content: object) -> None:
    path = tmp_path / "model.pt"
    torch.save(content(), path)  # type: ignore[operator]
    EXECUTED.clear()
    with pytest.raises(WeightsError, match="weights_only=True") as info:
        load_state_dict(path)
    assert "Convert it to safetensors" in str(info.value)
    assert EXECUTED == []  # nothing in the file ran


def test_pickle_of_tensors_only_is_accepted(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "model.pth"
    torch.save(state, path)
    loaded, metadata = load_state_dict(path, sha256=file_sha256(path))
    assert metadata == {}
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    digest = file_sha256(path)
    _flip_byte(path, path.stat().st_size // 2)
    with pytest.raises(WeightsError, match="corrupted"):
        load_state_dict(path, sha256=digest)


def test_the_payload_is_live(tmp_path: Path) -> None:
    """The refused pickle really runs code when loaded unsafely (so the test above means it)."""
    path = tmp_path / "model.pt"
    torch.save({"payload": Payload()}, path)
    EXECUTED.clear()
    torch.load(path, weights_only=False)  # our own file: safe to do here
    assert EXECUTED == ["unpickled"]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: [torch.ones(2)], id="list"),
        pytest.param(lambda: {"weight": torch.ones(2), "epoch": 3}, id="non-tensor-value"),
        pytest.param(lambda: {"block": {"weight": torch.ones(2)}}, id="nested-dict"),
    ],
)
def test_pickle_that_is_not_a_state_dict_is_refused(tmp_path: Path, content: object) -> None:
    path = tmp_path / "model.pt"
    torch.save(content(), path)  # type: ignore[operator]
    with pytest.raises(WeightsError, match="does not hold a state dict of tensors"):
        load_state_dict(path)


@pytest.mark.parametrize("suffix", [".pkl", ".bin", ".npz", ".ckpt", ""])
def test_unknown_suffix_is_refused(
    tmp_path: Path, state: dict[str, torch.Tensor], suffix: str
) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"must be \.safetensors"):
        load_state_dict(path, sha256=file_sha256(path))


# --- through the model registry -------------------------------------------------------------------------


def test_weights_that_do_not_fit_the_model(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_weights({"conv.weight": torch.ones(1)}, path, {})
    with pytest.raises(WeightsError, match="do not fit model 'extrapolation'"):
        registry.load_model("extrapolation", weights=path)
    with pytest.raises(WeightsError, match="neither a shipped name"):
        registry.load_model("extrapolation", weights=tmp_path / "absent.safetensors")


# --- downloads: verified on download and again from the cache -------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server for a folder; yields (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.network
def test_fetch_verifies_downloads_and_the_cache(
    server: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    state: dict[str, torch.Tensor],
) -> None:
    url, root = server
    monkeypatch.setenv("XNOWCAST_CACHE_DIR", str(tmp_path / "cache"))
    digest = save_weights(state, root / "w.safetensors", METADATA)

    path = fetch_weights(f"{url}/w.safetensors", digest)
    assert path.is_relative_to(tmp_path / "cache") and file_sha256(path) == digest

    # a corrupted cached copy is noticed and fetched again
    _flip_byte(path, 200)
    assert file_sha256(path) != digest
    again = fetch_weights(f"{url}/w.safetensors", digest)
    assert file_sha256(again) == digest

    # a server that hands out a tampered file: refused, and not left in the cache
    _flip_byte(root / "w.safetensors", 200)
    again.unlink()
    with pytest.raises(WeightsError, match="failed their hash check"):
        fetch_weights(f"{url}/w.safetensors", digest)
    assert not again.exists()

"""Shared fixtures: where the real radar data live, and small synthetic fields."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real radar archive: ``$XNOWCAST_TEST_DATA`` or ``../shared/data`` beside the repo."""
    configured = os.environ.get("XNOWCAST_TEST_DATA", "../shared/data")
    path = Path(configured)
    if not path.is_absolute():
        path = (REPO_ROOT / path).resolve()
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared real radar data; a failure under CI, a skip elsewhere."""
    path = shared_data_dir()
    if not (path / "radar").is_dir():
        message = (
            f"real radar data not found at {path}: set XNOWCAST_TEST_DATA to the folder "
            "holding radar/ (the pysteps-data sample)"
        )
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (and the CI machine is shared).

    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_fresh_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def fresh_python():
    """``fresh_python(code)``: stdout of ``code`` run in a new interpreter importing this
    checkout's xnowcast (what ``import xnowcast`` loads, without this process's modules)."""
    return _run_fresh_python

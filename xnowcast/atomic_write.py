"""Safe output files for the command line: checked before any work, written whole or not
at all.

:class:`AtomicOutput` checks the output path when it is created (the folder exists and
is writable, the path is not a folder, ...) by creating the temporary file the output
is written to, in the same folder.  :meth:`AtomicOutput.commit` renames it over the
target; :meth:`AtomicOutput.discard` (called on any failure, Ctrl-C included) removes
it, so a previous file at the target is never touched and no partial file is left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["AtomicOutput", "OutputPathError"]

_ZARR_MARKERS = (".zgroup", ".zarray", ".zmetadata", "zarr.json")


class OutputPathError(ValueError):
    """An output path that cannot be written (reported as one line, exit code 2)."""


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr"


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """The output path as a :class:`~pathlib.Path`, or an :class:`OutputPathError` that
    names the problem and the fix."""
    text = str(path)
    if not text.strip():
        raise OutputPathError("the output path is empty: give a file name such as forecast.nc")
    target = Path(text).expanduser()
    folder = target.parent.resolve() if str(target.parent) else Path.cwd()
    if not folder.exists():
        raise OutputPathError(
            f"cannot write {text!r}: the folder {str(folder)!r} does not exist (create it "
            "first, e.g. mkdir -p)"
        )
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {text!r}: {str(folder)!r} is not a folder")
    if target.is_dir() and not (
        _is_zarr(target) and any((target / m).exists() for m in _ZARR_MARKERS)
    ):
        raise OutputPathError(
            f"cannot write {text!r}: it is a folder; give a file name inside it, e.g. "
            f"{str(target / 'forecast.nc')!r}"
        )
    if target.exists() and not target.is_dir() and _is_zarr(target):
        raise OutputPathError(f"cannot write the zarr store {text!r}: a file of that name exists")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {text!r}: no permission to write in {str(folder)!r}")
    return target


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicOutput:
    """A checked output path and the temporary file (or zarr folder) written in its place.

    Use as a context manager: on a clean exit the caller must have called
    :meth:`commit`; on any exception (``KeyboardInterrupt`` included) the temporary is
    removed and the target is left as it was.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.target = check_output_path(path)
        folder = self.target.parent
        prefix = f".{self.target.name}.partial-"
        try:
            if _is_zarr(self.target):
                self.temporary = Path(tempfile.mkdtemp(prefix=prefix, suffix=".zarr", dir=folder))
            else:
                handle, name = tempfile.mkstemp(
                    prefix=prefix, suffix=self.target.suffix, dir=folder
                )
                os.close(handle)
                self.temporary = Path(name)
        except OSError as err:
            raise OutputPathError(
                f"cannot write {str(path)!r}: {err.strerror or err} in {str(folder)!r}"
            ) from None

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None or self.temporary.exists():
            self.discard()

    def commit(self) -> None:
        """Put the written temporary in place of the target (an atomic rename for files).

        The temporary was created private (mode 0600/0700); the result gets the mode a
        plain ``open`` / ``mkdir`` would give it under the process's umask.
        """
        self.temporary.chmod((0o777 if self.temporary.is_dir() else 0o666) & ~_umask())
        if not _is_zarr(self.target) or not self.target.exists():
            os.replace(self.temporary, self.target)
            return
        old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
        os.replace(self.target, old)
        try:
            os.replace(self.temporary, self.target)
        except BaseException:
            os.replace(old, self.target)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """Remove the temporary; the target is not touched."""
        if self.temporary.is_dir():
            shutil.rmtree(self.temporary, ignore_errors=True)
        else:
            self.temporary.unlink(missing_ok=True)

"""Atomic writes under a file lock: the only way Conduit writes state files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

__all__ = ["atomic_write", "locked"]


@contextlib.contextmanager
def locked(path: str, timeout: float = 30.0) -> Iterator[None]:
    """Hold ``path + '.lock'`` for the duration (serialises writers across processes)."""
    import filelock

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with filelock.FileLock(path + ".lock", timeout=timeout):
        yield


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    file is renamed over the target.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

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
    file is renamed over the target. A symbolic link (a config file kept with the user's
    dotfiles) is followed: the file it points to is replaced and the link stays. A file
    that exists keeps its permissions (a config holding an index password stays 0600);
    ``mode`` is for a new file.
    """
    path = os.path.realpath(path)
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(path).st_mode & 0o7777
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

"""Helpers of the warm kernel's tests (tests/warm/, tests/conftest.py): run ``conduit``
cold or warm, read the server's status, wait, tell a running process from an ended one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable


def conduit(
    *args: str, warm: bool = True, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """``python -m conduit ARGS`` with ``CONDUIT_WARM=1`` (or ``0``), text captured;
    ``kwargs`` go to :func:`subprocess.run` (``input``, ``cwd``, ``timeout``...)."""
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "conduit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CONDUIT_WARM": "1" if warm else "0", **(env or {})},
        **{"timeout": 60, **kwargs},
    )


def popen_warm(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    """``python -m conduit ARGS`` started with ``CONDUIT_WARM=1``, its stdout a text pipe;
    ``kwargs`` go to :class:`subprocess.Popen` (``stderr``, ``stdin``...)."""
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "conduit", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONDUIT_WARM": "1"},
        **kwargs,
    )


def status() -> dict[str, object]:
    """``conduit server status --json``."""
    return dict(json.loads(conduit("server", "status", "--json").stdout))


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def running(pid: int) -> bool:
    """Whether ``pid`` runs: not ended, and not a zombie its parent has yet to reap."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def fd_targets(pid: int, prefix: str) -> set[str]:
    """What the descriptors of process ``pid`` open that starts with ``prefix``
    (``socket:``, ``net:``...), from ``/proc/PID/fd``."""
    out = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # (the listing's own descriptor, closed)
        if target.startswith(prefix):
            out.add(target)
    return out

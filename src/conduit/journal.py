"""The plugin store's journal: the file that says a store operation is under way.

:mod:`conduit.store` writes it before an operation changes the environment and removes
it at the commit point (see ``conduit.store._ops``); the index builder reads it to warn
that an operation was killed midway. Both import this module, so that neither imports
the other for it.

The journal is one JSON object per environment (:func:`journal_file`): ``op`` (the
``conduit plugins`` subcommand), the ``pid`` of the Conduit running it, and what the
store needs to restore the state from before (``prefix``, ``before``, ``lock_path``,
``lock_before``).

It also keeps which lock file this environment was last installed, synced or locked
against (:func:`bind_lock`, written by the store when a transaction commits and by
``plugins lock``), so that an index rebuild can tell when the installed plugin
distributions drifted from it (:func:`lock_drift`): an upgrade of Conduit by ``uv tool``
or ``pipx`` that dropped them, a ``pip uninstall`` by hand.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from conduit.fs import atomic_write

if TYPE_CHECKING:
    from conduit.paths import Paths

__all__ = [
    "DRIFT",
    "bind_lock",
    "interrupted_operation",
    "journal_file",
    "lock_drift",
    "read_journal",
    "store_lock_file",
    "write_journal",
]


def journal_file(paths: Paths) -> str:
    """Where the journal of this environment (``sys.prefix``) lives."""
    return paths.store_file("journal", ".json")


def write_journal(path: str, entry: dict[str, Any]) -> None:
    """Write the journal atomically: a reader sees the whole entry or none."""
    atomic_write(path, json.dumps(entry, indent=1, sort_keys=True).encode())


def read_journal(path: str) -> dict[str, Any] | None:
    """The journal's entry, or None when there is no journal.

    Raises OSError or ValueError when it cannot be read or is not a JSON object; the
    caller checks the fields it needs.
    """
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
    except FileNotFoundError:
        return None
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    return entry


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def store_lock_file(paths: Paths) -> str:
    """The file a store operation holds locked from start to end (``conduit.fs.locked``
    of ``paths.store_file("env")``, filelock's ``flock`` on POSIX)."""
    return paths.store_file("env") + ".lock"


def _lock_held(path: str) -> bool | None:
    """Whether a process holds ``path`` locked now; None where this cannot be told."""
    try:
        import fcntl
    except ImportError:  # Windows: fall back to the journal's pid
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _journal_state(paths: Paths) -> tuple[str, bool] | None:
    """``(op, running)`` of the journal, or None when there is none.

    Running means that a process holds the store lock now: a lock dies with its holder,
    so a killed operation is told from a running one even when the kernel has given the
    killed Conduit's pid to another process since (the pid is the fallback where locks
    cannot be probed)."""
    try:
        entry = read_journal(journal_file(paths))
        if entry is None:
            return None
        pid, op = int(entry["pid"]), str(entry["op"])
    except (OSError, ValueError, KeyError, TypeError):
        pid, op = 0, "plugin operation"
    held = _lock_held(store_lock_file(paths))
    return op, _alive(pid) if held is None else held


def interrupted_operation(paths: Paths) -> str | None:
    """A warning when a ``conduit plugins install`` (or the like) was killed midway.

    The CLI calls it on every run for which the journal file exists (one ``stat`` on the
    start-up path otherwise): the index may not be rebuilt after the kill (the installer
    had not changed the environment yet, or the index was rebuilt before the kill by the
    operation's own validation), so the warning cannot live in the index."""
    state = _journal_state(paths)
    if state is None:
        return None
    op, running = state
    if running:
        return None  # still running (another conduit's operation)
    return (
        f"'conduit plugins {op}' was interrupted and may have left plugins half-changed; "
        "run 'conduit plugins lock' to restore the state from before it"
    )


#: how the drift warning starts (``plugins doctor`` counts it as a problem)
DRIFT = "the installed plugins differ from "


def _binding_file(paths: Paths) -> str:
    return paths.store_file("lock", ".path")


def bind_lock(paths: Paths, lock_path: str) -> bool:
    """Remember ``lock_path`` as the lock file of this environment (``sys.prefix``);
    False when it already was."""
    path = _binding_file(paths)
    data = os.path.abspath(lock_path).encode("utf-8", "surrogateescape")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    atomic_write(path, data)
    return True


def bound_lock(paths: Paths) -> str | None:
    """The lock file this environment was last installed or synced against, if any."""
    try:
        with open(_binding_file(paths), "rb") as f:
            return f.read().decode("utf-8", "surrogateescape") or None
    except OSError:
        return None


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def lock_drift(paths: Paths, plugin_dists: dict[str, str]) -> str | None:
    """A warning when the installed plugin distributions differ from the lock file.

    ``plugin_dists`` maps the distributions that provide plugins (entry points) to their
    installed versions. Compares the lock file of this environment (:func:`bound_lock`)
    with them and with the installed versions of the other locked distributions (their
    dependencies). None when there is no lock for this environment, or while a store
    operation is under way (it writes the lock file for the environment it leaves) or
    interrupted (its own warning says what to do, and the recovery restores the lock).
    Called at index rebuild only: the warning is stored in the index.
    """
    lock_path = bound_lock(paths)
    if lock_path is None:
        return None
    if os.path.exists(journal_file(paths)):
        return None  # under way, or interrupted (that warning, and the recovery, come first)
    import tomllib

    try:
        with open(lock_path, "rb") as f:
            data = tomllib.load(f)
        # "packages": PEP 751 (pylock.conduit.toml); "package": the older conduit.lock
        entries = data.get("packages", data.get("package", []))
        locked = {_canonical(str(p["name"])): str(p["version"]) for p in entries}
    except FileNotFoundError:
        return None  # removed on purpose: nothing to compare with
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"cannot read the lock file {lock_path} to compare the plugins with it: {exc}"
    from importlib.metadata import PackageNotFoundError, version

    installed = {_canonical(n): v for n, v in plugin_dists.items()}
    differences = []
    for name, want in sorted(locked.items()):
        have = installed.get(name)
        if have is None:
            try:
                have = version(name)
            except PackageNotFoundError:
                differences.append(f"{name} {want} is not installed")
                continue
        if have != want:
            differences.append(f"{name} is {have}, locked {want}")
    for name, have in sorted(installed.items()):
        if name not in locked:
            differences.append(f"{name} {have} is not in the lock file")
    if not differences:
        return None
    if len(differences) > 5:
        differences[4:] = [f"and {len(differences) - 4} more"]
    defaults = [os.path.join(paths.config_dir, n) for n in ("pylock.conduit.toml", "conduit.lock")]
    option = (
        ""
        if os.path.abspath(lock_path) in [os.path.abspath(d) for d in defaults]
        else f" --lock {lock_path}"
    )
    return (
        f"{DRIFT}{lock_path} ({'; '.join(differences)}): run "
        f"'conduit plugins sync{option}' to install what it locks, or 'conduit plugins "
        f"lock{option}' to lock what is installed"
    )

"""The plugin store's journal: the file that says a store operation is under way.

:mod:`conduit.store` writes it before an operation changes the environment and removes
it at the commit point (see ``conduit.store._ops``); the index builder reads it to warn
that an operation was killed midway. Both import this module, so that neither imports
the other for it.

The journal is one JSON object per environment (:func:`journal_file`): ``op`` (the
``conduit plugins`` subcommand), the ``pid`` of the Conduit running it, and what the
store needs to restore the state from before (``prefix``, ``before``, ``lock_path``,
``lock_before``).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from conduit.fs import atomic_write

if TYPE_CHECKING:
    from conduit.paths import Paths

__all__ = ["interrupted_operation", "journal_file", "read_journal", "write_journal"]


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


def interrupted_operation(paths: Paths) -> str | None:
    """A warning when a ``conduit plugins install`` (or the like) was killed midway."""
    try:
        entry = read_journal(journal_file(paths))
        if entry is None:
            return None
        pid, op = int(entry["pid"]), str(entry["op"])
    except (OSError, ValueError, KeyError, TypeError):
        pid, op = 0, "plugin operation"
    if pid > 0:
        try:
            os.kill(pid, 0)
            return None  # still running (this rebuild may be its own validation)
        except ProcessLookupError:
            pass
        except PermissionError:
            return None
    return (
        f"'conduit plugins {op}' was interrupted and may have left plugins half-changed; "
        "run 'conduit plugins lock' to restore the state from before it"
    )

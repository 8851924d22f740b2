"""The store's journal as the index builder reads it: a store operation killed midway is
reported on the next run, one still running or finished is not (conduit.journal)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conduit.journal import interrupted_operation, journal_file, read_journal, write_journal
from conduit.paths import resolve

WARNING = (
    "'conduit plugins {op}' was interrupted and may have left plugins half-changed; "
    "run 'conduit plugins lock' to restore the state from before it"
)


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def journal(conduit_home: Path) -> str:
    path = journal_file(resolve())
    assert path.startswith(str(conduit_home))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def test_no_journal_is_no_operation(conduit_home: Path) -> None:
    path = journal(conduit_home)
    assert read_journal(path) is None
    assert interrupted_operation(resolve()) is None


def test_a_journal_reads_back_as_written(conduit_home: Path) -> None:
    path = journal(conduit_home)
    entry = {"op": "install", "pid": 1, "before": {"a": {"version": "1", "url": None}}}
    write_journal(path, entry)
    assert read_journal(path) == entry


def test_an_operation_still_running_is_not_reported(conduit_home: Path) -> None:
    """Running: a process holds the store lock (as ``Store._locked`` does)."""
    paths = resolve()
    write_journal(journal(conduit_home), {"op": "install", "pid": dead_pid()})
    code = (
        "import sys; from conduit.fs import locked; from conduit.paths import resolve\n"
        "with locked(resolve().store_file('env')):\n"
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert interrupted_operation(paths) is None
    finally:
        holder.communicate("")
    assert interrupted_operation(paths) == WARNING.format(op="install")


def test_a_killed_operation_whose_pid_was_reused_is_reported(conduit_home: Path) -> None:
    """The pid of the killed Conduit now names a live process (this one): the store lock,
    which died with the killed process, tells."""
    write_journal(journal(conduit_home), {"op": "install", "pid": os.getpid()})
    assert interrupted_operation(resolve()) == WARNING.format(op="install")


def test_a_killed_operation_is_reported_by_name(conduit_home: Path, run) -> None:  # type: ignore[no-untyped-def]
    write_journal(journal(conduit_home), {"op": "update", "pid": dead_pid()})
    assert interrupted_operation(resolve()) == WARNING.format(op="update")
    # the index builder turns it into a warning on the next run
    result = run("--help")
    assert result.code == 0
    assert f"conduit: warning: {WARNING.format(op='update')}" in result.err


@pytest.mark.parametrize("text", ["{not json", "null", '["install"]', '{"op": "install"}'])
def test_an_unreadable_journal_is_reported_too(conduit_home: Path, text: str) -> None:
    path = journal(conduit_home)
    Path(path).write_text(text, encoding="utf-8")
    if text in ("{not json", "null", '["install"]'):
        with pytest.raises(ValueError):
            read_journal(path)
    assert interrupted_operation(resolve()) == WARNING.format(op="plugin operation")

"""What the store commands show while they work, in one place.

- the change plan (:func:`plan_lines`: ``+ name 1.2.0``, ``~ name 1.1 -> 1.2``,
  ``- name 1.0``), shown on the terminal as soon as the store knows it (before the grant
  prompt), and printed with the result;
- one status line per step of Conduit's own ("installing ...", "verifying ...",
  "writing the lock file ..."), rewritten in place on a terminal and erased when the
  steps are over; with ``--verbose`` one plain line per step, among the installer's
  output; nothing at all when stderr is not a terminal;
- the last lines of a failed installer run above the error, when its output was not
  shown (without ``--verbose``).

Imported only by the store commands (``_store.py``), never on the start-up path.
"""

from __future__ import annotations

import shutil
import sys
from types import TracebackType
from typing import TextIO

from conduit.store import Change, Progress
from conduit.text import inert

__all__ = ["Console", "plan_lines"]

_ERASE = "\r\x1b[K"  # to the start of the line, then clear it


def plan_lines(changes: list[Change]) -> list[str]:
    """The plan: one line per change, escaped (names and versions come from packages)."""
    return [inert(change.text()) for change in changes]


class Console(Progress):
    """The store's :class:`Progress`, rendered on ``stream`` (stderr)."""

    def __init__(self, *, live: bool, verbose: bool = False, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        #: a person watches ``stream`` (a terminal): steps and the plan are shown
        self.live = live
        self.verbose = verbose
        #: the plan has been shown on the terminal
        self.shown_plan = False
        self._status = False  # a status line is on the screen

    def step(self, text: str) -> None:
        line = inert(f"conduit: {text} ...")
        if self.verbose:  # among the installer's output: one line each
            self._write(line + "\n")
        elif self.live:
            width = max(20, shutil.get_terminal_size().columns - 1)  # a wrapped line stays
            if len(line) > width:
                line = line[: width - 4] + " ..."
            self._write(_ERASE + line)
            self._status = True

    def plan(self, changes: list[Change]) -> None:
        if not (self.live or self.verbose) or self.shown_plan or not changes:
            return
        self.done()
        self._write("".join(line + "\n" for line in plan_lines(changes)))
        self.shown_plan = True

    def done(self) -> None:
        if self._status:
            self._write(_ERASE)
            self._status = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def __enter__(self) -> Console:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.done()  # the error, the prompt or the result starts on a clean line
        while exc is not None:  # the installer's last lines, above the error
            shown = exc.__dict__.get("installer_output")
            if shown:
                tool, lines = shown
                self._write(f"{tool}'s last lines:\n")
                self._write("".join(f"  {inert(line)}\n" for line in lines))
                break
            exc = exc.__cause__

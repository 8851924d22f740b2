"""The run journal: one line per command run, in a bounded file in the state directory.

The command line appends a record after each command a plugin ran (never for
``--help``, ``--version``, group help or completion, which do not import this module):
the command word and its plugin, the exit code, the one-line error of a failure, the
total time, and each plugin activated with why, its import, boot and run times, whether
its activation failed (and the error), and the numbers its optional ``metrics()``
returned. ``conduit plugins list | info | doctor | stats`` read it back.

Storage: JSON Lines in ``STATE/runs.jsonl``, an append-only ring of two generations.
Each record is one ``write()`` to a descriptor opened with ``O_APPEND``, so concurrent
runs never interleave within a line and a run killed with ``kill -9`` leaves whole lines
(or, on a full disk, one cut line, which the reader skips). When the file passes half of
``[journal] max-kb`` it is renamed to ``runs.1.jsonl`` (replacing the older generation):
the journal never holds more than about ``max-kb``. No SQLite: importing ``sqlite3``
alone costs more than the whole budget of a record (docs/performance.md, "Run journal").

Standard library only, and nothing imported to write (not even ``json``): the writer is
on the path of every command. Arguments are not recorded (they may hold secrets); only
the command word.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from conduit.paths import Paths

__all__ = [
    "DEFAULT_MAX_KB",
    "FILE",
    "activations",
    "failing",
    "journal_files",
    "one_line",
    "read",
    "record",
]

FILE = "runs.jsonl"
#: the default of ``[journal] max-kb``: both generations together
DEFAULT_MAX_KB = 1024
#: the longest error text kept
_MAX_ERROR = 300


def journal_files(paths: Paths) -> tuple[str, str]:
    """``(current, older)``: the journal's two generations."""
    current = os.path.join(paths.state_dir, FILE)
    return current, current[: -len(".jsonl")] + ".1.jsonl"


def one_line(text: str) -> str:
    """The first line of ``text``, at most a few hundred characters."""
    line = text.strip().partition("\n")[0]
    return line if len(line) <= _MAX_ERROR else line[: _MAX_ERROR - 3] + "..."


def _str(text: str) -> str:
    """``text`` as a JSON string (escaped by hand: the json module is not imported)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = []
    for ch in text:
        code = ord(ch)
        if 0x20 <= code < 0x7F and ch not in '"\\':
            out.append(ch)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def _value(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 3)) if value == value and abs(value) != float("inf") else "null"
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_str(str(k))}:{_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_value, value)) + "]"
    return _str(str(value))


def record(
    paths: Paths,
    settings: object,
    *,
    command: str,
    plugin: str,
    code: int,
    error: str,
    started_ns: int,
    activations: Iterable[dict[str, Any]],
) -> None:
    """Append one run to the journal; never raises for a file it cannot write (a
    command's outcome does not depend on its journal)."""
    line = _value(
        {
            "t": round(time.time(), 3),
            "cmd": command,
            "plugin": plugin,
            "code": code,
            "error": one_line(error),
            "ms": (time.perf_counter_ns() - started_ns) / 1e6,
            "plugins": list(activations),
        }
    )
    data = (line + "\n").encode("utf-8", "surrogatepass")
    max_kb = DEFAULT_MAX_KB
    if isinstance(settings, dict):  # the index's [journal] table, validated
        max_kb = int(settings.get("max-kb", DEFAULT_MAX_KB))
    current, older = journal_files(paths)
    try:
        try:
            fd = os.open(current, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            os.makedirs(paths.state_dir, exist_ok=True)
            fd = os.open(current, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)  # one write: whole lines, whoever else appends
            st = os.fstat(fd)
            # Past half the budget (one generation), rotate: only the file this run wrote
            # to, as another run may have rotated it a moment ago (then the name holds a
            # new, small file).
            if st.st_size > max_kb * 512 and os.stat(current).st_ino == st.st_ino:
                os.replace(current, older)
        finally:
            os.close(fd)
    except OSError:
        pass


def _lines(path: str) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            yield from f
    except OSError:
        return


def read(paths: Paths) -> list[dict[str, Any]]:
    """The journal's records, oldest first; unreadable lines (a write cut short by a
    full disk) are skipped."""
    import json

    current, older = journal_files(paths)
    records = []
    for path in (older, current):
        for raw in _lines(path):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("plugins"), list):
                records.append(entry)
    records.sort(key=lambda r: r.get("t", 0) if isinstance(r.get("t"), (int, float)) else 0)
    return records


def activations(records: Iterable[dict[str, Any]]) -> Iterator[tuple[float, dict[str, Any]]]:
    """``(time, activation)`` for each plugin activation in ``records``."""
    for entry in records:
        t = entry.get("t", 0)
        for act in entry["plugins"]:
            if isinstance(act, dict) and isinstance(act.get("name"), str):
                yield (t if isinstance(t, (int, float)) else 0), act


def failing(records: Iterable[dict[str, Any]]) -> dict[str, list[tuple[float, str]]]:
    """Plugins whose last activation failed: name -> their failures since their last
    successful activation, ``(time, error)``, oldest first."""
    streak: dict[str, list[tuple[float, str]]] = {}
    for t, act in activations(records):
        name = act["name"]
        if act.get("ok", True):
            streak.pop(name, None)
        else:
            streak.setdefault(name, []).append((t, str(act.get("error", ""))))
    return streak

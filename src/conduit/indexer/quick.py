"""A quick check of a new plugin's ``conduit-plugin.toml``, without msgspec or tomllib.

The first run after installing a plugin rebuilds the index and reads the one new
manifest; importing tomllib, msgspec (with ``typing`` and ``inspect``) and packaging to
validate it costs more than the rest of that rebuild. :func:`check` accepts the common
manifest (plain TOML: ``key = "string"``, ``true``/``false``, one-line arrays of strings,
``[provides]``, ``[requires]``, ``[[commands]]``, comment lines) and returns what
``msgspec.to_builtins(conduit.manifest.read_manifest_file(...))`` returns for it.

It never decides that a manifest is wrong: anything it does not recognise, or that might
be invalid (escapes, numbers, inline tables, plugin requirements, dependencies, an
unusual version or API range, ...), makes it return None, and the builder then reads the
file with :mod:`conduit.manifest`, whose error messages are the only ones. A forced
rebuild (``plugins doctor``) always uses :mod:`conduit.manifest`.
tests/indexer/test_quick.py checks that the two agree.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["check"]

_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_NAME_CHARS = frozenset(_LOWER + "_-")
_SERVICE_CHARS = frozenset(_LOWER + "_.-")
_ACTIVATION_KINDS = ("command", "startup", "env", "file", "event", "service")
_OPERATORS = (">=", "<=", "==", "!=", "~=", ">", "<")  # two-character ones first
_FIELDS = {
    "": (
        "name",
        "version",
        "description",
        "api",
        "entry",
        "commands",
        "activation",
        "provides",
        "requires",
        "capabilities",
        "isolation",
        "dependencies",
    ),
    "commands": ("name", "help", "usage", "hidden"),
    "provides": ("services", "hooks"),
    "requires": ("plugins", "services"),
}
_STRINGS = {"name", "version", "description", "api", "entry", "isolation", "help", "usage"}
_LISTS = {"activation", "capabilities", "dependencies", "services", "hooks", "plugins"}
_FREE_TEXT = ("description", "help", "usage")


class _Unsure(Exception):
    """Not recognised here: :mod:`conduit.manifest` decides."""


def _plain(text: str) -> bool:
    """No character that TOML refuses unescaped, nor a backslash or quote (no escapes)."""
    return all(" " <= c != "\x7f" and c not in '"\\' for c in text)


def _string(line: str, i: int) -> tuple[str, int]:
    """The basic string starting at ``line[i]`` (a quote), and the index after it."""
    if line[i : i + 1] != '"':
        raise _Unsure
    end = line.find('"', i + 1)
    if end < 0 or line[end + 1 : end + 2] == '"':
        raise _Unsure
    value = line[i + 1 : end]
    if not _plain(value):
        raise _Unsure
    return value, end + 1


def _skip(line: str, i: int) -> int:
    while line[i : i + 1] in (" ", "\t") and i < len(line):
        i += 1
    return i


def _value(line: str, i: int) -> tuple[object, int]:
    if line.startswith("true", i):
        return True, i + 4
    if line.startswith("false", i):
        return False, i + 5
    if line[i : i + 1] != "[":
        return _string(line, i)
    items: list[str] = []
    i = _skip(line, i + 1)
    while line[i : i + 1] != "]":
        item, i = _string(line, i)
        items.append(item)
        i = _skip(line, i)
        if line[i : i + 1] == ",":
            i = _skip(line, i + 1)
        elif line[i : i + 1] != "]":
            raise _Unsure
    return items, i + 1


def _parse(text: str) -> dict[str, Any]:
    """The subset of TOML described above, as tomllib would parse it."""
    if "\r" in text:
        raise _Unsure
    top: dict[str, Any] = {}
    table = top
    for raw in text.split("\n"):
        line = raw.strip(" \t")
        if not line:
            continue
        if line[0] == "#":
            if not all(" " <= c != "\x7f" or c == "\t" for c in line):
                raise _Unsure
            continue
        if line == "[[commands]]":
            commands = top.setdefault("commands", [])
            table = {}
            commands.append(table)
            continue
        if line in ("[provides]", "[requires]"):
            if line[1:-1] in top:
                raise _Unsure
            table = top[line[1:-1]] = {}
            continue
        key, eq, rest = line.partition("=")
        key = key.rstrip(" \t")
        if not eq or not key or not set(key) <= _BARE or key in table:
            raise _Unsure
        if table is top and key in ("commands", "provides", "requires"):
            raise _Unsure  # written as tables here, or not recognised
        i = _skip(rest, 0)
        value, i = _value(rest, i)
        if i != len(rest):
            raise _Unsure
        table[key] = value
    return top


def _identifier(value: str) -> None:
    from conduit.text import unsafe_char

    if unsafe_char(value) is not None:
        raise _Unsure


def _word(word: str) -> bool:
    """``^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$``"""
    return (
        bool(word)
        and word[0] in _LOWER
        and word[-1] in _LOWER
        and set(word) <= _NAME_CHARS
        and word.isascii()
    )


def _version(text: str) -> bool:
    """A release number (``1``, ``1.2.3``): a valid PEP 440 version."""
    parts = text.split(".")
    return all(p.isascii() and p.isdigit() for p in parts)


def _api(text: str) -> bool:
    """Comma-separated ``OPVERSION`` clauses: a valid ``SpecifierSet``."""
    for clause in text.split(","):
        clause = clause.strip(" ")
        op = next((o for o in _OPERATORS if clause.startswith(o)), None)
        if op is None:
            return False
        version = clause[len(op) :]
        if not _version(version) or (op == "~=" and "." not in version):
            return False
    return True


def _check_types(data: dict[str, Any], section: str) -> None:
    for key, value in data.items():
        if key not in _FIELDS[section]:
            raise _Unsure
        if key in _STRINGS:
            ok = type(value) is str
        elif key in _LISTS:
            ok = type(value) is list
        elif key == "hidden":
            ok = type(value) is bool
        elif key == "commands":
            ok = type(value) is list and all(type(c) is dict for c in value)
            if ok:
                for command in value:
                    _check_types(command, "commands")
        else:  # provides, requires
            ok = type(value) is dict
            if ok:
                _check_types(value, key)
        if not ok:
            raise _Unsure
        if key not in _FREE_TEXT:
            for item in value if type(value) is list and key != "commands" else [value]:
                if type(item) is str:
                    _identifier(item)


def _validate(data: dict[str, Any], expected_name: str | None) -> dict[str, Any]:
    _check_types(data, "")
    name = data.get("name", expected_name)
    if name is None or "api" not in data:
        raise _Unsure
    if expected_name is not None and name != expected_name:
        raise _Unsure
    _identifier(name)
    if not (_word(name) and len(name) <= 64):
        raise _Unsure
    if "version" in data and not _version(data["version"]):
        raise _Unsure
    if not _api(data["api"]):
        raise _Unsure
    if data.get("isolation", "in-process") not in ("in-process", "process", "wasm"):
        raise _Unsure
    provides = data.get("provides", {})
    requires = data.get("requires", {})
    if data.get("dependencies") or requires.get("plugins"):
        raise _Unsure  # requirements: packaging checks them (conduit.manifest)
    commands = []
    seen = set()
    for command in data.get("commands", []):
        cmd = command.get("name")
        if cmd is None or cmd in seen or not all(_word(w) for w in cmd.split(" ")):
            raise _Unsure
        seen.add(cmd)
        commands.append(
            {
                "name": cmd,
                "help": command.get("help", ""),
                "usage": command.get("usage", ""),
                "hidden": command.get("hidden", False),
            }
        )
    for event in data.get("activation", []):
        kind, sep, arg = event.partition(":")
        if kind not in _ACTIVATION_KINDS or bool(arg) != (kind != "startup"):
            raise _Unsure
        if kind != "startup" and not sep:
            raise _Unsure
    if data.get("capabilities"):
        from conduit.security.capabilities import CapabilityError, parse

        for cap in data["capabilities"]:
            try:
                parse(cap)
            except CapabilityError:
                raise _Unsure from None
    for value in [*provides.get("services", []), *requires.get("services", [])]:
        if not (value and value[0] in _LOWER and set(value) <= _SERVICE_CHARS):
            raise _Unsure
    for value in provides.get("hooks", []):
        if not (value.isidentifier() and value and value[0] in _LOWER):
            raise _Unsure
        if not set(value) <= _SERVICE_CHARS:
            raise _Unsure
    return {
        "name": name,
        "version": data.get("version"),
        "description": data.get("description", ""),
        "api": data["api"],
        "entry": data.get("entry"),
        "commands": commands,
        "activation": data.get("activation", []),
        "provides": {
            "services": provides.get("services", []),
            "hooks": provides.get("hooks", []),
        },
        "requires": {"plugins": [], "services": requires.get("services", [])},
        "capabilities": data.get("capabilities", []),
        "isolation": data.get("isolation", "in-process"),
        "dependencies": [],
    }


def check(raw: bytes, expected_name: str | None) -> dict[str, Any] | None:
    """The valid manifest ``raw`` (a file's bytes) as plain data, or None when this
    quick check cannot tell (then :func:`conduit.manifest.read_manifest_file` decides)."""
    try:
        return _validate(_parse(raw.decode("utf-8")), expected_name)
    except (_Unsure, UnicodeDecodeError):
        return None

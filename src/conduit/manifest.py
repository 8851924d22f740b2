"""The plugin manifest: schema, parsing and validation.

A manifest is static data. It is read when the plugin index is rebuilt, never on the
start-up path, and reading it never imports plugin code. Two sources:

* ``conduit-plugin.toml`` shipped inside an installed plugin's package;
* an inline ``# /// conduit`` ... ``# ///`` comment block in a single-file plugin
  (the PEP 723 convention).

Every problem is a :class:`~conduit.errors.ManifestError` naming the file, the field,
what is wrong and how to fix it.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any, Literal

import msgspec

from conduit.errors import ManifestError, did_you_mean
from conduit.security.capabilities import KINDS, CapabilityError, parse

__all__ = [
    "ACTIVATION_KINDS",
    "CAPABILITY_KINDS",
    "INLINE_RE",
    "MANIFEST_FILENAME",
    "NAME_RE",
    "CommandSpec",
    "Manifest",
    "Provides",
    "Requires",
    "is_wasm_source",
    "loads_toml",
    "parse_inline_manifest",
    "parse_manifest",
    "read_manifest_file",
]

MANIFEST_FILENAME = "conduit-plugin.toml"

ACTIVATION_KINDS = ("command", "startup", "env", "file", "event", "service")
CAPABILITY_KINDS = KINDS  # the grammar lives in conduit.security.capabilities
Isolation = Literal["in-process", "process", "wasm"]

#: a plugin name
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
_WORD_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$")
_SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
#: an inline ``# /// TYPE`` ... ``# ///`` block (PEP 723)
INLINE_RE = re.compile(
    r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)[ \t]*$\s(?P<content>(^#(| .*)$\s)+)^# ///[ \t]*$"
)


class CommandSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A command the plugin contributes, as ``--help`` and completion show it."""

    name: str
    help: str = ""
    usage: str = ""
    hidden: bool = False


class Provides(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What a plugin offers to other plugins."""

    services: list[str] = []
    hooks: list[str] = []


class Requires(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What a plugin needs from other plugins: plugins with version ranges, services."""

    plugins: list[str] = []
    services: list[str] = []


class Manifest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A validated plugin manifest. See docs/manifest.md for every field."""

    name: str | None = None
    version: str | None = None
    description: str = ""
    api: str
    entry: str | None = None
    commands: list[CommandSpec] = []
    activation: list[str] = []
    provides: Provides = Provides()
    requires: Requires = Requires()
    capabilities: list[str] = []
    isolation: Isolation = "in-process"
    dependencies: list[str] = []


_FIELDS: dict[str, tuple[str, ...]] = {
    "": Manifest.__struct_fields__,
    "commands": CommandSpec.__struct_fields__,
    "provides": Provides.__struct_fields__,
    "requires": Requires.__struct_fields__,
}


def _translate(path: str, err: msgspec.ValidationError) -> ManifestError:
    """Turn msgspec's ``... - at `$.a[0].b``` into file + field + a hint."""
    text = str(err)
    problem, _, where = text.partition(" - at `$")
    where = where.rstrip("`").lstrip(".")
    field = where or None
    hint = None
    unknown = re.match(r"Object contains unknown field `(.+)`", problem)
    missing = re.match(r"Object missing required field `(.+)`", problem)
    section = re.sub(r"\[\d+\]", "", where) if where else ""
    if unknown:
        name = unknown.group(1)
        field = f"{where}.{name}" if where else name
        problem = "unknown field"
        allowed = _FIELDS.get(section, ())
        guess = did_you_mean(name, allowed)
        hint = (
            f"did you mean '{guess}'?"
            if guess
            else f"allowed fields here: {', '.join(allowed)}"
            if allowed
            else None
        )
    elif missing:
        name = missing.group(1)
        field = f"{where}.{name}" if where else name
        problem = "required field is missing"
        if name == "api":
            hint = 'add the plugin-API range it supports, e.g. api = ">=1.0,<2"'
        else:
            hint = f"add '{name}'"
    else:
        problem = problem[0].lower() + problem[1:] if problem else "invalid value"
        hint = "see docs/manifest.md for the allowed values"
    return ManifestError(path, problem, field=field, hint=hint)


def _check_requirement(path: str, field: str, text: str) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise ManifestError(
            path,
            f"'{text}' is not a valid requirement ({exc})",
            field=field,
            hint="write a plugin name with an optional version range, e.g. 'git-tools>=1.2'",
        ) from None
    if req.url or req.extras or req.marker:
        raise ManifestError(
            path,
            f"'{text}': only a name and a version range are allowed here",
            field=field,
            hint="drop URLs, extras and markers",
        )


def _validate(path: str, m: Manifest, *, expected_name: str | None) -> Manifest:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    name = m.name if m.name is not None else expected_name
    if name is None:
        raise ManifestError(
            path, "required field is missing", field="name", hint='add name = "my-plugin"'
        )
    if not NAME_RE.match(name):
        raise ManifestError(
            path,
            f"'{name}' is not a valid plugin name",
            field="name",
            hint="use lowercase letters, digits, '-' and '_' (at most 64 characters)",
        )
    if expected_name is not None and m.name is not None and m.name != expected_name:
        raise ManifestError(
            path,
            f"'{m.name}' does not match the entry point name '{expected_name}'",
            field="name",
            hint=f"rename one of them, or drop 'name' here (it defaults to '{expected_name}')",
        )
    if m.version is not None:
        try:
            Version(m.version)
        except InvalidVersion:
            raise ManifestError(
                path,
                f"'{m.version}' is not a valid version",
                field="version",
                hint="use a PEP 440 version such as 1.0.0",
            ) from None
    try:
        SpecifierSet(m.api)
    except InvalidSpecifier:
        raise ManifestError(
            path,
            f"'{m.api}' is not a valid version range",
            field="api",
            hint='write a range of plugin-API versions, e.g. ">=1.0,<2"',
        ) from None
    seen: set[str] = set()
    for i, cmd in enumerate(m.commands):
        words = cmd.name.split(" ")
        if not cmd.name or not all(_WORD_RE.match(w) for w in words):
            raise ManifestError(
                path,
                f"'{cmd.name}' is not a valid command name",
                field=f"commands[{i}].name",
                hint="use lowercase words of letters, digits, '-' and '_', separated by "
                "single spaces for subcommands ('repos status')",
            )
        if cmd.name in seen:
            raise ManifestError(
                path,
                f"command '{cmd.name}' is declared twice",
                field=f"commands[{i}].name",
                hint="remove the duplicate entry",
            )
        seen.add(cmd.name)
        if "\n" in cmd.help:
            raise ManifestError(
                path,
                "help must be one line",
                field=f"commands[{i}].help",
                hint="keep the summary to one line; long help belongs in the Click command",
            )
    for i, event in enumerate(m.activation):
        kind, sep, arg = event.partition(":")
        ok = kind in ACTIVATION_KINDS and (bool(arg) == (kind != "startup"))
        if not ok or (kind != "startup" and not sep):
            raise ManifestError(
                path,
                f"'{event}' is not a valid activation event",
                field=f"activation[{i}]",
                hint="use one of command:NAME, startup, env:VAR[=VALUE], file:GLOB, "
                "event:HOOK, service:NAME",
            )
    for i, cap in enumerate(m.capabilities):
        try:
            parse(cap)
        except CapabilityError as exc:
            raise ManifestError(
                path, exc.message, field=f"capabilities[{i}]", hint=exc.hint
            ) from None
    for i, req in enumerate(m.requires.plugins):
        _check_requirement(path, f"requires.plugins[{i}]", req)
    for section, values in (
        ("provides.services", m.provides.services),
        ("requires.services", m.requires.services),
        ("provides.hooks", m.provides.hooks),
    ):
        for i, value in enumerate(values):
            if section == "provides.hooks" and not value.isidentifier():
                raise ManifestError(
                    path,
                    f"'{value}' is not a valid hook name",
                    field=f"{section}[{i}]",
                    hint="a hook is named by its hookspec function: use a Python identifier",
                )
            if not _SERVICE_RE.match(value):
                raise ManifestError(
                    path,
                    f"'{value}' is not a valid name",
                    field=f"{section}[{i}]",
                    hint="use lowercase letters, digits, '.', '-' and '_'",
                )
    for i, dep in enumerate(m.dependencies):
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            Requirement(dep)
        except InvalidRequirement as exc:
            raise ManifestError(
                path,
                f"'{dep}' is not a valid requirement ({exc})",
                field=f"dependencies[{i}]",
                hint="write a PEP 508 requirement such as 'rich>=13'",
            ) from None
    if m.name is None:
        m = msgspec.structs.replace(m, name=name)
    return m


def parse_manifest(
    data: dict[str, Any], path: str, *, expected_name: str | None = None
) -> Manifest:
    """Validate already-parsed manifest data; ``path`` is used in error messages."""
    try:
        manifest = msgspec.convert(data, Manifest)
    except msgspec.ValidationError as exc:
        raise _translate(path, exc) from None
    return _validate(path, manifest, expected_name=expected_name)


def loads_toml(text: str, path: str, line_offset: int = 0) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        if line_offset:
            msg = re.sub(r"line (\d+)", lambda m: f"line {int(m.group(1)) + line_offset}", msg)
        raise ManifestError(
            path, f"invalid TOML: {msg}", hint="fix the TOML syntax at that line"
        ) from None


def read_manifest_file(path: str, *, expected_name: str | None = None) -> Manifest:
    """Read and validate a ``conduit-plugin.toml`` file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ManifestError(
            path, f"cannot read manifest: {exc.strerror}", hint="check that the file exists"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(path, "manifest is not UTF-8", hint="save it as UTF-8") from None
    return parse_manifest(loads_toml(text, path), path, expected_name=expected_name)


def _inline_blocks(source: str) -> dict[str, tuple[str, int]]:
    blocks: dict[str, tuple[str, int]] = {}
    for match in INLINE_RE.finditer(source):
        kind = match.group("type")
        lines = match.group("content").splitlines(keepends=True)
        content = "".join(line[2:] if line.startswith("# ") else line[1:] for line in lines)
        first_line = source.count("\n", 0, match.start()) + 2
        blocks.setdefault(kind, (content, first_line - 1))
    return blocks


def parse_inline_manifest(source: str, path: str) -> Manifest | None:
    """Return the manifest of a single-file plugin, or None if it has no conduit block.

    Dependencies may also come from a standard PEP 723 ``# /// script`` block; both
    lists are merged.
    """
    blocks = _inline_blocks(source)
    if "conduit" not in blocks:
        return None
    content, offset = blocks["conduit"]
    data = loads_toml(content, path, line_offset=offset)
    if "script" in blocks:
        script = loads_toml(blocks["script"][0], path, line_offset=blocks["script"][1])
        deps = script.get("dependencies", [])
        if isinstance(deps, list) and deps:
            data.setdefault("dependencies", [])
            if isinstance(data["dependencies"], list):
                data["dependencies"] = [*data["dependencies"], *deps]
    return parse_manifest(data, path)


def is_wasm_source(path: str) -> bool:
    """A source directory of ``conduit plugins build``: ``conduit-plugin.toml`` and
    ``app.py`` or ``plugin.wasm``, and no Python project (``pyproject.toml``/``setup.py``)."""

    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(path, name))

    return (
        os.path.isdir(path)
        and has(MANIFEST_FILENAME)
        and not (has("pyproject.toml") or has("setup.py"))
        and (has("app.py") or has("plugin.wasm"))
    )

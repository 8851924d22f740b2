"""Shapes of the plain-data plugin index, for the type checker only.

The index is stored with :mod:`marshal` and read back as plain dicts and lists, because
the start-up path cannot afford to import msgspec or typing (see docs/performance.md).
Never import this module at run time: ``if TYPE_CHECKING: from conduit.indexer.records import ...``.
"""

from __future__ import annotations

from typing import TypedDict


class CommandRec(TypedDict):
    name: str
    help: str
    usage: str
    hidden: bool


class ProvidesRec(TypedDict):
    services: list[str]
    hooks: list[str]


class RequiresRec(TypedDict):
    plugins: list[str]
    services: list[str]


class WithheldRec(TypedDict):
    """Grants in the config under a plugin's name that are not applied to it."""

    granted_to: str | None  # the identity they were given to; None: unbound, name contested
    grants: list[str]


class PluginRec(TypedDict):
    name: str
    version: str | None
    description: str
    source: str  # "builtin" | "entry-point" | "file" | "wasm" | "executable"
    origin: str  # the manifest file (or the single-file plugin)
    dist: str | None
    entry: str | None  # "module:object", a single file's object name, or the .wasm path
    api: str
    commands: list[CommandRec]
    activation: list[str]
    provides: ProvidesRec
    requires: RequiresRec
    capabilities: list[str]
    isolation: str
    dependencies: list[str]
    protocol: str  # "python"; executables: "jsonrpc" (speaks docs/protocol.md) or "exec"
    enabled: bool
    blocked: str | None  # why resolution refuses to activate it, or None
    blocked_hint: str | None
    after: list[str]  # plugins to activate first (its resolved requirements)
    # What binds grants to it (conduit.security.grants): "builtin", "entry-point:DIST",
    # "file:PATH", "wasm:sha256:HEX" or "executable:PATH"
    identity: str
    shadowed: list[str]  # identities of other plugins claiming its name (they lost)
    withheld: WithheldRec | None  # grants under its name given to another identity
    # Conduit's own plugin (conduit_plugins, distribution conduit-devtool): what it
    # declares is granted by default, and still enforced by its host
    first_party: bool


class BrokenRec(TypedDict):
    name: str
    source: str
    origin: str
    error: str
    hint: str | None
    disabled: bool  # the user disabled it in the config: no warning then


class Events(TypedDict):
    """Activation events by kind, so evaluating them never walks every plugin."""

    startup: list[str]
    env: list[tuple[str, str, str | None]]  # (plugin, VAR, VALUE or None for "is set")
    file: list[tuple[str, str]]  # (plugin, GLOB)
    command: dict[str, list[str]]  # command name -> plugins
    event: dict[str, list[str]]  # hook name -> plugins
    service: dict[str, list[str]]  # service name -> plugins


class Index(TypedDict):
    format: int
    fingerprint: tuple[object, ...]
    conduit: str
    plugins: dict[str, PluginRec]
    broken: list[BrokenRec]
    routes: dict[str, list[str]]
    pins: dict[str, str]
    warnings: list[str]
    events: Events
    services: dict[str, str]  # service -> the provider that resolution chose
    ambiguous: dict[str, list[str]]  # service -> providers, when no single one is chosen
    boot_order: list[str]
    config: dict[str, object]  # the validated config, as plain data
    help: str  # `conduit --help` when nothing is disabled for this run only
    # Small summaries for the start-up path, so it never decodes every plugin record:
    usable: list[str]  # enabled and not blocked
    builtins: list[str]
    blocked: dict[str, tuple[str, str | None]]  # enabled but blocked: (error, hint)
    # marshal of plugin -> its top-level words -> help lines (decoded only when used)
    commands: bytes
    # completion answers for a run that disables nothing: "words", "scoped", "names"
    complete: dict[str, str]
    # the config file's error (path or path:line, message, hint): the index was built
    # with the defaults and the CLI runs only `--help`, `config` and `plugins doctor`
    config_error: tuple[str, str, str | None] | None

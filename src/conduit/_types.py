"""Shapes of the plain-data plugin index, for the type checker only.

The index is stored with :mod:`marshal` and read back as plain dicts and lists, because
the start-up path cannot afford to import msgspec or typing (see docs/performance.md).
Never import this module at run time: ``if TYPE_CHECKING: from conduit._types import ...``.
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


class PluginRec(TypedDict):
    name: str
    version: str | None
    description: str
    source: str  # "builtin" | "entry-point" | "file"
    origin: str  # the manifest file (or the single-file plugin)
    dist: str | None
    entry: str | None  # "module:object" or, for single files, the object name
    api: str
    commands: list[CommandRec]
    activation: list[str]
    provides: ProvidesRec
    requires: RequiresRec
    capabilities: list[str]
    isolation: str
    dependencies: list[str]
    enabled: bool


class BrokenRec(TypedDict):
    name: str
    source: str
    origin: str
    error: str
    hint: str | None


class Index(TypedDict):
    format: int
    fingerprint: tuple[object, ...]
    conduit: str
    plugins: dict[str, PluginRec]
    broken: list[BrokenRec]
    routes: dict[str, list[str]]
    pins: dict[str, str]
    warnings: list[str]

"""A Click command tree as plain data: the parameters `conduit mcp` turns into tool schemas.

Run in the plugin's own host (in-process, or the process sandbox's child) when a command
is given the single argument ``conduit.hosts.inprocess.DESCRIBE_ARG``
(``InProcessHost.run_command``): the command is not invoked, its tree is printed as one
JSON document instead. The MCP server
runs that in a ``conduit`` child, once per plugin version, and caches the answer
(docs/architecture.md, "MCP tools"), so it never imports a plugin itself.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

__all__ = ["FORMAT", "describe", "dump"]

#: the version of the data below (the MCP server's cache key holds it)
FORMAT = 1


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    return False


def _type(param: click.Parameter) -> dict[str, Any]:
    kind = param.type
    out: dict[str, Any] = {"type": "string"}
    if isinstance(kind, click.Choice):
        out = {"type": "choice", "choices": [str(c) for c in kind.choices]}
    elif isinstance(kind, (click.types.IntParamType, click.IntRange)):
        out = {"type": "integer"}
    elif isinstance(kind, (click.types.FloatParamType, click.FloatRange)):
        out = {"type": "number"}
    elif isinstance(kind, click.types.BoolParamType):
        out = {"type": "boolean"}
    elif isinstance(kind, (click.Path, click.File)):
        out = {"type": "path"}
    if isinstance(kind, (click.IntRange, click.FloatRange)):
        if kind.min is not None:
            out["min"] = kind.min
            out["min_open"] = bool(kind.min_open)
        if kind.max is not None:
            out["max"] = kind.max
            out["max_open"] = bool(kind.max_open)
    return out


def _param(param: click.Parameter) -> dict[str, Any] | None:
    if param.expose_value is False or not param.name:
        return None
    option = param if isinstance(param, click.Option) else None
    if option is not None and (
        option.hidden or (option.is_eager and option.name in ("help", "version"))
    ):
        return None
    data: dict[str, Any] = {
        "name": param.name,
        "kind": "option" if option is not None else "argument",
        "opts": list(param.opts),
        "secondary_opts": list(param.secondary_opts),
        "required": bool(param.required),
        "multiple": bool(param.multiple),
        "nargs": param.nargs,
        **_type(param),
    }
    if option is not None:
        data["help"] = option.help or ""
        data["flag"] = bool(option.is_flag)
        data["count"] = bool(option.count)
    default = param.default
    if not callable(default) and _jsonable(default):
        data["default"] = list(default) if isinstance(default, tuple) else default
    return data


def describe(command: click.Command, path: str) -> list[dict[str, Any]]:
    """The leaf commands of ``command`` (named ``path``), each with its parameters."""
    if isinstance(command, click.Group):
        leaves = []
        ctx = click.Context(command, info_name=path)  # (a lazy group loads them for it)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                leaves += describe(sub, f"{path} {name}")
        return leaves
    params = [p for p in (_param(p) for p in command.params) if p is not None]
    help_text = (command.help or command.short_help or "").strip()
    return [{"name": path, "help": help_text, "params": params}]


def dump(command: click.Command, path: str) -> str:
    """:func:`describe` as the JSON document the host prints."""
    return json.dumps({"format": FORMAT, "commands": describe(command, path)})

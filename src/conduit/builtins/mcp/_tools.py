"""What `conduit mcp` exposes, as data: the chosen commands, their parameters, their tool
schemas, and the command line of a call. No MCP SDK here (that is ``_server``), and never a
plugin's code: parameters come from each plugin's own host, in a ``conduit`` child
(``conduit PLUGIN:WORD --conduit-describe-parameters``, conduit.hosts.describe), cached in
``CACHE/mcp/`` under a key of the plugin's index record and its file's stat.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conduit import __version__
from conduit.errors import ConduitError
from conduit.hosts.inprocess import DESCRIBE_ARG
from conduit.paths import Paths, conduit_argv, stable_hash
from conduit.text import inert

if TYPE_CHECKING:
    from conduit.indexer.records import Index, PluginRec

__all__ = [
    "GENERIC_SCHEMA",
    "Catalog",
    "Settings",
    "Tool",
    "argv_for",
    "child_env",
    "clean",
    "error_line",
    "host_of",
    "load_tools",
    "schema_for",
    "select",
]

#: the version of the cached parameter data (conduit.hosts.describe.FORMAT)
_PARAMS_FORMAT = 1
#: seconds a plugin's host may take to describe its commands (not a call: no timeout-seconds)
DESCRIBE_TIMEOUT = 60.0
#: the built-ins never exposed as a whole plugin (config validation says so too)
NEVER_WHOLE = ("plugins", "config")
#: a tool without parameter data (WebAssembly, executables, or a plugin whose host could
#: not describe it): its command line after the command's words
GENERIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "args": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the command's arguments, as on the command line",
        }
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Settings:
    """``[mcp]`` as the index holds it."""

    expose: list[str]
    sandbox: bool
    timeout: float

    @classmethod
    def of(cls, config: dict[str, Any]) -> Settings:
        table = config.get("mcp")
        mcp: dict[str, Any] = table if isinstance(table, dict) else {}
        return cls(
            expose=list(mcp.get("expose", [])),
            sandbox=bool(mcp.get("sandbox", False)),
            timeout=float(mcp.get("timeout-seconds", 60.0)),
        )


@dataclass
class Tool:
    """One exposed leaf command."""

    name: str  # the tool's name: the command's words joined by "_"
    command: str  # "repos status"
    plugin: str
    description: str
    schema: dict[str, Any]
    params: list[dict[str, Any]] | None  # None: the generic schema (``args``)
    note: str = ""  # why there is no parameter data
    grants: list[str] = field(default_factory=list)


# -- which commands ------------------------------------------------------------------------
def select(index: Index, expose: list[str]) -> list[tuple[str, str, str]]:
    """``(plugin, top-level word, prefix)`` for each ``[mcp] expose`` entry: every command
    of a plugin (prefix ``""``), or one command or group (prefix: its full name). An entry
    that names nothing usable is one clear error."""
    from conduit.errors import did_you_mean

    usable = set(index["usable"])
    chosen: list[tuple[str, str, str]] = []
    for i, entry in enumerate(expose):
        where = f"config [mcp] expose[{i}]"
        word = entry.split(" ")[0]
        if entry == "mcp" or word == "mcp":
            raise ConduitError(f"{where}: 'mcp' cannot expose itself", hint="remove the entry")
        if entry in NEVER_WHOLE:
            raise ConduitError(
                f"{where}: '{entry}' is never exposed whole",
                hint=f"list the commands you mean by their full names, e.g. '{entry} list'",
            )
        if " " not in entry and entry in index["plugins"] and entry not in index["routes"]:
            if entry not in usable:
                raise ConduitError(
                    f"{where}: plugin '{inert(entry)}' is disabled or blocked",
                    hint="see 'conduit plugins list'",
                )
            rec = index["plugins"][entry]
            words = sorted({c["name"].split(" ")[0] for c in rec["commands"] if not c["hidden"]})
            chosen += [(entry, w, "") for w in words]
            continue
        claimants = [p for p in index["routes"].get(word, ()) if p in usable]
        if not claimants:
            names = [*index["routes"], *(n for n in index["plugins"] if n in usable)]
            guess = did_you_mean(word, names)
            raise ConduitError(
                f"{where}: '{inert(entry)}' is neither a plugin nor a command",
                hint=f"did you mean '{guess}'?" if guess else "see 'conduit --help'",
            )
        plugin = claimants[0]
        if plugin in NEVER_WHOLE and entry == word:
            raise ConduitError(
                f"{where}: '{entry}' is never exposed whole",
                hint=f"list the commands you mean by their full names, e.g. '{entry} list'",
            )
        chosen.append((plugin, word, entry if entry != word else ""))
    return chosen


# -- parameter data ------------------------------------------------------------------------
def child_env(settings: Settings) -> dict[str, str]:
    """The environment of every ``conduit`` child: this one's, cold (a killed call must
    end its command: the warm kernel's client cannot relay SIGKILL), no colour, and the
    process sandbox for every plugin under ``[mcp] sandbox`` (cli.py ``CONDUIT_SANDBOX``)."""
    env = dict(os.environ)
    env["CONDUIT_WARM"] = "0"
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR", None)
    env.pop("CONDUIT_SANDBOX", None)
    if settings.sandbox:
        env["CONDUIT_SANDBOX"] = "1"
    return env


def _cache_key(rec: PluginRec, word: str, sandbox: bool) -> str:
    try:
        st = os.stat(rec["origin"])
        stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None
    parts = (
        _PARAMS_FORMAT,
        __version__,
        sandbox,
        word,
        rec["name"],
        rec["version"],
        rec["source"],
        rec["origin"],
        rec["entry"],
        rec["identity"],
        rec["isolation"],
        stamp,
    )
    return stable_hash(repr(parts))


def _describe(plugin: str, word: str, settings: Settings) -> list[dict[str, Any]] | str:
    """The leaf commands of ``PLUGIN:WORD`` from its own host, or why not."""
    try:
        done = subprocess.run(
            conduit_argv(f"{plugin}:{word}", DESCRIBE_ARG),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=child_env(settings),
            timeout=DESCRIBE_TIMEOUT,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"describing its parameters took more than {DESCRIBE_TIMEOUT:g} s"
    if done.returncode != 0:
        return error_line(done.stderr.decode("utf-8", "replace"), done.returncode)
    for line in reversed(done.stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith('{"format"'):
            try:
                data = json.loads(line)
            except ValueError:
                break
            if data.get("format") == _PARAMS_FORMAT and isinstance(data.get("commands"), list):
                commands: list[dict[str, Any]] = data["commands"]
                return commands
    return "its host printed no parameter data"


def _parameters(
    index: Index, paths: Paths, chosen: list[tuple[str, str, str]], settings: Settings
) -> dict[tuple[str, str], list[dict[str, Any]] | str]:
    """Each chosen Python command's leaves (from the cache, or its host), or why not."""
    found: dict[tuple[str, str], list[dict[str, Any]] | str] = {}
    wanted: dict[tuple[str, str], str] = {}
    directory = os.path.join(paths.cache_dir, "mcp")
    for plugin, word, _ in chosen:
        rec = index["plugins"][plugin]
        if rec["source"] in ("wasm", "executable") or rec["isolation"] == "wasm":
            continue
        path = os.path.join(directory, f"params-{_cache_key(rec, word, settings.sandbox)}.json")
        try:
            with open(path, encoding="utf-8") as f:
                found[(plugin, word)] = json.load(f)
        except (OSError, ValueError):
            wanted[(plugin, word)] = path
    if wanted:
        with ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
            answers = dict(
                zip(
                    wanted,
                    pool.map(lambda key: _describe(key[0], key[1], settings), wanted),
                    strict=True,
                )
            )
        from conduit.fs import atomic_write

        os.makedirs(directory, exist_ok=True)
        for key, answer in answers.items():
            found[key] = answer
            if not isinstance(answer, str):
                atomic_write(wanted[key], json.dumps(answer).encode("utf-8"))
    return found


def load_tools(index: Index, paths: Paths, settings: Settings) -> list[Tool]:
    """The tools ``[mcp] expose`` names, with their schemas (children describe what the
    cache does not hold; this process imports no plugin)."""
    from conduit.security.grants import granted

    chosen = select(index, settings.expose)
    params = _parameters(index, paths, chosen, settings)
    tools: dict[str, Tool] = {}
    for plugin, word, prefix in chosen:
        rec = index["plugins"][plugin]
        grants = [str(c) for c in granted(index, plugin)]
        answer = params.get((plugin, word))
        if isinstance(answer, list):
            for leaf in _plain(answer):
                name = str(leaf["name"])
                if prefix and name != prefix and not name.startswith(prefix + " "):
                    continue
                leaf_params: list[dict[str, Any]] = leaf["params"]
                tools.setdefault(
                    name,
                    Tool(
                        name=_tool_name(name),
                        command=name,
                        plugin=plugin,
                        description=str(leaf["help"]) or f"conduit {name}",
                        schema=schema_for(leaf_params),
                        params=leaf_params,
                        grants=grants,
                    ),
                )
            continue
        note = answer if isinstance(answer, str) else ""
        helps = {c["name"]: (c["help"], c["usage"]) for c in rec["commands"]}
        names = [
            c["name"]
            for c in rec["commands"]
            if not c["hidden"]
            and c["name"].split(" ")[0] == word
            and not any(o["name"].startswith(c["name"] + " ") for o in rec["commands"])
            and (not prefix or c["name"] == prefix or c["name"].startswith(prefix + " "))
        ]
        if prefix and prefix not in names and not any(n.startswith(prefix) for n in names):
            names = [prefix]  # a subcommand the manifest does not list
        for name in names:
            help_text, usage = helps.get(name, ("", ""))
            description = clean(help_text or f"conduit {name}")
            if usage:
                description += f"\nUsage: conduit {clean(name)} {clean(usage)}"
            tools.setdefault(
                name,
                Tool(
                    name=_tool_name(name),
                    command=name,
                    plugin=plugin,
                    description=description,
                    schema=GENERIC_SCHEMA,
                    params=None,
                    note=note,
                    grants=grants,
                ),
            )
    return sorted(tools.values(), key=lambda t: t.command)


class Catalog:
    """The tools as the index has them now. Each ``tools/list`` and ``tools/call`` asks
    (:meth:`current`): the index is checked as every command checks it (its fingerprint),
    and the tools are made again when it changed, so that a running server follows an
    install, an uninstall, a grant or an edit of ``[mcp]``; a client sees them at its
    next ``tools/list``. When the new state is in error (a config that does not parse,
    an ``expose`` entry that names a plugin just removed), the server says why on its
    standard error and keeps the tools it had, less those of plugins no longer usable."""

    def __init__(self, index: Index, paths: Paths, settings: Settings) -> None:
        import threading

        self.paths = paths
        self.fingerprint = index["fingerprint"]
        self.settings = settings
        self.tools = load_tools(index, paths, settings)
        self.lock = threading.Lock()

    def current(self) -> tuple[list[Tool], Settings]:
        from conduit.indexer.build import load
        from conduit.timing import Profile

        with self.lock:
            try:
                index = load(self.paths, Profile(False))
            except ConduitError:  # (an unreadable plugin directory...): as it was
                return self.tools, self.settings
            if index["fingerprint"] == self.fingerprint:
                return self.tools, self.settings
            self.fingerprint = index["fingerprint"]
            try:
                if index["config_error"] is not None:
                    where, message, hint = index["config_error"]
                    raise ConduitError(f"{where}: {message}", hint=hint)
                settings = Settings.of(index["config"])
                self.tools = load_tools(index, self.paths, settings)
                self.settings = settings
            except ConduitError as exc:
                hint = f" ({exc.hint})" if exc.hint else ""
                sys.stderr.write(
                    f"conduit mcp: warning: {inert(exc.message)}{inert(hint)}; "
                    "the tools stay as they were\n"
                )
                sys.stderr.flush()
                usable = set(index["usable"])
                self.tools = [t for t in self.tools if t.plugin in usable]
            return self.tools, self.settings


def _plain(value: Any) -> Any:
    """Parameter data as a client may see it: every string of it (help, names, choices,
    defaults: a plugin's own text) through :func:`clean`."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def host_of(index: Index, plugin: str, settings: Settings) -> str:
    """Where a call of ``plugin`` runs, in words."""
    rec = index["plugins"][plugin]
    if rec["source"] == "executable":
        return "its own executable"
    if rec["isolation"] == "wasm":
        return "WebAssembly"
    if rec["isolation"] == "process":
        return "process sandbox"
    if settings.sandbox and rec["source"] in ("entry-point", "file"):
        return "process sandbox ([mcp] sandbox)"
    return "in-process"


def _tool_name(command: str) -> str:
    """A tool name MCP clients accept (letters, digits, ``_``, ``-``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", command.replace(" ", "_"))[:128]


# -- schemas -------------------------------------------------------------------------------
_SCALARS: dict[str, dict[str, Any]] = {
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "path": {"type": "string"},
    "string": {"type": "string"},
}


def _items(param: dict[str, Any]) -> dict[str, Any]:
    kind = param["type"]
    if kind == "choice":
        return {"type": "string", "enum": list(param["choices"])}
    out = dict(_SCALARS.get(kind, {"type": "string"}))
    for bound, key in (("min", "minimum"), ("max", "maximum")):
        if bound in param:
            open_ = param.get(f"{bound}_open")
            out[f"exclusive{key.capitalize()}" if open_ else key] = param[bound]
    return out


def _property(param: dict[str, Any]) -> dict[str, Any]:
    if param.get("flag"):
        prop: dict[str, Any] = {"type": "boolean"}
    elif param.get("count"):
        prop = {"type": "integer", "minimum": 0}
    elif param["multiple"] or param["nargs"] == -1:
        prop = {"type": "array", "items": _items(param)}
    elif param["nargs"] > 1:
        n = param["nargs"]
        prop = {"type": "array", "items": _items(param), "minItems": n, "maxItems": n}
    else:
        prop = _items(param)
    if param.get("help"):
        prop["description"] = param["help"]
    default = param.get("default")
    if default is not None and default != [] and not (param["nargs"] == -1 and default == []):
        prop["default"] = default
    return prop


def schema_for(params: list[dict[str, Any]]) -> dict[str, Any]:
    """The input JSON Schema of a command with these parameters (conduit.hosts.describe)."""
    properties = {p["name"]: _property(p) for p in params}
    required = [p["name"] for p in params if p["required"]]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


# -- calls ---------------------------------------------------------------------------------
def _text(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        text = str(value)
        if "\0" in text:  # no command line holds one
            raise ValueError(f"parameter '{name}': a value cannot contain a NUL character")
        return text
    raise ValueError(f"parameter '{name}': expected a single value, got {type(value).__name__}")


def _values(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"parameter '{name}': expected a list")
    return value


def _option(opts: list[str], value: str) -> list[str]:
    """One option and its value, so that the value is never read as anything else:
    ``--opt=VALUE``, else ``-oVALUE``; an empty value of a short option is a word of its
    own (``-o`` alone would take the next word, ``--`` say, as its value)."""
    long = [o for o in opts if o.startswith("--")]
    if long:
        return [f"{long[0]}={value}"]
    return [opts[0] + value] if value else [opts[0], value]


def argv_for(tool: Tool, arguments: dict[str, Any]) -> list[str]:
    """The command line after ``conduit`` for a call of ``tool`` with ``arguments``: the
    command's words, its options, then ``--`` and its arguments (so that no value is
    read as an option). A value of the wrong shape is a ``ValueError``."""
    plugin, _, rest = tool.command.partition(" ")
    head = [f"{tool.plugin}:{plugin}", *rest.split(" ")] if rest else [f"{tool.plugin}:{plugin}"]
    if tool.params is None:
        unknown = sorted(set(arguments) - {"args"})
        if unknown:
            raise ValueError(f"unknown parameter '{unknown[0]}' (this tool takes 'args')")
        args = arguments.get("args", [])
        return [*head, *(_text(a, "args") for a in _values(args, "args"))]
    names = {p["name"] for p in tool.params}
    unknown = sorted(set(arguments) - names)
    if unknown:
        taken = ", ".join(sorted(names)) or "none"
        raise ValueError(f"unknown parameter '{unknown[0]}' (parameters: {taken})")
    options: list[str] = []
    positional: list[str] = []
    for param in tool.params:
        name = param["name"]
        if name not in arguments or arguments[name] is None:
            continue
        value = arguments[name]
        if param["kind"] == "argument":
            if param["nargs"] == 1:
                positional.append(_text(value, name))
            else:
                positional += [_text(v, name) for v in _values(value, name)]
            continue
        opts: list[str] = param["opts"]
        if param.get("flag"):
            if not isinstance(value, bool):
                raise ValueError(f"parameter '{name}': expected true or false")
            if value and param["opts"]:
                options.append(opts[0])
            elif not value and param["secondary_opts"]:
                options.append(param["secondary_opts"][0])
        elif param.get("count"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"parameter '{name}': expected a count (0 or more)")
            options += [opts[0]] * value
        elif param["multiple"] or param["nargs"] != 1:
            items = _values(value, name) if param["multiple"] else [value]
            for item in items:
                if param["nargs"] != 1:
                    options += [opts[0], *(_text(v, name) for v in _values(item, name))]
                else:
                    options += _option(opts, _text(item, name))
        else:
            options += _option(opts, _text(value, name))
    return [*head, *options, *(["--", *positional] if positional else [])]


_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")


def clean(text: str) -> str:
    """A plugin's output for a client: terminal control sequences removed, every other
    unsafe character escaped visibly (conduit.text.inert); lines and tabs stay."""
    text = _ESCAPES.sub("", text.replace("\r\n", "\n"))
    return "\n".join("\t".join(inert(p) for p in line.split("\t")) for line in text.split("\n"))


def error_line(stderr: str, code: int) -> str:
    """The one-line error of a failed ``conduit`` child: its ``error:`` line (with its
    hint), else its last line, else its exit status."""
    lines = [clean(line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    for i, line in enumerate(lines):
        if line.startswith("error: "):
            message = line.removeprefix("error: ")
            after = lines[i + 1] if i + 1 < len(lines) else ""
            if after.startswith("hint: "):
                message += f" ({after})"
            return message
    if lines:
        return lines[-1]
    return f"the command failed (exit status {code})"

"""The user's config file: reading it strictly, changing it without losing anything.

``config.toml`` is read when the plugin index is rebuilt (its effective settings are
baked into the index, so the start-up path never parses TOML). It is written with
tomlkit, which keeps the user's comments and layout, atomically and under a file lock.
A config that cannot be parsed is reported, never overwritten.

Layout::

    [plugins]
    disabled = ["some-plugin"]     # third-party plugins switched off

    [pins]
    deploy = "fancy-deploy"        # who wins a command claimed by several plugins
    "service:vcs" = "git-tools"    # who provides a service offered by several plugins

    [plugin.git-tools]             # free-form settings of one plugin (ctx.config)
    default-remote = "origin"

    [process]                      # out-of-process plugin hosts
    timeout = 30                   # seconds for a call (0 = none for commands below)
    command-timeout = 0
    memory-mb = 2048               # address space (RLIMIT_AS) of each host, 0 = unlimited
    max-processes = 512            # processes and threads of a Python host, 0 = unlimited
    max-file-mb = 4096             # largest file a host may write (RLIMIT_FSIZE), 0 = unlimited
    executable-memory-mb = 0       # address space of a conduit-NAME executable, 0 = unlimited
    codec = "json"                 # or "msgpack"

    [isolation]                    # force plugins into a stricter host
    some-plugin = "process"

    [security]                     # where third-party plugins run by default
    sandbox-third-party = false    # true: in-process plugins run in the process sandbox
    trusted = ["my-tool"]          # ... except these (built-ins always stay in-process)

    [grants]                       # capabilities the user granted, per plugin
    git-tools = ["filesystem:read:~/src", "process:execute:git"]

    [dependencies]                 # single-file plugins' inline dependencies
    allow-build = ["my-tool"]      # may build sdists and install URL/path requirements

    [dependencies.consented]       # the lists the user agreed to install, per plugin
    my-tool = ["httpx", "rich>=13"]
    [granted-to]                   # which plugin each grant was given to (Conduit writes it)
    git-tools = "entry-point:git-tools"

    [store]                        # `conduit plugins install` and friends
    installer = "auto"             # "uv", "pip", or "auto" (uv when found, else pip)
    index-url = "https://pypi.org/simple"   # default: the installer's own default
    extra-index-url = []
    find-links = []
    catalog = "https://example.org/conduit-catalog.json"   # for `plugins search`

    [wasm]                         # WebAssembly plugins (docs/wasm.md)
    timeout = 10                   # wall-clock seconds per command, 0 = none
    memory-mb = 256                # linear memory per command
    fuel = 0                       # metered instructions per command, 0 = not metered
    cache-mb = 512                 # compiled-artifact cache cap, least recently used pruned

    [journal]                      # the run journal (conduit.runlog; plugins list/stats)
    enabled = true                 # false: record nothing
    max-kb = 1024                  # its size on disk, both generations together

    [kernel]                       # the warm kernel (conduit.warm; docs/warm-kernel.md)
    warm = "auto"                  # "auto": use it, start it when missing; "off": never
    idle-minutes = 30              # the server exits after this long without a command

    [mcp]                          # `conduit mcp`: commands as MCP tools (opt-in)
    expose = ["repos status", "know"]   # plugins or commands; `plugins`/`config` by full name only
    sandbox = false                # true: every exposed plugin runs in the process sandbox
    timeout-seconds = 60           # per tool call; the call's process group is killed after it
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from conduit.errors import ConfigError
from conduit.fs import atomic_write, locked

__all__ = [
    "FIX_HINT",
    "IDENTITY_SOURCES",
    "DependencySettings",
    "JournalSettings",
    "KernelSettings",
    "McpSettings",
    "PluginSettings",
    "SecuritySettings",
    "Settings",
    "StoreSettings",
    "check",
    "check_identity",
    "read_data",
    "read_settings",
    "schema_at",
    "unknown_key",
    "update_config",
    "validate",
]

#: the kinds of plugin identity a grant can be bound to (``[granted-to]``), as
#: ``KIND:ORIGIN``: a distribution's normalised name, a file's or an executable's
#: absolute path, a WebAssembly module's ``sha256:HEX``
IDENTITY_SOURCES = ("entry-point", "file", "wasm", "executable")


class PluginSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``[plugins]``: which plugins are switched off."""

    disabled: list[str] = []


class ProcessSettings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """``[process]``: how out-of-process plugin hosts are run."""

    timeout: float = 30.0  # seconds for any call but a command
    command_timeout: float = 0.0  # seconds for a command; 0 = no limit
    #: RLIMIT_AS of each host in MiB; 0 = no limit (see docs/permissions-process.md#limits)
    memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 2048
    #: processes and threads a Python host and the programs it runs may have at once
    #: (RLIMIT_NPROC in the host's own user namespace); 0 = no limit
    max_processes: Annotated[int, msgspec.Meta(ge=0)] = 512
    #: RLIMIT_FSIZE of each host in MiB: the largest file it may write; 0 = no limit
    max_file_mb: Annotated[int, msgspec.Meta(ge=0)] = 4096
    #: RLIMIT_AS of each executable speaking the protocol, in MiB; 0 (the default) = none:
    #: runtimes such as the JVM and Node.js reserve far more address space than they use
    executable_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    codec: Literal["json", "msgpack"] = "json"
    max_frame_mb: int = 16
    cancel_grace: float = 2.0  # seconds a cancelled request may take before a kill
    #: process plugins the user trusts to share one host (fewer processes, shared fate)
    shared: list[str] = []


class StoreSettings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """``[store]``: how plugin distributions are installed (see conduit.store)."""

    installer: Literal["auto", "uv", "pip"] = "auto"
    index_url: str | None = None
    extra_index_url: list[str] = []
    find_links: list[str] = []
    #: URL (https://, http://, file://) of a JSON catalog for `plugins search`
    catalog: str | None = None
    #: seconds a downloaded catalog is reused before it is fetched again
    catalog_max_age: float = 3600.0


class DependencySettings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """``[dependencies]``: what the user allowed for plugins' inline dependencies
    (conduit.store.envs; docs/permissions.md#dependencies)."""

    #: plugin -> the dependency list the user agreed to install (sorted); asked again
    #: when the plugin's list differs
    consented: dict[str, list[str]] = {}
    #: plugins whose dependencies may be built from source (sdists run their build code
    #: with the user's rights) and may be URL or path requirements
    allow_build: list[str] = []


class WasmSettings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """``[wasm]``: limits of WebAssembly plugins (read by conduit.hosts.wasm)."""

    timeout: Annotated[float, msgspec.Meta(ge=0)] = 10.0  # 0 = none
    memory_mb: Annotated[int, msgspec.Meta(ge=1)] = 256
    fuel: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0 = not metered
    max_stack_kb: Annotated[int, msgspec.Meta(ge=16)] = 512
    http_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: the compiled-artifact cache's size cap; the least recently used go first
    cache_mb: Annotated[int, msgspec.Meta(ge=1)] = 512


class JournalSettings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """``[journal]``: the run journal (conduit.runlog), read by ``plugins list``,
    ``info``, ``doctor`` and ``stats``."""

    enabled: bool = True
    #: the journal's size on disk in KiB, both generations together (the older half is
    #: dropped when the newer one fills)
    max_kb: Annotated[int, msgspec.Meta(ge=16)] = 1024


class KernelSettings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """``[kernel]``: the warm kernel (conduit.warm). ``CONDUIT_WARM=0/1`` overrides
    ``warm`` for one command."""

    warm: Literal["auto", "off"] = "auto"
    idle_minutes: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class McpSettings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """``[mcp]``: what ``conduit mcp`` offers an MCP client (conduit.builtins.mcp)."""

    #: plugin names or command names (``"repos status"``) whose commands become tools
    expose: list[str] = []
    #: run every plugin of a tool call in the process sandbox (WebAssembly stays there)
    sandbox: bool = False
    #: wall-clock seconds of one tool call
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0


class SecuritySettings(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, rename="kebab"
):
    """``[security]``: where third-party plugins run unless their manifest or
    ``[isolation]`` says otherwise (docs/permissions.md#trust-model)."""

    #: run every third-party in-process plugin in the process sandbox, on platforms
    #: that have one (Linux); built-ins and the ``trusted`` plugins stay in-process
    sandbox_third_party: bool = False
    #: plugins the user trusts to stay in-process under ``sandbox-third-party``
    trusted: list[str] = []


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The whole config file, validated."""

    plugins: PluginSettings = PluginSettings()
    pins: dict[str, str] = {}
    plugin: dict[str, dict[str, Any]] = {}
    process: ProcessSettings = ProcessSettings()
    #: plugin -> the stricter host the user forces it into ("process" or "wasm")
    isolation: dict[str, Literal["process", "wasm"]] = {}
    #: plugin -> the capabilities the user granted it (conduit.security.capabilities)
    grants: dict[str, list[str]] = {}
    #: plugin -> the identity its grants were given to (conduit.security.grants)
    granted_to: dict[str, str] = msgspec.field(default_factory=dict, name="granted-to")
    security: SecuritySettings = SecuritySettings()
    store: StoreSettings = StoreSettings()
    #: consent to install plugins' inline dependencies, and who may build them
    dependencies: DependencySettings = DependencySettings()
    wasm: WasmSettings = WasmSettings()
    journal: JournalSettings = JournalSettings()
    kernel: KernelSettings = KernelSettings()
    mcp: McpSettings = McpSettings()


#: the hint of every error in the config file: an installed Conduit has no docs folder
FIX_HINT = "fix it with 'conduit config edit'; 'conduit config validate' checks it"


def _parse(path: str, raw: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not UTF-8 text ({exc.reason})", hint=FIX_HINT) from None
    except tomllib.TOMLDecodeError as exc:
        problem = str(exc)
        where = path
        at = re.search(r"\(at line (\d+), (column \d+)\)$", problem)
        if at:  # "... (at line 3, column 9)" becomes "path:3: ... (column 9)"
            where = f"{path}:{at.group(1)}"
            problem = f"{problem[: at.start()]}({at.group(2)})"
        raise ConfigError(
            where,
            f"invalid TOML: {problem[:1].lower()}{problem[1:]}",
            hint=f"{FIX_HINT} (Conduit never overwrites a config it cannot read)",
        ) from None


def read_settings(path: str) -> Settings:
    """Read and validate the config file; a missing file means the defaults."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from None
    return check(path, raw)


def check(path: str, raw: bytes) -> Settings:
    """``raw``, the text of the config file at ``path``, parsed and validated."""
    return validate(path, _parse(path, raw), raw.decode("utf-8"))


def read_data(path: str) -> dict[str, Any]:
    """The config file as plain data, valid or not (a missing file: empty)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from None
    return _parse(path, raw)


def validate(path: str, data: dict[str, Any], text: str | None = None, hint: str = "") -> Settings:
    """``data`` (the parsed config) as :class:`Settings`, or a :class:`ConfigError` in plain
    words: ``unknown key 'disabeld' in [plugins] (did you mean 'disabled'?)``, with the
    line of ``text`` (the file's text) it is on when it can be found."""
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        keys, problem = _explain(data, str(exc))
        line = _line_of(text, keys) if text is not None else None
        raise ConfigError(
            f"{path}:{line}" if line else path, problem, hint=hint or FIX_HINT
        ) from None
    try:
        _check_grants(path, settings)
        _check_process(path, settings)
        _check_dependencies(path, settings)
        _check_identities(path, settings)
        _check_mcp(path, settings)
    except ConfigError as exc:
        message = exc.message.removeprefix(f"{path}: ")
        dotted = message.partition(": ")[0]  # "grants.alpha[1]: ..." names where
        line = _line_of(text, re.findall(r"[^.\[]+|\[\d+\]", dotted)) if text else None
        raise ConfigError(
            f"{path}:{line}" if line else path, message, hint=hint or exc.hint
        ) from None
    return settings


def _strip(tp: Any) -> Any:
    """The type under ``Annotated[...]`` and ``X | None``."""
    import types
    import typing

    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def schema_at(keys: list[str]) -> tuple[Any, list[str] | None]:
    """The schema type at the dotted ``keys`` and the keys allowed below it (None for a
    table with free-form keys or a value). Raises ``KeyError(i)`` when ``keys[i]`` is not
    a key of its table."""
    import typing

    tp: Any = Settings
    for i, key in enumerate(keys):
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            found = {f.encode_name: f.type for f in msgspec.structs.fields(tp)}
            if key not in found:
                raise KeyError(i)
            tp = found[key]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif tp is Any:
            return Any, None
        else:
            raise KeyError(i)
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp, [f.encode_name for f in msgspec.structs.fields(tp)]
    return tp, None


def unknown_key(keys: list[str], i: int) -> str:
    """``unknown key 'disabeld' in [plugins] (did you mean 'disabled'?)``."""
    from conduit.errors import did_you_mean

    _, allowed = schema_at(keys[:i])
    where = f" in [{'.'.join(keys[:i])}]" if i else ""
    guess = did_you_mean(keys[i], allowed or [])
    return f"unknown key '{keys[i]}'{where}" + (f" (did you mean '{guess}'?)" if guess else "")


def _explain(data: dict[str, Any], message: str) -> tuple[list[str], str]:
    """The dotted keys and plain words of msgspec's ``message`` about ``data``."""
    problem, _, at = message.partition(" - at `$")
    keys: list[str] = []
    node: Any = data
    for part in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", at.rstrip("`")):
        name, index = part
        if name:
            keys.append(name)
            node = node.get(name) if isinstance(node, dict) else None
        elif index == "..." and isinstance(node, dict):
            # msgspec does not name the dict key; find the entry that does not convert
            tp, _ = schema_at([*keys, "*"])
            bad = next((k for k, v in node.items() if not _converts(v, tp)), None)
            if bad is None:
                break
            keys.append(bad)
            node = node[bad]
        elif index.isdigit() and isinstance(node, list):
            keys.append(f"[{index}]")
            node = node[int(index)] if int(index) < len(node) else None
    unknown = re.match(r"Object contains unknown field `(.*)`$", problem)
    if unknown:
        keys.append(unknown.group(1))
        return keys, unknown_key(keys, len(keys) - 1)
    problem = re.sub(r"`(\w+)`", lambda m: _WORDS.get(m.group(1), f"'{m.group(1)}'"), problem)
    problem = problem[:1].lower() + problem[1:]
    dotted = ".".join(keys).replace(".[", "[")
    return keys, f"{dotted}: {problem}" if dotted else problem


#: msgspec's type names in words
_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
    "null": "nothing",
}


def _converts(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError:
        return False
    return True


def _line_of(text: str, keys: list[str]) -> int | None:
    """The line of ``text`` that sets the dotted ``keys`` (or opens their table), if a
    plain reading of TOML finds it."""
    want = [k for k in keys if not k.startswith("[")]

    def split(dotted: str) -> list[str]:
        return [p.strip().strip("\"'") for p in dotted.split(".")]

    table: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            table = split(stripped.strip("[]").partition("]")[0].partition("#")[0])
            if table == want:
                return number
        elif "=" in stripped and not stripped.startswith("#"):
            key = split(stripped.partition("=")[0])
            if table + key == want:
                return number
    return None


#: the least ``[process] max-processes`` may be (0 aside): the host's own thread, the
#: proxy's forwarder thread, and a program or two it runs
MIN_PROCESSES = 8


def _check_process(path: str, settings: Settings) -> None:
    count = settings.process.max_processes
    if 0 < count < MIN_PROCESSES:
        raise ConfigError(
            path,
            f"process.max-processes: {count} is too few for a plugin host to work",
            hint=f"use at least {MIN_PROCESSES}, or 0 for no limit",
        )


def _check_grants(path: str, settings: Settings) -> None:
    from conduit.security.capabilities import CapabilityError, parse
    from conduit.text import inert, unsafe_char

    for plugin, caps in settings.grants.items():
        bad = unsafe_char(plugin)
        if bad is not None:
            raise ConfigError(
                path,
                f"grants: '{inert(plugin)}' contains the control character {bad}",
                hint="remove it: a plugin name is plain text",
            )
        for i, cap in enumerate(caps):
            try:
                parse(cap)
            except CapabilityError as exc:
                raise ConfigError(
                    path, f"grants.{plugin}[{i}]: {exc.message}", hint=exc.hint
                ) from None


def _check_dependencies(path: str, settings: Settings) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    for plugin, deps in settings.dependencies.consented.items():
        for i, dep in enumerate(deps):
            try:
                Requirement(dep)
            except InvalidRequirement as exc:
                raise ConfigError(
                    path,
                    f"dependencies.consented.{plugin}[{i}]: {dep!r} is not a valid "
                    f"requirement ({exc})",
                    hint=f"remove the entry; 'conduit plugins grant {plugin} --dependencies' "
                    "writes it again",
                ) from None


def check_identity(value: str) -> str | None:
    """Why ``value`` is not a plugin identity (``[granted-to]``), or None when it is one."""
    kind, sep, origin = value.partition(":")
    if not sep or kind not in IDENTITY_SOURCES or not origin:
        return f"write KIND:ORIGIN with KIND one of {', '.join(IDENTITY_SOURCES)}"
    from conduit.text import unsafe_char

    bad = unsafe_char(value)
    if bad is not None:
        return f"it contains the control character {bad}"
    if kind in ("file", "executable") and not os.path.isabs(origin):
        return f"a {kind} identity is an absolute path"
    if kind == "wasm":
        algo, _, digest = origin.partition(":")
        if algo != "sha256" or len(digest) != 64 or digest.strip("0123456789abcdef"):
            return "a wasm identity is sha256:HEX (the module's hash)"
    return None


def _check_identities(path: str, settings: Settings) -> None:
    for plugin, value in settings.granted_to.items():
        problem = check_identity(value)
        if problem is not None:
            raise ConfigError(
                path,
                f"granted-to.{plugin}: {value!r} is not a plugin identity: {problem}",
                hint="Conduit writes this table when you grant; delete the entry and the "
                "grants are bound again on their next use (docs/permissions.md#identity)",
            )


def _check_mcp(path: str, settings: Settings) -> None:
    from conduit.text import inert, unsafe_char

    for i, entry in enumerate(settings.mcp.expose):
        words = entry.split(" ")
        bad = unsafe_char(entry)
        if bad is not None:
            raise ConfigError(
                path,
                f"mcp.expose[{i}]: '{inert(entry)}' contains the control character {bad}",
                hint="remove it: a plugin or command name is plain text",
            )
        if not entry or "" in words or ":" in entry:
            raise ConfigError(
                path,
                f"mcp.expose[{i}]: {entry!r} is not a plugin or command name",
                hint='write a plugin name ("know") or a command with single spaces '
                '("repos status")',
            )
        if entry in ("plugins", "config"):
            raise ConfigError(
                path,
                f"mcp.expose[{i}]: '{entry}' is never exposed whole (it manages Conduit itself)",
                hint=f"list the commands you mean by their full names, e.g. '{entry} list'"
                if entry == "plugins"
                else "list the commands you mean by their full names, e.g. 'config get'",
            )


def update_config(path: str, change: Callable[[Any], None]) -> None:
    """Apply ``change`` to the parsed config document and write it back atomically.

    ``change`` receives a tomlkit document (a mutable mapping that keeps comments).
    The result is validated before it is written, so a bad change never lands.
    """
    import tomlkit

    with locked(path):
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = b""
        except OSError as exc:
            raise ConfigError(path, f"cannot read: {exc.strerror}") from None
        _parse(path, raw)  # refuse to touch a file we cannot read back
        doc = tomlkit.parse(raw.decode("utf-8"))
        change(doc)
        text = tomlkit.dumps(doc)
        validate(path, tomllib.loads(text), hint="nothing was written")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, text.encode("utf-8"))

"""The command line: global options, help from the index, routing, errors, exit codes.

This is the start-up path. It imports only what the interpreter has already loaded
(``os``, ``sys``, ``time``, ``marshal``) plus Conduit's own stdlib-only modules;
``tests/cli/test_imports.py`` enforces that. Click, msgspec and the plugin's code are
imported only once a command is routed to a plugin, and only that plugin is activated.

This is also the only place that prints for the kernel. Text that comes from plugins
(descriptions, help lines, error messages, warnings) is printed through :func:`_inert`, so
that a control character in it is shown escaped instead of reaching the terminal.
"""

from __future__ import annotations

import marshal
import os
import sys

from conduit import __version__
from conduit.timing import Profile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from conduit.errors import ConduitError, PluginLoadError
    from conduit.indexer.records import Index

__all__ = ["main"]

PROG = "conduit"
GLOBAL_OPTIONS = (
    ("--version", "Show the version and exit."),
    ("--debug", "Show tracebacks for errors."),
    ("--no-plugins", "Safe mode: run with every third-party plugin disabled."),
    ("--profile", "Print the time of each start-up phase to stderr."),
    ("--profile-out FILE", "Write the start-up trace as Chrome trace-event JSON."),
    ("--color WHEN", "Colour: auto (on a terminal), always or never."),
    ("-h, --help", "Show this message and exit."),
    ("--all", "With --help: every command with its help, however many there are."),
)
_OPTION_WORDS = (
    "--version",
    "--debug",
    "--no-plugins",
    "--profile",
    "--profile-out",
    "--color",
    "--help",
    "--all",
)
#: beyond this many commands, ``conduit --help`` lists one line per plugin (``--all``:
#: everything). 40 rows plus the options fill about two screens of a 24-line terminal;
#: past that a listing is scrolled, not read.
HELP_COMMANDS_MAX = 40


class _Options:
    __slots__ = (
        "all",
        "color",
        "command",
        "debug",
        "help",
        "no_plugins",
        "profile",
        "profile_out",
        "start_server",
        "version",
    )

    def __init__(self) -> None:
        self.debug = False
        self.help = False
        self.all = False
        self.color: str | None = None
        self.version = False
        self.no_plugins = False
        self.profile = _env_flag("CONDUIT_PROFILE")
        self.profile_out: str | None = None
        #: the command word handed to the kernel, once routed (for an OpenTelemetry trace)
        self.command = ""
        #: no warm kernel answered: start one after this command if the config wants it
        self.start_server = False


def _inert(text: str) -> str:
    """``text`` with control, bidi and invisible format characters escaped visibly
    (:func:`conduit.text.inert`); the module is imported only for text that is not plain
    printable ASCII."""
    if text.isascii() and text.isprintable():
        return text
    from conduit.text import inert

    return inert(text)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _parse_globals(args: list[str]) -> tuple[_Options, list[str]]:
    opts = _Options()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg in ("-h", "--help"):
            opts.help = True
        elif arg == "--version":
            opts.version = True
        elif arg == "--debug":
            opts.debug = True
        elif arg == "--no-plugins":
            opts.no_plugins = True
        elif arg == "--profile":
            opts.profile = True
        elif arg == "--all":
            opts.all = True
        elif arg == "--profile-out" or arg.startswith("--profile-out="):
            if "=" in arg:
                opts.profile_out = arg.partition("=")[2]
            elif i + 1 < len(args):
                i += 1
                opts.profile_out = args[i]
            else:
                from conduit.errors import UsageError

                raise UsageError("--profile-out needs a file name", hint="--profile-out trace.json")
        elif arg == "--color" or arg.startswith("--color="):
            if "=" in arg:
                opts.color = arg.partition("=")[2]
            elif i + 1 < len(args):
                i += 1
                opts.color = args[i]
            if opts.color not in ("auto", "always", "never"):
                from conduit.errors import UsageError

                raise UsageError("--color needs one of auto, always, never", hint="--color never")
        else:
            from conduit.errors import UsageError, did_you_mean

            guess = did_you_mean(arg, _OPTION_WORDS)
            raise UsageError(
                f"unknown option '{arg}'",
                hint=f"did you mean '{guess}'?" if guess else f"see '{PROG} --help'",
            )
        i += 1
    return opts, args[i:]


class View:
    """The index as this invocation sees it (runtime-disabled plugins filtered out)."""

    def __init__(self, index: Index, disabled: frozenset[str]) -> None:
        self.index = index
        self.disabled = disabled
        self._usable = set(index["usable"]).difference(disabled)

    def usable(self, name: str) -> bool:
        return name in self._usable

    def blocked(self, name: str) -> PluginLoadError | None:
        """The error for a plugin resolution blocked (unless it is off for this run)."""
        if name in self.disabled or name not in self.index["blocked"]:
            return None
        from conduit.errors import PluginLoadError

        error, hint = self.index["blocked"][name]
        return PluginLoadError(name, error, hint=hint)

    def claimants(self, word: str) -> list[str]:
        return [p for p in self.index["routes"].get(word, ()) if p not in self.disabled]

    def owner(self, word: str) -> str | None:
        claimants = self.claimants(word)
        return claimants[0] if claimants else None

    def words(self) -> list[str]:
        return [w for w in self.index["routes"] if self.owner(w) is not None]


def _commands(index: Index) -> dict[str, dict[str, str]]:
    """Each plugin's top-level command words with their help lines (a small table of the
    index, kept encoded so that reading the index for `--help` does not decode it)."""
    table: dict[str, dict[str, str]] = marshal.loads(index["commands"])
    return table


def _rows(rows: list[tuple[str, str]], indent: int = 2) -> list[str]:
    # No truncation to the terminal width: the help is rendered once, when the index is
    # rebuilt, and a terminal wraps long lines anyway.
    if not rows:
        return []
    col = min(max(len(r[0]) for r in rows) + 2, 28)
    lines = []
    for left, right in rows:
        pad = " " * indent
        if len(left) + 2 > col:
            lines.append(f"{pad}{left}")
            left = ""
        text = f"{pad}{left:<{col}}{right}"
        lines.append(text)
    return lines


def render_help(view: View, full: bool = False) -> str:
    """``conduit --help``, from the index alone, commands grouped by plugin; beyond
    :data:`HELP_COMMANDS_MAX` commands one line per plugin, unless ``full``."""
    out = [
        f"Usage: {PROG} [OPTIONS] COMMAND [ARGS]...",
        "",
        "  A developer CLI assembled from plugins. Run a command with --help for its options.",
        "",
        "Options:",
        *_rows(list(GLOBAL_OPTIONS)),
    ]
    plugins = view.index["plugins"]
    top = _commands(view.index)
    groups = []
    for name, rec in plugins.items():
        if not view.usable(name):
            continue
        rows = []
        for word, text in top[name].items():
            shown = word if view.owner(word) == name else f"{name}:{word}"
            rows.append((shown, _inert(text)))
        if rows:
            groups.append((name, rec, rows))
    total = sum(len(rows) for _, _, rows in groups)
    if full or total <= HELP_COMMANDS_MAX:
        for name, rec, rows in groups:
            title = _inert(f"{name}: {rec['description']}" if rec["description"] else name)
            out += ["", f"Commands from {title}", *_rows(rows)]
    else:
        out += [
            "",
            f"Commands by plugin ({total} commands from {len(groups)} plugins; "
            f"'{PROG} --help --all' lists each with its help, '{PROG} COMMAND --help' "
            "shows one):",
            *_rows([(_inert(name), ", ".join(r[0] for r in rows)) for name, _, rows in groups]),
        ]
    blocked = [n for n in view.index["blocked"] if n not in view.disabled]
    off = [n for n in plugins if not view.usable(n) and n not in blocked]
    broken = view.index["broken"]
    if off or broken or blocked:
        out.append("")
        notes = []
        if off:
            notes.append(f"{len(off)} disabled")
        if blocked:
            notes.append(f"{len(blocked)} blocked")
        if broken:
            notes.append(f"{len(broken)} broken")
        out.append(f"Plugins not shown: {', '.join(notes)} (see '{PROG} plugins list').")
    return "\n".join(out) + "\n"


def render_group_help(view: View, plugin: str, word: str) -> str | None:
    """``conduit GROUP --help`` from the index, or None if ``word`` is not a group."""
    rec = view.index["plugins"][plugin]
    subs = [
        (c["name"].split(" ", 1)[1], _inert(c["help"]), c["usage"])
        for c in rec["commands"]
        if c["name"].startswith(word + " ") and not c["hidden"]
    ]
    if not subs:
        return None
    own = next((c for c in rec["commands"] if c["name"] == word), None)
    out = [f"Usage: {PROG} {word} COMMAND [ARGS]...", ""]
    if own and own["help"]:
        out += [f"  {_inert(own['help'])}", ""]
    out += [f"  (from plugin '{plugin}')", "", "Commands:"]
    out += _rows([(name, text) for name, text, _ in subs])
    return "\n".join(out) + "\n"


def _warn(text: str) -> None:
    from conduit.style import enabled, paint

    label = paint("warning:", "warning", enabled(sys.stderr))
    sys.stderr.write(f"{PROG}: {label} {_inert(text)}\n")


#: the state of ``conduit plugins bisect`` in the state directory, while one is active:
#: ``key: value`` lines; ``disabled:`` names the plugins this step switches off for
#: every run, ``note:`` says where the bisect stands (builtins/plugins/_bisect.py)
BISECT_FILE = "plugins-bisect"


def read_bisect(path: str) -> tuple[frozenset[str], str]:
    """The plugins an active bisect disables for this run, and its note."""
    off: frozenset[str] = frozenset()
    note = ""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "disabled":
                    off = frozenset(value.split())
                elif key == "note":
                    note = value.strip()
    except (OSError, UnicodeDecodeError) as exc:
        return off, f"its state file {path} cannot be read: {exc}"
    return off, note


def _runtime_disabled(index: Index, no_plugins: bool) -> frozenset[str]:
    names = {n.strip() for n in os.environ.get("CONDUIT_DISABLE_PLUGINS", "").split(",")}
    names.discard("")
    if no_plugins:
        builtins = set(index["builtins"])
        names.update(n for n in index["plugins"] if n not in builtins)
    return frozenset(names)


def _sandbox_all(index: Index) -> None:
    """``CONDUIT_SANDBOX=1``: every third-party in-process plugin runs in the process
    sandbox for this run, as ``[isolation] NAME = "process"`` would put it (stricter only:
    a WebAssembly plugin stays in wasmtime; built-ins stay in Conduit's process)."""
    for name in index["usable"]:
        rec = index["plugins"][name]
        if rec["isolation"] == "in-process" and rec["source"] in ("entry-point", "file"):
            rec["isolation"] = "process"


def _resolve(view: View, word: str) -> tuple[str, str]:
    """Map a command word (or ``plugin:command``) to ``(plugin, command word)``."""
    claimants = view.claimants(word)
    if claimants and ":" not in word:  # the usual case: no error class needed
        return _winner(view, word, claimants)
    from conduit.errors import UsageError, did_you_mean

    if ":" in word:
        plugin, _, cmd = word.partition(":")
        rec = view.index["plugins"].get(plugin)
        blocked = view.blocked(plugin)
        if blocked is not None:
            raise blocked
        if rec is None or not view.usable(plugin):
            why = "is disabled" if rec is not None else "is not installed"
            raise UsageError(
                f"plugin '{plugin}' {why}",
                hint=f"see '{PROG} plugins list'",
            )
        if not any(c["name"].split(" ")[0] == cmd for c in rec["commands"]):
            raise UsageError(
                f"plugin '{plugin}' has no command '{cmd}'",
                hint=f"its commands: {', '.join(_commands(view.index)[plugin]) or 'none'}",
            )
        return plugin, cmd
    if not claimants:
        for name, rec in view.index["plugins"].items():
            if any(c["name"].split(" ")[0] == word for c in rec["commands"]):
                blocked = view.blocked(name)
                if blocked is not None:
                    raise blocked
                raise UsageError(
                    f"command '{word}' belongs to plugin '{name}', which is disabled",
                    hint=f"enable it with '{PROG} plugins enable {name}'"
                    if not rec["enabled"]
                    else "it was disabled by --no-plugins or CONDUIT_DISABLE_PLUGINS",
                )
        guess = did_you_mean(word, view.words())
        raise UsageError(
            f"unknown command '{word}'",
            hint=f"did you mean '{guess}'?" if guess else f"see '{PROG} --help'",
        )
    return _winner(view, word, claimants)


def _winner(view: View, word: str, claimants: list[str]) -> tuple[str, str]:
    """The plugin that runs ``word``: the first claimant, with a warning if others claim it."""
    if len(claimants) > 1 and view.index["pins"].get(word) != claimants[0]:
        others = ", ".join(f"'{p}:{word}'" for p in claimants[1:])
        _warn(
            f"command '{word}' is provided by {', '.join(claimants)}; using '{claimants[0]}' "
            f"(run {others} for the other{'s' if len(claimants) > 2 else ''}, or pin one in "
            "the config's [pins] table)"
        )
    return claimants[0], word


#: `plugins` subcommands whose argument is a plugin name (several: `_PLUGIN_ARGUMENTS`)
_PLUGIN_ARGUMENT = frozenset(
    ("info", "enable", "disable", "permissions", "grant", "revoke", "uninstall", "update")
)
_PLUGIN_ARGUMENTS = frozenset(("uninstall", "update"))


def _usage_options(usage: str) -> dict[str, list[str] | None]:
    """The options a manifest's ``usage`` line names: ``[--json]`` -> ``{"--json": None}``
    (a flag), ``[--format text|dot]`` -> its choices, ``[--dir DIR]`` -> ``[]`` (a value)."""
    out: dict[str, list[str] | None] = {}
    words = usage.replace("[", " ").replace("]", " ").replace("...", " ").split()
    for i, word in enumerate(words):
        if word.startswith("-") and len(word) > 1:
            value = words[i + 1] if i + 1 < len(words) else ""
            if value and not value.startswith("-") and (value.isupper() or "|" in value):
                out[word] = [v for v in value.split("|") if not v.isupper()]
            else:
                out[word] = None
    return out


def _prefixed(table: str, prefix: str) -> str:
    """The lines of ``table`` (sorted) that start with ``prefix``: one block of it, found
    with ``str.find`` rather than by splitting every line."""
    if not prefix:
        return table
    text = "\n" + table
    start = text.find("\n" + prefix)
    if start < 0:
        return ""
    end = start
    while True:
        end = text.find("\n", end + 1)
        if end < 0 or not text.startswith(prefix, end + 1):
            return text[start + 1 : end if end >= 0 else None]


def _complete(view: View, words: list[str]) -> str:
    """Candidates for the last word, one per line as ``value<TAB>description``.

    Answered from the index's small tables (``complete``, ``routes``); only the plugin
    of the command being completed has its record decoded."""
    current = words[-1] if words else ""
    before = words[:-1]
    while before and before[0].startswith("-"):  # global options before the command
        before = before[2:] if before[0] == "--profile-out" else before[1:]
    lines: list[str] = []
    if not before:
        if current.startswith("-"):
            for opt, text in GLOBAL_OPTIONS:
                for o in opt.split(", "):
                    o = o.split(" ")[0]
                    if o.startswith(current):
                        lines.append(f"{o}\t{text}")
            return "\n".join(lines)
        if not view.disabled:  # the usual run: answers rendered with the index
            return _prefixed(
                view.index["complete"]["scoped" if ":" in current else "words"], current
            )
        scoped = ":" in current
        for name, top in _commands(view.index).items():
            if not view.usable(name):
                continue
            for word, text in top.items():
                cands = [f"{name}:{word}"] if scoped else []
                if view.owner(word) == name:
                    cands.append(word)
                lines += [f"{c}\t{_inert(text)}" for c in cands if c.startswith(current)]
        return "\n".join(sorted(set(lines)))
    first = before[0]
    plugin, word = first.partition(":")[::2] if ":" in first else (view.owner(first), first)
    if not plugin or not view.usable(plugin):
        return ""
    commands = {c["name"]: c for c in view.index["plugins"][plugin]["commands"]}
    path, rest = word, before[1:]
    while rest and f"{path} {rest[0]}" in commands:
        path, rest = f"{path} {rest[0]}", rest[1:]
    if not rest and not current.startswith("-"):
        for name, c in commands.items():
            sub = name[len(path) + 1 :]
            visible = name.startswith(path + " ") and " " not in sub and not c["hidden"]
            if visible and sub.startswith(current):
                lines.append(f"{sub}\t{_inert(c['help'])}")
        if lines:
            return "\n".join(lines)
    cmd = commands.get(path)
    options = _usage_options(cmd["usage"] if cmd else "")
    if rest and options.get(rest[-1]) is not None:  # the value of an option
        return "\n".join(v for v in options[rest[-1]] or () if v.startswith(current))
    if current.startswith("-"):
        return "\n".join(o for o in (*options, "--help") if o.startswith(current))
    head, _, sub = path.partition(" ")
    if head == "plugins" and plugin in view.index["builtins"] and sub in _PLUGIN_ARGUMENT:
        given = [
            w
            for i, w in enumerate(rest)
            if not w.startswith("-") and not (i and options.get(rest[i - 1]) is not None)
        ]
        if not given or sub in _PLUGIN_ARGUMENTS:
            names = view.index["complete"]["names"].split("\n")
            lines = [n for n in names if n.startswith(current) and n not in given]
    return "\n".join(lines)


def _conduit_error() -> type[ConduitError]:
    """:class:`~conduit.errors.ConduitError`, for ``main``'s ``except`` clause, which
    evaluates it only when an exception arrives: a successful ``--help`` or completion
    never imports the error tree (about 2.9 M instructions, 8 % of what a bare
    interpreter's start executes; docs/performance.md)."""
    from conduit.errors import ConduitError

    return ConduitError


def _print_error(exc: ConduitError, debug: bool) -> None:
    """``error: ...`` and ``hint: ...``; a message may hold a plugin's text (its own
    errors, a process plugin's message, a command's exception), so both are escaped."""
    if debug:
        import traceback

        from conduit.text import inert

        sys.stderr.write(inert("".join(traceback.format_exception(exc)), keep_newlines=True))
        remote = getattr(exc, "remote_traceback", "")
        if remote:
            remote = inert(remote, keep_newlines=True)
            sys.stderr.write(f"traceback in the plugin's host process:\n{remote}")
    from conduit.style import enabled, paint

    on = enabled(sys.stderr)
    sys.stderr.write(f"{paint('error:', 'error', on)} {_inert(exc.message)}\n")
    hint = _hint_for(exc.hint, debug)
    if hint:
        sys.stderr.write(f"{paint('hint:', 'hint', on)} {_inert(hint)}\n")
    usage = getattr(exc, "usage", None)
    if usage:
        sys.stderr.write(f"{paint('usage:', 'usage', on)} {_inert(usage)}\n")


def _hint_for(hint: str | None, debug: bool) -> str | None:
    """The hint as shown: under ``--debug`` the traceback is on the screen already, so
    the parts of a hint that say to run with ``--debug`` are dropped."""
    if not hint or not debug or "--debug" not in hint:
        return hint
    parts = [p for p in hint.split("; ") if "--debug" not in p]
    return "; ".join(parts) or None


def _rebuild(*args: Any, **kwargs: Any) -> Index:
    """The index builder, imported only on a miss (it is the expensive half of the index)."""
    from conduit.indexer.build import rebuild

    return rebuild(*args, **kwargs)


def _broken_config(error: tuple[str, str, str | None], opts: _Options, args: list[str]) -> None:
    """A config that does not validate stops every command but those that help to fix it
    (help, completion, ``config``, ``plugins doctor``) or manage the warm kernel
    (``server``): they warn in one line and go on."""
    where, message, hint = error
    if args[:1] == ["__complete"] or args[:2] == ["config", "validate"]:
        return  # quiet while completing; `config validate` reports it as its result
    helping = opts.help or not args or "--help" in args or "-h" in args
    if helping or args[:1] in (["config"], ["server"]) or args[:2] == ["plugins", "doctor"]:
        _warn(f"{where}: {message} (fix it with '{PROG} config edit')")
        return
    from conduit.errors import ConfigError

    raise ConfigError(where, message, hint=hint)


def _run(opts: _Options, args: list[str], profile: Profile) -> int:
    if opts.version:
        sys.stdout.write(f"{PROG} {__version__}\n")
        return 0
    from conduit.index import load
    from conduit.paths import resolve

    paths = resolve()
    completing = bool(args) and args[0] == "__complete"
    index = load(
        paths,
        profile,
        rebuild=_rebuild,
        force_rebuild=_env_flag("CONDUIT_REBUILD_INDEX"),
        # Rendered once per rebuild for the usual case: nothing disabled for one run.
        render_help=lambda idx: render_help(View(idx, frozenset())),
    )
    # `conduit --no-plugins <TAB>` completes as that run would see its plugins
    no_plugins = opts.no_plugins or (completing and "--no-plugins" in args[1:-1])
    disabled = _runtime_disabled(index, no_plugins)
    if _env_flag("CONDUIT_SANDBOX"):  # `conduit mcp` under `[mcp] sandbox = true`
        _sandbox_all(index)
    # A plugin bisect in progress switches a subset off for every run (one stat otherwise).
    bisect_file = os.path.join(paths.state_dir, BISECT_FILE)
    if os.path.exists(bisect_file):
        bisected, note = read_bisect(bisect_file)
        disabled = disabled.union(bisected.difference(index["builtins"]))
        if not completing:
            _warn(
                f"a plugin bisect is active ({note or 'see its status'}): end it with "
                f"'{PROG} plugins bisect reset'"
            )
    view = View(index, disabled)
    # ... no "see 'conduit plugins doctor'" when that is the command running.
    see_doctor = "" if args[:2] == ["plugins", "doctor"] else f" (see '{PROG} plugins doctor')"
    if index["config_error"] is not None:
        _broken_config(index["config_error"], opts, args)
    if not completing:
        for broken in index["broken"]:
            off = broken["disabled"] or broken["name"] in view.disabled
            if not off and not (opts.no_plugins and broken["source"] != "builtin"):
                _warn(f"skipped plugin '{broken['name']}': {broken['error']}{see_doctor}")
        for text in index["warnings"]:
            _warn(text)
        # A store operation killed midway: one stat when there is none (the index may not
        # have been rebuilt since the kill, so the warning is not in it).
        if os.path.exists(paths.store_file("journal", ".json")):
            from conduit.journal import interrupted_operation

            interrupted = interrupted_operation(paths)
            if interrupted:
                _warn(interrupted)
    if not completing:
        for name, (error, _) in index["blocked"].items():
            if name not in view.disabled:
                _warn(f"plugin '{name}' is unavailable: {error}{see_doctor}")
    if completing:
        sys.stdout.write(_complete(view, args[1:]) + "\n")
        return 0
    if not args:
        with profile.span("help"):
            text = index["help"] if not view.disabled and not opts.all else ""
            sys.stdout.write(text or render_help(view, full=opts.all))
        return 0
    if opts.all:
        from conduit.errors import UsageError

        raise UsageError("--all goes with --help", hint=f"{PROG} --help --all")
    if opts.help:
        args = [*args, "--help"]
    with profile.span("route"):
        plugin, word = _resolve(view, args[0])
    if len(args) > 1 and args[1] in ("--help", "-h"):
        group_help = render_group_help(view, plugin, word)
        if group_help is not None:
            sys.stdout.write(group_help)
            return 0
    from conduit.kernel.core import Kernel

    kernel = Kernel(index, paths, disabled=view.disabled, profile=profile)
    code, failure = 1, ""
    opts.command = word
    try:
        code = kernel.run(plugin, [word, *args[1:]], PROG)
        return code
    except BaseException as exc:
        code = 130 if isinstance(exc, KeyboardInterrupt) else getattr(exc, "exit_code", 1)
        failure = getattr(exc, "message", "") or f"{type(exc).__name__}: {exc}"
        if code == 2:  # a usage error quotes the arguments, which the journal never keeps
            failure = "usage error"
        raise
    finally:
        if opts.start_server:
            _start_server(index["config"])
        try:
            kernel.shutdown()
        finally:
            for warning in kernel.warnings:
                _warn(warning.message + (f" ({warning.hint})" if warning.hint else ""))
            journal = index["config"].get("journal")
            if not isinstance(journal, dict) or journal.get("enabled", True):
                from conduit.runlog import record  # the run journal (never on --help)

                record(
                    paths,
                    journal,
                    command=word,
                    plugin=plugin,
                    code=code,
                    error=failure,
                    started_ns=profile.origin,
                    activations=kernel.activations,
                )


def _start_server(config: dict[str, Any]) -> None:
    """Start the warm kernel in the background for the commands after this one (this one
    does not wait): with ``CONDUIT_WARM=1``, or ``[kernel] warm = "auto"`` outside CI (a
    CI job runs each command about once: a server would only cost it)."""
    from conduit.warm.client import mode, settings, start_detached

    wanted = mode()
    if not wanted:
        ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        wanted = "on" if settings(config)[0] == "auto" and not ci else "off"
    if wanted == "on":
        try:  # noqa: SIM105 (contextlib is not imported on the start-up path)
            start_detached()
        except OSError:
            pass  # the next command runs cold again, as this one did


def main(argv: list[str] | None = None, *, start_server: bool = False) -> int:
    """Run Conduit with ``argv`` (default: ``sys.argv[1:]``) in this process; return the
    exit code. ``start_server``: no warm kernel answered (conduit/__main__.py), so start
    one after a command that loads the kernel, if the config wants it."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    profile = Profile(False)
    opts = _Options()
    try:
        opts, rest = _parse_globals(args)
        opts.start_server = start_server
        debug = opts.debug
        if opts.color is not None or "conduit.style" in sys.modules:
            import conduit.style  # (a library caller's earlier run may have set it)

            conduit.style.MODE = opts.color or "auto"
        profile.enabled = opts.profile or bool(opts.profile_out)
        with profile.span("kernel"):
            code = _run(opts, rest, profile)
    except _conduit_error() as exc:
        _print_error(exc, debug)
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\nAborted.\n")
        code = 130
    except BrokenPipeError:
        # The reader went away (`conduit --help | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    if profile.enabled:
        sys.stderr.write(profile.report() + "\n")
        if opts.profile_out:
            profile.write_chrome_trace(opts.profile_out)
    if opts.command and (
        "OTEL_EXPORTER_OTLP_ENDPOINT" in os.environ
        or "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in os.environ
    ):
        _export_trace(profile, opts.command, code)
    return code


def _export_trace(profile: Profile, command: str, code: int) -> None:
    """The run as an OpenTelemetry trace (conduit/otel.py); a failure is one warning."""
    from conduit.otel import export, wanted

    if not wanted(os.environ):
        return
    try:
        problem = export(profile, command, code)
    except Exception as exc:  # the exporter's own failure must not fail the command
        problem = f"could not export the OpenTelemetry trace: {type(exc).__name__}: {exc}"
    if problem:
        _warn(problem)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The in-process host: imports the plugin into the kernel's interpreter.

Fastest, and trusted: the plugin shares the kernel's process. An exception while
importing or booting becomes a :class:`~conduit.errors.PluginLoadError` naming the
plugin; other plugins are unaffected because nothing of the failed one stays registered.
"""

from __future__ import annotations

import importlib
import os
import sys

from conduit.errors import CommandFailed, ConduitError, PluginLoadError, UsageError

# Not `from typing import TYPE_CHECKING`: the child process imports this module and
# typing would add ~5 ms to every plugin host's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import click

    from conduit.hosts.base import HostContext
    from conduit.indexer.records import PluginRec
    from conduit.timing import Profile

__all__ = [
    "DESCRIBE_ARG",
    "HEALTH_STATES",
    "InProcessHost",
    "file_module_name",
    "health_result",
    "load_entry",
]

#: the one argument that makes a command print its parameters instead of running
#: (conduit.hosts.describe: what `conduit mcp` builds tool schemas from)
DESCRIBE_ARG = "--conduit-describe-parameters"
_DEBUG_HINT = "run with --debug for the traceback; 'conduit plugins disable {name}' turns it off"


def file_module_name(name: str) -> str:
    """The name in ``sys.modules`` of the single-file plugin ``name``'s module."""
    return "conduit_plugin_" + name.replace("-", "_")


def load_entry(rec: PluginRec) -> Any:
    """Import the plugin of ``rec`` and return its entry object (a
    :class:`~conduit.sdk.Plugin` subclass or instance): the module of a single-file
    plugin, under :func:`file_module_name`, or an entry point's ``module:attr``.

    A missing entry object is a :class:`PluginLoadError`; whatever the import itself
    raises is the caller's to report.
    """
    if rec["source"] == "file":
        return _import_file(rec)
    return _import_entry(rec)


def _import_file(rec: PluginRec) -> Any:
    # importlib.machinery, not importlib.util (which imports contextlib): a process
    # host imports this module before its plugin, on every start
    from importlib.machinery import ModuleSpec, SourceFileLoader

    from conduit.paths import too_new_for_bytecode

    class FileLoader(SourceFileLoader):
        """No bytecode of a source saved within two seconds (too_new_for_bytecode): an
        OSError here makes importlib compile from source and cache nothing."""

        def path_stats(self, path: str) -> dict[str, float]:
            st = os.stat(path)
            if too_new_for_bytecode(st.st_mtime):
                raise OSError("the source is too new for its bytecode to be trusted")
            return {"mtime": st.st_mtime, "size": st.st_size}

    name = rec["name"]
    modname = file_module_name(name)
    origin = rec["origin"]
    loader = FileLoader(modname, origin)
    spec = ModuleSpec(modname, loader, origin=origin)
    spec.has_location = True  # __file__ and __cached__ come from the origin
    if rec.get("dependencies"):  # inline dependencies: a private cached environment
        from conduit.security.guard import TRUSTED
        from conduit.store.envs import add_dependencies

        with TRUSTED:  # Conduit installs them, not the plugin: no grant is needed
            add_dependencies(rec)
    module = type(sys)(modname)
    module.__spec__ = spec
    module.__loader__ = loader
    module.__file__ = origin
    module.__cached__ = spec.cached  # type: ignore[attr-defined]
    module.__package__ = spec.parent
    sys.modules[modname] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    if rec["entry"]:
        if not hasattr(module, rec["entry"]):
            raise PluginLoadError(
                name,
                f"{rec['origin']} has no object '{rec['entry']}' (manifest field 'entry')",
                hint="fix 'entry' in the # /// conduit block",
            )
        return getattr(module, rec["entry"])
    from conduit.sdk import Plugin

    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Plugin)
        and obj is not Plugin
        and obj.__module__ == modname
    ]
    if len(found) != 1:
        raise PluginLoadError(
            name,
            f"{rec['origin']} defines {len(found)} Plugin subclasses; expected one",
            hint='name the plugin object with entry = "ClassName" in the # /// conduit block',
        )
    return found[0]


def _import_entry(rec: PluginRec) -> Any:
    name = rec["name"]
    entry = rec["entry"] or ""
    module_name, _, attr = entry.partition(":")
    module = importlib.import_module(module_name.strip())
    obj: Any = module
    for part in attr.strip().split(".") if attr.strip() else []:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginLoadError(
                name,
                f"entry point '{entry}': module '{module_name}' has no attribute '{attr}'",
                hint="fix the entry point in the plugin's packaging metadata",
            ) from None
    return obj


class InProcessHost:
    """Runs plugins inside the kernel's own interpreter."""

    kind = "in-process"
    #: third-party plugins here run under the in-process guard (conduit.security.guard)
    guarded = True

    def __init__(self) -> None:
        self._instances: dict[str, Any] = {}

    def activate(self, record: PluginRec, ctx: HostContext, profile: Profile) -> None:
        name = record["name"]
        with profile.span(f"import:{name}"):
            try:
                obj = load_entry(record)
            except ConduitError:
                raise
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                raise PluginLoadError(
                    name,
                    f"failed to import: {type(exc).__name__}: {exc}",
                    hint=_DEBUG_HINT.format(name=name),
                ) from exc
        with profile.span(f"boot:{name}"):
            try:
                plugin = obj() if isinstance(obj, type) else obj
            except Exception as exc:
                raise PluginLoadError(
                    name,
                    f"failed to instantiate {record['entry']}: {type(exc).__name__}: {exc}",
                    hint=_DEBUG_HINT.format(name=name),
                ) from exc
            boot = getattr(plugin, "boot", None)
            if not callable(boot):
                raise PluginLoadError(
                    name,
                    f"entry object {record['entry'] or obj!r} is not a plugin (it has no boot())",
                    hint="point the entry at a conduit.sdk.Plugin subclass or instance",
                )
            try:
                boot(ctx)
            except ConduitError:
                raise
            except Exception as exc:
                raise PluginLoadError(
                    name,
                    f"failed to boot: {type(exc).__name__}: {exc}",
                    hint=_DEBUG_HINT.format(name=name),
                ) from exc
        self._instances[name] = plugin

    def prepare_command(self) -> None:
        """Import Click, which every command here runs in, before the plugin's code (the
        kernel calls this before activating a plugin for a command): the plugin's own
        ``import click`` is then a dictionary look-up, not 130 M instructions under the
        in-process guard's audit hook.

        As the WebAssembly host does for wasmtime: the collector is held off during the
        import and what is then alive (module-level state that lives as long as the
        process) is frozen (:func:`gc.freeze`), so that neither the collections the
        import would trigger nor the one at exit walk it. The collector is left as found.
        """
        if "click" in sys.modules:
            return
        import gc

        was_enabled = gc.isenabled()
        gc.disable()
        try:
            import click  # noqa: F401
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()

    def offers_metrics(self, name: str) -> bool:
        """Whether the active plugin ``name`` has a ``metrics()`` method."""
        return callable(getattr(self._instances.get(name), "metrics", None))

    def metrics(self, record: PluginRec, ctx: HostContext) -> dict[str, float] | None:
        """The plugin's optional ``metrics()``, checked (None when it has none)."""
        collect = getattr(self._instances.get(record["name"]), "metrics", None)
        if not callable(collect):
            return None
        from conduit.hosts import clean_metrics

        return clean_metrics(collect())

    def deactivate(self, record: PluginRec, ctx: HostContext) -> None:
        name = record["name"]
        plugin = self._instances.pop(name, None)
        if record["source"] == "file":
            sys.modules.pop(file_module_name(name), None)
        shutdown = getattr(plugin, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as exc:
                raise PluginLoadError(
                    name, f"failed to shut down: {type(exc).__name__}: {exc}"
                ) from exc

    def plugin_health(self, record: PluginRec, timeout: float | None) -> tuple[str, str]:
        """The plugin's ``health()`` as ``(status, message)``; a plugin without one is ok.

        It runs in a thread of its own so that one that hangs is reported after
        ``timeout`` seconds (the thread is left behind, a daemon: the command ends soon
        after); one that raises, or returns something else than the SDK allows, is
        ``failing`` with a one-line message.
        """
        plugin = self._instances.get(record["name"])
        check = getattr(plugin, "health", None)
        if not callable(check):
            return "ok", "no health check"
        import threading

        answer: list[tuple[str, str]] = []

        def call() -> None:
            try:
                answer.append(health_result(check()))
            except BaseException as exc:  # a plugin's own failure, whatever it is
                answer.append(("failing", f"health() raised {type(exc).__name__}: {exc}"))

        thread = threading.Thread(target=call, name=f"health:{record['name']}", daemon=True)
        thread.start()
        thread.join(timeout)
        if not answer:
            return "failing", f"health() did not answer within {timeout or 0:g} s"
        status, message = answer[0]
        return status, message.strip().splitlines()[0] if message.strip() else ""

    # -- running -----------------------------------------------------------------------
    def _command(self, record: PluginRec, ctx: HostContext, word: str) -> click.Command:
        import click

        registered = ctx.commands()
        if word in registered:
            return registered[word]
        subs = {k: v for k, v in registered.items() if k.split(" ", 1)[0] == word}
        if not subs:
            raise PluginLoadError(
                record["name"],
                f"declares command '{word}' in its manifest but did not register it",
                hint="call ctx.register_command() for it in boot(), or fix the manifest",
            )
        helps = {c["name"]: c["help"] for c in record["commands"]}
        root = click.Group(word, help=helps.get(word) or None)
        for key in sorted(subs):
            parent = root
            words = key.split(" ")[1:]
            for i, part in enumerate(words[:-1]):
                child = parent.commands.get(part)
                if not isinstance(child, click.Group):
                    full = " ".join([word, *words[: i + 1]])
                    child = click.Group(part, help=helps.get(full) or None)
                    parent.add_command(child)
                parent = child
            parent.add_command(subs[key], words[-1])
        return root

    def run_command(self, record: PluginRec, ctx: HostContext, argv: list[str], prog: str) -> int:
        """Run the Click command ``argv[0]``. Click's own endings become Conduit's, the
        same in every host: a usage error is a :class:`~conduit.errors.UsageError` (with
        its usage line), Ctrl-C a ``KeyboardInterrupt`` (``Aborted.``, exit 130, printed
        by the CLI), ``-h`` is a help option of every command."""
        import click

        word = argv[0]
        command = self._command(record, ctx, word)
        if argv[1:] == [DESCRIBE_ARG]:  # `conduit mcp` asks for its parameters
            from conduit.hosts.describe import dump

            sys.stdout.write(dump(command, word) + "\n")
            return 0
        extra: dict[str, Any] = {"obj": ctx}
        if "help_option_names" not in command.context_settings:
            extra["help_option_names"] = ["-h", "--help"]
        if "color" not in command.context_settings and (
            "conduit.style" in sys.modules  # --color given, or set by a library caller
            or "NO_COLOR" in os.environ
            or "FORCE_COLOR" in os.environ
        ):
            from conduit.style import click_color

            extra["color"] = click_color()
        try:
            with command.make_context(f"{prog} {word}", list(argv[1:]), **extra) as cctx:
                command.invoke(cctx)
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.UsageError as exc:
            raise _usage_error(exc) from None
        except click.Abort as exc:
            if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None  # Ctrl-C at a prompt
            sys.stderr.write("Aborted.\n")  # a prompt answered no, or its input ended
            return 1
        except click.ClickException as exc:
            error = ConduitError(exc.format_message())
            error.exit_code = exc.exit_code
            raise error from None
        except SystemExit as exc:
            code = exc.code
            if code is None:
                return 0
            if isinstance(code, int):
                return code
            sys.stderr.write(f"{code}\n")
            return 1
        except (ConduitError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise CommandFailed(record["name"], word, exc) from exc
        return 0


HEALTH_STATES = ("ok", "warning", "failing")


def health_result(value: Any) -> tuple[str, str]:
    """What a plugin's ``health()`` returned, as ``(status, message)`` (conduit.sdk)."""
    if value is None:
        return "ok", "no health check"
    if isinstance(value, str) and value in HEALTH_STATES:
        return value, ""
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and value[0] in HEALTH_STATES
        and isinstance(value[1], str)
    ):
        return value[0], value[1]
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return "failing", (
        f"health() returned {shown}: expected 'ok', 'warning' or 'failing', or a pair "
        "(status, message)"
    )


def _usage_error(exc: click.UsageError) -> UsageError:
    """Click's usage error as Conduit's: the message, a hint to the command's help and its
    usage line (printed as ``error:``, ``hint:``, ``usage:`` by the CLI)."""
    cctx = exc.ctx
    usage = hint = None
    if cctx is not None:
        pieces = cctx.command.collect_usage_pieces(cctx)
        usage = " ".join([cctx.command_path, *pieces])
        if cctx.help_option_names and cctx.command.add_help_option:
            hint = f"see '{cctx.command_path} {cctx.help_option_names[-1]}'"
    error = UsageError(exc.format_message(), hint=hint, usage=usage)
    error.exit_code = exc.exit_code
    return error


def rehearse_click(times: int) -> None:
    """Run a throwaway Click command here, the way the in-process host runs a plugin's
    (``make_context``, ``invoke``, ``click.echo`` to a text stream), ``times`` times: in
    the server (20), the interpreter then has Click's functions quickened and specialized,
    and a command's child does not rewrite (and copy) their bytecode pages: about 60 fewer
    copied pages per command; in the warm kernel's spare child and the host template's
    spare host (2), the objects they use are their own before a command comes (each
    first use of an object on a page still shared with the process it was forked from
    copies the page). Conduit's own code and Click's only, and nothing is kept: the output
    goes to a buffer, the context stack is left empty."""
    import io

    import click

    @click.group("rehearsal")
    @click.option("--flag", is_flag=True)
    def group(flag: bool) -> None:
        pass

    @group.command("run")
    @click.argument("args", nargs=-1)
    @click.option("--name", default="x")
    def run(args: tuple[str, ...], name: str) -> None:
        click.echo(name)

    names = ["-h", "--help"]
    stdout = sys.stdout
    try:
        sys.stdout = io.TextIOWrapper(io.BytesIO(), "utf-8")
        for _ in range(times):
            for command, args in ((run, ["a", "--name", "y"]), (group, ["run", "a"])):
                with command.make_context(
                    "rehearsal", args, obj=None, help_option_names=names
                ) as ctx:
                    command.invoke(ctx)
    finally:
        sys.stdout = stdout

"""``conduit dev [PATH...] [--run ARGS] [--once]``: hot reload for plugin authors.

Loads the plugins at PATH from their source into a long-lived kernel in this process
(:mod:`conduit.kernel.reload`), watches their files with watchfiles (the optional extra
``conduit-devtool[dev]``, imported only here) and reloads a plugin in place when one of
its files is saved. With ``--run``, that command runs after each successful reload;
without it, a prompt runs commands in the same kernel. docs/plugin-guide.md, "Developing
with hot reload".
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from conduit.errors import ConduitError, UsageError
from conduit.sdk import Plugin, PluginContext

if TYPE_CHECKING:
    from conduit.kernel.reload import Reload, Reloader

__all__ = ["DevPlugin"]

PREFIX = "conduit dev: "
#: watchfiles: ms without a new change before a batch is handed over, and the longest a
#: batch may gather (an editor's save is a few events within milliseconds)
STEP_MS = 30
DEBOUNCE_MS = 1000
#: the watcher wakes up this often without a change (the first time: "watching")
READY_MS = 250
INSTALL = "pip install 'conduit-devtool[dev]'"


def _say(text: str) -> None:
    sys.stderr.write(PREFIX + text + "\n")
    sys.stderr.flush()


def _error(exc: ConduitError) -> None:
    from conduit.text import inert

    _say(f"error: {inert(exc.message)}")
    if exc.hint:
        _say(f"hint: {inert(exc.hint)}")


def _show(report: Reload, what: str, reloader: Reloader) -> set[str]:
    """Print what a (re)load did; return the messages of the errors it printed."""
    from conduit.text import inert

    assert reloader.kernel is not None
    plugins = reloader.kernel.index["plugins"]
    for name, ms in report.built.items():
        _say(f"built {name} (wasm) in {ms:.0f} ms")
    if report.loaded:
        names = ", ".join(f"{n} ({plugins[n]['isolation']})" for n in report.loaded)
        _say(f"{what} {names} in {report.ms:.0f} ms")
    for note in report.notes:
        _say(f"warning: {inert(note)}")
    for exc in report.errors:
        _error(exc)
    if report.errors and not report.loaded and what == "reloaded":
        _say("nothing reloaded; the previous version keeps serving")
    return {exc.message for exc in report.errors}


class _Terminated(KeyboardInterrupt):
    """SIGTERM: ends ``conduit dev`` as Ctrl-C does, even in the middle of a command."""


def _run(
    reloader: Reloader,
    argv: list[str],
    *,
    interactive: bool = False,
    shown: set[str] | None = None,
) -> int:
    """Run one command in the dev kernel; its errors are printed, not raised (not again
    when the load just before printed the same, ``shown``). Ctrl-C ends the command at
    the prompt, and ``conduit dev`` otherwise."""
    from conduit.text import inert

    kernel = reloader.kernel
    assert kernel is not None
    try:
        code = reloader.run(argv)
    except ConduitError as exc:
        if exc.message not in (shown or ()):
            _error(exc)
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        if not interactive or isinstance(exc, _Terminated):
            raise
        sys.stderr.write("Aborted.\n")
        code = 130
    finally:
        sys.stdout.flush()
        for warning in kernel.warnings:
            _say(f"warning: {inert(warning.message)}")
        kernel.warnings.clear()
    if code:
        _say(f"'{inert(shlex.join(argv))}' exited with {code}")
    return code


def _watch(
    reloader: Reloader, argv: list[str] | None, stop: threading.Event, *, announce: bool
) -> None:
    """Reload on each change until ``stop`` is set (or Ctrl-C in the main thread)."""
    import watchfiles

    for changes in watchfiles.watch(
        *reloader.watched(),
        step=STEP_MS,
        debounce=DEBOUNCE_MS,
        rust_timeout=READY_MS,
        yield_on_timeout=True,
        stop_event=stop,
        raise_interrupt=True,
    ):
        if announce:  # the watcher is set up: a save from now on is seen
            announce = False
            _say(f"watching {', '.join(reloader.watched())}; Ctrl-C ends")
        paths = [path for _, path in changes]
        if not paths or not reloader.affected(paths):
            continue
        with reloader.lock:
            report = reloader.reload(paths)
            shown = _show(report, "reloaded", reloader)
            if report.ok and argv:
                _run(reloader, argv, shown=shown)


def _history_file() -> str:
    from conduit.paths import resolve

    return os.path.join(resolve().state_dir, "dev-history")


def _prompt(reloader: Reloader, watch: bool) -> None:
    """Read commands until end of input or Ctrl-C, reloading in a thread meanwhile."""
    history = _history_file()
    readline: Any = None
    if sys.stdin.isatty():
        try:
            import readline
        except ImportError:  # no readline on this platform: a plain prompt
            readline = None
    if readline is not None:
        words = reloader.commands

        def complete(text: str, state: int) -> str | None:
            matches = [w + " " for w in words() if w.startswith(text)]
            return matches[state] if state < len(matches) else None

        readline.set_completer(complete)
        readline.parse_and_bind("tab: complete")
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
    stop = threading.Event()
    watcher = None
    if watch:
        watcher = threading.Thread(
            target=_watch,
            args=(reloader, None, stop),
            kwargs={"announce": False},
            name="conduit-dev-watch",
            daemon=True,
        )
        watcher.start()
    prompt = "conduit> " if sys.stdin.isatty() else ""
    try:
        while True:
            try:
                line = input(prompt)
            except (EOFError, KeyboardInterrupt):
                if prompt:
                    sys.stderr.write("\n")
                return
            try:
                argv = shlex.split(line)
            except ValueError as exc:
                _say(f"error: {exc}")
                continue
            if not argv:
                continue
            if argv[0] in ("exit", "quit"):
                return
            with reloader.lock:
                _run(reloader, argv, interactive=True)
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(5.0)
        if readline is not None:
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(history), exist_ok=True)
                readline.set_history_length(1000)
                readline.write_history_file(history)


@click.command("dev")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--run",
    "run",
    metavar="ARGS",
    help='Run "conduit ARGS" after the first load and after each successful reload.',
)
@click.option("--once", is_flag=True, help="Load, run --run once, and exit: no watching.")
def dev(paths: tuple[str, ...], run: str | None, once: bool) -> None:
    """Load plugins from source and reload them when their files change.

    PATHS: a .py file, a package project, a directory of single-file plugins or a
    WebAssembly plugin's source (as 'conduit plugins build' takes it; the current
    directory by default), loaded without installing them. Without --run, a
    prompt runs commands in the same kernel (end it with Ctrl-D or Ctrl-C)."""
    from conduit.kernel.reload import Reloader
    from conduit.paths import resolve

    argv = None
    if run is not None:
        try:
            argv = shlex.split(run)
        except ValueError as exc:
            raise UsageError(f"--run: {exc}", hint='quote it whole: --run "hello Ada"') from None
        if not argv:
            raise UsageError("--run: no command given", hint='for example --run "hello"')
    if not once:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            raise ConduitError(
                f"conduit dev watches files with watchfiles, which is not installed: {INSTALL}"
            ) from None
    import signal

    me = os.getpid()

    def stop(signum: int, frame: object) -> None:
        if os.getpid() != me:
            # a process host forked from the host template inherits this handler: there
            # the signal does what it does to a host started afresh
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise _Terminated  # a clean end: plugins shut down, disposers run

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    reloader = Reloader(paths or (".",), resolve(), template=not once, build_wasm=_build_wasm)
    code = 0
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C (or SIGTERM): the end
            with reloader.lock:
                shown = _show(reloader.start(), "loaded", reloader)
                if argv:
                    code = _run(reloader, argv, shown=shown)
            if once:
                if argv is None:
                    _prompt(reloader, watch=False)
            elif argv is not None:
                _watch(reloader, argv, threading.Event(), announce=True)
            else:
                _prompt(reloader, watch=True)
    finally:
        from conduit.text import inert

        for note in reloader.close():
            _say(f"warning: {inert(note)}")
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if once and code:
        sys.exit(code)


def _build_wasm(source: str, output: str) -> tuple[str, str]:
    """``conduit plugins build``'s build (imported only for a WebAssembly source)."""
    from conduit.builtins.plugins import build_wasm

    return build_wasm(source, output)


class DevPlugin(Plugin):
    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(dev)

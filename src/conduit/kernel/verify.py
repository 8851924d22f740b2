"""Loading plugins for real in child interpreters: install verification (a new or
upgraded plugin is imported and booted once, in its own host kind, before the store's
transaction commits it) and ``plugins doctor --deep`` (every enabled plugin, now).

:func:`verify` starts one fresh interpreter (``sys.executable``, never the installing
process) per plugin, several at once, each running :func:`main`: a :class:`Kernel` over
the index the store has just rebuilt activates the plugin as a command would, so its
host is the one it will run in: in-process plugins are imported under the in-process
guard in that child, process plugins start their real host child with the sandbox policy
they would run under, WebAssembly plugins are instantiated in wasmtime. Then the plugin
is shut down and the child exits.

Nothing is granted, asked or written: the kernel is built with ``check_grants=False``, so
the plugin boots with exactly the grants it holds (none for a new one). An operation its
grants do not cover (:class:`~conduit.errors.CapabilityDenied`,
:class:`~conduit.errors.SandboxDenied`) does not fail the verification: the plugin loaded,
and the grant prompt after the install is where that is decided.

The child reports one JSON object on a descriptor of its own; what the plugin prints
goes to a pipe that is dropped unless the child fails without a report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conduit.indexer.records import Index

__all__ = ["Failure", "check", "verify"]

#: how long one plugin may take to import and boot (seconds)
TIMEOUT = 60.0

_CHILD = "from conduit.kernel.verify import main; main()"


@dataclass(frozen=True)
class Failure:
    """Why ``plugin`` failed to load: a one-line ``message`` (``plugin 'x': failed to
    boot: ...``), its ``hint`` and the traceback in the child (for ``--debug``)."""

    plugin: str
    message: str
    hint: str | None = None
    trace: str = ""


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    report: IO[bytes]  # the JSON report the child writes
    output: IO[bytes]  # what it (and the plugin) printed
    started: float

    def close(self) -> None:
        self.report.close()
        self.output.close()


def verify(names: Sequence[str], *, jobs: int | None = None) -> list[Failure]:
    """Boot each plugin of ``names`` once in a child interpreter; the failures, in the
    order of ``names``. Up to ``jobs`` (default: the CPUs, at least 2) run at once."""
    reports = _run(names, jobs)
    return [r for r in (_failure(n, *reports[n]) for n in dict.fromkeys(names)) if r]


def check(names: Sequence[str], *, jobs: int | None = None) -> dict[str, dict[str, Any]]:
    """``plugins doctor --deep``: each plugin of ``names`` loaded as :func:`verify` does;
    by name, ``{"ok", "error", "needs_grants", "activations"}`` (``needs_grants``: the
    message of an operation its grants do not cover, which is not a failure;
    ``activations``: the kernel's records of the child, for the run journal)."""
    reports = _run(names, jobs)
    out: dict[str, dict[str, Any]] = {}
    for name, (report, returncode, output) in reports.items():
        failure = _failure(name, report, returncode, output)
        out[name] = {
            "ok": failure is None,
            "error": failure.message if failure else "",
            "needs_grants": (report or {}).get("needs_grants"),
            "activations": (report or {}).get("activations") or [],
        }
    return out


def _run(
    names: Sequence[str], jobs: int | None
) -> dict[str, tuple[dict[str, Any] | None, int, str]]:
    """By name: the child's report (None when it wrote none), its exit status and what it
    printed."""
    limit = max(1, jobs or max(2, os.cpu_count() or 1))
    todo = list(dict.fromkeys(names))
    running: list[_Child] = []
    reports = {}
    try:
        while todo or running:
            while todo and len(running) < limit:
                running.append(_start(todo.pop(0)))
            child = _wait_one(running)
            running.remove(child)
            reports[child.name] = _collect(child)
    finally:
        for child in running:  # interrupted: none outlives the call
            _kill(child.proc)
            child.close()
    return reports


def _start(name: str) -> _Child:
    """A child booting ``name``; its report and its output go to files (never a pipe that
    a chatty plugin could fill while nobody reads it)."""
    import tempfile

    from conduit.paths import python_argv

    # closed by _Child.close()
    report = tempfile.TemporaryFile(prefix="conduit-verify-")  # noqa: SIM115
    output = tempfile.TemporaryFile(prefix="conduit-verify-")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [*python_argv(_CHILD), name],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(report.fileno(),),
            env=dict(
                os.environ,
                CONDUIT_VERIFY_FD=str(report.fileno()),
                CONDUIT_VERIFY_PARENT=str(os.getpid()),
            ),
            start_new_session=True,  # its process host and their children: one group
        )
    except BaseException:
        report.close()
        output.close()
        raise
    return _Child(name, proc, report, output, time.monotonic())


def _wait_one(running: list[_Child]) -> _Child:
    """The next child to finish (or to run out of time: it is killed)."""
    while True:
        for child in running:
            if child.proc.poll() is not None:
                return child
            if time.monotonic() - child.started > TIMEOUT:
                _kill(child.proc)
                return child
        time.sleep(0.005)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()


def _collect(child: _Child) -> tuple[dict[str, Any] | None, int, str]:
    proc = child.proc
    proc.wait()
    try:
        child.report.seek(0)
        raw = child.report.read()
        child.output.seek(0)
        output = child.output.read()[-20000:].decode("utf-8", "replace")
    finally:
        child.close()
    try:
        report = json.loads(raw)
    except ValueError:
        report = None
    return (report if isinstance(report, dict) else None), proc.returncode, output


def _failure(
    name: str, report: dict[str, Any] | None, returncode: int, output: str
) -> Failure | None:
    if report is not None and "error" not in report and returncode == 0:
        return None
    if report is not None and isinstance(report.get("error"), str):
        return Failure(name, report["error"], report.get("hint"), report.get("trace", ""))
    if returncode == -signal.SIGKILL:
        why = f"did not finish booting within {TIMEOUT:g} s"
    elif returncode < 0:
        why = f"its interpreter was killed by {signal.Signals(-returncode).name} while booting"
    else:
        why = f"its interpreter exited with status {returncode} while booting"
    last = [line.strip() for line in output.splitlines() if line.strip()][-1:]
    return Failure(
        name,
        f"plugin '{name}': {why}" + (f": {last[0][:300]}" if last else ""),
        None,
        output,
    )


def main() -> None:
    """The child: boot ``sys.argv[1]`` in its host, report on ``CONDUIT_VERIFY_FD``."""
    _die_with(int(os.environ.pop("CONDUIT_VERIFY_PARENT")))
    report = os.fdopen(int(os.environ.pop("CONDUIT_VERIFY_FD")), "w", encoding="utf-8")
    os.dup2(2, 1)  # what the plugin prints goes to the captured pipe, never the report
    name = sys.argv[1]
    result: dict[str, Any] = {}
    activations: list[dict[str, Any]] = []
    try:
        _boot(name, activations)
    except BaseException as exc:  # every failure is the report
        import traceback

        from conduit.errors import CapabilityDenied, ConduitError, PluginError, SandboxDenied

        if isinstance(exc, (CapabilityDenied, SandboxDenied)):
            result["needs_grants"] = exc.message
        else:
            if isinstance(exc, PluginError):  # names its plugin already
                message = exc.message
            elif isinstance(exc, ConduitError):  # the plugin's own, from its boot()
                message = f"plugin '{name}': failed to boot: {exc.message}"
            else:
                message = f"plugin '{name}': failed to load: {type(exc).__name__}: {exc}"
            result = {
                "error": message,
                "hint": exc.hint if isinstance(exc, ConduitError) else None,
                "trace": "".join(traceback.format_exception(exc)),
            }
            remote = getattr(exc, "remote_traceback", "")
            if remote:
                result["trace"] = f"{result['trace']}traceback in the plugin's host:\n{remote}"
    result["activations"] = activations
    report.write(json.dumps(result, default=str))
    report.close()
    sys.stdout.flush()
    os._exit(0)  # no atexit work of the plugin's after its report


def _die_with(parent: int) -> None:
    """Be killed when the installing ``conduit`` dies (Linux: ``PR_SET_PDEATHSIG``), so a
    plugin whose boot hangs does not outlive a killed install; a process host started
    here sees its pipe close and exits too."""
    if sys.platform == "linux":
        import contextlib
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)


def _rebuild(*args: Any, **kwargs: Any) -> Index:
    """The index builder, imported only if the index the store wrote is not current."""
    from conduit.indexer.build import rebuild

    return rebuild(*args, **kwargs)


def _boot(name: str, activations: list[dict[str, Any]]) -> None:
    from conduit.index import load
    from conduit.kernel.core import Kernel
    from conduit.paths import resolve
    from conduit.timing import Profile

    paths = resolve()
    index = load(paths, Profile(False), rebuild=_rebuild)
    kernel = Kernel(index, paths, check_grants=False)
    try:
        kernel.activate(name, "verify")
    finally:
        kernel.shutdown()
        activations += kernel.activations

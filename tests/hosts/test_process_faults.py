"""Fault injection for process plugins: whatever a plugin's host does, the kernel survives.

Every fault is provoked twice: in a long-lived :class:`Kernel` (after which an in-process
plugin and another process plugin must still work in that same kernel, the latter in the
very host it had before the fault) and through the CLI (exit code and the one-line
``error:`` naming the plugin and what happened, no traceback without ``--debug``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _protocol_host import write_host
from conduit import rpc
from conduit.errors import ConduitError
from conduit.hosts.process import ProcessHost
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
from conduit.timing import Profile

from _factory import manifest_block, simple_plugin, write

# ~30 s in all, most of it hosts waited on until they time out, and two kernels per fault
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="Linux process semantics")

# What every process plugin below starts with. ``rpc_socket`` finds the child's end of
# the kernel connection the way a misbehaving plugin would: it is the child's only socket
# above stderr (the host passes nothing else). ``note`` writes a file atomically, so the
# test never reads a half-written pid.
PRELUDE = """
import os, signal, stat, subprocess, sys, time
import click
from conduit.sdk import Plugin


def rpc_socket():
    for fd in range(3, 1024):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            pass
    raise RuntimeError("no socket to the kernel")


def note(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
"""


def process_plugin(
    name: str, body: str, *, boot: str = "", toml: str = "", module: str = ""
) -> str:
    """A process plugin with one command ``name`` (taking any arguments as ``args``)."""
    manifest = f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "process"\n{toml.strip()}\n'
    manifest += f'\n[[commands]]\nname = "{name}"\n'
    boot_lines = textwrap.dedent(boot).strip() or "pass"
    return (
        manifest_block(manifest)
        + PRELUDE
        + textwrap.dedent(module)
        + f"\n\n@click.command({name!r})\n@click.argument('args', nargs=-1)\ndef command(args):\n"
        + textwrap.indent(textwrap.dedent(body).strip(), "    ")
        + "\n\n\nclass P(Plugin):\n    def boot(self, ctx):\n"
        + textwrap.indent(boot_lines, "        ")
        + f"\n        ctx.register_command(command, {name!r})\n"
    )


@pytest.fixture
def companions(plugin_dir: Path) -> Path:
    """The bystanders: an in-process plugin and a process plugin, both healthy."""
    write(plugin_dir, "local.py", simple_plugin("local", ("local",), output="local ok"))
    write(plugin_dir, "iso.py", process_plugin("iso", 'click.echo(f"iso ok {os.getpid()}")'))
    return plugin_dir


@pytest.fixture
def kernels() -> Iterator[Callable[[], Kernel]]:
    """Make kernels over the current CONDUIT_HOME; each is shut down after the test."""
    made: list[Kernel] = []

    def make() -> Kernel:
        paths = resolve()
        kernel = Kernel(load(paths, Profile(False)), paths)
        made.append(kernel)
        return kernel

    yield make
    for kernel in made:
        with contextlib.suppress(ConduitError):
            kernel.shutdown()


FAULTY = ("victim", "parent", "hang", "liar", "stuck", "segv", "boom", "quitter", "shake")


@pytest.fixture(autouse=True)
def grants(conduit_home: Path, tmp_path: Path) -> None:
    """The faulty plugins write pid files under tmp_path and start programs: their
    sandbox (tests/security/test_permissions_process.py) needs grants for that."""
    lines = [f'{n} = ["filesystem:write:{tmp_path}", "process:execute"]' for n in FAULTY]
    (conduit_home / "config.toml").write_text("[grants]\n" + "\n".join(lines) + "\n")


def configure(home: Path, text: str) -> None:
    config = home / "config.toml"  # after the grants
    config.write_text(config.read_text() + textwrap.dedent(text).strip() + "\n")


def host_of(kernel: Kernel, plugin: str) -> ProcessHost:
    host = kernel.host_for(kernel.index["plugins"][plugin])
    assert isinstance(host, ProcessHost)
    return host


def iso_pid(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> int:
    """Run the bystander process plugin in ``kernel``; return the pid of its host."""
    capsys.readouterr()
    assert kernel.run("iso", ["iso"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:2] == ["iso", "ok"], out
    return int(out[2])


def bystanders_work(kernel: Kernel, capsys: pytest.CaptureFixture[str], pid: int | None) -> None:
    """The in-process plugin and the other process plugin still work in ``kernel``."""
    capsys.readouterr()
    assert kernel.run("local", ["local"]) == 0
    assert capsys.readouterr().out == "local ok\n"
    new = iso_pid(kernel, capsys)
    if pid is not None:
        assert new == pid  # the same host as before the fault: it was never disturbed


def cli_error(run, args: tuple[str, ...], code: int, message: str) -> str:  # type: ignore[no-untyped-def]
    """Run the CLI, check the exit code and the one ``error:`` line; return stderr."""
    r = run(*args)
    assert r.code == code, r.err
    lines = r.err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, r.err
    assert re.fullmatch("error: " + message, errors[0]), errors[0]
    # nothing else: at most a hint, and warnings (no traceback without --debug)
    assert all(line.startswith(("error: ", "hint: ", "conduit: warning: ")) for line in lines), (
        r.err
    )
    # and the next commands, in fresh kernels, are not affected
    assert run("local").out == "local ok\n"
    assert run("iso").out.startswith("iso ok ")
    return str(r.err)


def kernel_fault(
    make: Callable[[], Kernel],
    capsys: pytest.CaptureFixture[str],
    plugin: str,
    argv: tuple[str, ...],
    code: int,
    message: str,
    before: Callable[[], object] | None = None,
) -> tuple[Kernel, ConduitError]:
    """Provoke the fault in a kernel that already runs the bystanders; check they survive."""
    kernel = make()
    capsys.readouterr()
    assert kernel.run("local", ["local"]) == 0
    pid = iso_pid(kernel, capsys)
    if before is not None:
        before()
    with pytest.raises(ConduitError) as info:
        kernel.run(plugin, [plugin, *argv])
    exc = info.value
    assert exc.exit_code == code
    assert re.fullmatch(message, exc.message), exc.message
    assert "\n" not in exc.message
    bystanders_work(kernel, capsys, pid)
    return kernel, exc


def fault(  # type: ignore[no-untyped-def]
    make: Callable[[], Kernel],
    run,
    capsys: pytest.CaptureFixture[str],
    plugin: str,
    code: int,
    message: str,
    *,
    argv: tuple[str, ...] = (),
    before: Callable[[], object] | None = None,
) -> Kernel:
    """The fault in a long-lived kernel, then through the CLI."""
    kernel, _ = kernel_fault(make, capsys, plugin, argv, code, message, before)
    if before is not None:
        before()
    cli_error(run, (plugin, *argv), code, message)
    return kernel


def user_of(service: str, call: str) -> str:
    """An in-process plugin whose command 'user' calls ``ctx.service(service).CALL``."""
    return manifest_block('name = "user"\napi = ">=1.0,<2"\n[[commands]]\nname = "user"') + (
        "import click\nfrom conduit.sdk import Plugin\n"
        "class P(Plugin):\n    def boot(self, ctx):\n"
        "        @click.command('user')\n        def user():\n"
        f"            click.echo(ctx.service({service!r}).{call})\n"
        "        ctx.register_command(user)\n"
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)
    return path.read_text()


def wait_dead(pid: int) -> None:
    """Block until our child ``pid`` has exited, leaving it for its Popen to reap."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


class KillWhenReady:
    """Send ``sig`` to the pid a plugin writes to ``pidfile``, from another thread."""

    def __init__(self, pidfile: Path, sig: int) -> None:
        self.pidfile = pidfile
        self.sig = sig
        self.pid: int | None = None
        self.thread = threading.Thread(target=self._kill, daemon=True)

    def _kill(self) -> None:
        self.pid = int(wait_for_file(self.pidfile))
        os.kill(self.pid, self.sig)

    def __call__(self) -> None:
        self.pidfile.unlink(missing_ok=True)
        self.thread = threading.Thread(target=self._kill, daemon=True)
        self.thread.start()


# -- errors in plugin code ---------------------------------------------------------------
def test_uncaught_exception_in_a_command(companions, kernels, run, capsys):
    write(companions, "boom.py", process_plugin("boom", 'raise ValueError("kaboom")'))
    kernel = fault(
        kernels,
        run,
        capsys,
        "boom",
        1,
        re.escape("plugin 'boom': command 'boom' failed: ValueError: kaboom"),
    )
    # an error in plugin code is not a host failure: the same host runs the next command
    pid = host_of(kernel, "boom").proc.pid
    with pytest.raises(ConduitError):
        kernel.run("boom", ["boom"])
    assert host_of(kernel, "boom").proc.pid == pid
    # --debug shows both tracebacks, the plugin's from its host process
    r = run("--debug", "boom")
    assert r.code == 1
    assert "traceback in the plugin's host process:" in r.err
    assert 'raise ValueError("kaboom")' in r.err


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("boot", "plugin 'bootfail': failed to boot: RuntimeError: no config"),
        ("import", "plugin 'bootfail': failed to import: RuntimeError: no config"),
    ],
    ids=["boot", "import"],
)
def test_exception_while_booting_in_the_child(companions, kernels, run, capsys, where, message):
    raise_it = 'raise RuntimeError("no config")'
    if where == "boot":
        src = process_plugin("bootfail", "pass", boot=raise_it)
    else:
        src = process_plugin("bootfail", "pass", module=raise_it)
    write(companions, "bootfail.py", src)
    kernel = fault(kernels, run, capsys, "bootfail", 3, re.escape(message))
    assert kernel.states["bootfail"] == "failed"
    assert kernel.registry.owned_by("bootfail") == []
    # the child that failed to boot the plugin is not left running
    assert not host_of(kernel, "bootfail").alive
    assert host_of(kernel, "bootfail").proc is None


# -- crashes -----------------------------------------------------------------------------
def test_os_exit_is_a_crash(companions, kernels, run, capsys):
    write(companions, "quitter.py", process_plugin("quitter", "os._exit(9)"))
    fault(
        kernels,
        run,
        capsys,
        "quitter",
        3,
        re.escape("plugin 'quitter': its host crashed (exited with status 9) during 'command.run'"),
    )


@linux_only
def test_segfault_names_the_signal(companions, kernels, run, capsys):
    body = """
    import ctypes, resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the working directory
    ctypes.string_at(0)
    """
    write(companions, "segv.py", process_plugin("segv", body))
    fault(
        kernels,
        run,
        capsys,
        "segv",
        3,
        re.escape(
            "plugin 'segv': its host crashed (killed by signal SIGSEGV) during 'command.run'"
        ),
    )


def test_sigkill_from_outside(companions, kernels, run, capsys, tmp_path):
    pidfile = tmp_path / "victim.pid"
    body = f"note({str(pidfile)!r}, str(os.getpid()))\ntime.sleep(30)"
    write(companions, "victim.py", process_plugin("victim", body))
    killer = KillWhenReady(pidfile, signal.SIGKILL)
    message = re.escape(
        "plugin 'victim': its host crashed (killed by signal SIGKILL) during 'command.run'"
    )
    fault(kernels, run, capsys, "victim", 3, message, before=killer)
    killer.thread.join(5)
    assert killer.pid is not None and gone(killer.pid)


def test_crash_is_reported_even_if_a_grandchild_holds_the_connection(
    companions, kernels, run, capsys, tmp_path, conduit_home
):
    """A program the plugin started must not inherit the host's socket: when the host
    dies the kernel sees it at once, not when the grandchild exits."""
    configure(conduit_home, "[process]\ncommand-timeout = 20")
    pidfile = tmp_path / "grandchild.pid"
    body = f"""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], close_fds=False)
    note({str(pidfile)!r}, str(sleeper.pid))
    os._exit(9)
    """
    write(companions, "parent.py", process_plugin("parent", body))
    message = re.escape(
        "plugin 'parent': its host crashed (exited with status 9) during 'command.run'"
    )
    try:
        kernel_fault(kernels, capsys, "parent", (), 3, message)
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


# -- hangs -------------------------------------------------------------------------------
@pytest.mark.timeout(20)
def test_hung_command_is_stopped_after_command_timeout(
    companions, kernels, run, capsys, tmp_path, conduit_home
):
    configure(conduit_home, "[process]\ncommand-timeout = 0.5")
    pidfile = tmp_path / "hang.pid"
    body = f"note({str(pidfile)!r}, str(os.getpid()))\ntime.sleep(60)"
    write(companions, "hang.py", process_plugin("hang", body))
    message = re.escape(
        "plugin 'hang': did not answer 'command.run' within 0.5 s; its host was stopped"
    )
    fault(kernels, run, capsys, "hang", 3, message)
    assert gone(int(pidfile.read_text()))


HOOK_AND_SERVICE = """
class Slow:
    def wait(self):
        time.sleep(60)

def hook(command):
    time.sleep(60)
"""


@pytest.mark.timeout(30)
def test_hung_service_call_is_stopped_after_timeout(companions, kernels, run, capsys, conduit_home):
    configure(conduit_home, "[process]\ntimeout = 1.5")
    toml = '[provides]\nservices = ["slow"]'
    src = process_plugin(
        "slowsvc",
        "pass",
        toml=toml,
        module=HOOK_AND_SERVICE,
        boot='ctx.register_service("slow", Slow)',
    )
    write(companions, "slowsvc.py", src)
    write(companions, "user.py", user_of("slow", "wait()"))
    message = re.escape(
        "plugin 'slowsvc': did not answer 'service.call' within 1.5 s; its host was stopped"
    )
    fault(kernels, run, capsys, "user", 3, message)


@linux_only
@pytest.mark.timeout(30)
def test_host_that_stops_reading_does_not_block_a_large_request(
    companions, kernels, capsys, conduit_home
):
    # A request bigger than the pipe or socket buffer, to a host that reads nothing (here:
    # stopped with SIGSTOP): writing it must give up at the call's timeout too.
    configure(conduit_home, "[process]\ntimeout = 1.5")
    toml = '[provides]\nservices = ["size"]'
    module = "class Size:\n    def of(self, text):\n        return len(text)\n"
    boot = 'ctx.register_service("size", Size)'
    write(
        companions, "sizer.py", process_plugin("sizer", "pass", toml=toml, module=module, boot=boot)
    )
    kernel = kernels()
    pid = iso_pid(kernel, capsys)
    size = kernel.service("size")
    assert size.of("x" * 10) == 10
    host = host_of(kernel, "sizer")
    assert host.proc is not None
    os.kill(host.proc.pid, signal.SIGSTOP)
    start = time.monotonic()
    with pytest.raises(
        ConduitError,
        match=re.escape(
            "plugin 'sizer': did not answer 'service.call' within 1.5 s; its host was stopped"
        ),
    ):
        size.of("x" * (4 * 1024 * 1024))
    assert time.monotonic() - start < 10
    bystanders_work(kernel, capsys, pid)


@pytest.mark.timeout(30)
def test_hung_hook_is_stopped_and_the_command_still_runs(
    companions, kernels, run, capsys, conduit_home
):
    configure(conduit_home, "[process]\ntimeout = 1.5")
    toml = 'activation = ["command:local"]'
    src = process_plugin(
        "slowhook",
        "pass",
        toml=toml,
        module=HOOK_AND_SERVICE,
        boot='ctx.register_hook("before_command", hook)',
    )
    write(companions, "slowhook.py", src)
    expected = "did not answer 'hook.call' within 1.5 s; its host was stopped"
    # in a long-lived kernel: the hook's failure is a warning, the command runs
    kernel = kernels()
    pid = iso_pid(kernel, capsys)
    assert kernel.run("local", ["local"]) == 0
    assert capsys.readouterr().out == "local ok\n"
    first = kernel.warnings[0].message
    assert first.startswith("plugin 'slowhook': ") and first.endswith(expected), first
    bystanders_work(kernel, capsys, pid)
    # through the CLI
    r = run("local")
    assert (r.code, r.out) == (0, "local ok\n")
    warning = r.err.splitlines()[0]
    assert warning.startswith("conduit: warning: plugin 'slowhook': ") and expected in warning, (
        r.err
    )
    assert "Traceback" not in r.err
    assert run("iso").out.startswith("iso ok ")


def test_service_result_that_cannot_cross_the_boundary(companions, kernels, run, capsys):
    """A plugin's service returns something the codec cannot encode: an error answer;
    the host does not die of it."""
    module = """
    class Odd:
        def get(self):
            return {1, 2}

        def pid(self):
            return os.getpid()
    """
    src = process_plugin(
        "oddsvc",
        "pass",
        toml='[provides]\nservices = ["odd"]',
        module=module,
        boot='ctx.register_service("odd", Odd)',
    )
    write(companions, "oddsvc.py", src)
    write(companions, "user.py", user_of("odd", "get()"))
    message = re.escape(
        "plugin 'oddsvc': its host refused the request: cannot send the result: "
        "Object of type set is not JSON serializable (code -32603)"
    )
    kernel = fault(kernels, run, capsys, "user", 3, message)
    pid = kernel.service("odd").pid()
    with pytest.raises(ConduitError, match=message):
        kernel.service("odd").get()
    assert kernel.service("odd").pid() == pid  # the same host answers on


# -- resources ---------------------------------------------------------------------------
@linux_only
def test_memory_blow_up_under_memory_limit(companions, kernels, run, capsys, conduit_home):
    configure(conduit_home, "[process]\nmemory-mb = 256")
    body = """
    if args:
        click.echo("small is fine")
    else:
        hog = bytearray(2 * 1024**3)
    """
    write(companions, "memhog.py", process_plugin("memhog", body))
    either = (
        r"plugin 'memhog': command 'memhog' failed: MemoryError.*"
        r"|plugin 'memhog': its host crashed \(.*\) during 'command.run'"
    )
    kernel = kernels()
    pid = iso_pid(kernel, capsys)  # the limit applies to every host, and it is enough for one
    with pytest.raises(ConduitError) as info:
        kernel.run("memhog", ["memhog"])
    assert re.fullmatch(either, info.value.message), info.value.message
    assert info.value.exit_code == (1 if "MemoryError" in info.value.message else 3)
    bystanders_work(kernel, capsys, pid)
    # the host (or its replacement) still serves the plugin
    assert kernel.run("memhog", ["memhog", "small"]) == 0
    assert capsys.readouterr().out == "small is fine\n"
    r = run("memhog")
    assert r.code in (1, 3)
    assert re.fullmatch("error: (" + either + ")", r.err.splitlines()[0])
    assert "Traceback" not in r.err


# -- protocol violations -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        pytest.param(b"\x00\x00\x00\x05hello", r"undecodable json message: .*", id="garbage"),
        pytest.param(b"\x00\x00\x00\x02[]", r"not a JSON-RPC 2\.0 message", id="not-jsonrpc"),
        pytest.param(
            b"\xff\xff\xff\xff",
            r"frame of 4294967295 bytes exceeds the limit of 16777216",
            id="oversized",
        ),
    ],
)
def test_garbage_on_the_channel_is_a_protocol_violation(
    companions, kernels, run, capsys, tmp_path, frame, problem
):
    pidfile = tmp_path / "liar.pid"
    body = f"note({str(pidfile)!r}, str(os.getpid()))\nos.write(rpc_socket(), {frame!r})\ntime.sleep(30)"
    write(companions, "liar.py", process_plugin("liar", body))
    message = rf"plugin 'liar': its host broke the protocol \({problem}\); it was stopped"
    kernel, _ = kernel_fault(kernels, capsys, "liar", (), 3, message)
    assert gone(int(pidfile.read_text()))  # stopped at once, not left sleeping
    assert not host_of(kernel, "liar").alive
    cli_error(run, ("liar",), 3, message)


def test_frame_limit_comes_from_the_config(companions, kernels, run, capsys, conduit_home):
    configure(conduit_home, "[process]\nmax-frame-mb = 1")
    header = (2 * 1024 * 1024).to_bytes(4, "big")
    body = f"os.write(rpc_socket(), {header!r})\ntime.sleep(30)"
    write(companions, "liar.py", process_plugin("liar", body))
    message = re.escape(
        "plugin 'liar': its host broke the protocol "
        "(frame of 2097152 bytes exceeds the limit of 1048576); it was stopped"
    )
    fault(kernels, run, capsys, "liar", 3, message)


def test_protocol_version_mismatch_is_refused(companions, kernels, run, capsys):
    write(companions, "shake.py", process_plugin("shake", 'click.echo("shaken")'))
    message = re.escape(
        "plugin 'shake': its host refused the request: unsupported protocol version 99; "
        "this host speaks 1 (code -32602)"
    )

    kernel = kernels()
    pid = iso_pid(kernel, capsys)
    # only the kernel's side changes: the child is a fresh interpreter
    with pytest.MonkeyPatch.context() as patch, pytest.raises(ConduitError) as info:
        patch.setattr(rpc, "PROTOCOL_VERSION", 99)
        kernel.run("shake", ["shake"])
    assert info.value.exit_code == 3
    assert re.fullmatch(message, info.value.message), info.value.message
    assert not host_of(kernel, "shake").alive  # the refused child was stopped
    bystanders_work(kernel, capsys, pid)
    # with matching versions the same kernel starts the plugin normally
    assert kernel.run("shake", ["shake"]) == 0
    assert capsys.readouterr().out == "shaken\n"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rpc, "PROTOCOL_VERSION", 99)
        r = run("shake")
    assert r.code == 3
    assert re.fullmatch("error: " + message, r.err.splitlines()[0])
    assert "Traceback" not in r.err
    assert run("shake").out == "shaken\n"


# -- restarts ----------------------------------------------------------------------------
FLAKY = """
if args == ("crash",):
    os._exit(9)
if args == ("hang",):
    time.sleep(60)
if args == ("garble",):
    os.write(rpc_socket(), b"\\xff\\xff\\xff\\xff")
    time.sleep(60)
click.echo(os.getpid())
"""


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ("crash", r"its host crashed \(exited with status 9\) during 'command.run'"),
        ("hang", r"did not answer 'command.run' within 1 s; its host was stopped"),
        ("garble", r"its host broke the protocol \(frame of .*\); it was stopped"),
    ],
    ids=["crash", "timeout", "protocol"],
)
def test_restart_after_a_fault_is_at_once(
    companions, kernels, capsys, conduit_home, fault, problem
):
    """docs/protocol.md, Lifecycle: after a fault of a host that had started, the next
    call starts a new one at once; only a failed start holds the next one back."""
    configure(conduit_home, "[process]\ncommand-timeout = 1")
    write(companions, "flaky.py", process_plugin("flaky", FLAKY))
    kernel = kernels()
    pid = iso_pid(kernel, capsys)
    assert kernel.run("flaky", ["flaky"]) == 0
    first = int(capsys.readouterr().out)
    with pytest.raises(ConduitError, match=problem):
        kernel.run("flaky", ["flaky", fault])
    assert kernel.run("flaky", ["flaky"]) == 0  # at once: nothing holds it back
    second = int(capsys.readouterr().out)
    assert second != first
    assert gone(first)
    # registrations made at the first activation still route to the new host
    assert kernel.states["flaky"] == "active"
    bystanders_work(kernel, capsys, pid)


def held_back(kernel: Kernel, name: str) -> str:
    """Activate ``name``, whose host fails to start, until a start is held back; return
    that error's message. (The first failure holds the next start back 0.1 s, doubling:
    on a slow machine a retry may come too late for the first hold, not for all.)"""
    for _ in range(6):
        with pytest.raises(ConduitError) as info:
            kernel.activate(name)
        if "held back" in info.value.message:
            return info.value.message
    raise AssertionError("no start was held back")


BOOT_FAILURES = {
    "crash": ("os._exit(9)", "it crashed: exited with status 9"),
    "signal": ("os.kill(os.getpid(), signal.SIGKILL)", "it was killed by signal SIGKILL"),
    "timeout": ("time.sleep(60)", "it did not answer 'initialize' within 1 s"),
    "protocol": (
        'os.write(rpc_socket(), b"\\x00\\x00\\x00\\x02[]")',
        r"it broke the protocol: not a JSON-RPC 2\.0 message",
    ),
    "stray-output": (
        'os.write(rpc_socket(), b"starting up...\\n")',
        "it wrote non-protocol output to its channel",
    ),
}


@pytest.mark.parametrize("failure", list(BOOT_FAILURES))
def test_held_back_start_says_why_the_last_start_failed(
    companions, kernels, capsys, conduit_home, failure
):
    boot, cause = BOOT_FAILURES[failure]
    configure(conduit_home, "[process]\ntimeout = 1")
    write(companions, "fragile.py", process_plugin("fragile", "pass", boot=boot))
    kernel = kernels()
    message = held_back(kernel, "fragile")
    assert re.fullmatch(
        rf"plugin 'fragile': its host failed to start \({cause}\); "
        r"restarting is held back for \d\.\d s",
        message,
    ), message
    bystanders_work(kernel, capsys, None)


def fails_to_start_then_holds_back(kernel: Kernel, name: str, back_off: float) -> None:
    """Once the current hold is over, activating ``name`` fails (its host exits with
    status 9 while booting) and holds further starts back for ``back_off`` seconds."""
    host = host_of(kernel, name)
    time.sleep(max(0.0, host._retry_at - time.monotonic()) + 0.01)
    before = time.monotonic()
    with pytest.raises(
        ConduitError, match=r"its host crashed \(exited with status 9\) during 'initialize'"
    ):
        kernel.activate(name)
    after = time.monotonic()
    # the crash happened between `before` and `after`; so did the hold's start
    assert host._retry_at - after <= back_off <= host._retry_at - before


def test_back_off_doubles_while_the_host_keeps_failing_to_start(
    companions, kernels, capsys, tmp_path
):
    flag = tmp_path / "broken"
    flag.touch()
    boot = f"if os.path.exists({str(flag)!r}):\n    os._exit(9)"
    write(companions, "fragile.py", process_plugin("fragile", 'click.echo("up")', boot=boot))
    kernel = kernels()
    host = host_of(kernel, "fragile")
    for back_off in (0.1, 0.2):
        fails_to_start_then_holds_back(kernel, "fragile", back_off)
        with pytest.raises(ConduitError, match="restarting is held back"):
            kernel.activate("fragile")
    flag.unlink()
    time.sleep(max(0.0, host._retry_at - time.monotonic()) + 0.01)
    assert kernel.run("fragile", ["fragile"]) == 0
    assert capsys.readouterr().out == "up\n"
    bystanders_work(kernel, capsys, None)
    # a successful start resets the back-off: the next failure holds it back 0.1 s again
    flag.touch()
    proc = host.proc
    assert proc is not None
    proc.kill()  # while idle: the next call starts a new host, which fails to boot
    proc.wait()
    before = time.monotonic()
    with pytest.raises(
        ConduitError, match=r"its host crashed \(exited with status 9\) during 'initialize'"
    ):
        kernel.run("fragile", ["fragile"])
    after = time.monotonic()
    assert host._retry_at - after <= 0.1 <= host._retry_at - before


@pytest.mark.slow
def test_back_off_stops_doubling_at_five_seconds(companions, kernels, capsys):
    # a host that never starts: held back 0.1 s, doubling, but never more than 5 s (the
    # seventh failure: 6.4 s uncapped); 6.3 s of waiting in all
    write(companions, "fragile.py", process_plugin("fragile", "pass", boot="os._exit(9)"))
    kernel = kernels()
    for back_off in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0):
        fails_to_start_then_holds_back(kernel, "fragile", back_off)
    with pytest.raises(ConduitError, match=r"restarting is held back for [45]\.\d s"):
        kernel.activate("fragile")
    bystanders_work(kernel, capsys, None)


@linux_only
def test_host_killed_while_idle_is_restarted_on_the_next_call(companions, kernels, capsys):
    write(companions, "flaky.py", process_plugin("flaky", FLAKY))
    kernel = kernels()
    assert kernel.run("flaky", ["flaky"]) == 0
    first = int(capsys.readouterr().out)
    os.kill(first, signal.SIGKILL)
    wait_dead(first)
    assert kernel.run("flaky", ["flaky"]) == 0
    assert int(capsys.readouterr().out) != first


@linux_only
def test_dead_or_hung_host_never_delays_unrelated_commands(
    companions, kernels, capsys, conduit_home
):
    configure(conduit_home, "[process]\ntimeout = 1.5")
    write(companions, "stuck.py", process_plugin("stuck", "click.echo(os.getpid())"))
    kernel = kernels()
    assert kernel.run("stuck", ["stuck"]) == 0
    stuck = int(capsys.readouterr().out)
    pid = iso_pid(kernel, capsys)
    # hung: the host is stopped (it would never answer)
    os.kill(stuck, signal.SIGSTOP)
    for _ in range(3):
        bystanders_work(kernel, capsys, pid)
    assert kernel.warnings == []
    # dead
    os.kill(stuck, signal.SIGKILL)
    wait_dead(stuck)
    for _ in range(3):
        bystanders_work(kernel, capsys, pid)
    assert kernel.warnings == []
    kernel.shutdown()
    assert gone(stuck) and gone(pid)


@pytest.mark.timeout(20)
def test_shutdown_of_a_kernel_with_a_hung_host_is_bounded(
    companions, kernels, capsys, conduit_home
):
    configure(conduit_home, "[process]\ntimeout = 1")
    write(companions, "stuck.py", process_plugin("stuck", "click.echo(os.getpid())"))
    kernel = kernels()
    assert kernel.run("stuck", ["stuck"]) == 0
    stuck = int(capsys.readouterr().out)
    os.kill(stuck, signal.SIGSTOP)
    kernel.shutdown()
    assert gone(stuck)


# -- executables: stray output, restarts for other plugins, one fault one line -------------
def test_stray_output_on_an_executables_stdout_is_named(companions, kernels, run, capsys):
    """A print to the stdout of an executable host lands on its channel: the kernel says
    so, with the first bytes escaped, rather than report a frame of 1.2 GB."""
    write_host(companions, "stray")
    message = re.escape(
        "plugin 'stray': its host broke the protocol (the plugin wrote non-protocol "
        "output to its channel: 'Hello from main: the answer is 42\\n'); it was stopped"
    )
    kernel_fault(kernels, capsys, "stray", ("print",), 3, message)
    err = cli_error(run, ("stray", "print"), 3, message)
    assert "hint: a protocol host writes nothing but frames to its channel" in err


def test_an_executable_host_has_no_address_space_limit_unless_one_is_set(
    companions, run, conduit_home
):
    """A JVM or Node.js does not start under memory-mb's 2 GiB (they reserve far more
    address space than they use): an executable gets a limit only from
    executable-memory-mb."""
    write_host(companions, "aslim")
    r = run("aslim", "aslimit")
    assert (r.code, r.out) == (0, f"{resource.RLIM_INFINITY}\n"), r.err
    configure(conduit_home, "[process]\nexecutable-memory-mb = 3000")
    r = run("aslim", "aslimit")
    assert (r.code, r.out) == (0, f"{3000 << 20}\n"), r.err


STAT_USER = """
import click
from conduit.errors import ConduitError
from conduit.sdk import Plugin


class P(Plugin):
    def boot(self, ctx):
        @click.command("pystat")
        def pystat():
            stat = ctx.service("gostat.svc")
            first = stat.env()
            try:
                stat.crash()
            except ConduitError as exc:
                click.echo(exc.message)
            click.echo(first)
            click.echo(stat.env())

        ctx.register_command(pystat)
"""


@pytest.mark.parametrize("granted", [[], ["process:execute"]], ids=["no-grants", "execute"])
def test_restart_after_a_crash_is_the_kernels_not_the_callers(
    companions, run, conduit_home, monkeypatch, granted
):
    """An in-process plugin (under the guard) calls a service of an executable, which
    crashes; the next call restarts the executable as the kernel: not checked against the
    caller's grants, and with the kernel's environment (not the caller's granted view)."""
    write_host(companions, "gostat")
    manifest = 'name = "pystat"\napi = ">=1.0,<2"\n[[commands]]\nname = "pystat"'
    write(companions, "pystat.py", manifest_block(manifest) + STAT_USER)
    configure(conduit_home, f"pystat = {json.dumps(granted)}")  # in [grants]
    monkeypatch.setenv("PROBE", "kernel's own")
    r = run("pystat")
    assert r.code == 0, r.err
    crashed, first, second = r.out.splitlines()
    assert (
        crashed == "plugin 'gostat': its host crashed (exited with status 9) during 'service.call'"
    )
    assert first == second  # the same environment at the first start and at the restart
    assert first.endswith(', "kernel\'s own"]')  # [how many variables, $PROBE]


def test_one_fault_one_line_when_the_plugin_implements_after_command(
    companions, run, tmp_path, monkeypatch
):
    """The command crashes the executable's host; its after_command hook is then called in
    a new host (a restart after a fault is not held back), not reported as a second
    failure."""
    write_host(companions, "gohook", hook=True)
    log = tmp_path / "hooks.log"
    monkeypatch.setenv("HOOK_LOG", str(log))
    r = run("gohook", "crash")
    assert r.code == 3
    assert r.err.splitlines() == [
        "error: plugin 'gohook': its host crashed (exited with status 9) during 'command.run'",
        "hint: run the command again; if it keeps crashing, disable the plugin",
    ]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [{"command": "gohook", "argv": ["crash"], "exit_code": 3}]


AFTER_HOOK = """
def after(command, exit_code):
    pass
"""


def test_hooks_of_a_host_that_just_failed_to_start_are_skipped(
    companions, kernels, capsys, tmp_path
):
    """A host that died while idle fails to start again for the next command: that is
    the command's error, and its plugin's after_command hook adds no warning (its host is
    held back: one fault, one line)."""
    flag = tmp_path / "broken"
    boot = f'if os.path.exists({str(flag)!r}):\n    os._exit(9)\nctx.register_hook("after_command", after)'
    write(
        companions,
        "fragile.py",
        process_plugin("fragile", 'click.echo("up")', boot=boot, module=AFTER_HOOK),
    )
    kernel = kernels()
    assert kernel.run("fragile", ["fragile"]) == 0
    host = host_of(kernel, "fragile")
    assert host.proc is not None
    flag.touch()
    host.proc.kill()  # while idle: the next call starts a new host, which fails to boot
    host.proc.wait()
    with pytest.raises(
        ConduitError, match=r"its host crashed \(exited with status 9\) during 'initialize'"
    ):
        kernel.run("fragile", ["fragile"])
    assert kernel.warnings == []

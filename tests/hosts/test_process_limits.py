"""Resource limits of the process host: a fork bomb, a disk filler and a memory bomb in a
process plugin are bounded by default (``[process] max-processes``, ``max-file-mb`` and
``memory-mb``; docs/permissions-process.md#limits).

Each case runs a real ``conduit`` command of a real ``isolation = "process"`` plugin in
the real sandbox, in a fresh interpreter (:func:`cli`), and asserts the one ``error:``
line the user sees.

The fork bomb must not take the machine down if the limit does not hold: the plugin
stops by itself after ``ATTEMPTS`` forks, its children do nothing but wait for the host
to exit, :func:`cli` runs Conduit under a process limit of its own (``OUTER`` more tasks
than the machine has now), and whatever a test leaves behind is killed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conduit.config import ProcessSettings as ConfigSettings
from conduit.config import read_settings
from conduit.errors import ConduitError, ConfigError
from conduit.hosts.process import ProcessSettings
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
from conduit.security import sandbox
from conduit.timing import Profile

from _factory import manifest_block, write

linux = sys.platform == "linux"
pytestmark = [
    pytest.mark.skipif(not linux, reason="the limits are Linux rlimits"),
    pytest.mark.timeout(120),
]


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")[:2]
    return tuple(int(n) for n in release) >= (major, minor)


# RLIMIT_NPROC is counted per user namespace since Linux 5.14 (before, or without a
# namespace, the host's limit is looser: max-processes on top of every task on the
# machine, which these tests cannot pin down).
counted_per_namespace = pytest.mark.skipif(
    not linux or not sandbox.can_unshare() or not _kernel_at_least(5, 14),
    reason="needs user namespaces and Linux >= 5.14 (RLIMIT_NPROC counted per namespace)",
)

# the defaults of [process] memory-mb, max-processes and max-file-mb
DEFAULT_MEMORY_MB, DEFAULT_PROCESSES, DEFAULT_FILE_MB = 2048, 512, 4096
ATTEMPTS = 10_000  # the fork bomb's own stop, far above any limit
OUTER = 800  # tasks cli() lets Conduit add to the machine's, limit or no limit
NOBODY = 65534


@dataclass
class Result:
    code: int
    out: str
    err: str


# Runs `python -m conduit ARGS` under a process limit of its own (and, given, a file size
# limit of the user's). The kernel never applies RLIMIT_NPROC to the real user ID 0, so
# when the tests run as root the real user ID becomes nobody's: the effective one stays 0,
# and with it every file access.
_WRAPPER = f"""
import os, resource, sys
outer, fsize = int(sys.argv[1]), int(sys.argv[2])
if os.getuid() == 0:
    os.setresuid({NOBODY}, 0, 0)
with open("/proc/loadavg") as f:
    limit = int(f.read().split()[3].split("/")[1]) + outer
resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
if fsize:
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
os.execv(sys.executable, [sys.executable, "-m", "conduit", *sys.argv[3:]])
"""


def cli(*args: str, file_limit: int = 0) -> Result:
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(OUTER), str(file_limit), *args],
        capture_output=True,
        text=True,
        timeout=100,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def error_line(r: Result) -> str:
    """The one ``error:`` line; nothing else but a hint (no traceback)."""
    lines = r.err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, r.err
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), r.err
    return errors[0]


def hint_line(r: Result) -> str:
    hints = [line for line in r.err.splitlines() if line.startswith("hint: ")]
    assert len(hints) == 1, r.err
    return hints[0]


def configure(home: Path, text: str) -> None:
    (home / "config.toml").write_text(textwrap.dedent(text).strip() + "\n")


def plugin(plugin_dir: Path, name: str, body: str, *, prelude: str = "") -> None:
    """A process plugin with one command ``name`` taking an optional argument ``arg``;
    ``DATA`` is its data directory, ``note(name, text)`` writes a file there."""
    toml = f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "process"\n'
    toml += f'\n[[commands]]\nname = "{name}"\n'
    source = (
        manifest_block(toml)
        + "import ctypes, os, resource, signal, subprocess, sys, threading, time\n"
        + "import click\nfrom conduit.sdk import Plugin\n\nDATA = None\n\n"
        + "def note(name, text):\n"
        + "    with open(os.path.join(DATA, name), 'w') as f:\n"
        + "        f.write(str(text))\n\n"
        + textwrap.dedent(prelude)
        + f"\n\n@click.command({name!r})\n@click.argument('arg', required=False)\n"
        + "def command(arg):\n"
        + textwrap.indent(textwrap.dedent(body).strip(), "    ")
        + "\n\n\nclass P(Plugin):\n    def boot(self, ctx):\n"
        + "        global DATA\n        DATA = ctx.data_dir\n"
        + f"        ctx.register_command(command, {name!r})\n"
    )
    write(plugin_dir, f"{name}.py", source)


def data_file(plugin_name: str, name: str) -> Path:
    return Path(resolve().plugin_data(plugin_name)) / name


# -- processes ---------------------------------------------------------------------------
def _named(marker: str) -> list[int]:
    """The processes whose name (``comm``) is ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == marker:
                        found.append(int(entry))
            except OSError:
                pass  # gone meanwhile
    return found


@pytest.fixture
def marker() -> Iterator[str]:
    """A name the fork bomb's children give themselves; any left at the end are killed."""
    name = "cbomb" + uuid.uuid4().hex[:8]
    yield name
    for pid in _named(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def gone(marker: str) -> bool:
    """Whether every process named ``marker`` has exited (waiting up to 30 s: the
    children exit when they see their host's end of a pipe close)."""
    deadline = time.monotonic() + 30
    while _named(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# The children wait on a pipe whose write end only the host keeps: they exit as soon as
# the host does. They call no Python code that could fork again.
FORK_BOMB = """
libc = ctypes.CDLL(None)
name = MARKER.encode()
r, w = os.pipe()
count = 0
try:
    for _ in range(ATTEMPTS):
        if os.fork() == 0:
            libc.prctl(15, name, 0, 0, 0)  # PR_SET_NAME
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        count += 1
finally:
    note("count", count)
click.echo(f"forked {count}")
"""


@counted_per_namespace
@pytest.mark.slow
def test_a_fork_bomb_stops_at_the_default_process_limit(plugin_dir, marker):
    """Without the limit the plugin would fork until cli()'s own limit stops it, some
    OUTER processes: the test fails by counting more than the default limit."""
    body = FORK_BOMB.replace("MARKER", repr(marker)).replace("ATTEMPTS", str(ATTEMPTS))
    plugin(plugin_dir, "bomb", body)
    r = cli("bomb")
    count = int(data_file("bomb", "count").read_text())
    # the host itself is one of the limit's tasks
    assert count < DEFAULT_PROCESSES, f"{count} processes forked"
    assert count > DEFAULT_PROCESSES - 8, count  # the limit stopped it, not something else
    assert r.code == 1, r.err
    assert re.fullmatch(
        r"error: plugin 'bomb': command 'bomb' failed: BlockingIOError: \[Errno 11\] .*",
        error_line(r),
    )
    assert hint_line(r) == (
        f"hint: a plugin host and the programs it runs may have {DEFAULT_PROCESSES} "
        "processes and threads at once; if the plugin needs more, raise 'max-processes' in "
        "the config's [process] table (0 = no limit)"
    )
    assert gone(marker)  # every child ended with its host


THREADS = """
stop = threading.Event()
count = 0
try:
    while count < 1000:
        threading.Thread(target=stop.wait, daemon=True).start()
        count += 1
finally:
    note("count", count)
    stop.set()
"""


@counted_per_namespace
@pytest.mark.parametrize(
    "grants",
    [
        pytest.param("[]", id="no-network"),
        # no network namespace: the host makes a user namespace alone to count in
        pytest.param('["network:http"]', id="unscoped-network"),
    ],
)
def test_threads_count_towards_a_configured_process_limit(plugin_dir, conduit_home, grants):
    configure(conduit_home, f"[process]\nmax-processes = 16\n[grants]\nthreads = {grants}")
    plugin(plugin_dir, "threads", THREADS)
    r = cli("threads")
    count = int(data_file("threads", "count").read_text())
    assert 8 < count < 16, count
    assert r.code == 1, r.err
    assert error_line(r) == (
        "error: plugin 'threads': command 'threads' failed: RuntimeError: can't start new thread"
    )
    assert "may have 16 processes and threads at once" in hint_line(r)


# Programs started at once, each waiting for its input to close: a plugin that runs
# programs forks legitimately, and the default limit leaves it room (with 32 threads).
PROGRAMS = """
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(32) as pool:
    assert sum(pool.map(lambda i: i, range(320))) == sum(range(320))
children = [
    subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    for _ in range(40)
]
for child in children:
    child.stdin.close()
click.echo(f"ran {sum(child.wait() == 0 for child in children)}")
"""


@counted_per_namespace
def test_a_plugin_that_runs_programs_has_room_under_the_default_limits(plugin_dir, conduit_home):
    configure(conduit_home, '[grants]\nrunner = ["process:execute"]')
    plugin(plugin_dir, "runner", PROGRAMS)
    r = cli("runner")
    assert (r.code, r.out) == (0, "ran 40\n"), r.err


RAISE = """
for name in ("RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_FSIZE"):
    which = getattr(resource, name)
    soft, hard = resource.getrlimit(which)
    try:
        resource.setrlimit(which, (hard + 1, hard + 1))
        click.echo(f"{name} raised")
    except (OSError, ValueError):
        click.echo(f"{name} {hard}")
"""


@counted_per_namespace
def test_a_plugin_cannot_raise_its_limits(plugin_dir):
    plugin(plugin_dir, "raiser", RAISE)
    r = cli("raiser")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        f"RLIMIT_NPROC {DEFAULT_PROCESSES}",
        f"RLIMIT_AS {DEFAULT_MEMORY_MB << 20}",
        f"RLIMIT_FSIZE {DEFAULT_FILE_MB << 20}",
    ]


# -- file size ---------------------------------------------------------------------------
# Writes 1 MiB at a time to its data directory (which it may always write), up to 20 MiB.
FILLER = """
if arg == "signal":  # a plugin that lets the signal stop it instead of the error
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
if arg == "program":  # a program the plugin runs writes the file
    target = os.path.join(DATA, "fill")
    done = subprocess.run(["dd", "if=/dev/urandom", f"of={target}", "bs=1M", "count=20"],
                          stderr=subprocess.DEVNULL)
    click.echo(f"program: {done.returncode}")
    return
with open(os.path.join(DATA, "fill"), "wb") as f:
    for _ in range(20):
        f.write(bytes(1 << 20))
click.echo("filled")
"""


def test_a_disk_filler_is_stopped_at_max_file_mb(plugin_dir, conduit_home):
    configure(conduit_home, "[process]\nmax-file-mb = 5")
    plugin(plugin_dir, "filler", FILLER)
    r = cli("filler")
    assert r.code == 1, r.err
    assert error_line(r) == (
        "error: plugin 'filler': command 'filler' failed: OSError: [Errno 27] File too large "
        "(the file size limit of a plugin host is 5 MB: [process] max-file-mb)"
    )
    assert hint_line(r) == (
        "hint: if the plugin needs larger files, raise 'max-file-mb' in the config's "
        "[process] table (0 = no limit)"
    )
    assert data_file("filler", "fill").stat().st_size == 5 << 20


def test_a_lower_limit_of_the_users_own_is_kept(plugin_dir):
    """The user's shell already limits file sizes to 3 MiB: the host keeps that (it
    could not raise it) instead of failing to start, and names it."""
    plugin(plugin_dir, "filler", FILLER)
    r = cli("filler", file_limit=3 << 20)
    assert r.code == 1, r.err
    assert error_line(r).endswith(
        "(the file size limit of a plugin host is 3 MB: [process] max-file-mb)"
    )
    assert data_file("filler", "fill").stat().st_size == 3 << 20


def test_a_host_killed_by_sigxfsz_is_reported_with_the_limit(plugin_dir, conduit_home):
    configure(conduit_home, "[process]\nmax-file-mb = 5")
    plugin(plugin_dir, "filler", FILLER)
    r = cli("filler", "signal")
    assert r.code == 3, r.err
    assert error_line(r) == (
        "error: plugin 'filler': its host was stopped during 'command.run': it wrote past "
        "the file size limit of 5 MB ([process] max-file-mb)"
    )
    assert data_file("filler", "fill").stat().st_size == 5 << 20


def test_programs_a_plugin_runs_inherit_the_file_size_limit(plugin_dir, conduit_home):
    configure(
        conduit_home,
        '[process]\nmax-file-mb = 5\n[grants]\nfiller = ["process:execute"]',
    )
    plugin(plugin_dir, "filler", FILLER)
    r = cli("filler", "program")
    assert (r.code, r.out) == (0, f"program: {-signal.SIGXFSZ}\n"), r.err
    assert data_file("filler", "fill").stat().st_size == 5 << 20


FILL_SERVICE = """
# /// conduit
# name = "fillsvc"
# api = ">=1.0,<2"
# isolation = "process"
# [provides]
# services = ["fill"]
# ///
import os
from conduit.sdk import Plugin


class Fill:
    def __init__(self, data):
        self.data = data

    def fill(self):
        with open(os.path.join(self.data, "fill"), "wb") as f:
            for _ in range(20):
                f.write(bytes(1 << 20))


class P(Plugin):
    def boot(self, ctx):
        ctx.register_service("fill", lambda: Fill(ctx.data_dir))
"""


def test_a_service_call_past_the_file_size_limit_names_it(plugin_dir, conduit_home):
    configure(conduit_home, "[process]\nmax-file-mb = 5")
    write(plugin_dir, "fillsvc.py", FILL_SERVICE)
    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths)
    try:
        with pytest.raises(ConduitError) as info:
            kernel.service("fill").fill()
    finally:
        kernel.shutdown()
    assert info.value.message == (
        "plugin 'fillsvc': OSError: [Errno 27] File too large (the file size limit of a "
        "plugin host is 5 MB: [process] max-file-mb)"
    )
    assert info.value.hint is not None and "raise 'max-file-mb'" in info.value.hint


# -- memory ------------------------------------------------------------------------------
# bytes(n) is calloc'ed: without a limit its pages are never touched, so the test stays
# harmless on a machine where the allocation succeeds.
MEMORY_BOMB = """
size = 64 if arg == "small" else MB + 512
data = bytes(size << 20)
click.echo(f"allocated {len(data) >> 20} MiB")
"""


def test_a_memory_bomb_fails_under_the_default_memory_limit(plugin_dir):
    default = DEFAULT_MEMORY_MB
    plugin(plugin_dir, "memhog", MEMORY_BOMB.replace("MB", str(default)))
    r = cli("memhog")
    assert r.code == 1, (r.out, r.err)
    assert error_line(r) == (
        "error: plugin 'memhog': command 'memhog' failed: MemoryError (the memory limit of a "
        f"plugin host is {default} MB: [process] memory-mb)"
    )
    assert hint_line(r) == (
        "hint: if the plugin needs more memory, raise 'memory-mb' in the config's [process] "
        "table (0 = no limit)"
    )
    r = cli("memhog", "small")
    assert (r.code, r.out) == (0, "allocated 64 MiB\n"), r.err


# -- settings ----------------------------------------------------------------------------
def test_the_limits_are_on_by_default():
    config = ConfigSettings()
    host = ProcessSettings()
    defaults = (DEFAULT_MEMORY_MB, DEFAULT_PROCESSES, DEFAULT_FILE_MB)
    assert (config.memory_mb, config.max_processes, config.max_file_mb) == defaults
    assert (host.memory_mb, host.max_processes, host.max_file_mb) == defaults
    table = {"memory-mb": 0, "max-processes": 0, "max-file-mb": 0}  # 0: no limit
    off = ProcessSettings(table)
    assert (off.memory_mb, off.max_processes, off.max_file_mb) == (0, 0, 0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max-processes = -1", "process.max-processes: expected an integer >= 0"),
        ("max-file-mb = -5", "process.max-file-mb: expected an integer >= 0"),
        ("memory-mb = -1", "process.memory-mb: expected an integer >= 0"),
        ("max-processes = 3", "process.max-processes: 3 is too few for a plugin host to work"),
    ],
)
def test_bad_limits_are_refused(conduit_home, line, message):
    path = conduit_home / "config.toml"
    path.write_text(f"[process]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        read_settings(str(path))
    assert info.value.message == f"{path}:2: {message}"

"""Ctrl-C while a process-hosted command runs, and output too big for one frame.

Ctrl-C is tested on a real ``conduit`` process: SIGINT goes to the kernel only (as if the
terminal had delivered it there), so what reaches the command in the host is what the
kernel forwards (``$/cancel`` and SIGINT), and nothing else; and, as a terminal does, to
the whole process group, against a host that answers before the kernel has done anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_process_faults import configure, gone, process_plugin, wait_for_file

from _protocol_host import write_host

from _factory import write

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals"),
]

# The command notes its host's pid, then sleeps; each KeyboardInterrupt it gets is noted.
# ``stubborn`` swallows them (a command that ignores Ctrl-C), the other lets it through.
SLEEPER = """
note({ready!r}, str(os.getpid()))
for attempt in range(3):
    try:
        time.sleep(30)
    except KeyboardInterrupt:
        note({interrupted!r} + str(attempt), "interrupted")
        if not {stubborn}:
            raise
"""


@pytest.fixture(autouse=True)
def grants(conduit_home: Path, tmp_path: Path) -> None:
    """The sleeper notes its state in files under tmp_path, big writes what it printed to
    the file BIG_OUT names: their sandboxes need those grants."""
    (conduit_home / "config.toml").write_text(
        f'[grants]\nsleeper = ["filesystem:write:{tmp_path}"]\n'
        f'big = ["filesystem:write:{conduit_home}", "env:read:BIG_OUT"]\n'
    )


def sleeper(tmp_path: Path, stubborn: bool) -> str:
    body = SLEEPER.format(
        ready=str(tmp_path / "ready"),
        interrupted=str(tmp_path / "interrupted"),
        stubborn=stubborn,
    )
    return process_plugin("sleeper", body)


def start_conduit(*args: str) -> subprocess.Popen[str]:
    """``conduit ARGS`` in its own session, with SIGINT handled as in a terminal (a parent
    that ignores SIGINT, like a background job, would make Python ignore it too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "conduit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_ctrl_c_cancels_the_command_in_its_host(plugin_dir, tmp_path):
    write(plugin_dir, "sleeper.py", sleeper(tmp_path, stubborn=False))
    proc = start_conduit("sleeper")
    try:
        host = int(wait_for_file(tmp_path / "ready", timeout=30))
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    # the kernel forwarded the interrupt: the command itself saw KeyboardInterrupt
    assert (tmp_path / "interrupted0").read_text() == "interrupted"
    assert err.endswith("Aborted.\n"), err
    assert "Traceback" not in err
    assert wait_gone(host)  # and the host was shut down with the kernel


@pytest.mark.parametrize("second_ctrl_c", [False, True], ids=["grace-timeout", "second-ctrl-c"])
def test_command_ignoring_ctrl_c_is_killed(plugin_dir, tmp_path, conduit_home, second_ctrl_c):
    # With a second Ctrl-C the grace period is never waited for: it is longer than the
    # test's timeout.
    configure(conduit_home, f"[process]\ncancel-grace = {120 if second_ctrl_c else 0.5}")
    write(plugin_dir, "sleeper.py", sleeper(tmp_path, stubborn=True))
    proc = start_conduit("sleeper")
    try:
        host = int(wait_for_file(tmp_path / "ready", timeout=30))
        os.kill(proc.pid, signal.SIGINT)
        try:
            wait_for_file(tmp_path / "interrupted0", timeout=30)  # forwarded, and swallowed
        except AssertionError:
            proc.kill()
            raise AssertionError(f"not forwarded; conduit said: {proc.communicate()}") from None
        if second_ctrl_c:
            os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.endswith("Aborted.\n"), err
    assert "Traceback" not in err
    assert wait_gone(host)  # killed, not left behind
    assert not (tmp_path / "interrupted1").exists()  # one interrupt reached it, not two


def test_one_write_larger_than_the_frame_limit_is_split(plugin_dir, run, conduit_home):
    """docs/protocol.md: each $/output notification must fit in a frame, so a single
    write of 3 MiB with a 1 MiB limit arrives whole, as several frames."""
    configure(conduit_home, "[process]\nmax-frame-mb = 1")
    body = """
    text = "".join(chr(32 + i % 90) for i in range(3 * 1024 * 1024)) + "\\x1b\\u00e9" * 300000
    sys.stdout.write(text)
    sys.stdout.flush()
    note(os.environ["BIG_OUT"], text)
    """
    write(plugin_dir, "big.py", process_plugin("big", body))
    expected_path = conduit_home / "expected.txt"
    os.environ["BIG_OUT"] = str(expected_path)
    try:
        r = run("big")
    finally:
        del os.environ["BIG_OUT"]
    assert r.code == 0, r.err
    expected = expected_path.read_text()
    assert len(expected) > 3 * 1024 * 1024
    assert r.out == expected


@pytest.mark.timeout(400)
def test_terminal_ctrl_c_never_loses_what_the_host_answered(plugin_dir, conduit_home, tmp_path):
    """A terminal's Ctrl-C reaches the kernel and the host together. A host that answers
    at once (its last output, then its -32800) may have written both before the kernel
    handles the signal: the kernel must still show that output, and not wait for an
    answer it has already read (cancel-grace is 10 minutes here: waiting for such an
    answer would hang the run). 50 times, each in a fresh conduit."""
    configure(conduit_home, '[process]\ncodec = "msgpack"\ncancel-grace = 600')
    write_host(plugin_dir, "quick")
    for attempt in range(50):
        ready = tmp_path / f"ready{attempt}"
        os.environ["HOST_READY"] = str(ready)
        try:
            proc = start_conduit("quick", "ctrlc")
        finally:
            del os.environ["HOST_READY"]
        try:
            host = int(wait_for_file(ready, timeout=30))
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"run {attempt}: conduit waited for an answer it had read; {out=} {err=}")
        finally:
            proc.kill()
        assert (proc.returncode, out) == (130, "first line\nlast line\n"), (attempt, err)
        assert err.endswith("Aborted.\n"), err
        assert "Traceback" not in err
        assert wait_gone(host)

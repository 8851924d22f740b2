"""kill -9 of ``conduit plugins install`` at random points: the installer and its build
children die with Conduit, the lock file and the environment stay consistent, and every
later run warns of the interrupted operation until it is recovered. Real pip building a
real source directory in a real venv."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_dependency_consent import source_tree
from test_store import (  # noqa: F401 (fixtures)
    Venv,
    _plugin_files,
    conduit_wheel,
    index,
    make_venv,
    wheels,
)

from _factory import PackageIndex

pytestmark = pytest.mark.slow

INTERRUPTED = (
    "conduit: warning: 'conduit plugins install' was interrupted and may have left plugins "
    "half-changed; run 'conduit plugins lock' to restore the state from before it"
)


def processes_of(root: Path) -> list[str]:
    """The live processes whose command line names ``root`` (the venv: the installer,
    its build backends, the supervisor, Conduit itself)."""
    needle = os.fsencode(str(root))
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:  # a zombie has an empty command line
            found.append(pid + ": " + cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def wait_for_no_process(root: Path) -> None:
    deadline = time.monotonic() + 60
    while (left := processes_of(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, left


def journal(conduit_home: Path) -> list[Path]:
    return list((conduit_home / "state" / "store").glob("journal-*"))


@pytest.mark.timeout(900)  # about 100 s on a 2-core machine: 20 rounds of a real install
def test_twenty_kills_leave_no_installer_a_consistent_state_and_a_warning_until_recovered(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    tmp_path: Path,
    conduit_home: Path,
) -> None:
    venv: Venv = make_venv(seed=True, with_uv=False)  # pip: builds in child processes
    assert venv.conduit("plugins", "install", "cstore-hello==1.0.0").returncode == 0
    lock = conduit_home / "pylock.conduit.toml"
    lock_before = lock.read_bytes()
    base = {"cstore-hello": "1.0.0"}

    project = source_tree(
        tmp_path / "slow",
        "cstore-slow",
        "1.0.0",
        marker=None,
        **_plugin_files("cstore-slow", "slow"),  # type: ignore[arg-type]
    )
    backend = project / "backend.py"  # every build hook runs in a child for a while
    backend.write_text("import time\ntime.sleep(0.4)\n" + backend.read_text())

    started = time.monotonic()
    r = venv.conduit("plugins", "install", str(project))
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert venv.conduit("plugins", "uninstall", "slow").returncode == 0
    assert lock.read_bytes() == lock_before

    rng = random.Random(os.environ.get("PYTEST_SEED", "15"))
    outcomes = {"before": 0, "interrupted": 0, "committed": 0}
    for _ in range(20):
        proc = venv.popen("plugins", "install", str(project))
        time.sleep(rng.uniform(0.1, 1.0) * took)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        wait_for_no_process(venv.root)

        if journal(conduit_home):
            outcomes["interrupted"] += 1
            for _run in range(2):  # every run warns, whether or not the index is rebuilt
                r = venv.conduit("--help")
                assert r.returncode == 0
                assert r.stderr.splitlines().count(INTERRUPTED) == 1, r.stderr
            r = venv.conduit("plugins", "lock")  # recovers first
            assert r.returncode == 0, r.stderr
            assert "restored the plugins and lock file from before an interrupted" in r.stdout
            assert not journal(conduit_home)
            assert lock.read_bytes() == lock_before
            assert venv.dists() == base
        elif venv.dists() == base:
            outcomes["before"] += 1  # killed before the transaction began
            assert lock.read_bytes() == lock_before
        else:
            outcomes["committed"] += 1  # killed after the commit point
            assert venv.dists() == {**base, "cstore-slow": "1.0.0"}
            assert b'name = "cstore-slow"' in lock.read_bytes()
            assert venv.conduit("plugins", "uninstall", "slow").returncode == 0
            assert lock.read_bytes() == lock_before
        r = venv.conduit("hello-run")
        assert (r.stdout, r.stderr) == ("hello 1.0.0\n", ""), outcomes  # no warning left
    assert outcomes["interrupted"] > 0, outcomes


def test_recovery_drops_a_distribution_the_killed_installer_left_without_record(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    conduit_home: Path,
) -> None:
    """What a kill during the installer's write leaves: a ``.dist-info`` without ``RECORD``
    (pip and uv write it last), which neither installer can uninstall."""
    venv: Venv = make_venv(seed=True, with_uv=False)
    lock, lock_before = interrupted_install(venv, conduit_home)
    half = venv.site / "cstore_slow-1.0.0.dist-info"
    half.mkdir()
    (half / "METADATA").write_text("Metadata-Version: 2.1\nName: cstore-slow\nVersion: 1.0.0\n")
    (venv.site / "cstore_slow").mkdir()
    lock.write_text("half-written\n")

    r = venv.conduit("--help")
    assert r.stderr.splitlines() == [INTERRUPTED]
    r = venv.conduit("plugins", "lock")
    assert r.returncode == 0, r.stderr
    assert "restored the plugins and lock file from before an interrupted 'install'" in r.stdout
    assert not half.exists()
    assert venv.dists() == {"cstore-hello": "1.0.0"}
    assert lock.read_bytes() == lock_before
    r = venv.conduit("hello-run")
    assert (r.stdout, r.stderr) == ("hello 1.0.0\n", "")


def test_recovery_removes_what_the_installer_left_before_its_last_record(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    conduit_home: Path,
) -> None:
    """pip writes the wheel's files (its own RECORD among them), then INSTALLER, REQUESTED
    and direct_url.json, and RECORD again, listing those, last. Killed in between, an
    uninstall by the wheel's RECORD left the three files and their ``.dist-info`` behind:
    a directory that looked installed and was no distribution (no METADATA)."""
    venv: Venv = make_venv(seed=True, with_uv=False)
    lock, lock_before = interrupted_install(venv, conduit_home)
    info = venv.site / "cstore_slow-1.0.0.dist-info"
    info.mkdir()
    (venv.site / "cstore_slow").mkdir()
    (venv.site / "cstore_slow" / "__init__.py").write_text("")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cstore-slow\nVersion: 1.0.0\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    (info / "RECORD").write_text(  # the wheel's own: none of the files pip writes after
        "".join(
            f"{path},,\n"
            for path in (
                "cstore_slow/__init__.py",
                "cstore_slow-1.0.0.dist-info/METADATA",
                "cstore_slow-1.0.0.dist-info/WHEEL",
                "cstore_slow-1.0.0.dist-info/RECORD",
            )
        )
    )
    (info / "INSTALLER").write_text("pip\n")
    (info / "REQUESTED").write_text("")
    (info / "direct_url.json").write_text('{"url": "file:///nowhere", "dir_info": {}}')

    r = venv.conduit("plugins", "lock")
    assert r.returncode == 0, r.stderr
    assert "restored the plugins and lock file from before an interrupted 'install'" in r.stdout
    assert not info.exists()
    assert not (venv.site / "cstore_slow").exists()
    assert venv.dists() == {"cstore-hello": "1.0.0"}
    assert lock.read_bytes() == lock_before


def interrupted_install(venv: Venv, conduit_home: Path) -> tuple[Path, bytes]:
    """``cstore-hello`` installed, then the journal a killed ``plugins install`` leaves
    (its state from before: that one plugin); the lock file and its bytes."""
    assert venv.conduit("plugins", "install", "cstore-hello==1.0.0").returncode == 0
    lock = conduit_home / "pylock.conduit.toml"
    lock_before = lock.read_bytes()
    code = "import json; from conduit.store._env import snapshot; print(json.dumps(snapshot().to_json()))"
    before = json.loads(subprocess.check_output([venv.python, "-c", code], text=True))
    journal_code = (
        "import json, sys; from conduit.journal import journal_file, write_journal; "
        "from conduit.paths import resolve; write_journal(journal_file(resolve()), "
        "json.loads(sys.argv[1]))"
    )
    entry = {
        "op": "install",
        "pid": dead_pid(),
        "prefix": str(venv.root),
        "before": before,
        "lock_path": str(lock),
        "lock_before": lock_before.decode(),
    }
    subprocess.run([venv.python, "-c", journal_code, json.dumps(entry)], check=True, env=venv.env)
    return lock, lock_before


def dead_pid() -> int:
    """The pid of a process that has exited (the killed Conduit's)."""
    return int(subprocess.check_output(["sh", "-c", "echo $$"], text=True))

"""Drift: the installed plugin distributions no longer match ``pylock.conduit.toml`` because
something else changed the environment (an upgrade of Conduit by ``uv tool``/``pipx``
that reinstalls it with its own requirements only, a ``pip uninstall`` by hand). Real
venvs, real uv and pip, the local index of tests/test_store.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_store import conduit_wheel, index, make_venv, wheels  # noqa: F401 (fixtures)

from _factory import UV, PackageIndex

pytestmark = pytest.mark.slow

SYNC = "run 'conduit plugins sync' to install what it locks, or 'conduit plugins lock' to lock what is installed"


def drift_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "the installed plugins differ from" in ln]


def test_an_upgrade_that_drops_the_plugins_is_warned_on_every_run_and_repaired_by_sync(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    conduit_home: Path,
    tmp_path: Path,
) -> None:
    venv = make_venv(seed=True)
    assert UV is not None
    # what Conduit's own installation holds: an upgrade by `uv tool upgrade` / `pipx
    # upgrade` reinstalls exactly this, and drops what 'conduit plugins install' added
    frozen = tmp_path / "conduit-only.txt"
    frozen.write_text(
        subprocess.check_output(
            [UV, "pip", "freeze", "--quiet", "--python", venv.python], text=True
        )
    )
    r = venv.conduit("plugins", "install", "cstore-hello==2.0.0")
    assert r.returncode == 0, r.stderr
    assert venv.conduit("plugins", "grant", "hello", "network:http").returncode == 0
    r = venv.conduit("hello-run")
    assert (r.stdout, r.stderr) == ("hello 2.0.0\n", "")
    lock = conduit_home / "pylock.conduit.toml"

    subprocess.run(
        [UV, "pip", "sync", "--quiet", "--python", venv.python, str(frozen)],
        check=True,
        env=venv.env,
        timeout=300,
    )
    assert venv.dists() == {}
    for _ in range(2):  # the first run rebuilds the index, the second reads it
        r = venv.conduit("--help")
        assert r.returncode == 0
        assert drift_lines(r.stderr) == [
            f"conduit: warning: the installed plugins differ from {lock} (cstore-dep 1.0.0 is "
            f"not installed; cstore-hello 2.0.0 is not installed): {SYNC}"
        ], r.stderr
    r = venv.conduit("plugins", "doctor")
    assert r.returncode == 1
    assert f"error: the installed plugins differ from {lock} (" in r.stdout
    assert "No broken plugins." not in r.stdout

    r = venv.conduit("plugins", "sync")
    assert r.returncode == 0, r.stderr
    assert venv.dists() == {"cstore-hello": "2.0.0", "cstore-dep": "1.0.0"}
    r = venv.conduit("hello-run")
    assert (r.stdout, r.stderr) == ("hello 2.0.0\n", "")
    r = venv.conduit("plugins", "doctor")
    assert r.returncode == 0, r.stdout
    assert "differ" not in r.stdout


def test_pip_uninstall_and_an_install_behind_the_stores_back_are_named(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    wheels: dict[str, Path],  # noqa: F811
    conduit_home: Path,
) -> None:
    venv = make_venv(seed=True)
    r = venv.conduit("plugins", "install", "cstore-hello==2.0.0")
    assert r.returncode == 0, r.stderr
    lock = conduit_home / "pylock.conduit.toml"
    lock_bytes = lock.read_bytes()

    # a real `pip uninstall` of the plugin, and a plugin installed with pip directly
    subprocess.run(
        [venv.python, "-m", "pip", "uninstall", "-q", "-y", "cstore-hello"],
        check=True,
        env=venv.env,
        timeout=300,
    )
    subprocess.run(
        [venv.python, "-m", "pip", "install", "-q", "--no-deps", str(wheels["world-1"])],
        check=True,
        env=venv.env,
        timeout=300,
    )
    r = venv.conduit("world-run")
    assert r.stdout == "world 1.0.0\n"
    assert drift_lines(r.stderr) == [
        f"conduit: warning: the installed plugins differ from {lock} (cstore-hello 2.0.0 is "
        f"not installed; cstore-world 1.0.0 is not in the lock file): {SYNC}"
    ], r.stderr
    assert lock.read_bytes() == lock_bytes  # reading it changed nothing

    # keeping what is installed: 'plugins lock' answers the warning
    r = venv.conduit("plugins", "lock")
    assert r.returncode == 0, r.stderr
    r = venv.conduit("world-run")
    assert (r.stdout, r.stderr) == ("world 1.0.0\n", "")


def test_no_drift_warning_for_an_environment_the_store_never_changed(
    make_venv,  # noqa: F811
    index: PackageIndex,  # noqa: F811
    wheels: dict[str, Path],  # noqa: F811
    conduit_home: Path,
) -> None:
    """Plugins installed with Conduit by `uv tool install conduit-devtool --with PLUGIN`:
    the store has no lock file for this environment, whatever pylock.conduit.toml is around."""
    first = make_venv()
    assert first.conduit("plugins", "install", "cstore-hello==1.0.0").returncode == 0
    second = make_venv()  # another environment, same config dir and pylock.conduit.toml
    assert UV is not None
    subprocess.run(
        [UV, "pip", "install", "--quiet", "--python", second.python, str(wheels["world-1"])],
        check=True,
        env=second.env,
        timeout=300,
    )
    r = second.conduit("world-run")
    assert (r.stdout, r.stderr) == ("world 1.0.0\n", "")

"""Install verification and the store commands' output, against real installers in real
venvs: a new or changed plugin is booted once in its own host (a child interpreter, the
process host's sandbox) before the transaction commits, and a failure rolls it back with
the plugin's one-line error; the plan, the grant prompt and the steps on a terminal,
nothing but the result when piped."""

from __future__ import annotations

from pathlib import Path

import pyte
import pytest
from test_store import (  # noqa: F401 (fixtures)
    Venv,
    conduit_wheel,
    make_venv,
)

from _factory import PackageIndex, make_wheel, pty_run

pytestmark = pytest.mark.slow

BOOT_FAILS = (
    "def _boot(self, ctx):\n    raise RuntimeError(\"missing setting 'token'\")\n"
    "Plugin.boot = _boot\n"
)

BROKEN = {
    "import": (
        "raise ImportError(\"No module named 'shiny'\")\n",
        "",
        "error: plugin 'vx': failed to import: ImportError: No module named 'shiny'",
    ),
    "boot": (
        BOOT_FAILS,
        "",
        "error: plugin 'vx': failed to boot: RuntimeError: missing setting 'token'",
    ),
    "process-crash": (
        "import os\nos.abort()\n",
        'isolation = "process"\n',
        "error: plugin 'vx': its host crashed (killed by signal SIGABRT)",
    ),
}


@pytest.fixture(scope="module")
def vwheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("verify-wheels")
    wheels = {
        "good-1": make_wheel(out, "cverify-vx", "1.0.0", plugin="vx"),
        "good-1.1": make_wheel(out, "cverify-vx", "1.1.0", plugin="vx"),
        "proc": make_wheel(
            out, "cverify-proc", "1.0.0", plugin="vproc", manifest='isolation = "process"\n'
        ),
        "asks": make_wheel(
            out, "cverify-asks", "1.0.0", plugin="asks", capabilities=("env:read:HOME",)
        ),
    }
    for kind, (code, manifest, _) in BROKEN.items():
        wheels[kind] = make_wheel(
            out / kind, "cverify-vx", "2.0.0", plugin="vx", code=code, manifest=manifest
        )
    return wheels


@pytest.fixture
def vindex(tmp_path: Path, vwheels: dict[str, Path], conduit_home: Path):  # type: ignore[no-untyped-def]
    idx = PackageIndex(tmp_path / "vindex")
    idx.add(vwheels["good-1"], vwheels["proc"], vwheels["asks"])
    (conduit_home / "config.toml").write_text(f'[store]\nindex-url = "{idx.url}"\n')
    yield idx
    idx.close()


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_release_that_fails_to_load_is_rolled_back_with_its_error(
    make_venv,  # noqa: F811
    vindex: PackageIndex,
    vwheels: dict[str, Path],
    conduit_home: Path,
    kind: str,
) -> None:
    venv: Venv = make_venv()
    assert venv.conduit("plugins", "install", "cverify-vx").returncode == 0
    lock = (conduit_home / "pylock.conduit.toml").read_bytes()
    vindex.add(vwheels[kind])

    r = venv.conduit("plugins", "update")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith(BROKEN[kind][2]), r.stderr
    assert lines[1] == (
        "hint: nothing was changed (the previous state is restored); --no-verify skips this check"
    )
    assert len(lines) == 2 and "Traceback" not in r.stderr
    assert r.stdout == ""  # piped: the result only, and there is none
    # the environment and the lock as they were; the old release still runs
    assert dists(venv) == {"cverify-vx": "1.0.0"}
    assert (conduit_home / "pylock.conduit.toml").read_bytes() == lock
    assert venv.conduit("vx-run").stdout == "vx 1.0.0\n"

    # --debug adds the plugin's traceback from the child that booted it
    r = venv.conduit("--debug", "plugins", "install", "cverify-vx==2.0.0")
    assert r.returncode == 1
    assert "Traceback" in r.stderr and BROKEN[kind][2] in r.stderr

    # --no-verify installs it; its first use fails as verification said it would
    r = venv.conduit("plugins", "install", "--no-verify", "cverify-vx==2.0.0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("~ cverify-vx 1.0.0 -> 2.0.0\n")
    assert dists(venv) == {"cverify-vx": "2.0.0"}
    assert venv.conduit("vx-run").returncode == 3


def test_good_plugins_are_verified_in_their_hosts_and_nothing_is_granted(
    make_venv,  # noqa: F811
    vindex: PackageIndex,
    conduit_home: Path,
) -> None:
    venv: Venv = make_venv()
    # an in-process one, a process one (its sandbox) and one that asks for a capability
    # it is not granted: verified together, installed; verification granted nothing
    r = venv.conduit("plugins", "install", "cverify-vx", "cverify-proc", "cverify-asks")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:3] == [
        "+ cverify-asks 1.0.0",
        "+ cverify-proc 1.0.0",
        "+ cverify-vx 1.0.0",
    ]
    assert "[grants]" not in (conduit_home / "config.toml").read_text()
    assert venv.conduit("vproc-run").stdout == "vproc 1.0.0\n"
    assert venv.conduit("asks-run").returncode == 3  # not granted: refused at first use


def dists(venv: Venv) -> dict[str, str]:
    """``{name: version}`` of the cverify-* distributions installed."""
    out = {}
    for info in venv.site.glob("cverify_*.dist-info"):
        name, version = info.name[: -len(".dist-info")].split("-")
        out[name.replace("_", "-")] = version
    return out


def _screen(terminal: str) -> list[str]:
    """What a 100x40 terminal shows at the end of ``terminal`` (the raw stream)."""
    screen = pyte.Screen(100, 40)
    stream = pyte.Stream(screen)
    stream.feed(terminal.replace("\n", "\r\n"))
    return [line.rstrip() for line in screen.display if line.strip()]


def test_output_on_a_terminal_and_piped(
    make_venv,  # noqa: F811
    vindex: PackageIndex,
    vwheels: dict[str, Path],
    conduit_home: Path,
) -> None:
    venv: Venv = make_venv()
    conduit = str(venv.root / "bin" / "conduit")
    env = {k: v for k, v in venv.env.items() if k != "CI"}

    # a terminal: the plan, then the grant prompt; steps replaced in place, then erased
    code, _, terminal = pty_run(
        [conduit, "plugins", "install", "cverify-asks"], "n", env, timeout=300
    )
    assert code == 0, terminal
    assert "\r\x1b[Kconduit: installing cverify-asks (with uv) ..." in terminal
    assert "\r\x1b[Kconduit: verifying asks ..." in terminal
    assert "\r\x1b[Kconduit: writing the lock file ..." in terminal
    assert terminal.index("+ cverify-asks 1.0.0\n") < terminal.index("Grant? [y/N]")
    assert terminal.count("+ cverify-asks 1.0.0") == 1  # not again with the result
    screen = _screen(terminal)
    assert not [line for line in screen if line.startswith("conduit: ")], screen
    assert screen[0] == "+ cverify-asks 1.0.0"
    assert any(line.startswith("Installed; lock file updated: ") for line in screen), screen
    assert "Resolved" not in terminal  # uv's own output: only with --verbose

    # update and uninstall show their plans the same way
    assert venv.conduit("plugins", "install", "cverify-vx").returncode == 0
    vindex.add(vwheels["good-1.1"])
    code, _, terminal = pty_run([conduit, "plugins", "update", "cverify-vx"], None, env)
    assert code == 0, terminal
    assert "\r\x1b[Kconduit: resolving (with uv) ..." in terminal
    assert _screen(terminal)[0] == "~ cverify-vx 1.0.0 -> 1.1.0"
    code, _, terminal = pty_run([conduit, "plugins", "uninstall", "vx"], None, env)
    assert code == 0, terminal
    assert _screen(terminal)[0] == "- cverify-vx 1.1.0"

    # piped: the result only, on stdout
    r = venv.conduit("plugins", "install", "cverify-vx==1.1.0")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines()[0] == "+ cverify-vx 1.1.0"
    assert r.stdout.splitlines()[-1].startswith("Installed; lock file updated: ")

    # --verbose: the installer's output too, and the steps as plain lines
    r = venv.conduit("plugins", "uninstall", "-v", "vx")
    assert r.returncode == 0, r.stderr
    assert "conduit: uninstalling (with uv) ...\n" in r.stderr
    assert "Uninstalled 1 package" in r.stderr

    # a failed installer run: what it said is in the error, not repeated; no hint to see
    # what was shown
    for verbose in ([], ["-v"]):
        r = venv.conduit("plugins", "install", *verbose, "cverify-nowhere")
        assert r.returncode == 1
        assert "error: install: uv failed: " in r.stderr and "cverify-nowhere" in r.stderr
        assert "last lines" not in r.stderr and "--verbose" not in r.stderr


def test_a_failed_installer_runs_last_lines_come_with_the_error() -> None:
    """When the error line cannot say it all (no line of the installer's starts with
    "error"), its last lines are shown above the error, escaped; with --verbose, where its
    whole output was on the screen, neither they nor a hint to see them."""
    import io
    import sys

    from conduit.builtins.plugins._progress import Console
    from conduit.errors import StoreError
    from conduit.store._tools import Tool

    output = "".join(f"step {n}\n" for n in range(12)) + "Traceback: boom\x1b[2J\n"
    stream = io.StringIO()
    with pytest.raises(StoreError) as caught, Console(live=False, stream=stream):
        Tool("pip", sys.executable)._fail("install", 2, output)
    assert caught.value.hint == "run again with --verbose to see all of pip's output"
    assert stream.getvalue() == "pip's last lines:\n" + "".join(
        f"  {line}\n" for line in [*(f"step {n}" for n in range(3, 12)), "Traceback: boom\\x1b[2J"]
    )
    stream = io.StringIO()
    with pytest.raises(StoreError) as caught, Console(live=False, stream=stream):
        Tool("pip", sys.executable, verbose=True)._fail("install", 2, output)
    assert caught.value.hint is None
    assert stream.getvalue() == ""

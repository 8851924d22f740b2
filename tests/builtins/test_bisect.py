"""``conduit plugins bisect``: real single-file plugins, one of which breaks every command
(it activates at startup and its boot raises), found through the real command line."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from _factory import simple_plugin, write

BOOM = "boom-from-the-culprit"


def make_plugins(plugin_dir: Path, n: int, culprit: int | None) -> list[str]:
    names = [f"p{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        bad = i == culprit
        source = simple_plugin(
            name,
            (f"{name}-hello",),
            extra_toml='activation = ["startup"]' if bad else "",
            boot_prefix=f"        raise RuntimeError({BOOM!r})\n" if bad else "",
        )
        write(plugin_dir, f"{name}.py", source)
    return names


def problem_shows(run) -> bool:  # type: ignore[no-untyped-def]
    """The user's check: does a command warn about the culprit's failure?"""
    result = run("plugins", "list")
    assert result.code == 0, result.err
    return BOOM in result.err


def disabled_in(out: str) -> list[str]:
    line = next(x for x in out.splitlines() if x.startswith("  disabled: "))
    value = line.removeprefix("  disabled: ")
    return [] if value == "(none)" else value.split(", ")


@pytest.mark.parametrize(
    ("n", "culprit"),
    [(1, 0), (2, 0), (2, 1), (7, 0), (7, 3), (7, 6), (64, 0), (64, 41), (64, 63)],
)
def test_manual_bisect_finds_the_culprit_within_the_bound(
    run, plugin_dir: Path, conduit_home: Path, n: int, culprit: int
) -> None:
    names = make_plugins(plugin_dir, n, culprit)
    assert problem_shows(run)
    result = run("plugins", "bisect", "start")
    assert result.code == 0, result.err
    assert f"Bisecting {n} third-party plugins" in result.out
    steps = 0
    while "Found it" not in result.out:
        assert result.code == 0, result.err
        steps += 1
        verdict = "bad" if problem_shows(run) else "good"
        result = run("plugins", "bisect", verdict)
    assert steps <= math.ceil(math.log2(n)) + 1
    assert f"Found it: plugin '{names[culprit]}' causes the problem" in result.out
    assert f"To disable it: conduit plugins disable {names[culprit]}" in result.out
    # Over: nothing is switched off any more, and the config was never touched.
    assert not (conduit_home / "config.toml").exists()
    assert "bisect is active" not in run("plugins", "list").err
    assert problem_shows(run)


def test_a_step_switches_plugins_off_for_every_run_with_a_warning(
    run, plugin_dir: Path, conduit_home: Path
) -> None:
    make_plugins(plugin_dir, 4, culprit=None)
    start = run("plugins", "bisect", "start")
    off = disabled_in(start.out)
    assert off == ["p02", "p03"]
    hello = run("p02-hello")
    assert hello.code == 2
    assert "bisect is active (step 1 of at most 3: 2 of 4 plugins disabled)" in hello.err
    assert "'conduit plugins bisect reset'" in hello.err
    assert run("p01-hello").out == "p01 p01-hello\n"
    states = {row.split()[0]: row.split()[3] for row in run("plugins", "list").out.splitlines()}
    assert states["p03"] == "disabled" and states["p01"] == "enabled"
    assert states["plugins"] == states["devtools"] == "enabled"  # built-ins never bisected
    status = run("plugins", "bisect", "status")
    assert disabled_in(status.out) == off
    again = run("plugins", "bisect", "start")
    assert again.code == 2 and "already active" in again.err
    reset = run("plugins", "bisect", "reset")
    assert reset.out == "Bisect ended: nothing in your config changed.\n"
    assert run("p02-hello").out == "p02 p02-hello\n"
    assert not (conduit_home / "config.toml").exists()
    assert "No plugin bisect is active" in run("plugins", "bisect", "status").out


def test_manual_no_culprit(run, plugin_dir: Path) -> None:
    make_plugins(plugin_dir, 7, culprit=None)
    result = run("plugins", "bisect", "start")
    while result.code == 0:
        result = run("plugins", "bisect", "bad")  # the problem never goes away
    assert result.code == 1
    assert "error: no single plugin causes the problem" in result.err
    assert "Traceback" not in result.err
    assert "bisect is active" not in run("plugins", "list").err


def test_skip_tries_another_split(run, plugin_dir: Path) -> None:
    make_plugins(plugin_dir, 7, culprit=5)
    first = run("plugins", "bisect", "start")
    skipped = run("plugins", "bisect", "skip")
    assert disabled_in(skipped.out) != disabled_in(first.out)
    result = skipped
    while "Found it" not in result.out:
        assert result.code == 0, result.err
        result = run("plugins", "bisect", "bad" if problem_shows(run) else "good")
    assert "plugin 'p05' causes the problem" in result.out
    assert "1 skipped" in result.out


def test_good_without_a_bisect_is_one_line(run) -> None:
    result = run("plugins", "bisect", "good")
    assert result.code == 2
    assert result.err == (
        "error: no plugin bisect is active\nhint: start one with 'conduit plugins bisect start'\n"
    )


def _check(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "check.py"
    script.write_text(
        "import subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'conduit', 'plugins', 'list'],"
        " capture_output=True, text=True)\n" + body,
        encoding="utf-8",
    )
    return [sys.executable, str(script)]


@pytest.mark.parametrize(("n", "culprit"), [(1, 0), (2, 1), (7, 2), (64, 17)])
def test_run_finds_the_culprit_and_apply_disables_it(
    run, plugin_dir: Path, conduit_home: Path, tmp_path: Path, n: int, culprit: int
) -> None:
    names = make_plugins(plugin_dir, n, culprit)
    check = _check(tmp_path, f"sys.exit(1 if {BOOM!r} in r.stderr else 0)\n")
    result = run("plugins", "bisect", "run", "--apply", "--", *check)
    assert result.code == 0, result.err
    steps = result.out.count("bisect run: step ")
    assert steps <= math.ceil(math.log2(n)) + 1
    assert f"Found it: plugin '{names[culprit]}' causes the problem ({steps} step" in result.out
    assert f"Disabled plugin '{names[culprit]}'." in result.out
    config = (conduit_home / "config.toml").read_text(encoding="utf-8")
    assert f'disabled = ["{names[culprit]}"]' in config
    assert not problem_shows(run)


def test_run_without_a_culprit(run, plugin_dir: Path, conduit_home: Path, tmp_path: Path) -> None:
    make_plugins(plugin_dir, 7, culprit=None)
    always_fails = _check(tmp_path, "sys.exit(3)\n")
    result = run("plugins", "bisect", "run", "--", *always_fails)
    assert result.code == 1
    assert "error: no single plugin causes the problem" in result.err
    assert result.out.count("bisect run: step ") <= 4
    never_fails = _check(tmp_path, "sys.exit(0)\n")
    result = run("plugins", "bisect", "run", "--", *never_fails)
    assert result.code == 1
    assert "error: the problem does not show with every plugin enabled" in result.err
    assert not (conduit_home / "config.toml").exists()
    missing = run("plugins", "bisect", "run", "--", "no-such-program-xyz")
    assert missing.code == 2
    assert "error: cannot run 'no-such-program-xyz'" in missing.err
    assert "Traceback" not in missing.err


def test_a_damaged_state_file_is_one_line_and_reset_clears_it(
    run, plugin_dir: Path, conduit_home: Path
) -> None:
    make_plugins(plugin_dir, 2, culprit=None)
    (conduit_home / "state").mkdir(exist_ok=True)
    (conduit_home / "state" / "plugins-bisect").write_text("phase: halve\nsplit: x\n")
    listed = run("plugins", "list")
    assert listed.code == 0
    assert "a plugin bisect is active" in listed.err
    status = run("plugins", "bisect", "status")
    assert status.code == 1
    assert "\nerror: the bisect state " in status.err and "is damaged\n" in status.err
    assert "hint: end the bisect with 'conduit plugins bisect reset'" in status.err
    assert "Traceback" not in status.err
    assert run("plugins", "bisect", "reset").code == 0
    assert "bisect" not in run("plugins", "list").err

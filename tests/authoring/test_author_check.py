"""``conduit plugins check``: each deliberately broken plugin in tests/fixtures/check is
caught, with the exact lines a user sees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conduit.sdk import API_VERSION

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "check"
#: budgets generous enough that only the defect under test fails on a busy machine
RELAXED = ("--import-budget-ms", "5000", "--memory-budget-mb", "500", "--runs", "1")


@pytest.fixture(autouse=True)
def _in_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)


def _lines(out: str) -> list[str]:
    # Timings and sizes vary from run to run; everything else is exact.
    out = re.sub(r"import: \d+\.\d ms", "import: N ms", out)
    return re.sub(r"memory: \+\d+\.\d MB", "memory: +N MB", out).splitlines()


def _ok_tail() -> list[str]:
    return [
        "  ok    capabilities (heuristic): no undeclared use found",
        "  ok    import: N ms (budget 5000 ms)",
        "  ok    memory: +N MB (budget 500 MB)",
    ]


def test_a_good_plugin_passes(run) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "check", "good.py", *RELAXED)
    assert r.code == 0, r.err
    assert _lines(r.out) == [
        f"plugin 'good' ({FIXTURES / 'good.py'})",
        "  ok    manifest: valid",
        f"  ok    api: >=1.0,<2 includes this Conduit's plugin API {API_VERSION}",
        "  ok    commands: the manifest matches the code (1 command)",
        *_ok_tail(),
        "all checks passed (1 plugin)",
    ]
    assert r.err == ""


def test_stale_manifest(run) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "check", "stale.py", *RELAXED)
    assert r.code == 1
    assert _lines(r.out)[3:5] == [
        '  FAIL  commands: command \'stale\': help is "Say hi." in the manifest, "Say hello." in the code',
        f"  hint  run 'conduit plugins manifest --write {FIXTURES / 'stale.py'}'",
    ]
    assert r.err == (
        "error: 1 problem found\nhint: fix each FAIL line above; the capability lint is a heuristic\n"
    )


def test_api_range_this_conduit_does_not_provide(run) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "check", "future-api.py", *RELAXED)
    assert r.code == 1
    assert _lines(r.out)[2] == (
        f"  FAIL  api: the plugin supports plugin API >=2.0,<3, but this Conduit provides "
        f"{API_VERSION} (update the plugin, or install a Conduit it supports)"
    )
    assert r.err.startswith("error: 1 problem found\n")


def test_undeclared_network_use_is_a_labelled_heuristic(run) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "check", "sockets.py", *RELAXED)
    assert r.code == 1
    assert _lines(r.out)[4] == (
        "  FAIL  capabilities (heuristic): sockets.py:12 imports 'socket' but the manifest "
        'declares no network capability (add "network:http" to capabilities if the plugin uses it)'
    )
    # A declared (even scoped) network capability satisfies the lint.
    r = run("plugins", "check", "sockets-declared.py", *RELAXED)
    assert r.code == 0, r.out
    assert "  ok    capabilities (heuristic): no undeclared use found" in r.out


def test_import_too_slow(run) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "check", "slow-import.py", "--import-budget-ms", "100")
    assert r.code == 1
    assert _lines(r.out)[5] == (
        "  FAIL  import: N ms, over the budget of 100 ms (import heavy modules inside the "
        "command that needs them, not at the top of the plugin)"
    )
    took = float(re.search(r"import: (\d+\.\d) ms", r.out).group(1))  # type: ignore[union-attr]
    assert took >= 200  # it sleeps 0.2 s at import


def test_import_uses_too_much_memory(run) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "check", "big-memory.py", "--import-budget-ms", "5000", "--runs", "1")
    assert r.code == 1
    assert _lines(r.out)[6] == (
        "  FAIL  memory: +N MB, over the budget of 20 MB (load large data when a command "
        "needs it, not when the plugin is imported)"
    )
    grew = float(re.search(r"memory: \+(\d+\.\d) MB", r.out).group(1))  # type: ignore[union-attr]
    assert grew >= 60  # it holds 64 MB


def test_invalid_manifest(run) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "check", "invalid-manifest.py")
    assert r.code == 1
    assert r.out.splitlines() == [
        f"plugin 'invalid-manifest' ({FIXTURES / 'invalid-manifest.py'})",
        f"  FAIL  manifest: {FIXTURES / 'invalid-manifest.py'}: descripton: unknown field "
        "(did you mean 'description'?)",
    ]


def test_a_plugin_that_fails_to_import(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = (
        (FIXTURES / "good.py")
        .read_text()
        .replace("import click\n", "import click\nimport no_such_module\n")
    )
    (tmp_path / "good.py").write_text(source)
    r = run("plugins", "check", str(tmp_path / "good.py"), *RELAXED)
    assert r.code == 1
    assert (
        "  FAIL  code: plugin 'good': failed to import: ModuleNotFoundError: No module named "
        "'no_such_module'"
    ) in r.out.splitlines()


def test_nothing_to_check(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "check", str(tmp_path))
    assert r.code == 2
    assert r.err == (
        f"error: {tmp_path}: no Conduit plugin found\n"
        "hint: expected a .py file with a '# /// conduit' block, or a project whose "
        'pyproject.toml declares [project.entry-points."conduit.plugins"]\n'
    )


def test_the_import_measure_counts_the_plugin_not_conduits_manifest_parser() -> None:
    # The measuring child gets what it needs to import the plugin; had it to parse the
    # manifest again, msgspec and the manifest module would count as the plugin's import.
    import json
    import subprocess
    import sys

    from conduit.authoring import find_plugins
    from conduit.builtins.plugins._author import measure_args

    (src,) = find_plugins(str(FIXTURES / "good.py"))
    code = (
        "import json, sys\n"
        "from conduit.authoring import PluginSource, importable, load_object\n"
        "src = PluginSource(**json.loads(sys.argv[1]))\n"
        "with importable(src):\n"
        "    load_object(src)\n"
        "print(sorted(m for m in ('conduit.manifest', 'msgspec') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(measure_args(src))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "[]\n"

"""``conduit plugins new``: templates that pass their own tests, install, and run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _wasmbuild import CACHE_HIT, seed_from_tests
from conduit.authoring import find_plugins

from _factory import UV, build_conduit_wheel, conduit_venv, imported_by

TEMPLATES = ("single-file", "package", "process")


@pytest.mark.parametrize("template", TEMPLATES)
def test_new_writes_a_valid_plugin_project(run, tmp_path: Path, template: str) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "new", "hello-world", "--template", template, "--dir", str(tmp_path))
    assert r.code == 0, r.err
    target = tmp_path / "hello-world"
    assert r.out.startswith(f"created {target} ({template} plugin 'hello-world'):\n")
    leftovers = [p for p in target.rglob("*") if "{{" in str(p) or p.suffix == ".tmpl"]
    assert leftovers == []
    for path in target.rglob("*.*"):
        assert "{{" not in path.read_text(), path
    (src,) = find_plugins(str(target))
    assert src.error is None
    assert src.name == "hello-world"
    assert src.manifest is not None
    assert [c.name for c in src.manifest.commands] == ["hello-world"]
    assert src.manifest.isolation == ("process" if template == "process" else "in-process")
    if template != "single-file":
        assert src.dist == "conduit-hello-world"
        assert src.entry == "conduit_hello_world:HelloWorld"
    r = run("plugins", "manifest", "--check", str(target))
    assert (r.code, r.err) == (0, "")


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_name_that_starts_with_a_digit(run, tmp_path: Path, template: str) -> None:  # type: ignore[no-untyped-def]
    assert run("plugins", "new", "2fa", "--template", template, "--dir", str(tmp_path)).code == 0
    (src,) = find_plugins(str(tmp_path / "2fa"))
    assert src.error is None
    if template != "single-file":
        assert src.entry == "conduit_2fa:Plugin2fa"
    r = run("plugins", "manifest", "--check", str(tmp_path / "2fa"))
    assert (r.code, r.err) == (0, "")


def test_author_commands_are_imported_only_when_they_run() -> None:
    code, modules = imported_by("plugins", "list")
    assert code == 0
    assert (
        not {"conduit.builtins.plugins._author", "conduit.authoring", "conduit.testing"} & modules
    )
    code, modules = imported_by("plugins", "new", "--help")
    assert code == 0
    assert "conduit.builtins.plugins._author" in modules
    assert "conduit.authoring" not in modules


def test_wasm_template_writes_a_source_for_plugins_build(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from conduit.manifest import read_manifest_file

    r = run("plugins", "new", "hello-world", "--template", "wasm", "--dir", str(tmp_path))
    assert r.code == 0, r.err
    target = tmp_path / "hello-world"
    assert r.out.startswith(f"created {target} (wasm plugin 'hello-world'):\n")
    assert "  conduit plugins build .     # build, install and precompile it\n" in r.out
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "app.py",
        "conduit-plugin.toml",
        "conftest.py",
        "tests/test_hello_world.py",
    ]
    for path in target.rglob("*.*"):
        assert "{{" not in path.read_text(), path
    manifest = read_manifest_file(str(target / "conduit-plugin.toml"))
    assert manifest.name == "hello-world"
    assert manifest.isolation == "wasm"
    assert [c.name for c in manifest.commands] == ["hello-world"]
    compile((target / "app.py").read_text(), "app.py", "exec")  # valid Python
    # manifest/check read Python plugins; they say which command checks this one
    r = run("plugins", "check", str(target))
    assert r.code == 2
    assert r.err.splitlines() == [
        f"error: {target}: a WebAssembly plugin's source: 'plugins manifest' and "
        "'plugins check' read Python plugins",
        f"hint: 'conduit plugins build {target}' checks its manifest against the commands "
        "the component describes",
    ]


def test_bad_name_and_existing_directory(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("plugins", "new", "Bad_Name", "--dir", str(tmp_path))
    assert r.code == 2
    assert r.err.startswith("error: 'Bad_Name' is not a valid plugin name\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("")
    r = run("plugins", "new", "taken", "--dir", str(tmp_path))
    assert r.code == 2
    assert r.err == (
        f"error: {tmp_path / 'taken'} already exists\n"
        "hint: choose another name, or --dir for another parent directory\n"
    )


# -- end to end, in a fresh virtual environment -------------------------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with Conduit (a wheel built once from this checkout) and pytest."""
    if UV is None:
        pytest.fail("uv is required for these tests (pip install -e '.[test]' installs it)")
    tmp = tmp_path_factory.mktemp("e2e")
    return conduit_venv(tmp / "venv", build_conduit_wheel(tmp / "dist"), "pytest")


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("template", TEMPLATES)
def test_template_end_to_end(venv: Path, tmp_path: Path, conduit_home: Path, template: str) -> None:
    """new -> its own tests pass -> install (conduit plugins install) -> its command works."""
    conduit = str(venv / "bin" / "conduit")
    r = _run([conduit, "plugins", "new", "greeter", "--template", template], tmp_path)
    assert r.returncode == 0, r.stderr
    project = tmp_path / "greeter"

    r = _run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project
    )
    assert r.returncode == 0, r.stdout + r.stderr
    expected = {"single-file": "4 passed", "package": "4 passed", "process": "3 passed"}
    assert expected[template] in r.stdout

    # the store finds uv on PATH (the venv has no pip of its own)
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(UV), os.environ["PATH"]])}  # type: ignore[type-var]
    if template == "single-file":
        (conduit_home / "plugins").mkdir(exist_ok=True)
        shutil.copy(project / "greeter.py", conduit_home / "plugins")
    else:
        r = _run([conduit, "plugins", "install", "./greeter"], tmp_path, env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "+ conduit-greeter 0.1.0\n" in r.stdout
        assert "asks for" not in r.stdout  # the templates ask for no capabilities
        assert "conduit-greeter" in (conduit_home / "pylock.conduit.toml").read_text()
    try:
        r = _run([conduit, "greeter", "Ada", "--shout"], tmp_path)
        assert (r.returncode, r.stdout, r.stderr) == (0, "HELLO, ADA!\n", "")
        r = _run([conduit, "--help"], tmp_path)
        assert "greeter" in r.stdout and "Greet someone." in r.stdout
        r = _run(
            [conduit, "plugins", "check", str(project), "--import-budget-ms", "5000"], tmp_path
        )
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        if template != "single-file":
            r = _run([conduit, "plugins", "uninstall", "conduit-greeter"], tmp_path, env)
            assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wasm_template_end_to_end(tmp_path: Path, conduit_home: Path) -> None:
    """new -> its own tests pass (they build the component) -> plugins build -> it runs.

    This interpreter, not the fresh venv: it has wasmtime and componentize-py (the [test]
    extra). Building costs ~10 s and the first compile 5-9 s. The project's test builds
    into its own temporary home (componentize-py); ``plugins build`` then builds the same
    source with that home's build cache, as the author's second build would (the module
    built before), and compiles it."""
    conduit = [sys.executable, "-m", "conduit"]
    r = _run([*conduit, "plugins", "new", "greeter", "--template", "wasm"], tmp_path)
    assert r.returncode == 0, r.stderr
    project = tmp_path / "greeter"

    basetemp = tmp_path / "project-tests"  # where its test's Conduit home is
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    r = _run([*pytest_cmd, f"--basetemp={basetemp}"], project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout

    seed_from_tests(conduit_home, basetemp)
    r = _run([*conduit, "plugins", "build", "."], project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert CACHE_HIT in r.stdout  # the test built this source
    assert f"installed {conduit_home / 'plugins' / 'greeter.wasm'}" in r.stdout
    assert "precompiled in" in r.stdout
    r = _run([*conduit, "greeter", "Ada", "--shout"], tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "HELLO, ADA!\n", "")
    r = _run([*conduit, "--help"], tmp_path)
    assert "greeter" in r.stdout and "Greet someone." in r.stdout

"""C authors get what Python authors get: ``conduit.h`` and the ``cwc`` example.

The example (examples/wasm/cwc) is built with its own build.sh (clang's wasm32-wasi
target and wasi-libc, ``conduit.h`` from the installed package), installed with
``conduit plugins build`` and run through Conduit. Those tests are skipped when clang
cannot build for wasm32-wasi here; .ci/run installs the toolchain so that CI runs them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import conduit

from _factory import hello_server

pytest.importorskip("wasmtime")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wasm" / "cwc"
HEADER = Path(conduit.__file__).resolve().parent / "include" / "conduit.h"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "wasm.md"


def _sysroot() -> str:
    """What build.sh uses without WASI_SYSROOT."""
    return "/usr/share/wasi-sysroot" if os.path.isdir("/usr/share/wasi-sysroot") else "/usr"


def _clang_builds_wasi(tmp: Path) -> str | None:
    """None if clang builds a wasm32-wasi program with wasi-libc here, else why not."""
    clang = shutil.which("clang")
    if clang is None:
        return "clang is not installed"
    (tmp / "t.c").write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    proc = subprocess.run(
        [clang, "--target=wasm32-wasi", f"--sysroot={_sysroot()}", "-o", "t.wasm", "t.c"],
        cwd=tmp,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return f"clang cannot build for wasm32-wasi: {proc.stderr.strip().splitlines()[-1:]}"
    return None


@pytest.fixture(scope="module")
def cwc_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/wasm/cwc with plugin.wasm built by its build.sh."""
    tmp = tmp_path_factory.mktemp("cwc")
    why = _clang_builds_wasi(tmp)
    if why is not None:
        pytest.skip(why)
    source = tmp / "cwc"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("plugin.wasm"))
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["sh", str(source / "build.sh")], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (source / "plugin.wasm").is_file()
    return source


@pytest.fixture
def cwc(cwc_source: Path, plugin_dir: Path, conduit_home: Path, run, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """cwc installed with ``conduit plugins build``; the test runs in ``tmp/ws``."""
    result = run("plugins", "build", str(cwc_source))
    assert result.code == 0, result.err
    assert (plugin_dir / "cwc.wasm").is_file() and (plugin_dir / "cwc.toml").is_file()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("hello world\nsecond line \u00e9\n", encoding="utf-8")
    (ws / "sub").mkdir()
    (ws / "sub" / "b.txt").write_text("x\n")
    monkeypatch.chdir(ws)
    return ws


def grant(conduit_home: Path, *grants: str) -> None:
    listed = ", ".join(f'"{g}"' for g in grants)
    (conduit_home / "config.toml").write_text(f"[grants]\ncwc = [{listed}]\n")


def test_the_header_declares_exactly_the_core_imports() -> None:
    from conduit.hosts.wasm.instance import CORE_IMPORTS

    declared = {}
    for m in re.finditer(r'CONDUIT_IMPORT\("(\w+)"\) (\w+) \w+\(([^)]*)\);', HEADER.read_text()):
        name, returns, params = m.groups()
        count = 0 if params == "void" else len(params.split(","))
        declared[name] = (count, 0 if returns == "void" else 1)
    assert declared == CORE_IMPORTS


def test_the_header_is_in_the_package_and_documented() -> None:
    assert "conduit_chdir_workspace" in HEADER.read_text()
    # the one-liner docs/wasm.md gives finds it
    docs = DOCS.read_text()
    assert "import conduit, os; print(os.path.join(os.path.dirname(conduit.__file__)" in docs
    assert "conduit_chdir_workspace()" in docs


def test_cwc_counts_files_in_the_workspace(cwc: Path, conduit_home: Path, run) -> None:  # type: ignore[no-untyped-def]
    grant(conduit_home, "filesystem:read:${workspace}")
    result = run("cwc", "a.txt", "sub/b.txt", str(cwc / "a.txt"))
    assert result.code == 0, result.err
    assert result.out.split("\n") == [
        "      2       5      27 a.txt",
        "      1       1       2 sub/b.txt",
        f"      2       5      27 {cwc / 'a.txt'}",
        "      5      11      56 total",
        "",
    ]


def test_cwc_reports_a_missing_file_and_carries_on(cwc: Path, conduit_home: Path, run) -> None:  # type: ignore[no-untyped-def]
    grant(conduit_home, "filesystem:read:${workspace}")
    result = run("cwc", "nothere.txt", "a.txt")
    assert result.code == 1
    assert "      2       5      27 a.txt" in result.out
    assert "cwc: nothere.txt: No such file or directory" in result.err


def test_cwc_reads_a_granted_variable_through_the_env_import(
    cwc: Path, conduit_home: Path, run, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CWC_ONLY", "words")
    grant(conduit_home, "filesystem:read:${workspace}", "env:read:CWC_ONLY")
    result = run("cwc", "a.txt")
    assert (result.code, result.out) == (0, "      5 a.txt\n"), result.err
    # not granted: the module does not see it, and counts everything
    grant(conduit_home, "filesystem:read:${workspace}")
    result = run("cwc", "a.txt")
    assert (result.code, result.out) == (0, "      2       5      27 a.txt\n"), result.err


def test_cwc_counts_stdin(cwc: Path, conduit_home: Path) -> None:
    grant(conduit_home, "filesystem:read:${workspace}")
    env = {**os.environ, "CONDUIT_HOME": str(conduit_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "conduit", "cwc"],
        input=b"one two\nthree\n",
        capture_output=True,
        env=env,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, b"      2       3      14\n"), proc.stderr


def _answer(path: str) -> bytes:
    if path == "/binary":
        return bytes(range(256)) * 2 + b"\n"  # not UTF-8: body_base64
    # quotes, backslashes, control characters and non-ASCII, escaped in the JSON
    return 'say "hi"\\ \t tab\n\u00e9t\u00e9 \U0001f600\n\x01\n'.encode()


@pytest.fixture
def web() -> Iterator[int]:
    with hello_server(_answer) as port:
        yield port


def test_cwc_counts_a_url_through_the_http_import(
    cwc: Path, conduit_home: Path, run, web: int
) -> None:  # type: ignore[no-untyped-def]
    grant(conduit_home, "filesystem:read:${workspace}", f"network:http:127.0.0.1:{web}")
    text = _answer("/text")
    url = f"http://127.0.0.1:{web}/text"
    result = run("cwc", url, f"http://127.0.0.1:{web}/binary")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["3", str(len(text.split())), str(len(text)), url]
    assert lines[1].split()[2] == "513"  # every byte, as it was sent
    assert lines[2].split()[2] == str(len(text) + 513)


def test_cwc_url_without_a_grant_is_denied(cwc: Path, conduit_home: Path, run, web: int) -> None:  # type: ignore[no-untyped-def]
    grant(conduit_home, "filesystem:read:${workspace}")
    result = run("cwc", f"http://127.0.0.1:{web}/text")
    assert result.code == 3
    assert (
        f"error: plugin 'cwc': denied: an HTTP request to 127.0.0.1:{web}: "
        f"network:http:127.0.0.1:{web} is not granted" in result.err
    )


# -- plugins build of a WASI module without [[commands]] ----------------------------------

#: the smallest valid core module: the magic number and version 1
EMPTY_MODULE = b"\0asm\x01\0\0\0"


def test_building_a_module_without_commands_fails_clearly(
    plugin_dir: Path, tmp_path: Path, run
) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "nocmds"
    source.mkdir()
    (source / "plugin.wasm").write_bytes(EMPTY_MODULE)
    manifest = source / "conduit-plugin.toml"
    manifest.write_text('name = "nocmds"\napi = ">=1.0"\ndescription = "No commands."\n')
    result = run("plugins", "build", str(source))
    assert result.code != 0
    lines = result.err.splitlines()
    assert lines[0] == (
        f"error: {manifest}: lists no [[commands]], and {source / 'plugin.wasm'} is a WASI "
        "module, which cannot be asked for its commands"
    ), result.err
    assert lines[1].startswith("hint: add one [[commands]] table per command to the manifest")
    assert "Traceback" not in result.err
    assert not (plugin_dir / "nocmds.wasm").exists()  # nothing half-installed
    assert not (plugin_dir / "nocmds.toml").exists()


def test_building_a_module_with_commands_installs_it(plugin_dir: Path, tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "withcmds"
    source.mkdir()
    (source / "plugin.wasm").write_bytes(EMPTY_MODULE)
    (source / "conduit-plugin.toml").write_text(
        'name = "withcmds"\napi = ">=1.0"\ndescription = "One."\n\n'
        '[[commands]]\nname = "withcmds"\nhelp = "Do it."\n'
    )
    result = run("plugins", "build", str(source))
    assert result.code == 0, result.err
    assert (plugin_dir / "withcmds.wasm").read_bytes() == EMPTY_MODULE

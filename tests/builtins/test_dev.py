"""`conduit dev`: the built-in around the reload engine, end to end (a real `conduit dev`
process watching a real file with watchfiles), and its one-line errors."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.cli import main

from _factory import simple_plugin

DEADLINE = 60.0


class _Reader:
    """Collects a process's output lines in a thread, so a test can wait for one."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, deadline: float) -> bool:
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


@contextlib.contextmanager
def _dev(
    source: Path, command: str, **kwargs: object
) -> Iterator[tuple[subprocess.Popen[str], _Reader, _Reader]]:
    """A real ``conduit dev SOURCE --run COMMAND`` process and readers of its output;
    killed (if still running) and its pipes closed at the end."""
    proc = subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-m", "conduit", "dev", str(source), "--run", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        **kwargs,
    )
    try:
        yield proc, _Reader(proc.stdout), _Reader(proc.stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_dev_run_shows_the_edited_plugin_end_to_end(tmp_path: Path) -> None:
    source = tmp_path / "greet.py"
    source.write_text(simple_plugin("greet", ("greet",), output="first"), encoding="utf-8")
    with _dev(source, "greet") as (proc, out, err):
        deadline = time.monotonic() + DEADLINE
        assert out.wait_for("first", deadline), (out.lines, err.lines)
        assert err.wait_for("watching", deadline), err.lines
        # a manifest error: reported, the previous version keeps serving
        source.write_text(
            simple_plugin("greet", ("greet",), output="second").replace("api =", "apo ="),
            encoding="utf-8",
        )
        assert err.wait_for("the previous version keeps serving", deadline), err.lines
        assert "conduit dev: error: " in "".join(err.lines)
        source.write_text(simple_plugin("greet", ("greet",), output="third"), encoding="utf-8")
        assert out.wait_for("third", deadline), (out.lines, err.lines)
        assert not any("second" in line for line in out.lines)
        assert err.wait_for("reloaded greet (in-process) in ", deadline)
        proc.terminate()  # SIGTERM ends it as Ctrl-C does: cleanly
        assert proc.wait(timeout=DEADLINE) == 0
        assert not any("Traceback" in line for line in err.lines), err.lines


def test_sigterm_to_its_group_leaves_no_traceback_from_a_process_host(tmp_path: Path) -> None:
    """A process plugin's host (forked from the host template) is in the command's
    group: a SIGTERM to that group (a service manager, `timeout`) must not run
    `conduit dev`'s own SIGTERM handler in the host (a traceback from the host)."""
    source = tmp_path / "greet.py"
    source.write_text(
        simple_plugin("greet", ("greet",), output="first", extra_toml='isolation = "process"'),
        encoding="utf-8",
    )
    with _dev(source, "greet", start_new_session=True) as (proc, out, err):
        deadline = time.monotonic() + DEADLINE
        assert out.wait_for("first", deadline), (out.lines, err.lines)
        assert err.wait_for("watching", deadline), err.lines
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=DEADLINE)
        assert proc.stderr is not None
        err._thread.join(DEADLINE)  # every line the host may still write
        assert not any("Traceback" in line for line in err.lines), err.lines
        assert not any("_Terminated" in line for line in err.lines), err.lines


def test_without_watchfiles_one_line_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import watchfiles: ImportError
    source = tmp_path / "greet.py"
    source.write_text(simple_plugin("greet", ("greet",)), encoding="utf-8")
    assert main(["dev", str(source)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: conduit dev watches files with watchfiles, which is not installed: "
        "pip install 'conduit-devtool[dev]'\n"
    )


def test_the_prompt_runs_commands_and_ends_at_end_of_input(tmp_path: Path) -> None:
    source = tmp_path / "greet.py"
    source.write_text(simple_plugin("greet", ("greet",), output="hi"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "conduit", "dev", str(source)],
        input="greet\ngret\n\ngreet\n",
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hi\nhi\n"
    assert "conduit dev: error: unknown command 'gret'\n" in proc.stderr
    assert "conduit dev: hint: did you mean 'greet'?\n" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_once_runs_the_command_and_exits_with_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "greet.py"
    source.write_text(simple_plugin("greet", ("greet",), output="hi"), encoding="utf-8")
    assert main(["dev", str(source), "--once", "--run", "greet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "hi\n"
    assert captured.err.startswith("conduit dev: loaded greet (in-process) in ")
    assert main(["dev", str(tmp_path / "none.py"), "--once"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none.py'}: no such file or directory\n"


def test_an_ungranted_capability_is_said_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The load said it, and the command's run said the same error again.
    source = tmp_path / "reader.py"
    text = simple_plugin("reader", ("reader",), output="hi")
    text = text.replace('api = ">=1.0,<2"', 'api = ">=1.0,<2"\n# capabilities = ["network:http"]')
    assert "capabilities" in text
    source.write_text(text, encoding="utf-8")
    assert main(["dev", str(source), "--once", "--run", "reader"]) == 3
    err = capsys.readouterr().err
    assert err.count("capabilities not granted: network:http") == 1, err
    assert err.endswith("conduit dev: 'reader' exited with 3\n")


def test_once_builds_a_webassembly_source_and_runs_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A WebAssembly plugin's source (a prebuilt plugin.wasm): built, compiled, run; a
    module wasmtime refuses is one line."""
    wasmtime = pytest.importorskip("wasmtime")
    source = tmp_path / "hi"
    source.mkdir()
    (source / "conduit-plugin.toml").write_text(
        'name = "hi"\napi = ">=1.0"\n\n[[commands]]\nname = "hi"\nhelp = "Say hi."\n',
        encoding="utf-8",
    )
    (source / "plugin.wasm").write_bytes(
        wasmtime.wat2wasm(
            '(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32'
            ' i32) (result i32))) (memory (export "memory") 1) (data (i32.const 100) "hi\\0a")'
            ' (func (export "_start") (i32.store (i32.const 0) (i32.const 100)) (i32.store'
            " (i32.const 4) (i32.const 3)) (drop (call $w (i32.const 1) (i32.const 0)"
            " (i32.const 1) (i32.const 8)))))"
        )
    )
    assert main(["dev", str(source), "--once", "--run", "hi"]) == 0
    captured = capfd.readouterr()
    assert captured.out == "hi\n"
    assert captured.err.startswith("conduit dev: built hi (wasm) in ")
    assert "conduit dev: loaded hi (wasm) in " in captured.err
    (source / "plugin.wasm").write_bytes(b"\0asm\x01\0\0\0 junk")
    assert main(["dev", str(source), "--once", "--run", "hi"]) == 3
    err = capfd.readouterr().err
    assert err.startswith("error: plugin 'hi': not a valid WebAssembly module: ")
    assert err.count("\n") == 2 and "Traceback" not in err  # the error and its hint

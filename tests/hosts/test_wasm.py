"""WebAssembly plugins: WASI preview1 modules written in WAT, compiled by wasmtime itself.

Each sandbox case runs a real module in real wasmtime and asserts the one-line error
the user sees, then that the same kernel still runs another plugin.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from conduit.errors import ConduitError
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
from conduit.timing import Profile

from _factory import imported_by, simple_plugin, write

wasmtime = pytest.importorskip("wasmtime")

IMPORTS = """
 (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
"""
PRELUDE = """
 (memory (export "memory") 2)
 ;; print(ptr, len) on stdout; iovec at 0, written count at 8
 (func $print (param $ptr i32) (param $len i32)
   (i32.store (i32.const 0) (local.get $ptr))
   (i32.store (i32.const 4) (local.get $len))
   (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
"""

CONDUIT_IMPORTS = """
 (import "conduit" "http" (func $http (param i32 i32) (result i32)))
 (import "conduit" "exec" (func $exec (param i32 i32) (result i32)))
 (import "conduit" "env" (func $env (param i32 i32) (result i32)))
 (import "conduit" "result" (func $result (param i32 i32) (result i32)))
"""


def module(body: str, *, data: dict[int, str] | None = None, imports: str = "") -> str:
    """A WASI command module: PRELUDE, ``imports``, data segments, ``_start`` = body."""
    segments = "".join(
        f' (data (i32.const {addr}) "{_escape(text)}")\n' for addr, text in (data or {}).items()
    )
    return f'(module\n{IMPORTS}{imports}{PRELUDE}{segments} (func (export "_start")\n{body}))'


def _escape(text: str) -> str:
    return "".join(c if c.isprintable() and c not in '"\\' else f"\\{ord(c):02x}" for c in text)


def install(plugin_dir: Path, name: str, wat: str, *, commands: tuple[str, ...] = ()) -> Path:
    """Write ``NAME.wasm`` (compiled from ``wat``) and its manifest ``NAME.toml``."""
    path = plugin_dir / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    toml = f'api = ">=1.0"\ndescription = "The {name} module"\n'
    for cmd in commands or (name,):
        toml += f'\n[[commands]]\nname = "{cmd}"\nhelp = "Run {cmd}."\n'
    (plugin_dir / f"{name}.toml").write_text(toml)
    return path


def configure(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def fresh_kernel() -> Kernel:
    paths = resolve()
    return Kernel(load(paths, Profile(False)), paths)


def fails_then_carries_on(
    capsys: pytest.CaptureFixture[str],
    command: str,
    message: str,
    *,
    hint: str | None = None,
    plugin: str | None = None,
) -> None:
    """``command`` (of ``plugin``, by default the plugin of that name) fails with
    ``message`` (exit 3); the same kernel then runs ``other``."""
    kernel = fresh_kernel()
    try:
        with pytest.raises(ConduitError) as info:
            kernel.run(plugin or command, [command])
        assert info.value.message == message
        assert info.value.exit_code == 3
        if hint is not None:
            assert info.value.hint == hint
        capsys.readouterr()
        assert kernel.run("other", ["other"]) == 0
        assert capsys.readouterr().out == "other says hi"
    finally:
        kernel.shutdown()


@pytest.fixture
def other(plugin_dir: Path) -> None:
    """A bystander WebAssembly plugin that must keep working after a failure."""
    install(
        plugin_dir,
        "other",
        module("(call $print (i32.const 100) (i32.const 13))", data={100: "other says hi"}),
    )


# -- running modules ---------------------------------------------------------------------------


def test_module_prints_and_its_exit_code_is_conduits(plugin_dir, run):
    install(
        plugin_dir,
        "hi",
        module(
            "(call $print (i32.const 100) (i32.const 9)) (call $exit (i32.const 7))",
            data={100: "hi there\n"},
        ),
    )
    result = run("hi")
    assert (result.code, result.out) == (7, "hi there\n")
    assert "hi  Run hi." in run("--help").out


def test_argv_is_the_command_and_its_arguments(plugin_dir, run):
    # args_sizes_get + args_get, then print the argv buffer (NUL-separated strings)
    body = """
   (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
   (drop (call $args_get (i32.const 200) (i32.const 1000)))
   (call $print (i32.const 1000) (i32.load (i32.const 20)))"""
    imports = """
 (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))"""
    install(plugin_dir, "args", module(body, imports=imports), commands=("args",))
    assert run("args", "one", "two words").out == "args\0one\0two words\0"


def test_environment_holds_only_granted_variables(plugin_dir, conduit_home, run, monkeypatch):
    body = """
   (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
   (drop (call $environ_get (i32.const 200) (i32.const 1000)))
   (call $print (i32.const 1000) (i32.load (i32.const 20)))"""
    imports = """
 (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))"""
    install(plugin_dir, "envdump", module(body, imports=imports))
    monkeypatch.setenv("GRANTED_ONE", "1")
    monkeypatch.setenv("APP_TOKEN", "t")
    monkeypatch.setenv("SECRET", "s")
    assert run("envdump").out == ""  # deny by default: not even PATH or HOME
    configure(conduit_home, '[grants]\nenvdump = ["env:read:GRANTED_ONE", "env:read:APP_*"]\n')
    out = run("envdump").out
    assert sorted(filter(None, out.split("\0"))) == ["APP_TOKEN=t", "GRANTED_ONE=1"]


def test_missing_manifest_and_wrong_isolation_are_skipped_with_a_clear_error(plugin_dir, run):
    wat = module("")
    (plugin_dir / "lonely.wasm").write_bytes(wasmtime.wat2wasm(wat))
    install(plugin_dir, "wrongiso", wat)
    toml = plugin_dir / "wrongiso.toml"
    toml.write_text('isolation = "process"\n' + toml.read_text())
    result = run("plugins", "doctor")
    assert (
        f"{plugin_dir / 'lonely.wasm'}: no manifest lonely.toml beside it"
        in result.out + result.err
    )
    assert "wrongiso.toml: isolation: a WebAssembly plugin runs in the WebAssembly host" in (
        result.out + result.err
    )


def test_invalid_module_is_a_load_error(plugin_dir, run):
    install(plugin_dir, "bad", module(""))
    (plugin_dir / "bad.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    result = run("bad")
    assert result.code == 3
    assert (
        f"error: plugin 'bad': {plugin_dir / 'bad.wasm'} is not a valid WebAssembly module"
        in result.err
    )


def test_python_plugin_forced_into_wasm_is_refused(plugin_dir, conduit_home, run):
    write(plugin_dir, "pyplug.py", simple_plugin("pyplug", ("pyhello",)))
    configure(conduit_home, '[isolation]\npyplug = "wasm"\n')
    result = run("pyhello")
    assert result.code == 3
    assert (
        "error: plugin 'pyplug': isolation 'wasm' needs a WebAssembly module, and this is a file plugin"
        in result.err
    )


def test_without_wasmtime_the_error_says_how_to_install_it(plugin_dir, run, monkeypatch):
    install(plugin_dir, "hi", module(""))
    monkeypatch.setitem(sys.modules, "wasmtime", None)  # import wasmtime -> ImportError
    result = run("hi")
    assert result.code == 3
    assert result.err == (
        "error: plugin 'hi': WebAssembly plugins need wasmtime, which is not installed\n"
        "hint: install the extra: pip install 'conduit-devtool[wasm]'\n"
    )


def test_bad_wasm_settings_are_a_config_error(conduit_home, run):
    configure(conduit_home, "[wasm]\nmemroy-mb = 5\n")
    result = run("plugins", "list")
    assert result.code == 4
    assert "unknown key 'memroy-mb' in [wasm] (did you mean 'memory-mb'?)" in result.err
    configure(conduit_home, "[wasm]\nmemory-mb = -1\n")  # -1 would mean "no limit" to wasmtime
    result = run("plugins", "list")
    assert result.code == 4
    assert "wasm.memory-mb: expected an integer >= 1" in result.err


# -- the sandbox matrix ------------------------------------------------------------------------

# path_open(dirfd=3, dirflags=0, path, oflags, rights, rights, fdflags=0, &fd) -> errno,
# which becomes the exit code; on success the file's first bytes are printed.
OPEN = """
 (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))"""


def open_module(path: str, *, write: bool) -> str:
    oflags = 1 if write else 0  # O_CREAT
    rights = "0x1fffffff" if write else "0x2"  # everything, or fd_read
    body = f"""
   (local $errno i32)
   (local.set $errno (call $path_open (i32.const 3) (i32.const 0) (i32.const 100)
       (i32.const {len(path)}) (i32.const {oflags}) (i64.const {rights}) (i64.const {rights})
       (i32.const 0) (i32.const 40)))
   (if (local.get $errno) (then (call $exit (local.get $errno))))
   ;; read up to 100 bytes into 2000 and print them
   (i32.store (i32.const 48) (i32.const 2000)) (i32.store (i32.const 52) (i32.const 100))
   (drop (call $fd_read (i32.load (i32.const 40)) (i32.const 48) (i32.const 1) (i32.const 56)))
   (call $print (i32.const 2000) (i32.load (i32.const 56)))"""
    return module(body, data={100: path}, imports=OPEN)


EPERM = 63


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "granted").mkdir()
    (tmp_path / "granted" / "notes.txt").write_text("granted notes")
    (tmp_path / "secret.txt").write_text("top secret")
    return tmp_path


def test_read_inside_a_read_grant_works(plugin_dir, conduit_home, tree, run):
    install(plugin_dir, "reader", open_module("notes.txt", write=False))
    configure(conduit_home, f'[grants]\nreader = ["filesystem:read:{tree / "granted"}"]\n')
    result = run("reader")
    assert (result.code, result.out) == (0, "granted notes")


def test_no_filesystem_grant_means_no_preopened_directory(plugin_dir, tree, run):
    install(plugin_dir, "reader", open_module("notes.txt", write=False))
    result = run("reader")
    assert result.code == 8  # EBADF: there is no descriptor 3 at all
    assert "granted notes" not in result.out


def test_read_outside_a_preopen_is_refused(plugin_dir, conduit_home, tree, other, capsys):
    install(plugin_dir, "reader", open_module("../secret.txt", write=False))
    configure(conduit_home, f'[grants]\nreader = ["filesystem:read:{tree / "granted"}"]\n')
    kernel = fresh_kernel()
    try:
        assert kernel.run("reader", ["reader"]) == EPERM  # wasmtime: leaving a preopen
        assert "top secret" not in capsys.readouterr().out
        assert kernel.run("other", ["other"]) == 0
    finally:
        kernel.shutdown()


def test_write_to_a_read_only_grant_is_refused(plugin_dir, conduit_home, tree, other, capsys):
    install(plugin_dir, "writer", open_module("new.txt", write=True))
    configure(conduit_home, f'[grants]\nwriter = ["filesystem:read:{tree / "granted"}"]\n')
    kernel = fresh_kernel()
    try:
        assert kernel.run("writer", ["writer"]) == EPERM
        assert not (tree / "granted" / "new.txt").exists()
        assert kernel.run("other", ["other"]) == 0
    finally:
        kernel.shutdown()
    # the same module with a write grant creates the file
    configure(conduit_home, f'[grants]\nwriter = ["filesystem:write:{tree / "granted"}"]\n')
    kernel = fresh_kernel()
    try:
        assert kernel.run("writer", ["writer"]) == 0
        assert (tree / "granted" / "new.txt").exists()
    finally:
        kernel.shutdown()


def test_a_grant_naming_a_file_is_refused(plugin_dir, conduit_home, tree, run):
    install(plugin_dir, "reader", open_module("notes.txt", write=False))
    configure(conduit_home, f'[grants]\nreader = ["filesystem:read:{tree / "secret.txt"}"]\n')
    result = run("reader")
    assert result.code == 3
    assert (
        f"error: plugin 'reader': grant 'filesystem:read:{tree / 'secret.txt'}' names a file"
        in result.err
    )


# -- paths: what a C module's absolute and relative paths name -------------------------------

#: a C module built with wasi-libc (tests/fixtures/wasm/probe.c): its commands
PROBE = Path(__file__).resolve().parents[1] / "fixtures" / "wasm" / "probe.wasm"
PROBE_COMMANDS = ("cpaths", "cstay", "cbigarray", "crecurse", "cmallocbomb", "cexit")
#: a top-level directory that exists nowhere, and in the workspace
OUTSIDE = "/conduit-test-outside/secret.txt"
#: what the probe prints for a path it cannot open: a path under no preopen is ENOENT
#: from wasi-libc (ENOTCAPABLE from versions before 2023), EPERM from wasmtime
REFUSED = ("No such file or directory", "Capabilities insufficient", "Operation not permitted")


def install_probe(plugin_dir: Path) -> None:
    (plugin_dir / "probe.wasm").write_bytes(PROBE.read_bytes())
    toml = 'api = ">=1.0"\ndescription = "The C probe"\n'
    for cmd in PROBE_COMMANDS:
        toml += f'\n[[commands]]\nname = "{cmd}"\nhelp = "Run {cmd}."\n'
    (plugin_dir / "probe.toml").write_text(toml)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp/ws``, the directory Conduit runs in, beside ``tmp/secret.txt``."""
    ws = tmp_path / "ws"
    for sub in ("sub", "out", "var", OUTSIDE.split("/")[1]):
        (ws / sub).mkdir(parents=True)
    (ws / "notes.txt").write_text("ws notes")
    (ws / "sub" / "s.txt").write_text("sub file")
    (ws / OUTSIDE.lstrip("/")).write_text("the workspace's copy")
    (tmp_path / "secret.txt").write_text("top secret")
    monkeypatch.chdir(ws)
    return ws


def probe(run, conduit_home: Path, grants: list[str], *args: str, command: str = "cpaths"):  # type: ignore[no-untyped-def]
    """Run the probe's ``command`` with ``grants``: {ARG: what it read or the error}."""
    listed = ", ".join(f'"{g}"' for g in grants)
    configure(conduit_home, f"[grants]\nprobe = [{listed}]\n")
    result = run(command, *args)
    assert result.code == 0, result.err
    lines = dict(line.split(": ", 1) for line in result.out.splitlines())
    assert list(lines) == list(args), result.out
    return lines


def test_paths_in_a_granted_workspace(plugin_dir, conduit_home, workspace, run):
    install_probe(plugin_dir)
    secret = str(workspace.parent / "secret.txt")
    seen = probe(
        run,
        conduit_home,
        ["filesystem:read:${workspace}"],
        "notes.txt",
        "./sub/s.txt",
        f"{workspace}/notes.txt",
        OUTSIDE,  # names /conduit-test-outside/..., not the workspace's copy
        secret,
        "../secret.txt",
        "+new.txt",
    )
    assert seen["notes.txt"] == seen[f"{workspace}/notes.txt"] == "ws notes"
    assert seen["./sub/s.txt"] == "sub file"
    for path in (OUTSIDE, secret, "../secret.txt", "+new.txt"):
        assert seen[path] in REFUSED, (path, seen[path])
    assert not (workspace / "new.txt").exists()


def test_an_absolute_path_is_never_written_in_the_workspace(
    plugin_dir, conduit_home, workspace, run
):
    install_probe(plugin_dir)
    target = "/var/conduit-test-probe.txt"
    seen = probe(run, conduit_home, ["filesystem:write:${workspace}"], f"+{target}", "+new.txt")
    assert seen[f"+{target}"] in REFUSED
    assert seen["+new.txt"] == "written"
    assert not (workspace / target.lstrip("/")).exists()
    assert not Path(target).exists()
    assert (workspace / "new.txt").read_text() == "written"


@pytest.mark.parametrize("shape", ["unscoped", "parent", "subdirectory"])
def test_relative_paths_name_the_workspace_whatever_the_grant(
    plugin_dir, conduit_home, workspace, run, shape
):
    install_probe(plugin_dir)
    grant = {
        "unscoped": "filesystem:read",
        "parent": f"filesystem:read:{workspace.parent}",
        "subdirectory": "filesystem:read:${workspace}/sub",
    }[shape]
    seen = probe(run, conduit_home, [grant], "sub/s.txt", "notes.txt", OUTSIDE)
    assert seen["sub/s.txt"] == "sub file"
    if shape == "subdirectory":  # the rest of the workspace is not granted
        assert seen["notes.txt"] in REFUSED
    else:
        assert seen["notes.txt"] == "ws notes"
    assert seen[OUTSIDE] in REFUSED


def test_a_relative_path_into_a_writable_subdirectory_is_written(
    plugin_dir, conduit_home, workspace, run
):
    install_probe(plugin_dir)
    grants = ["filesystem:read:${workspace}", "filesystem:write:${workspace}/out"]
    seen = probe(run, conduit_home, grants, "+out/new.txt", "+new.txt")
    assert seen["+out/new.txt"] == "written"
    assert (workspace / "out" / "new.txt").read_text() == "written"
    assert seen["+new.txt"] in REFUSED
    assert not (workspace / "new.txt").exists()


def test_a_module_that_ignores_pwd_still_reaches_only_what_it_names(
    plugin_dir, conduit_home, workspace, run
):
    # without chdir(getenv("PWD")), wasi-libc resolves relative paths against "/":
    # they fail, and never land in the workspace or anywhere else
    install_probe(plugin_dir)
    seen = probe(
        run,
        conduit_home,
        ["filesystem:read:${workspace}"],
        "notes.txt",
        f"{workspace}/notes.txt",
        OUTSIDE,
        command="cstay",
    )
    assert seen["notes.txt"] in REFUSED
    assert seen[f"{workspace}/notes.txt"] == "ws notes"
    assert seen[OUTSIDE] in REFUSED


#: prints the names of the preopened directories (fd 3, 4, ... until fd_prestat_get
#: fails), one a line, then the environment
PREOPENS = module(
    """
   (local $fd i32)
   (local.set $fd (i32.const 3))
   (block $done (loop $next
     (br_if $done (call $fd_prestat_get (local.get $fd) (i32.const 16)))
     (drop (call $fd_prestat_dir_name (local.get $fd) (i32.const 1000) (i32.load (i32.const 20))))
     (call $print (i32.const 1000) (i32.load (i32.const 20)))
     (call $print (i32.const 24) (i32.const 1))
     (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
     (br $next)))
   (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
   (drop (call $environ_get (i32.const 200) (i32.const 1000)))
   (call $print (i32.const 1000) (i32.load (i32.const 20)))""",
    data={24: "\n"},
    imports="""
 (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))""",
)


def test_directories_are_preopened_under_their_own_paths(plugin_dir, conduit_home, workspace, run):
    install(plugin_dir, "preopens", PREOPENS)
    configure(
        conduit_home,
        '[grants]\npreopens = ["filesystem:read:${workspace}", "filesystem:write:${workspace}/out"]\n',
    )
    # no "." (it would take every absolute path outside the grants), and the workspace
    assert run("preopens").out == f"{workspace}\n{workspace}/out\nPWD={workspace}\0"
    # only a subdirectory: the workspace is an empty stand-in, to change to
    configure(conduit_home, '[grants]\npreopens = ["filesystem:read:${workspace}/sub"]\n')
    assert run("preopens").out == f"{workspace}\n{workspace}/sub\nPWD={workspace}\0"
    assert not os.listdir(conduit_home / "cache" / "wasm" / "empty")
    # nothing in or around the workspace: no PWD to change to
    configure(
        conduit_home, f'[grants]\npreopens = ["filesystem:read:{workspace.parent / "elsewhere"}"]\n'
    )
    (workspace.parent / "elsewhere").mkdir()
    assert run("preopens").out == f"{workspace.parent / 'elsewhere'}\n"


#: every byte value: not UTF-8 text
BINARY = bytes(range(256))
TEXT = "héllo ✓ \x00"


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.seen.append(self.path)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://example.com/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        bodies = {"/binary": BINARY, "/text": TEXT.encode()}
        body = bodies.get(self.path, b"pong from " + self.path.encode())
        self._reply(body)

    def do_POST(self) -> None:  # echoes the request's body
        self._reply(self.rfile.read(int(self.headers["Content-Length"])))

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def call_module(function: str, request: str) -> str:
    """Call ``conduit.FUNCTION`` with ``request``; print the result, or exit 2 on -2."""
    body = f"""
   (local $n i32)
   (local.set $n (call ${function} (i32.const 100) (i32.const {len(request.encode())})))
   (if (i32.lt_s (local.get $n) (i32.const 0)) (then (call $exit (i32.sub (i32.const 0) (local.get $n)))))
   (drop (call $result (i32.const 4096) (local.get $n)))
   (call $print (i32.const 4096) (local.get $n))"""
    return module(body, data={100: request}, imports=CONDUIT_IMPORTS)


def test_http_to_a_granted_host_works(plugin_dir, conduit_home, server, run):
    install(
        plugin_dir, "fetch", call_module("http", f'{{"url": "http://127.0.0.1:{server}/ping"}}')
    )
    configure(conduit_home, f'[grants]\nfetch = ["network:http:127.0.0.1:{server}"]\n')
    result = run("fetch")
    assert result.code == 0, result.err
    assert '"status": 200' in result.out
    assert '"body": "pong from /ping"' in result.out


def test_http_bodies_that_are_not_text_arrive_as_base64(plugin_dir, conduit_home, server, run):
    import base64
    import json

    # Each module below is another module (grants bind to a module's hash: a fresh config
    # for each, whose grants bind to it on first use).
    grants = f'[grants]\nfetch = ["network:http:127.0.0.1:{server}"]\n'
    request = {"url": f"http://127.0.0.1:{server}/binary"}
    install(plugin_dir, "fetch", call_module("http", json.dumps(request)))
    configure(conduit_home, grants)
    doc = json.loads(run("fetch").out)
    assert "body" not in doc
    assert base64.b64decode(doc["body_base64"]) == BINARY
    # and a request's body goes out as the bytes given (the server echoes it)
    request = {
        "method": "POST",
        "url": f"http://127.0.0.1:{server}/echo",
        "body_base64": base64.b64encode(BINARY).decode(),
    }
    install(plugin_dir, "fetch", call_module("http", json.dumps(request)))
    configure(conduit_home, grants)
    doc = json.loads(run("fetch").out)
    assert base64.b64decode(doc["body_base64"]) == BINARY
    # text stays text
    install(
        plugin_dir, "fetch", call_module("http", f'{{"url": "http://127.0.0.1:{server}/text"}}')
    )
    configure(conduit_home, grants)
    assert json.loads(run("fetch").out)["body"] == TEXT


def test_exec_output_that_is_not_text_arrives_as_base64(plugin_dir, conduit_home, run):
    import base64
    import json

    request = {"program": "printf", "args": ["\\377A"], "stdin_base64": "/w=="}
    install(plugin_dir, "runner", call_module("exec", json.dumps(request)))
    configure(conduit_home, '[grants]\nrunner = ["process:execute:printf"]\n')
    doc = json.loads(run("runner").out)
    assert (doc["code"], base64.b64decode(doc["stdout_base64"]), doc["stderr"]) == (0, b"\xffA", "")
    assert "stdout" not in doc


def test_a_failed_request_says_how_long_its_error_is(plugin_dir, conduit_home, run):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    request = f'{{"url": "http://127.0.0.1:{port}/"}}'
    body = f"""
   (local $n i32)
   (if (i32.ne (call $http (i32.const 100) (i32.const {len(request)})) (i32.const -2))
     (then (call $exit (i32.const 9))))
   (local.set $n (call $result_len))
   (drop (call $result (i32.const 4096) (local.get $n)))
   (call $print (i32.const 4096) (local.get $n))"""
    imports = CONDUIT_IMPORTS + (
        ' (import "conduit" "result_len" (func $result_len (result i32)))\n'
    )
    install(plugin_dir, "fetch", module(body, data={100: request}, imports=imports))
    configure(conduit_home, f'[grants]\nfetch = ["network:http:127.0.0.1:{port}"]\n')
    result = run("fetch")
    assert (result.code, result.out) == (
        0,
        "ConnectionRefusedError: [Errno 111] Connection refused",
    )


@pytest.mark.parametrize("status", [0, 125, 126, 200, 255])
def test_the_exit_status_is_the_exit_code(plugin_dir, run, status):
    install(plugin_dir, "quit", module(f"(call $exit (i32.const {status}))"))
    result = run("quit")
    assert (result.code, result.err) == (status, "")


def test_an_exit_status_outside_0_to_255_is_an_error(plugin_dir, other, capsys):
    install(plugin_dir, "quit", module("(call $exit (i32.const -1))"))
    fails_then_carries_on(
        capsys,
        "quit",
        "plugin 'quit': exited with status -1, which is not an exit code (0-255)",
        hint="a bug in the plugin; report it to its author",
    )


def test_a_c_modules_exit_status_is_the_exit_code(plugin_dir, run):
    install_probe(plugin_dir)
    assert run("cexit", "200").code == 200
    assert run("cexit", "3").code == 3


def test_redirects_are_not_followed(plugin_dir, conduit_home, server, run):
    install(
        plugin_dir, "fetch", call_module("http", f'{{"url": "http://127.0.0.1:{server}/redirect"}}')
    )
    configure(conduit_home, f'[grants]\nfetch = ["network:http:127.0.0.1:{server}"]\n')
    _Handler.seen.clear()
    result = run("fetch")
    assert result.code == 0, result.err
    assert '"status": 302' in result.out
    assert '"Location", "http://example.com/elsewhere"' in result.out
    assert _Handler.seen == ["/redirect"]


def test_network_without_a_grant_is_denied(plugin_dir, server, other, capsys):
    install(
        plugin_dir, "fetch", call_module("http", f'{{"url": "http://127.0.0.1:{server}/ping"}}')
    )
    fails_then_carries_on(
        capsys,
        "fetch",
        f"plugin 'fetch': denied: an HTTP request to 127.0.0.1:{server}: "
        f"network:http:127.0.0.1:{server} is not granted",
        hint=f'grant it in the config: [grants] fetch = ["network:http:127.0.0.1:{server}"]',
    )


def test_http_to_an_ungranted_host_is_denied(plugin_dir, conduit_home, server, other, capsys):
    install(plugin_dir, "fetch", call_module("http", f'{{"url": "http://127.0.0.1:{server}/"}}'))
    configure(
        conduit_home, '[grants]\nfetch = ["network:http:example.com", "network:http:127.0.0.1:1"]\n'
    )
    fails_then_carries_on(
        capsys,
        "fetch",
        f"plugin 'fetch': denied: an HTTP request to 127.0.0.1:{server}: "
        f"network:http:127.0.0.1:{server} is not granted",
    )


def test_ungranted_environment_variable_is_denied(
    plugin_dir, conduit_home, other, capsys, monkeypatch
):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    install(plugin_dir, "peek", call_module("env", "SECRET_TOKEN"))
    configure(conduit_home, '[grants]\npeek = ["env:read:HOME"]\n')
    fails_then_carries_on(
        capsys,
        "peek",
        "plugin 'peek': denied: reading the environment variable SECRET_TOKEN: "
        "env:read:SECRET_TOKEN is not granted",
    )
    configure(conduit_home, '[grants]\npeek = ["env:read:SECRET_*"]\n')
    kernel = fresh_kernel()
    try:
        capsys.readouterr()
        assert kernel.run("peek", ["peek"]) == 0
        assert capsys.readouterr().out == "hunter2"
    finally:
        kernel.shutdown()


def test_exec_only_granted_programs(plugin_dir, conduit_home, other, capsys):
    install(
        plugin_dir, "runner", call_module("exec", '{"program": "echo", "args": ["from", "echo"]}')
    )
    fails_then_carries_on(
        capsys,
        "runner",
        "plugin 'runner': denied: running echo: process:execute:echo is not granted",
    )
    # a grant for the bare name does not cover a file of that name elsewhere
    configure(conduit_home, '[grants]\nrunner = ["process:execute:echo"]\n')
    kernel = fresh_kernel()
    try:
        capsys.readouterr()
        assert kernel.run("runner", ["runner"]) == 0
        assert '"stdout": "from echo\\n"' in capsys.readouterr().out
    finally:
        kernel.shutdown()


def test_exec_grant_for_a_name_does_not_cover_a_path(
    plugin_dir, conduit_home, tmp_path, other, capsys
):
    evil = tmp_path / "echo"
    evil.write_text("#!/bin/sh\necho evil\n")
    evil.chmod(0o755)
    install(plugin_dir, "runner", call_module("exec", f'{{"program": "{evil}"}}'))
    configure(conduit_home, '[grants]\nrunner = ["process:execute:echo"]\n')
    fails_then_carries_on(
        capsys,
        "runner",
        f"plugin 'runner': denied: running {evil}: process:execute:{evil} is not granted",
    )


def test_infinite_loop_times_out(plugin_dir, conduit_home, other, capsys):
    install(plugin_dir, "spin", module("(loop $l (br $l))"))
    configure(conduit_home, "[wasm]\ntimeout = 0.3\n")
    fails_then_carries_on(
        capsys,
        "spin",
        "plugin 'spin': timed out after 0.3 s (wall-clock limit)",
        hint="raise [wasm] timeout in the config (0 = no limit)",
    )


@pytest.mark.parametrize("timeout", ["0", "60"])
def test_ctrl_c_stops_a_running_module(plugin_dir, conduit_home, timeout):
    # prints a line, then loops forever; SIGINT once the line is out
    install(
        plugin_dir,
        "spin",
        module(
            "(call $print (i32.const 100) (i32.const 8)) (loop $l (br $l))", data={100: "running\n"}
        ),
    )
    configure(conduit_home, f"[wasm]\ntimeout = {timeout}\n")
    with subprocess.Popen(
        with_sigint([sys.executable, "-m", "conduit", "spin"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            # the module's own line: it runs, and Conduit's handler and ticker are in place
            assert proc.stdout is not None and proc.stdout.readline() == b"running\n"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130
            assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()
        finally:
            proc.kill()


#: A shell runs a background job (``pytest ... &``) with SIGINT ignored, and an ignored
#: signal stays ignored across exec: the child Python would then install no handler and
#: the test's SIGINT would never arrive (each case hung until its wait ran out).
_SIGINT_AS_A_TERMINAL_GIVES_IT = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def with_sigint(argv: list[str]) -> list[str]:
    """``argv`` run with SIGINT at its default, as a terminal's foreground job has it,
    whatever the test run inherited."""
    return [sys.executable, "-c", _SIGINT_AS_A_TERMINAL_GIVES_IT, *argv]


def test_allocation_bomb_hits_the_memory_limit(plugin_dir, conduit_home, other, capsys):
    # grow one page at a time until memory.grow fails, then abort as an allocator would
    body = """
   (loop $grow
     (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
   unreachable"""
    install(plugin_dir, "bomb", module(body))
    configure(conduit_home, "[wasm]\nmemory-mb = 16\n")
    fails_then_carries_on(
        capsys,
        "bomb",
        "plugin 'bomb': out of memory: it reached the limit of 16 MB and then trapped "
        "(wasm trap: wasm `unreachable` instruction executed)",
        hint="raise [wasm] memory-mb in the config",
    )


def test_infinite_recursion_is_a_stack_overflow(plugin_dir, other, capsys):
    wat = module("(call $down)").replace(
        ' (func (export "_start")', ' (func $down (call $down))\n (func (export "_start")'
    )
    install(plugin_dir, "deep", wat)
    fails_then_carries_on(capsys, "deep", "plugin 'deep': stack overflow (infinite recursion?)")


#: what a module whose stack in linear memory ran below address 0 is told
SHADOW_STACK_OVERFLOW = (
    "stack overflow: its stack in linear memory ran below address 0 "
    "(large local arrays or deep recursion?)"
)
SHADOW_STACK_HINT = (
    "a module's own stack is sized when it is linked (clang: -Wl,-z,stack-size=BYTES); "
    "the wasm stack is 512 KB ([wasm] max-stack-kb)"
)


def test_a_stack_in_memory_that_runs_below_zero_is_a_stack_overflow(plugin_dir, other, capsys):
    # as C keeps its stack: a global stack pointer, 4 KB of locals per call, recursion
    wat = module("(call $down)").replace(
        ' (func (export "_start")',
        """ (global $sp (mut i32) (i32.const 65536))
 (func $down
   (global.set $sp (i32.sub (global.get $sp) (i32.const 4096)))
   (i32.store (global.get $sp) (i32.const 1))
   (call $down))
 (func (export "_start")""",
    )
    install(plugin_dir, "deep", wat)
    fails_then_carries_on(
        capsys, "deep", f"plugin 'deep': {SHADOW_STACK_OVERFLOW}", hint=SHADOW_STACK_HINT
    )
    # the same below-zero pointer handed to a WASI function (a buffer on that stack)
    install(
        plugin_dir,
        "deep",
        module(
            "(drop (call $fd_write (i32.const 1) (i32.const -4096) (i32.const 1) (i32.const 8)))"
        ),
    )
    fails_then_carries_on(
        capsys, "deep", f"plugin 'deep': {SHADOW_STACK_OVERFLOW}", hint=SHADOW_STACK_HINT
    )


def test_an_access_past_the_end_of_memory_is_a_plain_trap(plugin_dir, other, capsys):
    install(plugin_dir, "past", module("(i32.store (i32.const 200000) (i32.const 1))"))
    fails_then_carries_on(
        capsys,
        "past",
        "plugin 'past': trapped: wasm trap: out of bounds memory access",
        hint="a bug in the plugin; report it to its author",
    )


@pytest.mark.parametrize("command", ["cbigarray", "crecurse"])
def test_a_c_stack_overflow_is_named(plugin_dir, other, capsys, command):
    install_probe(plugin_dir)
    fails_then_carries_on(
        capsys,
        command,
        f"plugin 'probe': {SHADOW_STACK_OVERFLOW}",
        hint=SHADOW_STACK_HINT,
        plugin="probe",
    )


def test_an_allocation_bomb_in_large_steps_hits_the_memory_limit(
    plugin_dir, conduit_home, other, capsys
):
    # 17 pages at a time, as malloc(1 MB) grows memory: it stops more than 64 KB short
    body = """
   (loop $grow
     (br_if $grow (i32.ne (memory.grow (i32.const 17)) (i32.const -1))))
   unreachable"""
    install(plugin_dir, "bomb", module(body))
    configure(conduit_home, "[wasm]\nmemory-mb = 16\n")
    fails_then_carries_on(
        capsys,
        "bomb",
        "plugin 'bomb': out of memory: it reached the limit of 16 MB and then trapped "
        "(wasm trap: wasm `unreachable` instruction executed)",
        hint="raise [wasm] memory-mb in the config",
    )


def test_a_c_allocation_bomb_hits_the_memory_limit(plugin_dir, conduit_home, other, capsys):
    install_probe(plugin_dir)
    configure(conduit_home, "[wasm]\nmemory-mb = 16\n")
    fails_then_carries_on(
        capsys,
        "cmallocbomb",
        "plugin 'probe': out of memory: it reached the limit of 16 MB and then trapped "
        "(wasm trap: wasm `unreachable` instruction executed)",
        hint="raise [wasm] memory-mb in the config",
        plugin="probe",
    )


def test_any_other_trap_is_named(plugin_dir, other, capsys):
    install(plugin_dir, "divide", module("(drop (i32.div_u (i32.const 1) (i32.const 0)))"))
    fails_then_carries_on(
        capsys,
        "divide",
        "plugin 'divide': trapped: wasm trap: integer divide by zero",
        hint="a bug in the plugin; report it to its author",
    )


def test_an_unknown_import_is_not_linked(plugin_dir, other, capsys):
    imports = ' (import "conduit" "socket" (func $socket (param i32) (result i32)))\n'
    install(plugin_dir, "sneaky", module("", imports=imports))
    fails_then_carries_on(
        capsys,
        "sneaky",
        "plugin 'sneaky': cannot be linked: unknown import: `conduit::socket` has not been defined",
    )


def test_memory_larger_than_the_limit_cannot_start(plugin_dir, conduit_home, other, capsys):
    install(
        plugin_dir,
        "big",
        module("").replace('(memory (export "memory") 2)', '(memory (export "memory") 600)'),
    )
    configure(conduit_home, "[wasm]\nmemory-mb = 16\n")
    kernel = fresh_kernel()
    try:
        with pytest.raises(
            ConduitError,
            match=r"plugin 'big': out of memory: it needs more than the limit of 16 MB to start",
        ):
            kernel.run("big", ["big"])
        assert kernel.run("other", ["other"]) == 0
    finally:
        kernel.shutdown()


def test_a_buffer_outside_memory_is_a_plugin_bug(plugin_dir, other, capsys):
    body = "(drop (call $env (i32.const 131000) (i32.const 100)))"  # memory is 2 pages
    install(plugin_dir, "oob", module(body, imports=CONDUIT_IMPORTS))
    fails_then_carries_on(
        capsys,
        "oob",
        "plugin 'oob': bad call to a conduit import: it passed a buffer outside its memory (131000, 100)",
        hint="a bug in the plugin",
    )


def test_fuel_limit(plugin_dir, conduit_home, other, capsys):
    install(plugin_dir, "spin", module("(loop $l (br $l))"))
    configure(conduit_home, "[wasm]\nfuel = 100000\n")
    fails_then_carries_on(capsys, "spin", "plugin 'spin': ran out of fuel (100000 units)")


def test_the_epoch_ticker_runs_only_while_a_command_runs(tmp_path, monkeypatch):
    # docs/wasm.md: one ticker thread, only while a WebAssembly command runs. The threads
    # the runtime starts are watched themselves, not the process's thread count, which
    # other tests' threads (a server winding down) may change at any moment.
    import threading

    from conduit.hosts.wasm import runtime as runtime_module
    from conduit.hosts.wasm.runtime import WasmSettings, runtime

    started: list[threading.Event] = []  # one "finished" event per thread started
    real_start = runtime_module._thread.start_new_thread

    def watched_start(target, args):  # type: ignore[no-untyped-def]
        finished = threading.Event()
        started.append(finished)

        def run(*a):  # type: ignore[no-untyped-def]
            try:
                target(*a)
            finally:
                finished.set()

        return real_start(run, args)

    monkeypatch.setattr(runtime_module._thread, "start_new_thread", watched_start)
    rt = runtime(WasmSettings(), str(tmp_path))
    assert started == []
    with rt:
        assert len(started) == 1 and not started[0].is_set()
        with rt:  # a nested command shares it
            assert len(started) == 1 and not started[0].is_set()
        assert not started[0].is_set()
    assert started[0].wait(30), "the ticker thread did not stop after the command"
    assert len(started) == 1


def test_each_command_gets_a_fresh_instance(plugin_dir, capsys):
    # a global counter incremented per run: a fresh instance always prints "1"
    wat = module(
        "(global.set $n (i32.add (global.get $n) (i32.const 1)))"
        "(i32.store8 (i32.const 100) (i32.add (i32.const 48) (global.get $n)))"
        "(call $print (i32.const 100) (i32.const 1))"
    ).replace(" (func (export", " (global $n (mut i32) (i32.const 0))\n (func (export", 1)
    install(plugin_dir, "count", wat)
    kernel = fresh_kernel()
    try:
        capsys.readouterr()
        assert kernel.run("count", ["count"]) == 0
        assert kernel.run("count", ["count"]) == 0
        assert capsys.readouterr().out == "11"
    finally:
        kernel.shutdown()


# -- the artifact cache ------------------------------------------------------------------------


def cache_state(kernel: Kernel) -> str:
    from conduit.hosts.wasm.host import WasmHost

    host = kernel.host_for(kernel.index["plugins"]["other"])
    assert isinstance(host, WasmHost)
    return host._runtime("other").cache.last


def run_other(capsys: pytest.CaptureFixture[str]) -> str:
    kernel = fresh_kernel()
    try:
        assert kernel.run("other", ["other"]) == 0
        assert capsys.readouterr().out == "other says hi"
        return cache_state(kernel)
    finally:
        kernel.shutdown()


def artifacts(home: Path) -> list[Path]:
    return sorted((home / "cache" / "wasm").glob("*.cwasm"))


def test_only_the_first_run_compiles(other, conduit_home, capsys):
    assert run_other(capsys) == "compiled"
    assert len(artifacts(conduit_home)) == 1
    assert run_other(capsys) == "hit"


def meta(artifact: Path) -> Path:
    return artifact.with_suffix(".meta")


def test_artifact_of_another_engine_configuration_is_rebuilt(other, conduit_home, capsys):
    assert run_other(capsys) == "compiled"
    [plain] = artifacts(conduit_home)
    plain_code, plain_meta = plain.read_bytes(), meta(plain).read_bytes()
    configure(conduit_home, "[wasm]\nfuel = 1000000\n")  # fuel changes the engine
    assert run_other(capsys) == "compiled"  # another key: not the plain artifact
    [fuelled] = [p for p in artifacts(conduit_home) if p != plain]
    fuelled_code, fuelled_meta = fuelled.read_bytes(), meta(fuelled).read_bytes()
    assert b"fuel=1" in fuelled_meta and b"fuel=0" in plain_meta
    # The other configuration's artifact under this configuration's name: its meta
    # line gives it away before wasmtime sees it.
    fuelled.write_bytes(plain_code)
    meta(fuelled).write_bytes(plain_meta)
    assert run_other(capsys) == "rebuilt: built by another engine configuration or module"
    assert (fuelled.read_bytes(), meta(fuelled).read_bytes()) == (fuelled_code, fuelled_meta)
    assert run_other(capsys) == "hit"
    # A forged meta line over the other configuration's code: wasmtime refuses it.
    fuelled.write_bytes(plain_code)
    state = run_other(capsys)
    assert state.startswith("rebuilt: wasmtime refused the artifact"), state
    assert fuelled.read_bytes() == fuelled_code
    assert run_other(capsys) == "hit"


def test_corrupt_artifact_is_rebuilt(other, conduit_home, capsys):
    run_other(capsys)
    [artifact] = artifacts(conduit_home)
    data = artifact.read_bytes()
    artifact.write_bytes(data[: len(data) // 2])
    assert run_other(capsys).startswith("rebuilt: wasmtime refused the artifact")
    assert run_other(capsys) == "hit"


def test_a_known_module_is_not_read_again(tmp_path):
    # docs/wasm.md: src-* files spare a run with a cached artifact reading and hashing it
    from conduit.hosts.wasm.runtime import ArtifactCache

    path = tmp_path / "m.wasm"
    path.write_bytes(wasmtime.wat2wasm(module("")))
    cache = ArtifactCache(str(tmp_path / "cache"), "test")
    digest, component, data = cache.identify(str(path))
    assert (component, data) == (False, path.read_bytes())
    assert cache.identify(str(path)) == (digest, False, None)
    # a file replaced by rename, even with the same bytes, is read again
    copy = tmp_path / "copy.wasm"
    shutil.copyfile(path, copy)
    os.replace(copy, path)
    assert cache.identify(str(path)) == (digest, False, path.read_bytes())


# -- start-up stays lean -----------------------------------------------------------------------


def test_startup_and_other_commands_do_not_import_wasmtime(plugin_dir, other):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    imported_by("--help", watch_kernel=False)
    code, new = imported_by("--help", watch_kernel=False)
    assert code == 0
    assert not {m for m in new if m.startswith(("wasmtime", "conduit.hosts.wasm"))}
    code, new = imported_by("hello")
    assert code == 0
    assert not {m for m in new if m.startswith(("wasmtime", "conduit.hosts.wasm"))}
    code, new = imported_by("other")
    assert code == 0
    assert {"wasmtime", "conduit.hosts.wasm"} <= new


#: what a cold command of a core module without grants does not need: Conduit's other
#: machinery (Click, msgspec, pluggy, the process host), hashlib (OpenSSL's libcrypto),
#: threading/signal/select (the epoch ticker uses _thread and _signal), the grammar of
#: grants, and wasmtime.component (dataclasses, inspect); see docs/performance.md
NOT_FOR_A_MODULE = {
    "_hashlib",
    "click",
    "conduit.kernel.hooks",
    "conduit.hosts.process",
    "conduit.hosts.wasm.component",
    "conduit.security.capabilities",
    "dataclasses",
    "encodings.ascii",
    "hashlib",
    "inspect",
    "msgspec",
    "pluggy",
    "select",
    "signal",
    "subprocess",
    "threading",
    "wasmtime.component",
}


def test_a_webassembly_command_imports_only_what_it_needs(plugin_dir, other):
    imported_by("other")  # compiles and caches the artifact
    code, new = imported_by("other")  # the cold command with a cached artifact
    assert code == 0
    assert "wasmtime" in new
    assert not NOT_FOR_A_MODULE & new, sorted(NOT_FOR_A_MODULE & new)


def test_a_granted_command_still_parses_its_grants(plugin_dir, conduit_home, other):
    configure(conduit_home, '[grants]\nother = ["env:read:HOME"]\n')
    code, new = imported_by("other")
    assert code == 0
    assert "conduit.security.capabilities" in new


#: run in a fresh interpreter: this module has imported wasmtime already, and then
#: import_wasmtime returns it without touching the collector
_IMPORT_WASMTIME = """
import gc, sys
from conduit.hosts.wasm.runtime import import_wasmtime
assert "wasmtime" not in sys.modules
DISABLE
was = gc.isenabled()
wasmtime = import_wasmtime()
assert gc.isenabled() == was, (was, gc.isenabled())
assert gc.get_freeze_count() > 0
assert import_wasmtime() is wasmtime
"""


@pytest.mark.parametrize("disable", ["", "gc.disable()"])
def test_importing_wasmtime_leaves_the_collector_as_it_was(disable):
    source = _IMPORT_WASMTIME.replace("DISABLE", disable)
    proc = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


#: the kernel imports the package's face when a WebAssembly plugin is activated: the
#: host, without wasmtime or what runs a guest; a function in the face would keep the
#: submodules alive to the end (see its docstring and test_ctrl_c_stops_a_running_module)
_FACE = """
import sys, types
import conduit.hosts
before = set(sys.modules)
import conduit.hosts.wasm as face
from conduit.hosts.wasm.host import WasmHost
assert face.WasmHost is WasmHost and face.__all__ == ["WasmHost"]
new = {m for m in set(sys.modules) - before if m.startswith("conduit.hosts.wasm")}
assert new == {f"conduit.hosts.wasm{m}" for m in ("", ".host", ".runtime", ".sandbox")}, new
assert "wasmtime" not in sys.modules
assert not [v for v in vars(face).values() if isinstance(v, types.FunctionType)]
"""


def test_the_wasm_face_imports_only_the_host():
    proc = subprocess.run(
        [sys.executable, "-c", _FACE], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_a_wasm_plugin_edited_in_place_is_noticed(plugin_dir, run):
    path = install(
        plugin_dir, "hi", module("(call $print (i32.const 100) (i32.const 3))", data={100: "one"})
    )
    assert run("hi").out == "one"
    stat = os.stat(plugin_dir)
    path.write_bytes(
        wasmtime.wat2wasm(module("(call $print (i32.const 100) (i32.const 3))", data={100: "two"}))
    )
    (plugin_dir / "hi.toml").write_text(
        (plugin_dir / "hi.toml").read_text().replace("Run hi.", "Say hi.")
    )
    os.utime(plugin_dir, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert run("hi").out == "two"
    assert "Say hi." in run("--help").out


# -- conduit plugins build -----------------------------------------------------------------------


def test_build_installs_and_precompiles_a_prebuilt_module(tmp_path, conduit_home, run):
    source = tmp_path / "src"
    source.mkdir()
    (source / "plugin.wasm").write_bytes(
        wasmtime.wat2wasm(
            module("(call $print (i32.const 100) (i32.const 5))", data={100: "built"})
        )
    )
    (source / "conduit-plugin.toml").write_text(
        'name = "prebuilt"\napi = ">=1.0"\n[[commands]]\nname = "prebuilt"\nhelp = "Run it."\n'
    )
    result = run("plugins", "build", str(source))
    assert result.code == 0, result.err
    assert f"installed {conduit_home / 'plugins' / 'prebuilt.wasm'}" in result.out
    assert "precompiled in" in result.out
    assert len(artifacts(conduit_home)) == 1
    assert run("prebuilt").out == "built"
    assert run("plugins", "build", str(source)).out.endswith("already precompiled\n")


def test_build_errors_are_one_line(tmp_path, run):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("plugins", "build", str(empty))
    assert result.code == 1
    assert f"error: {empty}: no conduit-plugin.toml" in result.err
    (empty / "conduit-plugin.toml").write_text('name = "x"\napi = ">=1.0"\n')
    result = run("plugins", "build", str(empty))
    assert f"error: {empty}: neither app.py nor plugin.wasm" in result.err
    (empty / "conduit-plugin.toml").write_text('api = ">=1.0"\n')
    result = run("plugins", "build", str(empty))
    assert "conduit-plugin.toml: name: required field is missing" in result.err


def test_install_points_webassembly_plugins_to_build(tmp_path, conduit_home, run):
    source = tmp_path / "shout"
    source.mkdir()
    (source / "conduit-plugin.toml").write_text('name = "shout"\napi = ">=1.0"\n')
    (source / "app.py").write_text("")
    result = run("plugins", "install", str(source))
    assert result.code == 2
    assert result.err.splitlines() == [
        f"error: {source} is the source of a WebAssembly plugin, not a Python distribution: "
        "'plugins install' installs packages",
        f"hint: install it with 'conduit plugins build {source}' (builds, installs and "
        "precompiles it; docs/wasm.md)",
    ]
    module_file = tmp_path / "shout.wasm"
    module_file.write_bytes(wasmtime.wat2wasm(module("")))
    result = run("plugins", "install", str(module_file))
    assert result.code == 2
    assert f"error: {module_file} is a WebAssembly module, not a Python distribution" in result.err
    assert not (conduit_home / "pylock.conduit.toml").exists()  # nothing ran


def test_build_lists_the_capabilities_to_grant(tmp_path, conduit_home, run):
    source = tmp_path / "src"
    source.mkdir()
    (source / "plugin.wasm").write_bytes(
        wasmtime.wat2wasm(module("(call $print (i32.const 100) (i32.const 2))", data={100: "ok"}))
    )
    (source / "conduit-plugin.toml").write_text(
        'name = "asker"\napi = ">=1.0"\ncapabilities = ["env:read:HOME"]\n'
        '[[commands]]\nname = "asker"\nhelp = "Run it."\n'
    )
    result = run("plugins", "build", str(source))  # not a terminal: listed, not asked
    assert result.code == 0, result.err
    assert result.out.endswith(
        "plugin 'asker' asks for: env:read:HOME\n"
        "  grant with: conduit plugins grant asker env:read:HOME\n"
    )
    assert run("asker").code == 3
    assert run("plugins", "grant", "asker", "env:read:HOME").code == 0
    assert run("asker").out == "ok"
    result = run("plugins", "build", str(source))  # granted now: nothing to list
    assert result.out.endswith("already precompiled\n")


def test_the_first_refused_call_is_the_one_reported(tmp_path):
    # A guest that gets an error and carries on, then is refused again: the command's
    # error names the first refusal (docs/wasm.md), whichever host function refused.
    from conduit.hosts.wasm.sandbox import Denied, Sandbox

    box = Sandbox.build("quiet", [], str(tmp_path), str(tmp_path))
    with pytest.raises(Denied):
        box.check_env("HOME")
    with pytest.raises(Denied):
        box.check_program("git")
    with pytest.raises(Denied):
        box.check_http("https://example.com/")
    assert box.denied is not None
    assert (box.denied.capability, box.denied.what) == (
        "env:read:HOME",
        "reading the environment variable HOME",
    )


def test_the_wasm_hosts_settings_are_the_configs():
    # the host reads the validated [wasm] table without msgspec; the defaults must agree
    from conduit import config
    from conduit.hosts.wasm.runtime import WasmSettings

    validated = config.WasmSettings()
    assert WasmSettings.from_table({}) == tuple(getattr(validated, f) for f in WasmSettings._fields)
    table = {"timeout": 0.5, "memory-mb": 64, "fuel": 7, "max-stack-kb": 32, "http-timeout": 2.0}
    assert WasmSettings.from_table(table) == (0.5, 64, 7, 32, 2.0, 512)
    assert WasmSettings.from_table({"cache-mb": 3}).cache_mb == 3

"""Protocol conformance: one suite, run against every implementation of the plugin side.

The kernel side is :mod:`conduit.rpc` (``Channel`` and ``Endpoint``), as in
:class:`~conduit.hosts.process.ProcessHost`. The implementations:

* ``python``: the Python host (``conduit.hosts._child``) with a single-file plugin,
  reached over an inherited socketpair (``CONDUIT_RPC_FD``);
* ``js``: the JavaScript example ``examples/js-plugin/conduit-hello-js --conduit-rpc``,
  reached over its stdin and stdout;
* any executable listed in ``CONDUIT_CONFORMANCE_HOSTS`` (paths separated by
  ``os.pathsep``), reached the same way: another implementation is checked without
  editing this file.

What an implementation must provide for the suite (its commands, a service, a hook) is
listed in docs/protocol.md, "Conformance suite". All get the same small frame limit
(``CONDUIT_RPC_MAX_FRAME``) so that an oversized frame is cheap to send. Every wait has a
timeout.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conduit import rpc
from conduit.manifest import Manifest, parse_inline_manifest, parse_manifest

from _factory import manifest_block

ROOT = Path(__file__).resolve().parents[2]
JS_PLUGIN = ROOT / "examples" / "js-plugin" / "conduit-hello-js"
NODE = shutil.which("node")
# Without Node.js the JS half is skipped locally; CI installs it, so there it fails instead.
NO_NODE = pytest.mark.skipif(
    NODE is None and not os.environ.get("CI"), reason="Node.js is not installed"
)
CHILD = "from conduit.hosts._child import main; main()"

TIMEOUT = 5.0  # seconds for any one answer; nothing here should take more than a fraction
HOST_MAX_FRAME = 64 * 1024  # the hosts' frame limit in these tests

PY_TOML = """
name = "conf-py"
version = "1.0.0"
api = ">=1.0,<2"
isolation = "process"

[provides]
services = ["conf.upper"]

[[commands]]
name = "conf-py"

[[commands]]
name = "conf-py greet"

[[commands]]
name = "conf-py timer"

[[commands]]
name = "conf-py call"
"""

# The Python twin of the JS example: the same commands, service and hook, in Python.
PY_PLUGIN = '''
import json
import sys
import time

import click
from conduit.sdk import Plugin

CTX = None


@click.group("conf-py")
def group():
    """Conformance twin of hello-js."""


@group.command()
@click.option("--name", default="world")
def greet(name):
    click.echo(f"Hello, {name}!")


@group.command()
@click.argument("seconds", type=int)
def timer(seconds):
    for left in range(seconds, 0, -1):
        click.echo(f"timer: {left} s")
        time.sleep(1)


def _value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


@group.command()
@click.argument("service")
@click.argument("method")
@click.argument("args", nargs=-1)
def call(service, method, args):
    result = getattr(CTX.service(service), method)(*[_value(a) for a in args])
    click.echo(json.dumps(result))


class Upper:
    def upper(self, text):
        if not isinstance(text, str):
            raise TypeError(f"upper() takes a string, not {text!r}")
        return text.upper()


def after_command(command, argv, exit_code):
    line = " ".join([command, *argv])
    print(f"[conf-py] '{line}' finished with exit code {exit_code}", file=sys.stderr)


class ConfPy(Plugin):
    def boot(self, ctx):
        global CTX
        CTX = ctx
        ctx.register_command(group)
        ctx.register_service("conf.upper", Upper)
        ctx.register_hook("after_command", after_command)
'''


@dataclass(frozen=True)
class Impl:
    """What differs between the implementations; the checks are the same."""

    id: str
    plugin: str  # the plugin name (and its top-level command)
    service: str  # a service with the method upper(text)
    #: an executable host: how to run it (then ``--conduit-manifest`` or ``--conduit-rpc``);
    #: empty for the Python host
    argv: tuple[str, ...] = ()


def _executable_impl(path: str) -> Impl:
    """An implementation given by its executable: its name and service from its manifest."""
    data = json.loads(_manifest_output((path,)))
    name = data.get("name") or os.path.basename(path).removeprefix("conduit-").split(".")[0]
    return Impl(os.path.basename(path), name, data["provides"]["services"][0], (path,))


#: CONDUIT_CONFORMANCE_HOSTS: executables outside this repository to check as well
EXTERNAL = [p for p in os.environ.get("CONDUIT_CONFORMANCE_HOSTS", "").split(os.pathsep) if p]

IMPLS = {
    "python": Impl("python", "conf-py", "conf.upper"),
    "js": Impl("js", "hello-js", "js.upper", (str(NODE), str(JS_PLUGIN))),
}


def _record(manifest: Manifest, source: str, origin: str, protocol: str) -> dict[str, Any]:
    """A plugin record as the index holds it (see conduit.indexer.build._record)."""
    return {
        **msgspec.to_builtins(manifest),
        "source": source,
        "origin": origin,
        "dist": None,
        "protocol": protocol,
        "enabled": True,
        "blocked": None,
        "blocked_hint": None,
        "after": [],
    }


def _js_manifest() -> dict[str, Any]:
    assert NODE is not None, "node is missing: CI should have installed it"
    data = json.loads(_manifest_output(IMPLS["js"].argv))
    assert isinstance(data, dict)
    return data


@functools.cache
def _manifest_output(argv: tuple[str, ...]) -> bytes:
    proc = subprocess.run(
        [*argv, "--conduit-manifest"],
        capture_output=True,
        timeout=TIMEOUT * 2,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@dataclass
class Host:
    """A started plugin host and the kernel's end of its connection."""

    impl: Impl
    proc: subprocess.Popen[bytes]
    endpoint: rpc.Endpoint
    record: dict[str, Any]
    log_path: Path
    outputs: list[dict[str, Any]] = field(default_factory=list)
    kernel_calls: list[dict[str, Any]] = field(default_factory=list)
    sock: socket.socket | None = None

    @property
    def channel(self) -> rpc.Channel:
        return self.endpoint.channel

    def request(self, method: str, params: dict[str, Any], timeout: float = TIMEOUT) -> Any:
        return self.endpoint.request(method, params, timeout)

    def initialize(self, codecs: list[str] | None = None) -> dict[str, Any]:
        result = self.request(
            "initialize",
            {
                "protocol": rpc.PROTOCOL_VERSION,
                "conduit_api": "1.1.0",
                "codecs": codecs or ["json"],
                "plugins": [{"record": self.record, "data_dir": "", "config": {}}],
            },
        )
        assert isinstance(result, dict)
        if result["codec"] != "json":
            self.channel.codec = rpc.codec(result["codec"])
        return result

    def run(self, *words: str) -> int:
        """``command.run`` the plugin's command ``words``; its output lands in outputs."""
        result = self.request("command.run", self.run_params(*words))
        return int(result["exit_code"])

    def run_params(self, *words: str) -> dict[str, Any]:
        return {
            "plugin": self.impl.plugin,
            "argv": [self.impl.plugin, *words],
            "prog": "conduit",
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "terminal": {
                "columns": 80,
                "lines": 24,
                "stdin_tty": False,
                "stdout_tty": False,
                "stderr_tty": False,
            },
        }

    def text(self, stream: str) -> str:
        return "".join(o["data"] for o in self.outputs if o["stream"] == stream)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def send_raw(self, payload: bytes, size: int | None = None) -> None:
        """Write one frame of raw bytes (or only a header announcing ``size`` bytes)."""
        header = (len(payload) if size is None else size).to_bytes(4, "big")
        data = memoryview(header + payload)
        while data:
            data = data[os.write(self.channel.wfd, data) :]

    def recv_response(self) -> dict[str, Any]:
        """The next message that is not a request or notification."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = self.channel.recv(max(0.0, deadline - time.monotonic()))
            if "method" not in message:
                return message
            self.endpoint.handle(message)

    def close_channel(self) -> None:
        """Close the kernel's end of the connection (what a dying kernel does)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def wait(self) -> int:
        return self.proc.wait(timeout=TIMEOUT)


def _python_record(tmp_path: Path) -> dict[str, Any]:
    source = manifest_block(PY_TOML) + PY_PLUGIN
    path = tmp_path / "conf_py.py"
    path.write_text(source, encoding="utf-8")
    manifest = parse_inline_manifest(source, str(path))
    assert manifest is not None
    return _record(manifest, "file", str(path), "python")


def _executable_record(impl: Impl) -> dict[str, Any]:
    data = json.loads(_manifest_output(impl.argv))
    data.pop("protocol")
    origin = impl.argv[-1]
    manifest = parse_manifest(data, origin, expected_name=impl.plugin)
    return _record(manifest, "executable", origin, "jsonrpc")


def _start_python(env: dict[str, str], log: Any) -> tuple[Any, ...]:
    parent, child = socket.socketpair()
    env["CONDUIT_RPC_FD"] = str(child.fileno())
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD], pass_fds=(child.fileno(),), env=env, stderr=log
        )
    finally:
        child.close()
    return proc, rpc.Channel(parent.fileno(), parent.fileno()), parent


def _start_executable(argv: tuple[str, ...], env: dict[str, str], log: Any) -> tuple[Any, ...]:
    proc = subprocess.Popen(
        [*argv, "--conduit-rpc"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    return proc, rpc.Channel(proc.stdout.fileno(), proc.stdin.fileno()), None


PARAMS = [
    pytest.param("python", id="python"),
    pytest.param("js", id="js", marks=NO_NODE),
    *(pytest.param(path, id=os.path.basename(path)) for path in EXTERNAL),
]


@pytest.fixture(params=PARAMS)
def impl(request: pytest.FixtureRequest) -> Impl:
    return IMPLS.get(request.param) or _executable_impl(request.param)


@pytest.fixture
def record(impl: Impl, tmp_path: Path) -> dict[str, Any]:
    """The plugin's record, made from its manifest as the indexer would."""
    return _python_record(tmp_path) if not impl.argv else _executable_record(impl)


@pytest.fixture
def host(impl: Impl, record: dict[str, Any], tmp_path: Path) -> Iterator[Host]:
    """A started, not yet initialized host of each implementation."""
    env = dict(os.environ)
    env["CONDUIT_RPC_MAX_FRAME"] = str(HOST_MAX_FRAME)
    log_path = tmp_path / "host-stderr.log"
    with open(log_path, "wb") as log:
        if impl.argv:
            proc, channel, sock = _start_executable(impl.argv, env, log)
        else:
            proc, channel, sock = _start_python(env, log)
    h = Host(impl, proc, rpc.Endpoint(channel), record, log_path, sock=sock)
    h.endpoint.notifications["$/output"] = h.outputs.append

    def kernel_service(params: dict[str, Any]) -> Any:
        h.kernel_calls.append(params)
        return {"service": params["service"], "method": params["method"], "args": params["args"]}

    h.endpoint.handlers["kernel/service"] = kernel_service
    try:
        yield h
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        h.close_channel()


def _assert_alive(host: Host) -> None:
    """The host still answers (after a rejected message)."""
    health = host.request("health", {})
    assert health["status"] == "ok"
    assert host.proc.poll() is None


def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


# -- the handshake ------------------------------------------------------------------------


def test_initialize_handshake(host: Host) -> None:
    result = host.initialize(["json"])
    assert result["protocol"] == rpc.PROTOCOL_VERSION
    assert result["codec"] == "json"
    assert result["pid"] == host.proc.pid
    assert {"command.run", "hook.call", "service.call", "health", "shutdown"} <= set(
        result["interfaces"]
    )
    [info] = result["plugins"]
    assert info["name"] == host.impl.plugin
    assert f"{host.impl.plugin} greet" in info["commands"] or host.impl.plugin in info["commands"]
    assert all(isinstance(c, str) for c in info["commands"])
    assert info["services"] == [host.impl.service]
    assert info["hooks"] == [{"name": "after_command", "args": ["command", "argv", "exit_code"]}]
    assert info["hookspecs"] == []
    # What the host reports agrees with the manifest the index was built from.
    declared = {c["name"] for c in host.record["commands"]}
    assert set(info["commands"]) <= declared
    assert info["services"] == host.record["provides"]["services"]


def test_codec_negotiation_picks_an_offered_codec(host: Host) -> None:
    result = host.initialize(["msgpack", "json"])
    assert result["codec"] in ("msgpack", "json")
    # The host switched right after its answer; the kernel switched on reading it.
    assert host.request("health", {})["status"] == "ok"
    assert host.run("greet", "--name", "Ünï") == 0
    assert host.text("stdout") == "Hello, Ünï!\n"


def test_unsupported_protocol_version_is_refused(host: Host) -> None:
    with pytest.raises(rpc.RemoteError) as exc:
        host.request("initialize", {"protocol": 99, "codecs": ["json"], "plugins": []})
    assert exc.value.code == rpc.INVALID_PARAMS
    assert host.initialize()["protocol"] == rpc.PROTOCOL_VERSION  # still serving


def test_plugin_that_cannot_be_loaded_is_a_plugin_error(host: Host, tmp_path: Path) -> None:
    host.initialize()
    record = {**host.record, "name": "missing", "origin": str(tmp_path / "missing.py")}
    with pytest.raises(rpc.RemoteError) as exc:
        host.request("plugin.activate", {"record": record, "data_dir": "", "config": {}})
    assert exc.value.code == rpc.PLUGIN_ERROR
    assert exc.value.data["kind"] == "PluginLoadError"
    assert exc.value.message.startswith("plugin 'missing'")
    _assert_alive(host)


# -- malformed input ----------------------------------------------------------------------


def test_unknown_method(host: Host) -> None:
    host.initialize()
    with pytest.raises(rpc.RemoteError) as exc:
        host.request("no.such.method", {})
    assert exc.value.code == rpc.METHOD_NOT_FOUND
    _assert_alive(host)


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 41, "method": 42, "params": {}},
        {"jsonrpc": "2.0", "id": 41, "method": "health", "params": [1, 2]},
    ],
    ids=["method-not-a-string", "params-not-an-object"],
)
def test_invalid_request_is_answered(host: Host, message: dict[str, Any]) -> None:
    host.initialize()
    host.channel.send(message)
    response = host.recv_response()
    assert response["id"] == 41
    assert response["error"]["code"] == rpc.INVALID_REQUEST
    _assert_alive(host)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"jsonrpc": "2.0", "id": 5, "method": "health"', rpc.PARSE_ERROR),
        (b"\xff\xfe not utf-8", rpc.PARSE_ERROR),
        (b"[1, 2, 3]", rpc.INVALID_REQUEST),
        (b'{"id": 5, "method": "health"}', rpc.INVALID_REQUEST),
    ],
    ids=["truncated-json", "not-utf-8", "not-an-object", "no-jsonrpc-member"],
)
def test_malformed_frame_is_rejected_not_ignored(host: Host, payload: bytes, code: int) -> None:
    """Either an error answer (and the host goes on) or the host leaves: never silence."""
    host.initialize()
    host.send_raw(payload)
    try:
        response = host.recv_response()
    except rpc.ChannelClosed:
        assert host.wait() != 0  # the Python host: exit status 70
        return
    assert response["error"]["code"] == code
    assert response["id"] in (None, 5)
    _assert_alive(host)


def test_oversized_frame_is_refused_without_reading_it(host: Host) -> None:
    host.initialize()
    # Only the header: a host that waited for the body (or allocated it) would hang here.
    host.send_raw(b"", size=HOST_MAX_FRAME + 1)
    try:
        response = host.recv_response()
    except rpc.ChannelClosed:
        assert host.wait() != 0
        return
    assert "error" in response
    _assert_alive(host)


def test_closed_connection_ends_the_host(host: Host) -> None:
    host.initialize()
    host.close_channel()
    assert host.wait() == 0


# -- the methods --------------------------------------------------------------------------


def test_command_run_streams_output_and_returns_the_exit_code(host: Host) -> None:
    host.initialize()
    assert host.run("greet", "--name", "Ada") == 0
    assert host.outputs, "no $/output notification"
    assert all(o["stream"] in ("stdout", "stderr") for o in host.outputs)
    assert all(isinstance(o["data"], str) for o in host.outputs)
    assert host.text("stdout") == "Hello, Ada!\n"
    host.outputs.clear()
    # A usage error: printed by the host with exit code 2, or answered as a plugin error
    # of kind UsageError for the kernel to print in Conduit's style (the Python host).
    try:
        assert host.run("greet", "--bogus") == 2
        assert "--bogus" in host.text("stderr")
    except rpc.RemoteError as exc:
        assert exc.code == rpc.PLUGIN_ERROR and "--bogus" in exc.message
        assert isinstance(exc.data, dict) and exc.data["kind"] == "UsageError"
        assert "greet" in exc.data["usage"]
    assert host.text("stdout") == ""


def test_command_run_for_an_inactive_plugin_is_invalid_params(host: Host) -> None:
    host.initialize()
    params = {**host.run_params("greet"), "plugin": "nobody"}
    with pytest.raises(rpc.RemoteError) as exc:
        host.request("command.run", params)
    assert exc.value.code == rpc.INVALID_PARAMS
    _assert_alive(host)


def test_command_may_call_the_kernel(host: Host) -> None:
    host.initialize()
    assert host.run("call", "svc.echo", "echo", "1", "two", '["x"]') == 0
    assert host.kernel_calls == [
        {"service": "svc.echo", "method": "echo", "args": [1, "two", ["x"]], "kwargs": {}}
    ]
    printed = json.loads(host.text("stdout"))
    assert printed == {"service": "svc.echo", "method": "echo", "args": [1, "two", ["x"]]}


def test_cancel_and_sigint_stop_a_running_command(host: Host) -> None:
    host.initialize()
    rid = 1000
    host.channel.send(
        {
            "jsonrpc": "2.0",
            "id": rid,
            "method": "command.run",
            "params": host.run_params("timer", "30"),
        }
    )
    # Wait until the command runs, then do what ProcessHost._cancel does on Ctrl-C.
    first = host.channel.recv(TIMEOUT)
    assert first["method"] == "$/output"
    host.endpoint.notify("$/cancel", {"id": rid})
    host.proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    response = host.recv_response()
    assert response["id"] == rid
    assert time.monotonic() - started < 2.0  # the kernel's default cancel-grace
    # Either the request is answered as cancelled, or the command ends with a failure.
    if "error" in response:
        assert response["error"]["code"] == rpc.CANCELLED
    else:
        assert response["result"]["exit_code"] != 0
    _assert_alive(host)


def test_health(host: Host) -> None:
    host.initialize()
    health = host.request("health", {})
    assert health["status"] == "ok"
    assert health["pid"] == host.proc.pid
    assert host.impl.plugin in health["plugins"]


def test_service_call(host: Host) -> None:
    host.initialize()
    service = host.impl.service
    call = {"service": service, "method": "upper", "kwargs": {}}
    assert host.request("service.call", {**call, "args": ["abc"]}) == "ABC"
    assert host.request("service.call", {**call, "args": [], "kwargs": {"text": "déjà"}}) == "DÉJÀ"
    with pytest.raises(rpc.RemoteError) as exc:
        host.request("service.call", {**call, "args": [42]})
    assert exc.value.code == rpc.PLUGIN_ERROR
    assert "traceback" in exc.value.data
    with pytest.raises(rpc.RemoteError) as exc:
        host.request("service.call", {**call, "service": "no.such.service", "args": []})
    assert exc.value.code == rpc.METHOD_NOT_FOUND
    _assert_alive(host)


def test_pipelined_service_calls(host: Host) -> None:
    """The kernel may write a window of requests before it reads any answer
    (docs/protocol.md, pipelining): every one is answered, matched by id."""
    host.initialize()
    call = {"service": host.impl.service, "method": "upper", "kwargs": {}}
    words = [f"w{i}é" for i in range(1200)]  # several windows
    params = [{**call, "args": [word]} for word in words]
    assert host.endpoint.request_many("service.call", params, TIMEOUT) == [
        word.upper() for word in words
    ]
    with pytest.raises(rpc.RemoteError) as exc:  # a failure among them: all still answered
        host.endpoint.request_many(
            "service.call",
            [{**call, "args": ["a"]}, {**call, "args": [42]}, {**call, "args": ["b"]}],
        )
    assert exc.value.code == rpc.PLUGIN_ERROR
    assert host.request("service.call", {**call, "args": ["c"]}) == "C"  # still in step
    _assert_alive(host)


def test_hook_call(host: Host) -> None:
    host.initialize()
    plugin = host.impl.plugin
    kwargs = {"command": plugin, "argv": ["greet"], "exit_code": 0}
    params = {"plugin": plugin, "hook": "after_command", "kwargs": kwargs}
    assert host.request("hook.call", params) == []  # it returns None: left out
    line = f"[{plugin}] '{plugin} greet' finished with exit code 0"
    # The Python host forwards what the hook prints; the JS host writes to its own log.
    # Either is fine.
    assert _eventually(lambda: line in host.text("stderr") or line in host.log())
    assert host.request("hook.call", {**params, "hook": "no_such_hook"}) == []


def test_shutdown_ends_the_process(host: Host) -> None:
    host.initialize()
    assert host.request("shutdown", {}) is None
    assert host.wait() == 0
    with pytest.raises(rpc.ChannelClosed):
        host.channel.recv(TIMEOUT)


# -- the real kernel side -----------------------------------------------------------------


class _Ctx:
    """The kernel's Context, as far as ProcessHost uses it."""

    def __init__(self) -> None:
        self.services: dict[str, Any] = {}
        self.hooks: dict[str, Any] = {}
        self.hookspecs: list[Any] = []

    def register_service(self, name: str, factory: Any) -> None:
        self.services[name] = factory

    def register_hook(self, name: str, fn: Any) -> None:
        self.hooks[name] = fn

    def register_hookspec(self, spec: Any, *, firstresult: bool = False) -> None:
        self.hookspecs.append(spec)


class _Kernel:
    """The kernel, as far as ProcessHost uses it."""

    def __init__(self, state_dir: str) -> None:
        from conduit.timing import Profile

        self.index: dict[str, Any] = {"config": {}}
        from conduit.paths import Paths

        self.paths = Paths(state_dir, os.path.join(state_dir, "cache"), state_dir)
        self.profile = Profile(False)


def test_process_host_drives_the_host(
    impl: Impl, record: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """ProcessHost itself (the kernel's side) against each implementation."""
    from conduit.hosts.process import ProcessHost, ProcessSettings
    from conduit.timing import Profile

    command = [*impl.argv, "--conduit-rpc"] if impl.argv else None
    # msgpack is offered: the Python host takes it, the JS host stays with JSON.
    settings = ProcessSettings({"timeout": TIMEOUT, "codec": "msgpack"})
    kernel: Any = _Kernel(str(tmp_path))
    kernel.index["plugins"] = {record["name"]: record}  # the sandbox lets it read its file
    process_host = ProcessHost(kernel, settings, command=command)
    ctx: Any = _Ctx()
    try:
        process_host.activate(record, ctx, Profile(False))
        argv = [impl.plugin, "greet", "--name", "Ada"]
        assert process_host.run_command(record, ctx, argv, "conduit") == 0
        assert capfd.readouterr().out == "Hello, Ada!\n"
        assert ctx.services[impl.service]().upper("abc") == "ABC"
        assert ctx.hooks["after_command"](command=impl.plugin, argv=[], exit_code=0) is None
        err: list[str] = []

        def logged() -> bool:
            err.append(capfd.readouterr().err)
            return f"'{impl.plugin}' finished with exit code 0" in "".join(err)

        assert _eventually(logged)  # forwarded ($/output) or written to fd 2 (the JS log)
        assert process_host.health(impl.plugin)["status"] == "ok"
        proc = process_host.proc
        assert proc is not None
        process_host.deactivate(record, ctx)
        assert proc.returncode == 0
    finally:
        with contextlib.suppress(Exception):
            process_host._stop(kill=True)


# -- the manifest of an executable --------------------------------------------------------


@NO_NODE
def test_js_manifest_is_valid() -> None:
    data = _js_manifest()
    assert data.pop("protocol") == "jsonrpc"  # not a manifest field: the indexer takes it out
    manifest = parse_manifest(data, f"{JS_PLUGIN} --conduit-manifest", expected_name="hello-js")
    assert manifest.name == "hello-js"
    assert manifest.isolation == "process"
    assert manifest.provides.services == ["js.upper"]
    names = [c.name for c in manifest.commands]
    assert names[0] == "hello-js"
    assert {"hello-js greet", "hello-js json-pretty", "hello-js timer", "hello-js call"} <= set(
        names
    )


def test_js_plugin_is_executable() -> None:
    assert os.access(JS_PLUGIN, os.X_OK)
    assert JS_PLUGIN.read_text(encoding="utf-8").startswith("#!/usr/bin/env node\n")


# -- what docs/protocol.md tells authors to run ----------------------------------------------


@NO_NODE
@pytest.mark.timeout(120)
def test_another_implementation_is_checked_from_the_environment() -> None:
    """docs/protocol.md, "Conformance suite": CONDUIT_CONFORMANCE_HOSTS adds executables
    to the suite (here the JS example once more, by its path)."""
    env = {**os.environ, "CONDUIT_CONFORMANCE_HOSTS": str(JS_PLUGIN)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
         "conduit-hello-js and (initialize_handshake or shutdown_ends)"],
        capture_output=True, text=True, env=env, timeout=100, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout


def test_rpc_trace_shows_every_frame_of_a_run(
    plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """docs/protocol.md, "Debugging": CONDUIT_RPC_TRACE=FILE, one line per frame both
    ways, named by plugin; the Python host's own side is not traced twice."""
    from _protocol_host import write_host
    from conduit.cli import main

    from _factory import simple_plugin

    write_host(plugin_dir, "exe")
    (plugin_dir / "py.py").write_text(
        simple_plugin("py", ("py",), output="hi", extra_toml='isolation = "process"')
    )
    trace = tmp_path / "rpc.trace"
    monkeypatch.setenv("CONDUIT_RPC_TRACE", str(trace))
    assert main(["exe", "echo", "hello"]) == 0
    assert main(["py"]) == 0
    assert capsys.readouterr().out == "hello\nhi\n"
    rows = []
    for line in trace.read_text().splitlines():
        _, name, arrow, text = line.split(" ", 3)
        message = json.loads(text)
        rows.append((name, arrow, message.get("method") or ("error" in message and "error")))
    assert rows == [
        ("exe", "-->", "initialize"),
        ("exe", "<--", False),
        ("exe", "-->", "command.run"),
        ("exe", "<--", "$/output"),
        ("exe", "<--", False),
        ("exe", "-->", "shutdown"),
        ("exe", "<--", False),
        ("py", "-->", "initialize"),
        ("py", "<--", False),
        ("py", "-->", "command.run"),
        ("py", "<--", "$/output"),
        ("py", "<--", False),
        ("py", "-->", "shutdown"),
        ("py", "<--", False),
    ]

"""The wire protocol (conduit.rpc): unit tests over a socketpair, and fuzzing.

The fuzzing sends truncated, oversized and random frames, JSON of the wrong shape,
unknown methods and out-of-order ids (a) to the kernel's side, an :class:`rpc.Endpoint`
waiting for the answer to a request, and to a :class:`ProcessHost` starting a host that
answers nonsense, and (b) to a real child host process. The kernel side may only raise
the protocol's own errors (``HostError`` through ProcessHost); the child answers, ignores
or exits. Every wait has a timeout, so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit import rpc
from conduit.errors import ConduitError, HostError
from conduit.hosts.process import ProcessHost, ProcessSettings
from conduit.indexer.build import load
from conduit.kernel.core import Context, Kernel
from conduit.paths import resolve
from conduit.timing import Profile

from _factory import manifest_block, write

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 5.0  # the longest any single answer may take here; most take microseconds
CHILD = "from conduit.hosts._child import main; main()"


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def jframe(message: Any) -> bytes:
    return frame(json.dumps(message).encode())


def mframe(message: Any) -> bytes:
    return frame(msgspec.msgpack.encode(message))


def channel(sock: socket.socket, max_frame: int = rpc.MAX_FRAME) -> rpc.Channel:
    return rpc.Channel(sock.fileno(), sock.fileno(), max_frame=max_frame)


def pending(sock: socket.socket) -> bool:
    """Whether anything was written to the other end of ``sock``'s pair."""
    return bool(select.select([sock], [], [], 0)[0])


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


# -- Channel -----------------------------------------------------------------------------
def test_frames_are_length_prefixed_json(pair):
    a, b = pair
    channel(a).send({"jsonrpc": "2.0", "method": "m", "params": {"x": "é"}})
    data = b.recv(1000)
    payload = '{"jsonrpc":"2.0","method":"m","params":{"x":"é"}}'.encode()
    assert data == len(payload).to_bytes(4, "big") + payload


def test_frames_split_over_reads_and_several_in_one_read(pair):
    a, b = pair
    ch = channel(a)
    one, two = jframe({"jsonrpc": "2.0", "id": 1}), jframe({"jsonrpc": "2.0", "id": 2})
    b.sendall(one + two[:3])
    assert ch.recv(TIMEOUT)["id"] == 1
    with pytest.raises(rpc.Timeout):
        ch.recv(0.01)  # half a header: keeps it and waits for the rest
    b.sendall(two[3:9])
    with pytest.raises(rpc.Timeout):
        ch.recv(0.01)
    b.sendall(two[9:])
    assert ch.recv(TIMEOUT)["id"] == 2


def test_recv_times_out(pair):
    a, _ = pair
    started = time.monotonic()
    with pytest.raises(rpc.Timeout):
        channel(a).recv(0.05)
    assert time.monotonic() - started < TIMEOUT


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x00", b"\x00\x00\x00\x64" + b"x" * 10],
    ids=["nothing", "half-a-header", "truncated-body"],
)
def test_eof_mid_frame_is_channel_closed(pair, data):
    a, b = pair
    b.sendall(data)
    b.close()
    with pytest.raises(rpc.ChannelClosed):
        channel(a).recv(TIMEOUT)


def test_oversized_frame_is_refused_on_send_before_writing(pair):
    a, b = pair
    ch = channel(a, max_frame=100)
    with pytest.raises(
        rpc.ProtocolError, match=r"message of 1[0-9]{2} bytes exceeds the frame limit"
    ):
        ch.send({"jsonrpc": "2.0", "method": "m", "params": {"data": "x" * 100}})
    assert not pending(b)
    ch.send({"jsonrpc": "2.0", "method": "m", "params": {}})  # small ones still go
    assert pending(b)


def test_oversized_frame_is_refused_on_receive_without_reading_it(pair):
    a, b = pair
    ch = channel(a)
    b.sendall((1024**3).to_bytes(4, "big"))  # announces 1 GiB, sends no body
    tracemalloc.start()
    try:
        with pytest.raises(
            rpc.ProtocolError, match="frame of 1073741824 bytes exceeds the limit of 16777216"
        ):
            ch.recv(TIMEOUT)  # a reader waiting for the body would time out instead
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_frame_of_exactly_the_limit_is_accepted(pair):
    a, b = pair
    message = {"jsonrpc": "2.0", "method": "m", "params": {"pad": ""}}
    size = len(json.dumps(message, separators=(",", ":")).encode())
    ch = channel(a, max_frame=size)
    channel(b, max_frame=size).send(message)
    assert ch.recv(TIMEOUT) == message
    b.sendall((size + 1).to_bytes(4, "big"))
    with pytest.raises(
        rpc.ProtocolError, match=f"frame of {size + 1} bytes exceeds the limit of {size}"
    ):
        ch.recv(TIMEOUT)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"{not json", "undecodable json message"),
        (b"\xff\xfe", "undecodable json message"),
        (b"[1, 2]", "not a JSON-RPC 2.0 message"),
        (b"42", "not a JSON-RPC 2.0 message"),
        (b'{"id": 1, "result": 2}', "not a JSON-RPC 2.0 message"),
        (b'{"jsonrpc": "1.0", "id": 1, "result": 2}', "not a JSON-RPC 2.0 message"),
    ],
)
def test_frames_that_are_not_json_rpc_are_protocol_errors(pair, payload, problem):
    a, b = pair
    b.sendall(frame(payload))
    with pytest.raises(rpc.ProtocolError, match=problem):
        channel(a).recv(TIMEOUT)


def test_send_to_a_closed_peer_is_channel_closed(pair):
    a, b = pair
    b.close()
    with pytest.raises(rpc.ChannelClosed):
        channel(a).send({"jsonrpc": "2.0", "method": "m", "params": {}})


def test_unknown_codec():
    with pytest.raises(ValueError, match="unknown codec 'xml'"):
        rpc.codec("xml")


# -- Endpoint ----------------------------------------------------------------------------
def test_request_and_response_round_trip_with_callbacks(pair):
    """The peer serves in a thread; while answering it calls back and streams output."""
    a, b = pair
    client = rpc.Endpoint(channel(a))
    server = rpc.Endpoint(channel(b))
    seen: list[dict[str, Any]] = []
    client.notifications["$/output"] = seen.append
    client.handlers["double"] = lambda params: params["n"] * 2

    def add(params: dict[str, Any]) -> int:
        server.notify("$/output", {"data": "adding"})
        return int(params["a"]) + server.request("double", {"n": params["b"]}, TIMEOUT)

    server.handlers["add"] = add
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    assert client.request("add", {"a": 1, "b": 20}, TIMEOUT) == 41
    assert client.request("add", {"a": 2, "b": 0}, TIMEOUT) == 2
    assert seen == [{"data": "adding"}, {"data": "adding"}]
    a.shutdown(socket.SHUT_RDWR)  # end of input: serve() returns
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def answer(
    pair: tuple[socket.socket, socket.socket], handlers: dict[str, Any], message: Any
) -> dict[str, Any]:
    """Send ``message`` from a to an endpoint on b; return b's answer as read on a."""
    a, b = pair
    server = rpc.Endpoint(channel(b), handlers)
    a.sendall(jframe(message))
    server.handle(server.channel.recv(TIMEOUT))
    return channel(a).recv(TIMEOUT)


def test_remote_error_carries_code_message_and_data(pair):
    def fail(params: dict[str, Any]) -> None:
        raise rpc.RemoteError(rpc.PLUGIN_ERROR, "it broke", {"kind": "exception", "hint": "h"})

    a, b = pair
    client = rpc.Endpoint(channel(a))
    server = rpc.Endpoint(channel(b), {"fail": fail})
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    with pytest.raises(rpc.RemoteError) as info:
        client.request("fail", {}, TIMEOUT)
    assert (info.value.code, info.value.message) == (rpc.PLUGIN_ERROR, "it broke")
    assert info.value.data == {"kind": "exception", "hint": "h"}
    a.shutdown(socket.SHUT_RDWR)
    thread.join(TIMEOUT)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"jsonrpc": "2.0", "id": 7, "method": "nope", "params": {}}, rpc.METHOD_NOT_FOUND),
        ({"jsonrpc": "2.0", "id": 7, "method": "get", "params": {}}, rpc.INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 7, "method": "get", "params": {"key": []}}, rpc.INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 7, "method": "get", "params": [1]}, rpc.INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 7, "method": 3, "params": {}}, rpc.INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 7, "method": "bug", "params": {}}, rpc.INTERNAL_ERROR),
        ({"jsonrpc": "2.0", "id": 7, "method": "unsendable", "params": {}}, rpc.INTERNAL_ERROR),
        ({"jsonrpc": "2.0", "id": 7, "method": "huge", "params": {}}, rpc.INTERNAL_ERROR),
    ],
    ids=[
        "unknown-method",
        "missing-param",
        "wrong-param-type",
        "positional-params",
        "method-not-a-string",
        "handler-bug",
        "result-not-encodable",
        "result-too-big",
    ],
)
def test_bad_requests_get_error_answers_and_the_endpoint_goes_on(pair, message, code):
    handlers = {
        "get": lambda params: {"a": 1}[params["key"]],
        "bug": lambda params: None.missing,  # type: ignore[attr-defined]
        "unsendable": lambda params: {1, 2},
        "huge": lambda params: "x" * (rpc.MAX_FRAME + 1),
        "ping": lambda params: "pong",
    }
    response = answer(pair, handlers, message)
    assert response["id"] == 7
    assert response["error"]["code"] == code
    assert isinstance(response["error"]["message"], str)
    assert "result" not in response
    # the same endpoint answers the next request
    assert answer(pair, handlers, {"jsonrpc": "2.0", "id": 8, "method": "ping"})["result"] == "pong"


def test_notifications_are_delivered_and_never_answered(pair):
    a, b = pair
    seen: list[Any] = []
    server = rpc.Endpoint(channel(b), {"ping": lambda p: "pong"}, {"note": seen.append})
    for message in [
        {"jsonrpc": "2.0", "method": "note", "params": {"n": 1}},
        {"jsonrpc": "2.0", "method": "note"},  # params default to {}
        {"jsonrpc": "2.0", "method": "note", "params": [1]},  # ignored: not an object
        {"jsonrpc": "2.0", "method": "unknown", "params": {}},  # ignored
        {"jsonrpc": "2.0", "id": None, "method": "ping", "params": {}},  # id null: notification
    ]:
        server.handle(message)
    assert seen == [{"n": 1}, {}]
    assert not pending(a)


def test_responses_with_unknown_or_old_ids_are_ignored(pair):
    a, b = pair
    client = rpc.Endpoint(channel(a))
    b.sendall(
        jframe({"jsonrpc": "2.0", "id": 99, "result": "stale"})
        + jframe({"jsonrpc": "2.0", "id": "1", "result": "a string id"})
        + jframe({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse"}})
        + jframe({"jsonrpc": "2.0", "id": 1, "result": "mine"})
    )
    assert client.request("m", {}, TIMEOUT) == "mine"
    # the answer to a request the client gave up on is skipped later
    with pytest.raises(rpc.Timeout):
        client.request("m", {}, 0.01)  # id 2
    b.sendall(
        jframe({"jsonrpc": "2.0", "id": 2, "result": "late"})
        + jframe({"jsonrpc": "2.0", "id": 3, "result": "third"})
    )
    assert client.request("m", {}, TIMEOUT) == "third"


@pytest.mark.parametrize(
    "response",
    [
        {"jsonrpc": "2.0", "id": 1, "error": "boom"},
        {"jsonrpc": "2.0", "id": 1, "error": {"code": "x", "message": "m"}},
        {"jsonrpc": "2.0", "id": 1, "error": {"code": 1.5, "message": "m"}},
        {"jsonrpc": "2.0", "id": 1, "error": {"code": None}},
        {"jsonrpc": "2.0", "id": 1, "error": {"code": True}},
        {"jsonrpc": "2.0", "id": 1},
    ],
)
def test_malformed_responses_are_protocol_errors(pair, response):
    a, b = pair
    b.sendall(jframe(response))
    with pytest.raises(rpc.ProtocolError):
        rpc.Endpoint(channel(a)).request("m", {}, TIMEOUT)


def test_request_times_out(pair):
    a, _ = pair
    with pytest.raises(rpc.Timeout):
        rpc.Endpoint(channel(a)).request("m", {}, 0.05)


def test_codec_switches_to_msgpack_after_the_reply(pair):
    a, b = pair
    client = rpc.Endpoint(channel(a))
    server = rpc.Endpoint(channel(b))

    def initialize(params: dict[str, Any]) -> dict[str, Any]:
        def switch() -> None:
            server.channel.codec = rpc.codec("msgpack")

        server.after_reply = switch
        return {"codec": "msgpack"}

    server.handlers.update({"initialize": initialize, "echo": lambda params: params})
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    assert client.request("initialize", {}, TIMEOUT) == {"codec": "msgpack"}  # in JSON
    client.channel.codec = rpc.codec("msgpack")
    assert client.request("echo", {"b": b"\x00bytes", "n": [1, 2.5]}, TIMEOUT) == {
        "b": b"\x00bytes",
        "n": [1, 2.5],
    }
    a.shutdown(socket.SHUT_RDWR)
    thread.join(TIMEOUT)
    # and what went over the wire after the switch was MessagePack
    a2, b2 = socket.socketpair()
    try:
        ch = channel(a2)
        ch.codec = rpc.codec("msgpack")
        ch.send({"jsonrpc": "2.0", "method": "m", "params": {}})
        data = b2.recv(100)
        assert msgspec.msgpack.decode(data[4:]) == {"jsonrpc": "2.0", "method": "m", "params": {}}
    finally:
        a2.close()
        b2.close()


def test_serve_stops_when_a_handler_sets_closing_and_on_end_of_input(pair):
    a, b = pair
    server = rpc.Endpoint(channel(b))

    def shutdown(params: dict[str, Any]) -> None:
        server.closing = True

    server.handlers["shutdown"] = shutdown
    a.sendall(
        jframe({"jsonrpc": "2.0", "id": 1, "method": "shutdown", "params": {}})
        + jframe({"jsonrpc": "2.0", "id": 2, "method": "never", "params": {}})
    )
    server.serve()
    assert channel(a).recv(TIMEOUT) == {"jsonrpc": "2.0", "id": 1, "result": None}
    assert not pending(a)
    a.close()
    rpc.Endpoint(channel(b)).serve()  # EOF after the unread frame: returns


# -- fuzzing -----------------------------------------------------------------------------
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what MessagePack can hold
SCALARS = (
    st.none()
    | st.booleans()
    | INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
IDS = st.sampled_from([1, 1, 2, 0, "1", None]) | INTS | JSON
KERNEL_METHODS = ["kernel/service", "kernel/hook", "$/output", "$/cancel", "health", "nope"]
CHILD_METHODS = [
    "initialize",
    "plugin.activate",
    "command.run",
    "hook.call",
    "service.call",
    "health",
    "shutdown",
    "$/cancel",
    "$/output",
    "nope",
]
# Parameter names the handlers on either side read, so fuzzed params reach past the
# first lookup. Values stay harmless: cwd is "/" or missing, no real record or entry.
PARAM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "plugin": st.sampled_from(["fz", "nobody"]) | JSON,
    "argv": st.lists(
        st.sampled_from(["fz", "echo", "--help", "-x", "é"]) | st.text(max_size=5), max_size=4
    )
    | JSON,
    "cwd": st.just("/") | JSON,
    "terminal": st.fixed_dictionaries({}, optional={"columns": JSON, "stdout_tty": JSON}) | JSON,
    "service": st.sampled_from(["fz.echo", "nope"]) | JSON,
    "method": st.sampled_from(["echo", "__class__", "nope"]) | JSON,
    "args": st.lists(JSON, max_size=2) | JSON,
    "kwargs": st.dictionaries(st.sampled_from(["command", "text", "x"]), JSON, max_size=2) | JSON,
    "hook": st.sampled_from(["before_command", "nope"]) | JSON,
    "name": st.sampled_from(["before_command", "config_loaded", "nope"]) | JSON,
    "protocol": st.sampled_from([1, 2]) | JSON,
    "codecs": st.lists(st.sampled_from(["json", "msgpack", "xml"]), max_size=2) | JSON,
    "plugins": st.lists(JSON, max_size=2) | JSON,
    "stream": st.sampled_from(["stdout", "stderr"]) | JSON,
    "data": JSON,
    "id": IDS,
}
NAMED_PARAMS = st.fixed_dictionaries({}, optional=PARAM_VALUES)
PARAMS = st.one_of(NAMED_PARAMS, NAMED_PARAMS, JSON)
ERROR_OBJECTS = st.fixed_dictionaries(
    {"code": INTS | JSON}, optional={"message": JSON, "data": JSON}
)
ERRORS = st.one_of(ERROR_OBJECTS, ERROR_OBJECTS, JSON)


def messages(methods: list[str], pending: int | None = None) -> st.SearchStrategy[Any]:
    """JSON-RPC-ish messages: mostly well-formed, with anything inside; when the receiver
    waits for the answer to request ``pending``, many answer it (rightly or wrongly)."""
    v2 = st.just("2.0")
    method = st.sampled_from(methods)
    request = st.fixed_dictionaries({"jsonrpc": v2, "id": IDS, "method": method, "params": PARAMS})
    notification = st.fixed_dictionaries(
        {"jsonrpc": v2, "method": method}, optional={"params": PARAMS}
    )
    response = st.fixed_dictionaries(
        {"jsonrpc": v2, "id": IDS}, optional={"result": JSON, "error": ERRORS}
    )
    anything = st.fixed_dictionaries(
        {"jsonrpc": v2},
        optional={
            "id": IDS,
            "method": method | JSON,
            "params": PARAMS,
            "result": JSON,
            "error": ERRORS,
        },
    )
    odd = st.fixed_dictionaries({}, optional={"jsonrpc": JSON, "id": IDS, "method": JSON})
    branches = [request, request, notification, response, anything, odd, JSON]
    if pending is not None:
        answer = st.fixed_dictionaries(
            {"jsonrpc": v2, "id": st.just(pending)}, optional={"result": JSON, "error": ERRORS}
        )
        failure = st.fixed_dictionaries({"jsonrpc": v2, "id": st.just(pending), "error": ERRORS})
        branches += [answer, failure, failure]
    return st.one_of(*branches)


def encoded(
    methods: list[str], max_frame: int, pending: int | None = None, codec: str = "json"
) -> st.SearchStrategy[tuple[bytes, bool]]:
    """One chunk of bytes for the wire, and whether it is a complete frame."""
    encode = jframe if codec == "json" else mframe
    whole = messages(methods, pending).map(lambda m: (encode(m), True))
    raw = st.binary(max_size=40).map(lambda b: (frame(b), True))
    oversized = st.integers(max_frame + 1, 2**32 - 1).map(lambda n: (n.to_bytes(4, "big"), True))

    def cut(data: tuple[bytes, bool], where: int) -> tuple[bytes, bool]:
        return data[0][: where % len(data[0])], False

    truncated = st.builds(cut, whole, st.integers(min_value=0))
    noise = st.binary(min_size=1, max_size=40).map(lambda b: (b, False))
    return st.one_of(whole, whole, whole, whole, raw, oversized, truncated, noise)


ALLOWED = (rpc.ProtocolError, rpc.Timeout, rpc.RemoteError)  # ChannelClosed is a ProtocolError


@pytest.fixture
def kernel(conduit_home: Path) -> Iterator[Kernel]:
    paths = resolve()
    k = Kernel(load(paths, Profile(False)), paths)
    yield k
    k.shutdown()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    wire=st.sampled_from(["json", "msgpack"]).flatmap(
        lambda codec: st.tuples(
            st.just(codec),
            st.lists(encoded(KERNEL_METHODS, 4096, 1, codec), min_size=1, max_size=4),
        )
    ),
    close=st.booleans(),
)
def test_fuzz_kernel_endpoint_raises_only_protocol_errors(kernel, capsys, wire, close):
    """The kernel's side, waiting for an answer, gets anything from a host (with the
    handlers a ProcessHost serves, in either codec)."""
    codec, chunks = wire
    host = ProcessHost(kernel)
    a, b = socket.socketpair()
    try:
        endpoint = rpc.Endpoint(
            channel(a, max_frame=4096),
            handlers={"kernel/service": host._kernel_service, "kernel/hook": host._kernel_hook},
            notifications={"$/output": host._output},
        )
        endpoint.channel.codec = rpc.codec(codec)
        b.sendall(b"".join(data for data, _ in chunks))
        if close:
            b.close()
        with contextlib.suppress(*ALLOWED):  # anything else fails the test
            endpoint.request("command.run", {"plugin": "fz"}, timeout=None if close else 0.01)
    finally:
        a.close()
        b.close()
        capsys.readouterr()  # what $/output wrote


# Answers to `initialize` (request 1) of every shape, valid ones included.
PLUGIN_INFO = st.fixed_dictionaries(
    {},
    optional={
        "commands": JSON,
        "services": st.lists(st.text(max_size=4), max_size=2) | JSON,
        "hooks": st.lists(
            st.fixed_dictionaries({}, optional={"name": JSON, "args": JSON}), max_size=2
        )
        | JSON,
        "hookspecs": JSON,
    },
)
INITIALIZE_RESULTS = st.fixed_dictionaries(
    {},
    optional={
        "codec": st.sampled_from(["json", "msgpack", "xml"]) | JSON,
        "plugins": st.lists(PLUGIN_INFO | JSON, max_size=2) | JSON,
    },
)
INITIALIZE_ANSWERS = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": st.just(1)},
    optional={"result": INITIALIZE_RESULTS | JSON, "error": ERRORS},
)


def first(chunk: tuple[bytes, bool]) -> bytes:
    return chunk[0]


HOST_SCRIPT = """
import os, sys
def read(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
size = int.from_bytes(read(4), "big")
read(size)  # the initialize request
os.write(1, bytes.fromhex(sys.argv[1]))
if sys.argv[2] == "linger":
    while os.read(0, 65536):
        pass
"""


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    answer=st.one_of(
        INITIALIZE_ANSWERS.map(jframe), encoded(KERNEL_METHODS, 16 << 20, 1).map(first)
    ),
    linger=st.booleans(),
)
def test_fuzz_process_host_turns_any_initialize_answer_into_a_conduit_error(
    kernel, capsys, answer, linger
):
    """A host that answers ``initialize`` with anything: the kernel stops it and reports a
    HostError (or activates the plugin, if the answer happens to be valid)."""
    host = ProcessHost(
        kernel,
        ProcessSettings({"timeout": 0.5}),
        command=[sys.executable, "-c", HOST_SCRIPT, answer.hex(), "linger" if linger else "exit"],
    )
    record: Any = {"name": "fz"}
    ctx = Context(kernel, record)
    try:
        host.activate(record, ctx, Profile(False))
    except HostError as exc:
        assert exc.exit_code == 3
        assert exc.message.startswith("plugin 'fz': ")
        assert not host.alive
    except ConduitError:  # an error the host reported (or a duplicate registration)
        assert not host.alive
    else:
        host.deactivate(record, ctx)
    finally:
        ctx.unregister_all()
        host._stop(kill=True)
        capsys.readouterr()


# -- fuzzing a real child host -----------------------------------------------------------
FZ_PLUGIN = """
import click
from conduit.sdk import Plugin


@click.command("fz")
@click.argument("words", nargs=-1)
def fz(words):
    click.echo(" ".join(words))


class Echo:
    def echo(self, *args, **kwargs):
        return [list(args), kwargs]


def before_command(command):
    print("before", command)


class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(fz)
        ctx.register_service("fz.echo", Echo)
        ctx.register_hook("before_command", before_command)
"""
FZ_TOML = """
name = "fz"
api = ">=1.0,<2"
isolation = "process"
[provides]
services = ["fz.echo"]
[[commands]]
name = "fz"
"""
CHILD_MAX_FRAME = 64 * 1024


class LiveChild:
    """A real child host with the fz plugin, restarted whenever it has exited."""

    def __init__(self, record: dict[str, Any], log: Path) -> None:
        self.record = record
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.endpoint: rpc.Endpoint | None = None
        self.starts = 0
        self.probes = 0
        self.output: list[str] = []  # what the current child printed (tracebacks, too)

    def start(self) -> rpc.Endpoint:
        if self.endpoint is not None:
            return self.endpoint
        parent, child = socket.socketpair()
        env = {**os.environ, "CONDUIT_RPC_FD": str(child.fileno())}
        env["CONDUIT_RPC_MAX_FRAME"] = str(CHILD_MAX_FRAME)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD], pass_fds=(child.fileno(),), env=env, stderr=log
            )
        child.close()
        self.sock = parent
        self.endpoint = rpc.Endpoint(channel(parent, CHILD_MAX_FRAME))
        self.starts += 1
        self.output.clear()
        params = {
            "protocol": rpc.PROTOCOL_VERSION,
            "codecs": ["json"],
            "plugins": [{"record": self.record, "data_dir": "", "config": {}}],
        }
        result = self.endpoint.request("initialize", params, TIMEOUT)
        assert result["plugins"][0]["commands"] == ["fz"]
        return self.endpoint

    def ended(self) -> int:
        """The child closed the connection: it must exit, cleanly or as a protocol error."""
        assert self.proc is not None and self.sock is not None
        try:
            status = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("the child closed the connection but did not exit")
        self.sock.close()
        self.proc = self.sock = self.endpoint = None
        printed = "".join(self.output) + self.log.read_text()
        assert status in (0, 70), f"the child exited with {status}:\n{printed}"
        return status

    def send(self, chunks: list[tuple[bytes, bool]]) -> None:
        """Send fuzzed chunks; check the child answers, ignores or exits, in time."""
        self.start()
        assert self.sock is not None
        data = b"".join(chunk for chunk, _ in chunks)
        complete = all(whole for _, whole in chunks)
        try:
            self.sock.sendall(data)
            if complete:
                self.probes += 1
                probe = f"probe-{self.probes}"
                self.sock.sendall(jframe({"jsonrpc": "2.0", "id": probe, "method": "health"}))
            else:
                # A partial frame stays partial: the child must end at end of input.
                self.sock.shutdown(socket.SHUT_WR)
                probe = None
        except (BrokenPipeError, ConnectionResetError):
            self.drain(None)
            return
        self.drain(probe)

    def drain(self, probe: str | None) -> None:
        """Read answers until the probe's (the child lives on) or end of input (it left)."""
        assert self.endpoint is not None
        channel = self.endpoint.channel
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                message = channel.recv(max(0.0, deadline - time.monotonic()))
            except rpc.Timeout:
                pytest.fail("the child neither answered nor exited")
            except rpc.ChannelClosed:
                self.ended()
                return
            if "method" in message:
                assert message["method"] == "$/output", message
                self.output.append(str(message["params"]["data"]))
                continue
            assert ("result" in message) != ("error" in message), message
            if "error" in message:
                error = message["error"]
                assert isinstance(error["code"], int) and isinstance(error["message"], str)
                assert error["code"] != rpc.PLUGIN_ERROR or error["data"]["kind"]
            elif message["id"] == probe:
                assert message["result"]["status"] == "ok"
                return
            result = message.get("result")
            if isinstance(result, dict) and "interfaces" in result:  # a second initialize
                channel.codec = rpc.codec(result["codec"])

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


@pytest.fixture
def child(plugin_dir: Path, tmp_path: Path) -> Iterator[LiveChild]:
    write(plugin_dir, "fz.py", manifest_block(FZ_TOML) + textwrap.dedent(FZ_PLUGIN))
    record = load(resolve(), Profile(False))["plugins"]["fz"]
    live = LiveChild(dict(record), tmp_path / "child-stderr.log")
    try:
        yield live
    finally:
        live.close()


def test_fuzz_child_host_answers_ignores_or_exits(child):
    """Anything on the wire; one child serves until it leaves, then the next one."""

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(chunks=st.lists(encoded(CHILD_METHODS, CHILD_MAX_FRAME), min_size=1, max_size=3))
    def fuzz(chunks: list[tuple[bytes, bool]]) -> None:
        child.send(chunks)

    fuzz()
    child.send([])  # and the last one still answers


def test_fuzz_child_host_requests_with_fuzzed_params(child):
    """Well-formed requests for the active plugin with fuzzed params: always answered."""
    requests = st.fixed_dictionaries(
        {
            "jsonrpc": st.just("2.0"),
            "id": st.integers(1, 10**6),
            "method": st.sampled_from(
                ["command.run", "hook.call", "service.call", "plugin.activate"]
            ),
            "params": st.fixed_dictionaries(
                {"plugin": st.just("fz")},
                optional={k: v for k, v in PARAM_VALUES.items() if k != "plugin"},
            ),
        }
    )

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=requests)
    def fuzz(request: dict[str, Any]) -> None:
        child.send([(jframe(request), True)])

    fuzz()
    assert child.starts == 1  # none of them made the child leave


# -- request_many ------------------------------------------------------------------------
def test_request_many_answers_in_order_with_callbacks_and_errors(pair):
    a, b = pair
    client = rpc.Endpoint(channel(a))
    server = rpc.Endpoint(channel(b))
    seen: list[dict[str, Any]] = []
    client.notifications["$/output"] = seen.append
    client.handlers["double"] = lambda params: params["n"] * 2

    def work(params: dict[str, Any]) -> int:
        n = int(params["n"])
        if n % 1000 == 999:
            raise rpc.RemoteError(rpc.PLUGIN_ERROR, f"no {n}")
        if n % 500 == 0:  # a callback and output in the middle of a window
            server.notify("$/output", {"n": n})
            return int(server.request("double", {"n": n}, TIMEOUT))
        return n

    server.handlers["work"] = work
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        ok = [{"n": n} for n in range(998)]
        assert client.request_many("work", ok, TIMEOUT) == [
            2 * n if n % 500 == 0 else n for n in range(998)
        ]
        assert seen == [{"n": 0}, {"n": 500}]
        with pytest.raises(rpc.RemoteError, match="no 999"):
            client.request_many("work", [{"n": n} for n in range(2500)], TIMEOUT)
        assert client.request("work", {"n": 7}, TIMEOUT) == 7  # still in step
        # big requests: windows are cut by size, not only by count
        big = [{"n": 1, "pad": "x" * 100_000} for _ in range(5)]
        assert client.request_many("work", big, TIMEOUT) == [1] * 5
    finally:
        a.shutdown(socket.SHUT_RDWR)
        thread.join(TIMEOUT)


def test_request_many_writes_windows_of_at_most_512_requests_and_48_kib(pair):
    """docs/protocol.md: a window is up to 512 requests, at most 48 KiB of frames (a
    request bigger than that goes alone), written at once before any answer is read."""
    a, b = pair
    client = rpc.Endpoint(channel(a))
    server = rpc.Endpoint(channel(b))
    server.handlers["echo"] = lambda params: params["n"]
    writes: list[list[int]] = []  # the sizes of the frames in each write of the client
    write = client.channel._write

    def recording(data: bytes) -> None:
        sizes, at = [], 0
        while at < len(data):
            sizes.append(4 + int.from_bytes(data[at : at + 4], "big"))
            at += sizes[-1]
        writes.append(sizes)
        write(data)

    client.channel._write = recording  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        small = [{"n": n} for n in range(1200)]
        assert client.request_many("echo", small, TIMEOUT) == list(range(1200))
        assert [len(sizes) for sizes in writes] == [512, 512, 176]
        writes.clear()
        big = [{"n": n, "pad": "x" * 20_000} for n in range(5)]
        assert client.request_many("echo", big, TIMEOUT) == list(range(5))
        assert [len(sizes) for sizes in writes] == [2, 2, 1]
        assert all(sum(sizes) <= 48 * 1024 for sizes in writes)
        writes.clear()
        huge = [{"n": n, "pad": "x" * 60_000} for n in range(2)]
        assert client.request_many("echo", huge, TIMEOUT) == [0, 1]
        assert [len(sizes) for sizes in writes] == [1, 1]
    finally:
        a.shutdown(socket.SHUT_RDWR)
        thread.join(TIMEOUT)


def test_replies_to_requests_that_arrived_together_are_written_together(pair):
    a, b = pair
    server = rpc.Endpoint(channel(b), {"id": lambda params: params["n"]})
    a.sendall(
        b"".join(
            jframe({"jsonrpc": "2.0", "id": n, "method": "id", "params": {"n": n}})
            for n in range(3)
        )
    )
    for _ in range(3):
        server.handle(server.channel.recv(TIMEOUT))
        assert not pending(a) or _ == 2  # held back while more requests are buffered
    assert pending(a)
    reader = channel(a)
    assert [reader.recv(TIMEOUT)["result"] for _ in range(3)] == [0, 1, 2]


def test_send_frames_writes_held_back_replies_and_the_frames_in_one_write(pair):
    a, b = pair
    ch = channel(a)
    ch.send({"jsonrpc": "2.0", "id": 1, "result": 1}, now=False)
    assert not pending(b)  # held back
    frames = [ch.frame({"jsonrpc": "2.0", "id": n, "method": "m"}) for n in (2, 3)]
    ch.send_frames(frames)
    reader = channel(b)
    assert [reader.recv(TIMEOUT)["id"] for _ in range(3)] == [1, 2, 3]
    assert not pending(b)


def test_last_id_is_the_id_of_the_last_request_sent(pair):
    a, b = pair
    client = rpc.Endpoint(channel(a))
    server = rpc.Endpoint(channel(b), {"echo": lambda params: params["n"]})
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        assert client.last_id == 0
        assert client.request("echo", {"n": 5}, TIMEOUT) == 5
        assert client.last_id == 1
        # a window that a too-big request ends: the id it would have had is not taken
        calls = [{"n": n, "pad": "x" * 20_000} for n in range(3)]
        assert client.request_many("echo", calls, TIMEOUT) == [0, 1, 2]
        assert client.last_id == 4
        assert client.request("echo", {"n": 6}, TIMEOUT) == 6
        assert client.last_id == 5
        with pytest.raises(AttributeError):
            client.last_id = 9  # type: ignore[misc]
    finally:
        a.shutdown(socket.SHUT_RDWR)
        thread.join(TIMEOUT)


def test_request_to_a_closed_peer_is_not_sent(pair):
    a, b = pair
    b.close()
    with pytest.raises(rpc.NotSent):
        rpc.Endpoint(channel(a)).request("m", {}, TIMEOUT)


def test_timeout_on_a_socket_channel_uses_the_socket(pair):
    a, b = pair
    ch = rpc.Channel(a.fileno(), a.fileno(), sock=a)
    started = time.monotonic()
    with pytest.raises(rpc.Timeout):
        ch.recv(0.05)
    assert time.monotonic() - started < TIMEOUT
    b.sendall(jframe({"jsonrpc": "2.0", "id": 1, "result": 2}))
    assert ch.recv(TIMEOUT)["result"] == 2
    # the limit is on the socket (a select() path would leave it unset)
    assert a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) != bytes(16)
    b.sendall(jframe({"jsonrpc": "2.0", "id": 2, "result": 3}))
    assert ch.recv()["result"] == 3  # no timeout: the socket's limit is lifted
    assert a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) == bytes(16)


def test_answer_to_an_outer_request_arriving_during_a_nested_one_is_kept(pair):
    """Request 1 is pending; the peer calls back, the callback sends request 2, and the
    peer answers 1 before 2: request 2 must keep that answer for request 1, not drop it."""
    a, b = pair
    client = rpc.Endpoint(channel(a))
    client.handlers["cb"] = lambda params: client.request("inner", {}, TIMEOUT)
    b.sendall(
        jframe({"jsonrpc": "2.0", "id": 7, "method": "cb", "params": {}})
        + jframe({"jsonrpc": "2.0", "id": 1, "result": "outer"})
        + jframe({"jsonrpc": "2.0", "id": 99, "result": "given up"})  # nobody waits: dropped
        + jframe({"jsonrpc": "2.0", "id": 2, "result": "inner"})
    )
    assert client.request("outer", {}, TIMEOUT) == "outer"
    peer = channel(b)
    sent = [peer.recv(TIMEOUT) for _ in range(3)]
    assert [m.get("method") for m in sent] == ["outer", "inner", None]
    assert sent[2] == {"jsonrpc": "2.0", "id": 7, "result": "inner"}  # the callback's answer
    assert client._early == {} and client._waiting == set()


def test_request_to_a_peer_that_reads_nothing_times_out_while_writing(pair):
    # A request bigger than the pipe's buffer, to a peer that never reads: the write waits
    # for room only until the request's deadline (a non-blocking descriptor, as the
    # process host's), then Timeout; a blocking one would wait forever.
    a, _ = pair
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        endpoint = rpc.Endpoint(rpc.Channel(a.fileno(), w, sock=a))
        start = time.monotonic()
        with pytest.raises(rpc.Timeout):
            endpoint.request("m", {"data": "x" * (1024 * 1024)}, timeout=0.3)
        assert 0.25 <= time.monotonic() - start < 5
        assert endpoint.channel.write_deadline is None  # restored after the request
        assert os.read(r, 4) == (
            len(b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"data":""}}') + 1024 * 1024
        ).to_bytes(4, "big")
    finally:
        os.close(r)
        os.close(w)


# -- Ctrl-C in the kernel ----------------------------------------------------------------
@pytest.fixture
def ctrl_c_held() -> Iterator[None]:
    """The kernel's SIGINT handler (rpc.hold_interrupts), as a process host installs it."""
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    rpc.hold_interrupts()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def kernel_side(ch: rpc.Channel, **notifications: Any) -> rpc.Endpoint:
    return rpc.Endpoint(
        ch, notifications=notifications, cancel_on_interrupt=False, hold_interrupts=True
    )


def notes_then_answer(n: int) -> bytes:
    notes = [jframe({"jsonrpc": "2.0", "method": "note", "params": {"n": i}}) for i in range(n)]
    return b"".join(notes) + jframe({"jsonrpc": "2.0", "id": 1, "result": "done"})


def test_ctrl_c_while_what_was_read_is_handled_loses_none_of_it(pair, ctrl_c_held):
    """A Ctrl-C that comes while the kernel handles what it read (here: as the first of
    three notifications is handled) waits until all of it is handled; the answer was
    read too, so nothing is left to cancel."""
    a, b = pair
    seen: list[int] = []

    def note(params: dict[str, Any]) -> None:
        seen.append(params["n"])
        if params["n"] == 0:
            signal.raise_signal(signal.SIGINT)

    client = kernel_side(channel(a), note=note)
    b.sendall(notes_then_answer(3))
    with pytest.raises(KeyboardInterrupt):
        client.request("run", {}, TIMEOUT)
    assert seen == [0, 1, 2]
    assert client.interrupted is None
    assert os.get_blocking(a.fileno())  # as it was


def test_ctrl_c_kept_back_is_raised_before_waiting_for_more(pair, ctrl_c_held):
    a, b = pair
    seen: list[int] = []

    def note(params: dict[str, Any]) -> None:
        seen.append(params["n"])
        signal.raise_signal(signal.SIGINT)

    client = kernel_side(channel(a), note=note)
    b.sendall(jframe({"jsonrpc": "2.0", "method": "note", "params": {"n": 0}}))
    with pytest.raises(KeyboardInterrupt):
        client.request("run", {}, None)  # no timeout: it would wait forever
    assert seen == [0]
    assert client.interrupted == 1  # no answer yet: the caller cancels request 1
    assert os.get_blocking(a.fileno())
    # what comes next is read as usual
    b.sendall(jframe({"jsonrpc": "2.0", "id": 1, "result": "late"}))
    assert client.channel.recv(TIMEOUT)["result"] == "late"


def test_second_ctrl_c_is_not_kept_back(pair, ctrl_c_held):
    a, b = pair
    seen: list[int] = []

    def note(params: dict[str, Any]) -> None:
        seen.append(params["n"])
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    client = kernel_side(channel(a), note=note)
    b.sendall(notes_then_answer(2))
    with pytest.raises(KeyboardInterrupt):
        client.request("run", {}, TIMEOUT)
    assert seen == [0]
    assert client.interrupted == 1
    assert os.get_blocking(a.fileno())


def test_ctrl_c_in_a_handler_of_the_peers_request_is_not_kept_back(pair, ctrl_c_held):
    """A handler (a kernel service a slow plugin provides) is interrupted as usual."""
    a, b = pair
    done: list[str] = []

    def slow(params: dict[str, Any]) -> None:
        signal.raise_signal(signal.SIGINT)
        done.append("after the interrupt")

    client = kernel_side(channel(a))
    client.handlers["kernel/service"] = slow
    b.sendall(jframe({"jsonrpc": "2.0", "id": 5, "method": "kernel/service", "params": {}}))
    with pytest.raises(KeyboardInterrupt):
        client.request("run", {}, TIMEOUT)
    assert done == []
    assert client.interrupted == 1


@pytest.mark.parametrize("wait", ["read", "socket-timeout", "select"])
def test_ctrl_c_while_waiting_for_an_answer_is_raised_at_once(pair, ctrl_c_held, wait):
    """Nothing read yet: a Ctrl-C ends the wait (a blocking read, a read with the socket's
    timeout, a select() on a pipe) instead of being kept back for ever."""
    a, _ = pair
    r, w = os.pipe()
    try:
        if wait == "select":
            ch = rpc.Channel(r, a.fileno())
        else:
            ch = rpc.Channel(a.fileno(), a.fileno(), sock=a if wait == "socket-timeout" else None)
        client = kernel_side(ch)
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                client.request("run", {}, None if wait == "read" else 60.0)
        finally:
            timer.cancel()
        assert client.interrupted == 1
        assert os.get_blocking(ch.rfd)
    finally:
        os.close(r)
        os.close(w)


def test_request_many_keeps_back_ctrl_c_until_the_answers_are_read(pair, ctrl_c_held):
    a, b = pair
    seen: list[int] = []

    def note(params: dict[str, Any]) -> None:
        seen.append(params["n"])
        signal.raise_signal(signal.SIGINT)

    client = kernel_side(channel(a), note=note)
    b.sendall(
        jframe({"jsonrpc": "2.0", "method": "note", "params": {"n": 0}})
        + jframe({"jsonrpc": "2.0", "id": 1, "result": "one"})
        + jframe({"jsonrpc": "2.0", "id": 2, "result": "two"})
    )
    with pytest.raises(KeyboardInterrupt):
        client.request_many("m", [{}, {}], TIMEOUT)
    assert seen == [0]
    assert client.interrupted is None
    assert os.get_blocking(a.fileno())


# -- the frame trace (CONDUIT_RPC_TRACE) -----------------------------------------------------
def trace_lines(path: Path) -> list[tuple[str, str, Any]]:
    """(channel name, arrow, message or text) of each line of a trace file."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        seconds, name, arrow, text = line.split(" ", 3)
        float(seconds)
        try:
            rows.append((name, arrow, json.loads(text)))
        except ValueError:
            rows.append((name, arrow, text))
    return rows


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_trace_writes_each_frame_both_ways(pair, tmp_path, monkeypatch, codec):
    a, b = pair
    server = rpc.Endpoint(channel(b), {"echo": lambda params: params})  # made untraced
    trace = tmp_path / "rpc.trace"
    monkeypatch.setenv("CONDUIT_RPC_TRACE", str(trace))
    client = rpc.Endpoint(rpc.Channel(a.fileno(), a.fileno(), name="demo"))
    client.channel.codec = server.channel.codec = rpc.codec(codec)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    assert client.request("echo", {"x": "é\x1b"}, TIMEOUT) == {"x": "é\x1b"}
    client.notify("$/cancel", {"id": 1})
    assert client.request_many("echo", [{"n": 1}, {"n": 2}], TIMEOUT) == [{"n": 1}, {"n": 2}]
    a.shutdown(socket.SHUT_WR)
    thread.join(TIMEOUT)
    assert trace_lines(trace) == [
        ("demo", "-->", {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"x": "é\x1b"}}),
        ("demo", "<--", {"jsonrpc": "2.0", "id": 1, "result": {"x": "é\x1b"}}),
        ("demo", "-->", {"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": 1}}),
        ("demo", "-->", {"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {"n": 1}}),
        ("demo", "-->", {"jsonrpc": "2.0", "id": 3, "method": "echo", "params": {"n": 2}}),
        ("demo", "<--", {"jsonrpc": "2.0", "id": 2, "result": {"n": 1}}),
        ("demo", "<--", {"jsonrpc": "2.0", "id": 3, "result": {"n": 2}}),
    ]
    assert "\x1b" not in trace.read_text()  # escaped: safe to show on a terminal


def test_trace_shows_what_does_not_decode_and_stray_output(pair, tmp_path, monkeypatch):
    a, b = pair
    trace = tmp_path / "rpc.trace"
    monkeypatch.setenv("CONDUIT_RPC_TRACE", str(trace))
    ch = channel(a)
    b.sendall(frame(b"{not json"))
    with pytest.raises(rpc.ProtocolError):
        ch.recv(TIMEOUT)
    b.sendall(b"Hello, world\n")
    with pytest.raises(rpc.StrayOutput):
        ch.recv(TIMEOUT)
    b.close()
    with pytest.raises(rpc.ChannelClosed):
        ch.recv(TIMEOUT)
    assert [text for _, _, text in trace_lines(trace)] == [
        "(undecodable json, 9 bytes) '{not json'",
        "(the plugin wrote non-protocol output to its channel: 'Hello, world\\n') "
        "'Hello, world\\n'",
        "(connection closed)",
    ]


def test_trace_is_decided_when_a_channel_is_made(pair, tmp_path, monkeypatch):
    """Without the variable a channel is a plain Channel: nothing to check per frame."""
    a, b = pair
    ch = channel(a)
    assert type(ch) is rpc.Channel
    trace = tmp_path / "rpc.trace"
    monkeypatch.setenv("CONDUIT_RPC_TRACE", str(trace))
    ch.send({"jsonrpc": "2.0", "method": "m", "params": {}})
    assert not trace.exists()
    assert type(channel(b)) is not rpc.Channel  # made with it: traced


def test_unwritable_trace_file_does_not_stop_the_connection(pair, tmp_path, monkeypatch):
    a, b = pair
    monkeypatch.setenv("CONDUIT_RPC_TRACE", str(tmp_path / "missing" / "rpc.trace"))
    ch = channel(a)
    assert type(ch) is rpc.Channel
    ch.send({"jsonrpc": "2.0", "method": "m", "params": {}})
    assert channel(b).recv(TIMEOUT)["method"] == "m"


# -- stray output --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"Hello from main\nmore", "'Hello from main\\n'"),
        (b"\x1b[32mgreen\x1b[0m and a very long line without an end " * 2, "'\\x1b[32mgreen"),
        ("Привет, мир\n".encode(), "'Привет, мир\\n'"),
        (b'{"jsonrpc": "2.0"}', '\'{"jsonrpc": "2.0"}\''),
    ],
    ids=["line", "escapes-and-long", "utf-8", "json-without-a-header"],
)
def test_text_where_a_frame_header_belongs_is_stray_output(pair, data, shown):
    a, b = pair
    b.sendall(data)
    with pytest.raises(rpc.StrayOutput) as info:
        channel(a).recv(TIMEOUT)
    message = str(info.value)
    assert message.startswith(f"the plugin wrote non-protocol output to its channel: {shown}")
    assert message.isprintable()
    assert len(message) < 120


def test_binary_oversized_header_is_still_a_frame_too_big(pair):
    a, b = pair
    b.sendall(b"\x80\x00\x00\x00")
    with pytest.raises(rpc.ProtocolError) as info:
        channel(a).recv(TIMEOUT)
    assert not isinstance(info.value, rpc.StrayOutput)
    assert str(info.value) == "frame of 2147483648 bytes exceeds the limit of 16777216"


def test_a_second_sigint_does_not_break_the_cancelled_answer(pair):
    """Ctrl-C reaches the plugin host and the kernel forwards it as well: two SIGINTs.
    The second, landing while the host sends the first one's "cancelled" answer, must not
    escape as a KeyboardInterrupt (a traceback on the user's terminal, seen under load)."""
    from conduit.hosts._child import _interruptible

    a, b = pair
    endpoint = rpc.Endpoint(channel(a))
    sends = []

    class Twice(rpc.Channel):
        def send(self, message: dict[str, Any], *, now: bool = True) -> None:
            if "error" in message and not sends:
                sends.append(message)
                os.kill(os.getpid(), signal.SIGINT)  # the forwarded one, while answering
                time.sleep(0.05)  # the handler runs at the next bytecode
            super().send(message, now=now)

    endpoint.channel = Twice(a.fileno(), a.fileno())

    def nap(params: dict[str, Any]) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C at the terminal
        time.sleep(5)

    endpoint.handlers["nap"] = nap
    before = signal.getsignal(signal.SIGINT)
    try:
        _interruptible(endpoint)
        endpoint.handle({"jsonrpc": "2.0", "id": 7, "method": "nap", "params": {}})
    finally:
        signal.signal(signal.SIGINT, before)
    [answer] = sends
    assert answer["error"]["code"] == rpc.CANCELLED
    assert json.loads(b.recv(1000)[4:])["error"]["message"] == "cancelled"

"""Conduit's wire protocol: JSON-RPC 2.0 messages in length-prefixed frames.

Used on both ends of an out-of-process plugin host, so it imports as little as possible:
``os`` and ``select`` always, ``json`` or msgspec only for the codec in use.

A frame is a 4-byte big-endian length followed by that many bytes of one encoded
message. Frames longer than ``max_frame`` are refused: the reader does not allocate
them, it reports a :class:`ProtocolError` and the connection is closed. Messages are
JSON-RPC 2.0 requests, responses and notifications, in either direction. The encoding is
JSON until the ``initialize`` handshake settles on another codec (MessagePack). The
protocol is documented for plugin authors in docs/protocol.md.
"""

from __future__ import annotations

import os
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "CANCELLED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_FRAME",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PLUGIN_ERROR",
    "PROTOCOL_VERSION",
    "Channel",
    "ChannelClosed",
    "Endpoint",
    "ProtocolError",
    "RemoteError",
    "Timeout",
    "codec",
]

PROTOCOL_VERSION = 1
MAX_FRAME = 16 * 1024 * 1024

# JSON-RPC 2.0 error codes, plus LSP's "request cancelled" and one of Conduit's own.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
CANCELLED = -32800
PLUGIN_ERROR = -32000


class ProtocolError(Exception):
    """The peer broke the protocol: oversized frame, undecodable bytes, not JSON-RPC."""


class ChannelClosed(ProtocolError):
    """The peer closed the connection (or died)."""


class Timeout(Exception):
    """No message arrived within the time allowed."""


class RemoteError(Exception):
    """The peer answered a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Codec:
    """Turns messages into bytes and back."""

    def __init__(
        self, name: str, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]
    ) -> None:
        self.name = name
        self.encode = encode
        self.decode = decode


def codec(name: str) -> Codec:
    """The codec called ``name`` ("json" or "msgpack")."""
    if name == "json":
        import json

        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        return Codec("json", lambda obj: dumps(obj).encode("utf-8"), json.loads)
    if name == "msgpack":
        import msgspec

        return Codec("msgpack", msgspec.msgpack.Encoder().encode, msgspec.msgpack.Decoder().decode)
    raise ValueError(f"unknown codec {name!r}")


class Channel:
    """Frames over a file descriptor pair (one socket, or a pipe each way)."""

    def __init__(self, rfd: int, wfd: int, *, max_frame: int = MAX_FRAME) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.max_frame = max_frame
        self.codec = codec("json")
        self._buf = bytearray()

    def send(self, message: dict[str, Any]) -> None:
        data = self.codec.encode(message)
        if len(data) > self.max_frame:
            raise ProtocolError(f"message of {len(data)} bytes exceeds the frame limit")
        view = memoryview(len(data).to_bytes(4, "big") + data)
        while view:
            try:
                written = os.write(self.wfd, view)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ChannelClosed("connection closed") from exc
            view = view[written:]

    def _fill(self, n: int, deadline: float | None) -> None:
        while len(self._buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                    raise Timeout()
            try:
                chunk = os.read(self.rfd, max(65536, n - len(self._buf)))
            except ConnectionResetError as exc:
                raise ChannelClosed("connection reset") from exc
            if not chunk:
                raise ChannelClosed("connection closed")
            self._buf += chunk

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; :class:`Timeout` if none arrives in ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fill(4, deadline)
        size = int.from_bytes(self._buf[:4], "big")
        if size > self.max_frame:
            raise ProtocolError(f"frame of {size} bytes exceeds the limit of {self.max_frame}")
        self._fill(4 + size, deadline)
        data = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        try:
            message = self.codec.decode(data)
        except Exception as exc:
            raise ProtocolError(f"undecodable {self.codec.name} message: {exc}") from None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise ProtocolError("not a JSON-RPC 2.0 message")
        return message


class Endpoint:
    """One side of a JSON-RPC connection: sends requests, serves the peer's.

    While waiting for the answer to its own request, an endpoint serves the requests and
    notifications the peer sends meanwhile (the peer may call back, stream output).
    """

    def __init__(
        self,
        channel: Channel,
        handlers: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
        notifications: dict[str, Callable[[dict[str, Any]], None]] | None = None,
        *,
        cancel_on_interrupt: bool = True,
    ) -> None:
        self.channel = channel
        self.handlers = handlers or {}
        self.notifications = notifications or {}
        self._next_id = 0
        #: answer a request interrupted by Ctrl-C with "cancelled" (the plugin side),
        #: rather than let the KeyboardInterrupt through (the kernel side)
        self.cancel_on_interrupt = cancel_on_interrupt
        #: set by a handler to stop :meth:`serve` after its reply is sent
        self.closing = False
        #: called once after the next reply is sent (the handshake switches codecs there)
        self.after_reply: Callable[[], None] | None = None

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.channel.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        """Send a request and return its result (serving the peer while waiting)."""
        self._next_id += 1
        rid = self._next_id
        self.channel.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            message = self.channel.recv(left)
            if "method" in message:
                self.handle(message)
                continue
            if message.get("id") != rid:
                continue  # the answer to a request we gave up on
            if "error" in message:
                err = message["error"]
                code = err.get("code", INTERNAL_ERROR) if isinstance(err, dict) else None
                if not isinstance(code, int) or isinstance(code, bool):
                    raise ProtocolError("malformed error response")
                raise RemoteError(code, str(err.get("message", "")), err.get("data"))
            if "result" not in message:
                raise ProtocolError("response without result or error")
            return message["result"]

    def handle(self, message: dict[str, Any]) -> None:
        """Serve one incoming request or notification."""
        method = message.get("method")
        params = message.get("params", {})
        rid = message.get("id")
        if rid is None:  # a notification: never answered
            note = self.notifications.get(str(method))
            if note is not None and isinstance(params, dict):
                note(params)
            return
        if not isinstance(method, str) or not isinstance(params, dict):
            self._error(rid, INVALID_REQUEST, "invalid request")
            return
        handler = self.handlers.get(method)
        if handler is None:
            self._error(rid, METHOD_NOT_FOUND, f"unknown method {method!r}")
            return
        try:
            result = handler(params)
        except RemoteError as exc:
            self._error(rid, exc.code, exc.message, exc.data)
            return
        except KeyboardInterrupt:
            if not self.cancel_on_interrupt:
                raise
            self._error(rid, CANCELLED, "cancelled")
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._error(rid, INVALID_PARAMS, f"{type(exc).__name__}: {exc}")
            return
        except ProtocolError:
            raise  # the connection itself failed (in a nested request): nobody to answer
        except Exception as exc:  # a bug in the handler must not take this side down
            self._error(rid, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return
        try:
            self.channel.send({"jsonrpc": "2.0", "id": rid, "result": result})
        except ChannelClosed:
            raise
        except Exception as exc:  # not encodable, or too big for a frame: nothing was sent
            self._error(rid, INTERNAL_ERROR, f"cannot send the result: {exc}")
            return
        if self.after_reply is not None:
            after, self.after_reply = self.after_reply, None
            after()

    def _error(self, rid: Any, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self.channel.send({"jsonrpc": "2.0", "id": rid, "error": error})

    def serve(self) -> None:
        """Serve the peer until it closes the connection or a handler sets ``closing``."""
        while not self.closing:
            try:
                message = self.channel.recv()
            except ChannelClosed:
                return
            if "method" in message:
                self.handle(message)

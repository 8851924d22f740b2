"""Conduit's wire protocol: JSON-RPC 2.0 messages in length-prefixed frames.

Used on both ends of an out-of-process plugin host, so it imports as little as possible:
``os`` and ``time`` always, ``select`` only to wait on a pipe with a timeout, ``json`` or
msgspec only for the codec in use.

A frame is a 4-byte big-endian length followed by that many bytes of one encoded
message. Frames longer than ``max_frame`` are refused: the reader does not allocate
them, it reports a :class:`ProtocolError` and the connection is closed. Messages are
JSON-RPC 2.0 requests, responses and notifications, in either direction. The encoding is
JSON until the ``initialize`` handshake settles on another codec (MessagePack). The
protocol is documented for plugin authors in docs/protocol.md.

The hot path is one ``write`` and (usually) one ``read`` per message: a reply is read
with the request's timeout set once on the socket (``SO_RCVTIMEO``) rather than with a
``select`` before every read, and replies to requests that arrived together are written
together (:meth:`Endpoint.request_many` sends several requests in one write).

Ctrl-C in the kernel never loses a message that was read: while a kernel-side endpoint
(``hold_interrupts=True``) waits for an answer, the SIGINT handler that
:func:`hold_interrupts` installs keeps the interrupt back once something has been read,
until what was read is handled (see :class:`_Held`).

``CONDUIT_RPC_TRACE=FILE`` appends every frame a channel writes or reads to ``FILE``
(:class:`_TracedChannel`); it is looked up once per channel, when the channel is made.
"""

from __future__ import annotations

import os
from time import monotonic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
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
    "NotSent",
    "ProtocolError",
    "RemoteError",
    "StrayOutput",
    "Timeout",
    "codec",
    "hold_interrupts",
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

# A read takes whatever is there, up to this much, or what the frame still needs if that
# is more (several frames may arrive together). Not more: os.read allocates the size
# asked for, and from 128 KiB on that is an mmap and page faults per read.
_READ_SIZE = 16 * 1024
# request_many() writes at most this many bytes of requests before it reads the replies:
# less than a socket's or a pipe's buffer, so that the write never waits for the peer,
# which may itself be waiting to write replies nobody reads yet.
_WINDOW_BYTES = 48 * 1024
_WINDOW_CALLS = 512
# How much of a peer's stray output an error shows.
_SHOWN = 40


class ProtocolError(Exception):
    """The peer broke the protocol: oversized frame, undecodable bytes, not JSON-RPC."""


class StrayOutput(ProtocolError):
    """The peer wrote something that is not a frame: text where a frame header belongs
    (a ``print`` to the stdout of an executable host, whose stdout is the channel)."""


class ChannelClosed(ProtocolError):
    """The peer closed the connection (or died)."""


class NotSent(ChannelClosed):
    """The peer was gone before a request could be written: nothing of it was sent."""


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
        return _json_codec()
    if name == "msgpack":
        import msgspec

        return Codec("msgpack", msgspec.msgpack.Encoder().encode, msgspec.msgpack.Decoder().decode)
    raise ValueError(f"unknown codec {name!r}")


def _json_codec() -> Codec:
    """Compact UTF-8 JSON, with the standard library's C encoder and scanner called
    directly: the same output and the same values as ``json.dumps``/``json.loads``, at
    about half the cost per message, and without importing the ``json`` package (its
    ``re`` import is a good part of a plugin host's start)."""
    try:
        import _json

        make_encoder, make_scanner = _json.make_encoder, _json.make_scanner
    except (ImportError, AttributeError):  # an interpreter without the C accelerator
        import json

        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        return Codec("json", lambda obj: dumps(obj).encode("utf-8"), json.loads)

    def default(obj: Any) -> Any:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    # as json.JSONEncoder(separators=(",", ":"), ensure_ascii=False) sets it up, except
    # for the check for circular references (messages are plain data; a cycle still
    # fails, with RecursionError)
    iterencode = make_encoder(
        None, default, _json.encode_basestring, None, ":", ",", False, False, True
    )

    class _Context:  # what json.JSONDecoder gives its scanner
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = {
            "NaN": float("nan"),
            "Infinity": float("inf"),
            "-Infinity": float("-inf"),
        }.__getitem__

    scan = make_scanner(_Context())  # type: ignore[arg-type]  # any object with these fields

    def encode(obj: Any) -> bytes:
        return "".join(iterencode(obj, 0)).encode("utf-8")

    def decode(data: bytes) -> Any:
        text = data.decode("utf-8").strip(" \t\n\r")
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("expecting a JSON value") from None
        if end != len(text):
            raise ValueError(f"extra data after the JSON value at {end}")
        return value

    return Codec("json", encode, decode)


class Channel:
    """Frames over a file descriptor pair (one socket, or a pipe each way).

    ``sock``, when the read side is a socket, is its socket object: timeouts are then
    set on it (``SO_RCVTIMEO``, changed only when the timeout does) instead of a
    ``select()`` before each read.
    """

    def __init__(
        self,
        rfd: int,
        wfd: int,
        *,
        max_frame: int = MAX_FRAME,
        sock: Any = None,
        name: str = "",
    ) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.max_frame = max_frame
        self.codec = codec("json")
        self._buf = bytearray()
        #: frames encoded but not written yet (replies held back by ``send(now=False)``)
        self._out: list[bytes] = []
        self._sock = sock
        self._rcvtimeo: float | None = None  # what SO_RCVTIMEO is set to (None: no limit)
        #: writes that find the peer's buffer full wait for room until this
        #: :func:`time.monotonic` time, then raise :class:`Timeout` (None: no limit); the
        #: endpoint sets it to the deadline of the request it waits for. It only matters
        #: when ``wfd`` is non-blocking: a blocking descriptor waits in ``write`` itself.
        self.write_deadline: float | None = None
        #: whether this side waits in ``select()`` (a Ctrl-C there is raised at once: the
        #: wait reads nothing; see :class:`_Held`)
        self._in_select = False
        #: what the frame trace calls this channel (the plugin, in the kernel)
        self.name = name
        trace = os.environ.get("CONDUIT_RPC_TRACE")
        if trace:  # the one check: a channel made without it never looks again
            _TracedChannel.attach(self, trace)

    # -- writing -------------------------------------------------------------------------
    def frame(self, message: dict[str, Any]) -> bytes:
        """``message`` encoded and framed; :class:`ProtocolError` if it is too big."""
        data = self.codec.encode(message)
        size = len(data)
        if size > self.max_frame:
            raise ProtocolError(f"message of {size} bytes exceeds the frame limit")
        return size.to_bytes(4, "big") + data

    def send(self, message: dict[str, Any], *, now: bool = True) -> None:
        """Send one message. ``now=False`` may hold it back until the next write or
        blocking read (replies to several requests that arrived together go out in one
        write); nothing is written for a message that is too big."""
        data = self.frame(message)
        if not now:
            self._out.append(data)
        elif self._out:
            self._out.append(data)
            self.flush()
        else:
            self._write(data)

    def send_frames(self, frames: list[bytes]) -> None:
        """Write ``frames`` (from :meth:`frame`), after whatever :meth:`send` held back,
        in one write."""
        self._out.extend(frames)
        self.flush()

    def flush(self) -> None:
        """Write whatever :meth:`send` held back."""
        if self._out:
            data, self._out = b"".join(self._out), []
            self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            try:
                written = os.write(self.wfd, data)
            except BlockingIOError:  # a non-blocking descriptor, and no room at all
                written = 0
            if written < len(data):
                view = memoryview(data)[written:]
                while view:
                    self._wait_writable()  # then there is room for a write
                    view = view[os.write(self.wfd, view) :]
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed("connection closed") from exc

    def _wait_writable(self) -> None:
        """Wait until the peer has read enough for the next write (a peer that stops
        reading, for instance stopped or hung, must not block the writer forever)."""
        import select

        deadline = self.write_deadline
        left = None if deadline is None else deadline - monotonic()
        if left is not None and left <= 0:
            raise Timeout()
        self._in_select = True
        try:
            ready = select.select([], [self.wfd], [], left)[1]
        finally:
            self._in_select = False
        if not ready:
            raise Timeout()

    # -- reading -------------------------------------------------------------------------
    def has_frame(self) -> bool:
        """Whether a whole frame is already buffered (the next :meth:`recv` will not wait)."""
        buf = self._buf
        return len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big")

    def _set_rcvtimeo(self, left: float | None) -> None:
        current = self._rcvtimeo
        if left is None:
            if current is None:
                return
            seconds = micros = 0
        else:
            # SO_RCVTIMEO limits each read, and the deadline is checked again after each:
            # a limit a little longer than what is left is kept, saving a syscall per call.
            if current is not None and left <= current <= left + 0.05 + left / 50:
                return
            seconds = int(left)
            micros = max(int((left - seconds) * 1e6), 1 if seconds == 0 else 0)
        import socket
        import struct

        value = struct.pack("ll", seconds, micros)  # a struct timeval; 0 = no limit
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self._rcvtimeo = left

    def _read(self, deadline: float | None, need: int) -> bytes:
        """What is available to read (at least a byte), waiting until ``deadline``."""
        if self._out:
            self.flush()  # never wait for the peer with held-back replies it may wait for
        while True:
            if _HELD.pending:  # a Ctrl-C kept back while messages were handled: now
                _HELD.release()
            if deadline is not None:
                left = deadline - monotonic()
                if left <= 0:
                    raise Timeout()
                if self._sock is not None:
                    self._set_rcvtimeo(left)
                else:
                    import select

                    self._in_select = True
                    try:
                        ready = select.select([self.rfd], [], [], left)[0]
                    finally:
                        self._in_select = False
                    if not ready:
                        raise Timeout()
            elif self._rcvtimeo is not None:
                self._set_rcvtimeo(None)
            try:
                chunk = os.read(self.rfd, need if need > _READ_SIZE else _READ_SIZE)
            except BlockingIOError:
                # SO_RCVTIMEO ran out (the deadline above decides), or a Ctrl-C made the
                # descriptor non-blocking (raised above)
                continue
            except ConnectionResetError as exc:
                raise ChannelClosed("connection reset") from exc
            if not chunk:
                raise ChannelClosed("connection closed")
            return chunk

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; :class:`Timeout` if none arrives in ``timeout`` seconds."""
        return self.recv_until(None if timeout is None else monotonic() + timeout)

    def recv_until(self, deadline: float | None) -> dict[str, Any]:
        """The next message; :class:`Timeout` if none arrives by ``deadline`` (a
        :func:`time.monotonic` time)."""
        buf = self._buf
        if not buf:
            # The usual case: nothing buffered, and one read brings exactly one frame.
            chunk = self._read(deadline, 4)
            if len(chunk) >= 4:
                size = int.from_bytes(chunk[:4], "big")
                if size > self.max_frame:
                    raise self._too_big(size, chunk)
                if len(chunk) == 4 + size:
                    return self._decode(chunk[4:])
            buf += chunk
        while len(buf) < 4:
            buf += self._read(deadline, 4 - len(buf))
        size = int.from_bytes(buf[:4], "big")
        if size > self.max_frame:
            raise self._too_big(size, bytes(buf[:_SHOWN]))
        end = 4 + size
        while len(buf) < end:
            buf += self._read(deadline, end - len(buf))
        data = bytes(buf[4:end])
        del buf[:end]
        return self._decode(data)

    def _too_big(self, size: int, head: bytes) -> ProtocolError:
        """The error for a frame header announcing ``size`` bytes, over the limit: when
        the header reads as text, the peer wrote something else than frames."""
        if _is_text(head[:4]):
            line = head[: head.find(b"\n", 0, _SHOWN) + 1 or len(head)]  # its first line
            return StrayOutput(
                f"the plugin wrote non-protocol output to its channel: {_escape(line)}"
            )
        return ProtocolError(f"frame of {size} bytes exceeds the limit of {self.max_frame}")

    def _decode(self, data: bytes) -> dict[str, Any]:
        try:
            message = self.codec.decode(data)
        except Exception as exc:
            raise ProtocolError(f"undecodable {self.codec.name} message: {exc}") from None
        if type(message) is not dict or message.get("jsonrpc") != "2.0":
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
        hold_interrupts: bool = False,
    ) -> None:
        self.channel = channel
        self.handlers = handlers or {}
        self.notifications = notifications or {}
        self._next_id = 0
        #: answer a request interrupted by Ctrl-C with "cancelled" (the plugin side),
        #: rather than let the KeyboardInterrupt through (the kernel side)
        self.cancel_on_interrupt = cancel_on_interrupt
        #: how many of the peer's requests are being served right now (nested callbacks
        #: count twice); the plugin host lets SIGINT interrupt only while it is not 0
        self.busy = 0
        #: set by the plugin host's SIGINT handler when it interrupts a request, so that a
        #: second SIGINT (Ctrl-C reaches the host and the kernel forwards it too) does not
        #: interrupt the interruption's own "cancelled" answer; cleared per request
        self.sigint_taken = False
        #: ids of this side's requests still waiting for an answer (nested ones inside)
        self._waiting: set[int] = set()
        #: answers that arrived while a nested request was waiting for another one
        self._early: dict[int, dict[str, Any]] = {}
        #: set by a handler to stop :meth:`serve` after its reply is sent
        self.closing = False
        #: called once after the next reply is sent (the handshake switches codecs there)
        self.after_reply: Callable[[], None] | None = None
        #: keep a Ctrl-C back until what was read is handled (the kernel side; it takes
        #: effect once :func:`hold_interrupts` has installed the handler): the process-wide
        #: state the handler reads, or one of its own that no handler reads
        self._held = _HELD if hold_interrupts else _Held()
        #: after a KeyboardInterrupt came out of :meth:`request` or
        #: :meth:`request_many`: the id of the request it left without an answer (the
        #: outermost, when requests were nested), or None if the answer had been read
        self.interrupted: int | None = None

    @property
    def last_id(self) -> int:
        """The id of the last request this side sent (0 before the first)."""
        return self._next_id

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.channel.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        """Send a request and return its result (serving the peer while waiting)."""
        self._next_id = rid = self._next_id + 1
        channel = self.channel
        deadline = None if timeout is None else monotonic() + timeout
        # the request, and replies to the peer's calls while waiting, are written by then
        outer_deadline, channel.write_deadline = channel.write_deadline, deadline
        waiting = self._waiting
        held = self._held
        outer = held.channel
        waiting.add(rid)  # before it is written: a Ctrl-C in the write leaves it to cancel
        try:
            try:
                channel.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            except ChannelClosed as exc:
                raise NotSent(str(exc)) from exc
            held.channel = channel  # from here a Ctrl-C waits for what is read (_Held)
            while True:
                message = self._early.pop(rid, None) if self._early else None
                if message is None:
                    message = channel.recv_until(deadline)
                    if "method" in message:
                        self.handle(message)
                        continue
                    answered = message.get("id")
                    if answered != rid:
                        self._keep(answered, message)
                        continue
                waiting.discard(rid)  # answered
                channel.flush()
                break
        except KeyboardInterrupt:
            self.interrupted = rid if rid in waiting else None
            raise
        finally:
            held.channel = outer
            channel.write_deadline = outer_deadline
            if held.pending:  # a Ctrl-C kept back while the answer was read: raise it now
                self.interrupted = rid if rid in waiting else None
                waiting.discard(rid)
                held.release()
            waiting.discard(rid)
            if self._early:  # an answer kept for it after it gave up (a timeout inside)
                self._early.pop(rid, None)
        return _result(message)

    def _keep(self, answered: Any, message: dict[str, Any]) -> None:
        """An answer to a request other than the innermost one waiting: keep it for the
        request that waits for it further out (a callback ran inside it), or drop it if
        nobody waits for it (a request given up on)."""
        if type(answered) is int and answered in self._waiting:
            self._early[answered] = message

    def request_many(
        self, method: str, params: Sequence[dict[str, Any]], timeout: float | None = None
    ) -> list[Any]:
        """Send one request per item of ``params`` without waiting for each answer (a few
        hundred per write) and return their results in order.

        ``timeout`` bounds each window of requests. If some fail, every answer is still
        read (the connection stays in step) and the first error is raised.
        """
        channel = self.channel
        outer_deadline = channel.write_deadline
        held = self._held
        outer = held.channel
        results = None
        try:
            results = self._request_windows(method, params, timeout)
        finally:
            held.channel = outer
            channel.write_deadline = outer_deadline
            if held.pending:  # a Ctrl-C kept back while the last answers were read
                self.interrupted = None if results is not None else self._next_id
                held.release()
        return results

    def _request_windows(
        self, method: str, params: Sequence[dict[str, Any]], timeout: float | None
    ) -> list[Any]:
        results: list[Any] = []
        error: BaseException | None = None
        channel = self.channel
        start = 0
        while start < len(params):
            frames: list[bytes] = []
            ids: dict[int, int] = {}
            size = 0
            while start < len(params) and size < _WINDOW_BYTES and len(ids) < _WINDOW_CALLS:
                self._next_id = rid = self._next_id + 1
                data = channel.frame(
                    {"jsonrpc": "2.0", "id": rid, "method": method, "params": params[start]}
                )
                if frames and size + len(data) > _WINDOW_BYTES:
                    self._next_id -= 1
                    break
                frames.append(data)
                ids[rid] = len(results) + len(ids)
                size += len(data)
                start += 1
            first_window = not results
            results.extend([None] * len(ids))
            deadline = None if timeout is None else monotonic() + timeout
            channel.write_deadline = deadline
            self._waiting.update(ids)
            try:
                try:
                    channel.send_frames(frames)
                except ChannelClosed as exc:
                    if first_window:  # nothing of the batch went out
                        raise NotSent(str(exc)) from exc
                    raise
                self._held.channel = channel  # a Ctrl-C waits for what is read (_Held)
                while ids:
                    message = None
                    if self._early:
                        for rid in ids:
                            message = self._early.pop(rid, None)
                            if message is not None:
                                break
                    if message is None:
                        message = channel.recv_until(deadline)
                        if "method" in message:
                            self.handle(message)
                            continue
                    answered = message.get("id")
                    index = ids.pop(answered, None) if type(answered) is int else None
                    if index is None:
                        self._keep(answered, message)
                        continue
                    self._waiting.discard(answered)
                    try:
                        results[index] = _result(message)
                    except RemoteError as exc:
                        error = error or exc
            except KeyboardInterrupt:
                # the host answers in order: once the last one is answered, all are
                self.interrupted = max(ids) if ids else None
                raise
            finally:
                if self._held.pending:  # kept back while the window's answers were read
                    self.interrupted = max(ids) if ids else None
                    self._held.release()
                self._waiting.difference_update(ids)
                for rid in ids:
                    self._early.pop(rid, None)
        channel.flush()
        if error is not None:
            raise error
        return results

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
        if type(method) is not str or type(params) is not dict:
            self._error(rid, INVALID_REQUEST, "invalid request")
            return
        handler = self.handlers.get(method)
        if handler is None:
            self._error(rid, METHOD_NOT_FOUND, f"unknown method {method!r}")
            return
        self.busy += 1
        self.sigint_taken = False
        # The handler runs with Ctrl-C as usual (a slow service provider can be
        # interrupted); one kept back while its request was read is raised first.
        held = self._held
        outer, held.channel = held.channel, None
        try:
            if held.pending:
                held.release()
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
        finally:
            self.busy -= 1
            held.channel = outer
        channel = self.channel
        try:
            # Held back while more requests are already here: their replies go together.
            reply = {"jsonrpc": "2.0", "id": rid, "result": result}
            channel.send(reply, now=not channel.has_frame())
        except ChannelClosed:
            raise
        except Exception as exc:  # not encodable, or too big for a frame: nothing was sent
            self._error(rid, INTERNAL_ERROR, f"cannot send the result: {exc}")
            return
        if self.after_reply is not None:
            after, self.after_reply = self.after_reply, None
            channel.flush()  # the reply goes out in the codec it was encoded with
            after()

    def _error(self, rid: Any, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self.channel.send({"jsonrpc": "2.0", "id": rid, "error": error})

    def serve(self) -> None:
        """Serve the peer until it closes the connection or a handler sets ``closing``."""
        channel = self.channel
        try:
            while not self.closing:
                message = channel.recv()
                if "method" in message:
                    self.handle(message)
            channel.flush()
        except ChannelClosed:
            return


def _result(message: dict[str, Any]) -> Any:
    """The result of a response, or the :class:`RemoteError` it carries."""
    if "error" in message:
        err = message["error"]
        code = err.get("code", INTERNAL_ERROR) if isinstance(err, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            raise ProtocolError("malformed error response")
        raise RemoteError(code, str(err.get("message", "")), err.get("data"))
    if "result" not in message:
        raise ProtocolError("response without result or error")
    return message["result"]


# -- Ctrl-C in the kernel --------------------------------------------------------------------
class _Held:
    """Where the kernel's SIGINT handler looks (:func:`hold_interrupts`).

    Python raises ``KeyboardInterrupt`` at whatever bytecode runs when the signal is
    handled: right after ``os.read`` returned bytes, before they are stored, or between
    decoding a message and acting on it, and whatever was read is lost (a host that
    answers a Ctrl-C at once has its last output and its answer dropped, and the kernel
    then waits for an answer that already came). So while an endpoint of the kernel waits
    for an answer (``channel`` is set), the handler does not raise: it notes the
    interrupt (``pending``) and makes the channel's read descriptor non-blocking, so that
    a read it interrupted ends (``EAGAIN``) instead of waiting on. The endpoint raises the
    interrupt itself (:meth:`release`) once what it read is handled: before it would wait
    for more, before it runs a handler for one of the peer's requests (those run with
    Ctrl-C as usual), or when the answer is in. What stays immediate: a Ctrl-C in
    ``select()`` (nothing is read there), outside of a wait, and a second Ctrl-C.

    The cost on the path of every call: an attribute set and restored per request, and
    one test of ``pending`` per read.
    """

    __slots__ = ("channel", "fd", "pending", "was_blocking")

    def __init__(self) -> None:
        #: the channel an endpoint waits on, or None
        self.channel: Channel | None = None
        self.pending = False
        #: the descriptor made non-blocking, and whether it was blocking before
        self.fd = -1
        self.was_blocking = True

    def hold(self, channel: Channel) -> None:
        self.pending = True
        self.fd = channel.rfd
        try:
            self.was_blocking = os.get_blocking(self.fd)
            os.set_blocking(self.fd, False)
        except OSError:  # closed meanwhile: nothing waits on it
            self.fd = -1

    def release(self) -> None:
        """Raise the interrupt that was kept back, with the descriptor as it was."""
        self.pending = False
        fd, self.fd = self.fd, -1
        if fd >= 0 and self.was_blocking:
            try:  # noqa: SIM105 -- rpc imports nothing it can do without (module docstring)
                os.set_blocking(fd, True)
            except OSError:
                pass
        raise KeyboardInterrupt


#: the state the handler reads; endpoints made with ``hold_interrupts=True`` update it
_HELD = _Held()


def _on_sigint(signum: int, frame: object) -> None:
    held = _HELD
    channel = held.channel
    if channel is None or channel._in_select or held.pending:
        if held.pending:  # the second Ctrl-C: at once
            held.release()
        raise KeyboardInterrupt
    held.hold(channel)


def hold_interrupts() -> None:
    """Install the kernel's SIGINT handler (:class:`_Held`): Python's default behaviour,
    except while an endpoint made with ``hold_interrupts=True`` waits for an answer.

    Only where SIGINT still has Python's default handler (another one was set on purpose)
    and in the main thread (the only one that can set it).
    """
    import signal

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        try:  # noqa: SIM105
            signal.signal(signal.SIGINT, _on_sigint)
        except ValueError:  # not the main thread
            pass


# -- errors -----------------------------------------------------------------------------------
def _is_text(head: bytes) -> bool:
    """Whether a frame header reads as text (printable characters, tabs, line breaks or
    terminal escapes; UTF-8, possibly cut in the middle of a character)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start == 0 or exc.reason != "unexpected end of data":
            return False
        text = head[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\x1b" for c in text)


def _escape(data: bytes) -> str:
    """The start of ``data`` as quoted text, safe to show on a terminal: UTF-8 decoded,
    anything unprintable (control characters, terminal escapes, bytes that do not
    decode) escaped."""
    shown = repr(bytes(data[:_SHOWN]).decode("utf-8", "backslashreplace"))
    return shown + "..." if len(data) > _SHOWN else shown


# -- the frame trace ----------------------------------------------------------------------------
class _TracedChannel(Channel):
    """A :class:`Channel` that also appends each frame it writes or reads to the trace
    file (``CONDUIT_RPC_TRACE``): a channel made while the variable is set becomes one.

    One line per frame: seconds since the trace started, the channel's name, ``-->`` for
    a frame this side wrote and ``<--`` for one it read, and the message as JSON (MessagePack
    frames too); a frame that does not decode is shown escaped, and so is stray output.
    """

    #: the trace files open in this process, by path, and when each was opened
    _files: dict[str, tuple[int, float]] = {}  # noqa: RUF012 -- shared on purpose
    _trace_fd = -1
    _trace_start = 0.0

    @classmethod
    def attach(cls, channel: Channel, path: str) -> None:
        if path not in cls._files:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return  # no trace rather than no connection
            cls._files[path] = (fd, monotonic())
        channel.__class__ = cls
        assert isinstance(channel, _TracedChannel)
        channel._trace_fd, channel._trace_start = cls._files[path]

    def _trace(self, arrow: str, text: str) -> None:
        line = f"{monotonic() - self._trace_start:.6f} {self.name or '-'} {arrow} {text}\n"
        try:  # noqa: SIM105
            os.write(self._trace_fd, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass

    def _show(self, payload: bytes) -> str:
        import json

        try:
            message = self.codec.decode(payload)
            return json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=repr)
        except Exception:
            return f"(undecodable {self.codec.name}, {len(payload)} bytes) {_escape(payload)}"

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view) >= 4:
            end = 4 + int.from_bytes(view[:4], "big")
            self._trace("-->", self._show(bytes(view[4:end])))
            view = view[end:]
        super()._write(data)

    def _decode(self, data: bytes) -> dict[str, Any]:
        self._trace("<--", self._show(data))
        return super()._decode(data)

    def _too_big(self, size: int, head: bytes) -> ProtocolError:
        exc = super()._too_big(size, head)
        self._trace("<--", f"({exc}) {_escape(head)}")
        return exc

    def recv_until(self, deadline: float | None) -> dict[str, Any]:
        try:
            return super().recv_until(deadline)
        except ChannelClosed as exc:
            self._trace("<--", f"({exc})")
            raise

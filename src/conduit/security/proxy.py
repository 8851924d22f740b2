"""``network:http:HOST`` enforced by host name, outside the plugin's process.

A sandboxed host child with a scoped network grant lives in a network namespace of its
own: it has no route anywhere. Its ``HTTP_PROXY``/``HTTPS_PROXY`` point at a listener on
its own loopback (``127.0.0.1:3128``); :func:`forward` hands every connection made there,
as a file descriptor, to the kernel over a socket the child inherited. In the kernel,
:class:`Proxy` reads the request (``CONNECT host:port`` for HTTPS, an absolute
``http://`` URL for plain HTTP), checks the host against the plugin's grants, and only
then connects, from the kernel's network, and relays bytes both ways.

A refusal is an HTTP ``403`` whose reason phrase is ``Conduit denied network:http:HOST``,
so the plugin's HTTP library reports it, and the host child turns it into one clear
line (:func:`conduit.security.sandbox.explain`).

TLS is not terminated: the proxy sees the host name the client asked to tunnel to, not
the traffic. Names are resolved by the kernel, when it connects.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

TYPE_CHECKING = False  # not typing's: the host child does not import typing
if TYPE_CHECKING:
    from conduit.security.capabilities import Capability

__all__ = ["Proxy", "forward"]

_MAX_HEAD = 64 * 1024


class Proxy:
    """The kernel side for one host child: allows the hosts of ``grants`` only."""

    def __init__(self, plugin: str, grants: list[Capability]) -> None:
        self.plugin = plugin
        self.grants = grants
        self._mine, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        #: the descriptor the child inherits
        self.child_fd = self._theirs.fileno()

    def start(self) -> None:
        """The child holds its end now: close ours and serve in a daemon thread."""
        self._theirs.close()
        threading.Thread(
            target=self._serve, name=f"conduit-proxy:{self.plugin}", daemon=True
        ).start()

    def close(self) -> None:
        self._theirs.close()
        with contextlib.suppress(OSError):  # wakes the serving thread (close alone does not)
            self._mine.shutdown(socket.SHUT_RDWR)
        self._mine.close()

    def allows(self, host: str, port: int) -> bool:
        return any(g.allows_host(host, port) for g in self.grants)

    def _serve(self) -> None:
        with self._mine:  # closed when the child is gone: nothing else needs to
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(self._mine, 16, 8)
                except OSError:
                    return
                if not message and not fds:
                    return  # the child is gone
                for fd in fds:
                    threading.Thread(target=self._handle, args=(fd,), daemon=True).start()

    def _handle(self, fd: int) -> None:
        try:
            conn = socket.socket(fileno=fd)
        except OSError:  # not a socket: nothing to serve
            os.close(fd)
            return
        with conn, contextlib.suppress(OSError):  # either side went away
            self._relay(conn)

    def _relay(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
            if len(head) > _MAX_HEAD:
                _reply(conn, 431, "Request Header Fields Too Large")
                return
        header, _, rest = head.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
            host, port, path = _target(method, target)
        except ValueError:
            _reply(conn, 400, "Bad Request (Conduit's proxy takes CONNECT or http:// URLs)")
            return
        if not self.allows(host, port):
            _reply(conn, 403, f"Conduit denied network:http:{host}")
            return
        try:
            upstream = socket.create_connection((host, port), timeout=10)
        except OSError as exc:
            _reply(conn, 502, f"Bad Gateway ({exc.strerror or exc})")
            return
        with upstream:
            if method == "CONNECT":
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                kept = [h for h in lines[1:] if not h.lower().startswith("proxy-")]
                request = "\r\n".join([f"{method} {path} {version}", *kept]) + "\r\n\r\n"
                upstream.sendall(request.encode("latin-1"))
            if rest:
                upstream.sendall(rest)
            conn.settimeout(None)
            upstream.settimeout(None)
            back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
            back.start()
            _pump(conn, upstream)
            back.join()


def _target(method: str, target: str) -> tuple[str, int, str]:
    """``(host, port, path)`` of a proxy request; ValueError if it is not one we serve."""
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(target)
        return host.strip("[]").lower(), int(port), ""
    from urllib.parse import urlsplit

    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(target)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return url.hostname.lower(), url.port or 80, path


def _reply(conn: socket.socket, status: int, reason: str) -> None:
    body = f"{reason}\n".encode()
    conn.sendall(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
        + body
    )


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


# -- child side -------------------------------------------------------------------------------


def forward(listener: socket.socket, fd: int) -> None:
    """In the host child: pass each connection to ``listener`` to the kernel over ``fd``."""
    channel = socket.socket(fileno=fd)

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            try:
                socket.send_fds(channel, [b"c"], [conn.fileno()])
            except OSError:
                return
            finally:
                conn.close()

    threading.Thread(target=loop, name="conduit-proxy-forwarder", daemon=True).start()

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
the traffic.

Names are resolved by the kernel, once: the proxy checks every address a granted name
resolves to and connects to an address it checked (no second lookup, so no DNS rebinding
between the check and the connection). A name may not lead to an *internal* address
(:func:`internal`: loopback, private, link-local such as the cloud metadata service
``169.254.169.254``, unique-local, unspecified, multicast, ...) unless the grants name
that address themselves (``network:http:127.0.0.1``) or the name is ``localhost``, which
only ever means the loopback. So ``network:http:api.example.com`` cannot be turned into
access to the user's internal services by whoever controls that name's DNS. The resolver
is a parameter (``socket.getaddrinfo`` by default, :data:`RESOLVE`), for tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

TYPE_CHECKING = False  # not typing's: the host child does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from conduit.security.capabilities import Capability

    #: ``socket.getaddrinfo``'s signature: ``(host, port, family, type)`` to
    #: ``(family, type, proto, canonname, sockaddr)`` tuples
    Resolver = Callable[..., Sequence[tuple[Any, Any, int, str, tuple[Any, ...]]]]

__all__ = ["RESOLVE", "Proxy", "forward", "internal"]

_MAX_HEAD = 64 * 1024
#: how a :class:`Proxy` made without a ``resolve`` argument looks names up
RESOLVE: Resolver = socket.getaddrinfo


class Proxy:
    """The kernel side for one host child: allows the hosts of ``grants`` only."""

    def __init__(
        self, plugin: str, grants: list[Capability], resolve: Resolver | None = None
    ) -> None:
        self.plugin = plugin
        self.grants = grants
        self.resolve = RESOLVE if resolve is None else resolve
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

    def connect(self, host: str, port: int) -> socket.socket:
        """A connection to ``host:port`` (which the caller checked is granted), made to
        an address checked here: the one lookup's answers are used as they are.

        Raises :class:`PermissionError` (its second argument the address) when every
        address of ``host`` is internal and none is named by the grants: a refused
        address is never tried, an allowed one among them is. :class:`OSError` when no
        allowed address can be reached."""
        localhost = host.lower().rstrip(".") == "localhost"
        refused: list[str] = []
        error: OSError | None = None
        for family, _, proto, _, sockaddr in self.resolve(host, port, 0, socket.SOCK_STREAM):
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = str(sockaddr[0])
            if internal(address) and not (
                self.allows(address.partition("%")[0], port) or (localhost and _loopback(address))
            ):
                refused.append(address)
                continue
            upstream = socket.socket(family, socket.SOCK_STREAM, proto)
            try:
                upstream.settimeout(10)
                upstream.connect((address, port, *sockaddr[2:]))  # the port asked for
            except OSError as exc:
                upstream.close()
                error = exc
                continue
            return upstream
        if error is not None:
            raise error
        if refused:
            raise PermissionError(f"{host} resolves to {refused[0]}", refused[0])
        raise OSError(f"{host} has no IP address")

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
            upstream = self.connect(host, port)
        except PermissionError as exc:
            address = exc.args[1]
            _reply(
                conn,
                403,
                f"Conduit denied network:http:{address} ({host} resolves to "
                "an internal address, which the grants do not name)",
            )
            return
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


def internal(address: str) -> bool:
    """Whether a name must not lead to ``address`` unless the grants name it: anything
    but a global unicast address (loopback, private, link-local, unique-local, shared,
    reserved, unspecified, documentation, ...) and multicast; an IPv6 address embedding
    such an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4, NAT64) too."""
    import ipaddress

    ip = ipaddress.ip_address(address)
    if ip.is_multicast or not ip.is_global:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:  # deprecated fec0::/10
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in ipaddress.ip_network(n) for n in _EMBEDDING):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        return embedded is not None and internal(str(embedded))
    return False


#: IPv6 prefixes whose last 32 bits are an IPv4 address: IPv4-compatible, IPv4-translated
#: (RFC 2765, ``::ffff:0:a.b.c.d``), NAT64 (RFC 6052 and the local-use prefix of RFC 8215)
_EMBEDDING = ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")


def _loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address).is_loopback


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

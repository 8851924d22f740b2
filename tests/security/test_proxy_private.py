"""Issue 14, escape 7: a granted name must not lead the proxy to internal addresses.

``network:http:api.example.com`` grants a name; whoever controls its DNS must not be able
to point it at the user's loopback, private network or the cloud metadata service
(169.254.169.254). The proxy resolves once, checks every address and connects to the one
it checked; an internal address is reached only when the grants name it, or through
``localhost``. Names are pointed where the test wants by a resolver it controls (the
proxy's ``resolve`` parameter, or its default :data:`conduit.security.proxy.RESOLVE` for
the end-to-end run); everything else is real: sockets, servers, the sandboxed plugin.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conduit.security import landlock, proxy, report, seccomp
from conduit.security.capabilities import parse
from conduit.security.proxy import Proxy, internal

from _factory import hello_server, manifest_block, write

pytestmark = pytest.mark.timeout(60)

NAME = "api.example.test"  # .test is reserved: the system's resolver knows nothing of it


def resolver(answers: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    """A resolver with ``socket.getaddrinfo``'s signature that answers ``answers[host]``
    (in that order) and asks the system about any other name."""

    def resolve(host: str, port: int, family: int = 0, type: int = 0, *rest: int) -> Any:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            return socket.getaddrinfo(host, port, family, type, *rest)
        result = []
        for address in answers[host]:
            if ":" in address:
                result.append((socket.AF_INET6, type, 6, "", (address, port, 0, 0)))
            else:
                result.append((socket.AF_INET, type, 6, "", (address, port)))
        return result

    return resolve


@contextlib.contextmanager
def running(grants: list[str], resolve: Any) -> Iterator[Any]:
    """A real :class:`Proxy` for ``grants``; yields ``ask(target)``, which sends
    ``CONNECT target`` as a host child's client would and returns the open socket."""
    p = Proxy("private", [parse(g) for g in grants], resolve=resolve)
    channel = socket.socket(fileno=os.dup(p.child_fd))  # the child's end
    p.start()

    def ask(target: str) -> socket.socket:
        mine, theirs = socket.socketpair()
        socket.send_fds(channel, [b"c"], [theirs.fileno()])
        theirs.close()
        mine.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        mine.settimeout(20)
        return mine

    try:
        yield ask
    finally:
        channel.close()
        p.close()


def status_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.fixture
def service() -> Iterator[socket.socket]:
    """An internal service on 127.0.0.1 that no one is meant to reach: a listener whose
    queue shows whether anyone connected."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    yield listener
    listener.close()


def nobody_connected(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


# -- which addresses are internal -------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared (carrier-grade NAT, tailnets)
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%lo",
        "fd00::1",
        "fc00::1",
        "ff02::1",
        "ff0e::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::7f00:1",  # IPv4-compatible
        "64:ff9b::a9fe:a9fe",  # NAT64 to 169.254.169.254
        "64:ff9b:1::a00:1",  # local-use NAT64 to 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "::ffff:0:127.0.0.1",  # IPv4-translated (RFC 2765)
        "::ffff:0:a00:1",  # IPv4-translated 10.0.0.1
        "fec0::1",  # site-local (deprecated, still routed inside some networks)
    ],
)
def test_internal_addresses(address):
    assert internal(address)


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "140.82.112.3", "2606:4700::1111", "64:ff9b::808:808", "::ffff:0:808:808"],
)
def test_global_addresses(address):
    assert not internal(address)


# -- the proxy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
    ],
)
def test_a_granted_name_is_not_led_to_an_internal_address(address, service):
    port = service.getsockname()[1]
    resolve = resolver({NAME: [address]})
    with running([f"network:http:{NAME}"], resolve) as ask, ask(f"{NAME}:{port}") as client:
        assert (
            status_line(client)
            == (
                f"HTTP/1.1 403 Conduit denied network:http:{address} ({NAME} resolves to an "
                "internal address, which the grants do not name)"
            ).encode()
        )
    assert nobody_connected(service)


def test_a_name_reaches_an_internal_address_the_grants_name():
    with hello_server(lambda path: f"hello from {path}\n".encode()) as port:
        resolve = resolver({NAME: ["127.0.0.1"]})
        grants = [f"network:http:{NAME}", "network:http:127.0.0.1"]
        with running(grants, resolve) as ask, ask(f"{NAME}:{port}") as tunnel:
            assert status_line(tunnel) == b"HTTP/1.1 200 Connection established"
            tunnel.sendall(b"GET /named HTTP/1.0\r\n\r\n")
            assert read_all(tunnel).endswith(b"hello from /named\n")
        # the address granted for another port only does not count
        grants = [f"network:http:{NAME}", f"network:http:127.0.0.1:{port + 1}"]
        with running(grants, resolve) as ask, ask(f"{NAME}:{port}") as client:
            assert status_line(client).startswith(b"HTTP/1.1 403 Conduit denied")


def test_localhost_means_the_loopback_and_only_it(service):
    port = service.getsockname()[1]
    # the system's own answer for localhost (the hosts file): the loopback, allowed
    with (
        hello_server(lambda path: b"hello\n") as hello,
        running(["network:http:localhost"], socket.getaddrinfo) as ask,
        ask(f"localhost:{hello}") as tunnel,
    ):
        assert status_line(tunnel) == b"HTTP/1.1 200 Connection established"
    # a "localhost" that is not the loopback is refused like any name
    resolve = resolver({"localhost": ["10.1.2.3"]})
    with running(["network:http:localhost"], resolve) as ask, ask(f"localhost:{port}") as client:
        assert status_line(client).startswith(b"HTTP/1.1 403 Conduit denied network:http:10.1.2.3")


def test_refused_addresses_are_skipped_not_tried(service):
    """A name with internal and granted addresses: only the granted one is tried."""
    with hello_server(lambda path: b"granted one\n") as port:
        answers = {NAME: ["10.1.2.3", "169.254.169.254", "127.0.0.1"]}
        grants = [f"network:http:{NAME}", "network:http:127.0.0.1"]
        with running(grants, resolver(answers)) as ask, ask(f"{NAME}:{port}") as tunnel:
            assert status_line(tunnel) == b"HTTP/1.1 200 Connection established"
            tunnel.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert read_all(tunnel).endswith(b"granted one\n")


def test_the_proxy_connects_to_the_address_it_checked():
    """No second lookup between check and connect: a resolver that answers a granted
    address first and another one afterwards (DNS rebinding) still leads to the first."""

    def server(host: str, port: int, answer: bytes) -> http.server.ThreadingHTTPServer:
        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer((host, port), Answer)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    granted = server("127.0.0.1", 0, b"granted\n")
    port = granted.server_address[1]
    try:
        other = server("127.0.0.2", port, b"rebound\n")  # the same port, another address
    except OSError:
        granted.shutdown()
        granted.server_close()
        pytest.skip("cannot bind 127.0.0.2 on the same port")
    calls: list[str] = []
    answers = iter([["127.0.0.1"]])

    def rebinding(host: str, port: int, *rest: int) -> Any:
        first = next(answers, ["127.0.0.2"])
        return resolver({NAME: first}, calls)(host, port, *rest)

    try:
        grants = [f"network:http:{NAME}", "network:http:127.0.0.1"]
        with running(grants, rebinding) as ask, ask(f"{NAME}:{port}") as tunnel:
            assert status_line(tunnel) == b"HTTP/1.1 200 Connection established"
            tunnel.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert read_all(tunnel).endswith(b"granted\n")
        assert calls == [NAME]
    finally:
        for httpd in (granted, other):
            httpd.shutdown()
            httpd.server_close()


# -- end to end: a real plugin in the real sandbox ---------------------------------------------

FETCHER = """
import urllib.request
import click
from conduit.sdk import Plugin

@click.command("fetcher")
@click.argument("url")
def fetch(url):
    with urllib.request.urlopen(url, timeout=20) as response:
        click.echo(response.read().decode().strip())

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(fetch)
"""


needs_sandbox = pytest.mark.skipif(
    sys.platform != "linux"
    or landlock.abi() < 4
    or not seccomp.available()
    or not report.mechanisms()["netns"],
    reason="needs Linux with Landlock ABI >= 4, seccomp on x86_64 and network namespaces",
)


def fetcher_plugin(plugin_dir: Path) -> None:
    toml = 'name = "fetcher"\napi = ">=1.0,<2"\nisolation = "process"\n'
    toml += '[[commands]]\nname = "fetcher"\n'
    write(plugin_dir, "fetcher.py", manifest_block(toml) + FETCHER)


@needs_sandbox
def test_a_sandboxed_plugin_cannot_reach_loopback_through_a_granted_name(
    plugin_dir: Path, conduit_home: Path, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetcher_plugin(plugin_dir)
    monkeypatch.setattr(proxy, "RESOLVE", resolver({NAME: ["127.0.0.1"]}))
    seen: list[str] = []
    with hello_server(lambda path: seen.append(path) or f"hello from {path}\n".encode()) as port:
        config = conduit_home / "config.toml"
        config.write_text(f'[grants]\nfetcher = ["network:http:{NAME}"]\n')
        r = run("fetcher", f"http://{NAME}:{port}/secret")
        assert r.code == 1
        assert r.err.splitlines() == [
            "error: plugin 'fetcher': command 'fetcher' needs 'network:http:127.0.0.1', "
            "which is not granted",
            "hint: grant it with 'conduit plugins grant fetcher network:http:127.0.0.1' "
            "if you trust the plugin",
        ]
        assert seen == []
        # granting the address as well, as the hint says, lets the name lead there
        config.write_text(
            f'[grants]\nfetcher = ["network:http:{NAME}", "network:http:127.0.0.1"]\n'
        )
        r = run("fetcher", f"http://{NAME}:{port}/named")
        assert (r.code, r.out) == (0, "hello from /named\n"), r.err
        assert seen == ["/named"]


def _own_name_on_loopback() -> str | None:
    """This machine's name, if the system's resolver (often the hosts file) puts it on
    the loopback, as many distributions do (``127.0.1.1 NAME``)."""
    name = socket.gethostname().lower()
    try:
        answers = socket.getaddrinfo(name, 80, 0, socket.SOCK_STREAM)
    except OSError:
        return None
    addresses = [str(a[4][0]) for a in answers]
    if name == "localhost" or not addresses:
        return None
    return name if all(a.startswith("127.") for a in addresses) else None


@needs_sandbox
def test_the_real_resolver_does_not_lead_a_granted_name_to_loopback(
    plugin_dir: Path, conduit_home: Path, run: Any
) -> None:
    """The same, with no test resolver at all: the machine's own name, granted."""
    name = _own_name_on_loopback()
    if name is None:
        pytest.skip("this machine's name does not resolve to the loopback")
    fetcher_plugin(plugin_dir)
    (conduit_home / "config.toml").write_text(f'[grants]\nfetcher = ["network:http:{name}"]\n')
    seen: list[str] = []
    with hello_server(lambda path: seen.append(path) or b"reached\n") as port:
        r = run("fetcher", f"http://{name}:{port}/secret")
    assert r.code == 1
    assert r.err.splitlines()[0].startswith(
        "error: plugin 'fetcher': command 'fetcher' needs 'network:http:127."
    )
    assert seen == []

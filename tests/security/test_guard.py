"""The in-process guard's checks one by one: every "denied" in docs/permissions.md is tried
here (the end-to-end matrix is in test_permissions_inprocess.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conduit.errors import CapabilityDenied, PluginError
from conduit.security import guard
from conduit.security.capabilities import parse


def as_plugin(grants: list[str], fn: Callable[[], Any], **kw: Any) -> Any:
    guard.install()
    policy = guard.Policy("p", [parse(g) for g in grants], **kw)
    with guard.Running(policy):
        return fn()


def denied(grants: list[str], fn: Callable[[], Any], **kw: Any) -> CapabilityDenied:
    with pytest.raises(CapabilityDenied) as info:
        as_plugin(grants, fn, **kw)
    assert isinstance(info.value, PluginError)
    assert info.value.plugin == "p"
    return info.value


def opening(path: Path | str, mode: str = "r") -> Callable[[], None]:
    def go() -> None:
        with open(path, mode):
            pass

    return go


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "f.txt").write_text("f")
    (tmp_path / "no").mkdir()
    (tmp_path / "no" / "g.txt").write_text("g")
    return tmp_path


def test_no_attribution_no_checks(tree):
    guard.install()
    assert guard.current() is None
    assert (tree / "no" / "g.txt").read_text() == "g"


def test_read_modes_and_flags(tree):
    read = [f"filesystem:read:{tree / 'ok'}"]
    assert as_plugin(read, lambda: (tree / "ok" / "f.txt").read_text()) == "f"
    exc = denied(read, opening(tree / "no" / "g.txt"))
    assert (exc.operation, exc.target) == ("reading", str(tree / "no" / "g.txt"))
    assert exc.capability == f"filesystem:read:{tree / 'no' / 'g.txt'}"
    denied(read, lambda: os.open(tree / "no" / "g.txt", os.O_RDONLY))
    # a read grant does not allow writing, whatever the API
    assert denied(read, opening(tree / "ok" / "f.txt", "a")).operation == "writing"
    assert denied(read, opening(tree / "ok" / "f.txt", "r+")).operation == "writing"
    flags = os.O_WRONLY | os.O_CREAT
    assert denied(read, lambda: os.open(tree / "ok" / "new", flags)).operation == "writing"


def test_relative_paths_are_made_absolute(tree, monkeypatch):
    monkeypatch.chdir(tree / "no")
    exc = denied([f"filesystem:read:{tree / 'ok'}"], opening("g.txt"))
    assert exc.target == str(tree / "no" / "g.txt")
    exc = denied([f"filesystem:read:{tree / 'ok'}"], opening("../ok/../no/g.txt"))
    assert exc.target == str(tree / "no" / "g.txt")


def test_directory_listings(tree):
    read = [f"filesystem:read:{tree / 'ok'}"]
    assert as_plugin(read, lambda: os.listdir(tree / "ok")) == ["f.txt"]
    denied(read, lambda: os.listdir(tree / "no"))
    denied(read, lambda: list(os.scandir(tree / "no")))
    denied(read, lambda: list(os.walk(tree)))
    denied(read, lambda: list((tree / "no").glob("*")))


def test_filesystem_changes(tree):
    write = [f"filesystem:write:{tree / 'ok'}"]
    as_plugin(write, lambda: os.mkdir(tree / "ok" / "d"))
    assert (tree / "ok" / "d").is_dir()
    no = tree / "no"
    for op in (
        lambda: os.mkdir(no / "d"),
        lambda: os.rmdir(no),
        lambda: os.remove(no / "g.txt"),
        lambda: os.rename(tree / "ok" / "f.txt", no / "f.txt"),
        lambda: os.replace(no / "g.txt", tree / "ok" / "g.txt"),
        lambda: os.link(tree / "ok" / "f.txt", no / "h"),
        lambda: os.truncate(no / "g.txt", 0),
        lambda: os.chmod(no / "g.txt", 0o600),
        lambda: os.utime(no / "g.txt"),
        lambda: os.chown(no / "g.txt", os.getuid(), os.getgid()),
    ):
        assert denied(write, op).operation == "writing"
    assert (no / "g.txt").read_text() == "g"


def test_dir_fd_relative_changes_are_resolved(tree):
    fd = os.open(tree / "no", os.O_RDONLY)
    try:
        exc = denied([f"filesystem:write:{tree / 'ok'}"], lambda: os.remove("g.txt", dir_fd=fd))
        assert exc.target == str(tree / "no" / "g.txt")
    finally:
        os.close(fd)


def test_a_symlink_may_not_point_outside_the_read_grant(tree):
    grants = [f"filesystem:write:{tree / 'ok'}", f"filesystem:read:{tree / 'ok'}"]
    exc = denied(grants, lambda: os.symlink(tree / "no" / "g.txt", tree / "ok" / "link"))
    assert (exc.operation, exc.target) == ("reading", str(tree / "no" / "g.txt"))
    as_plugin(grants, lambda: os.symlink("f.txt", tree / "ok" / "link"))


def test_plugin_data_and_workspace_variables(tree):
    grants = ["filesystem:read:${plugin_data}", "filesystem:read:${workspace}/src"]
    (tree / "src").mkdir()
    (tree / "src" / "a").write_text("a")
    kw = {"plugin_data": str(tree / "ok"), "workspace": str(tree)}
    assert as_plugin(grants, lambda: (tree / "ok" / "f.txt").read_text(), **kw) == "f"
    assert as_plugin(grants, lambda: (tree / "src" / "a").read_text(), **kw) == "a"
    denied(grants, lambda: (tree / "no" / "g.txt").read_text(), **kw)


def test_imports_keep_working_without_grants(tree):
    (tree / "no" / "helper_mod_for_guard.py").write_text("VALUE = 42\n")
    sys.path.insert(0, str(tree / "no"))
    try:
        value = as_plugin([], lambda: __import__("helper_mod_for_guard").VALUE)
    finally:
        sys.path.remove(str(tree / "no"))
        sys.modules.pop("helper_mod_for_guard", None)
    assert value == 42
    # ... but the same file is not readable as data
    denied([], opening(tree / "no" / "helper_mod_for_guard.py"))


def test_the_interpreter_is_readable_without_grants():
    def read() -> str:
        with open(os.__file__) as f:
            return f.read(10)

    assert as_plugin([], read)


def test_the_current_directory_is_not_implicitly_readable(tree, monkeypatch):
    monkeypatch.chdir(tree)
    monkeypatch.syspath_prepend(str(tree))  # as `python -m conduit` would put it first
    denied([], opening(tree / "no" / "g.txt"))


def test_name_lookups_and_connects(tree):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    try:
        granted = [f"network:http:localhost:{port}"]
        as_plugin(granted, lambda: socket.create_connection(("localhost", port)).close())

        def twice() -> None:  # the address a granted name resolved to may be used directly
            socket.create_connection(("localhost", port)).close()
            socket.create_connection(("127.0.0.1", port)).close()

        as_plugin(granted, twice)
        exc = denied(granted, lambda: socket.getaddrinfo("example.invalid", 80))
        assert exc.capability == "network:http:example.invalid:80"
        denied(granted, lambda: socket.gethostbyname("example.invalid"))
        denied(granted, lambda: socket.gethostbyname_ex("example.invalid"))
        exc = denied(granted, lambda: socket.create_connection(("127.0.0.1", port + 1)))
        assert exc.capability == f"network:http:127.0.0.1:{port + 1}"

        def connect_ex() -> int:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port))

        denied([], connect_ex)  # an address needs a grant, or a granted name resolving to it
        assert as_plugin([f"network:http:127.0.0.1:{port}"], connect_ex) == 0

        def sendto() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", ("127.0.0.1", port))

        denied(granted, sendto)
    finally:
        server.close()


def test_unix_sockets_need_write_access_to_the_socket(tree):
    path = tree / "no" / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    try:

        def connect() -> None:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))

        assert denied(["network:http"], connect).capability == f"filesystem:write:{path}"
        as_plugin([f"filesystem:write:{tree / 'no'}"], connect)
    finally:
        server.close()


def test_running_programs(tree):
    true = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"
    assert denied([], lambda: subprocess.run(["true"])).target == "true"
    assert as_plugin(["process:execute:true"], lambda: subprocess.run(["true"]).returncode) == 0
    # a path grant allows a bare name that resolves to it (PATH, or os.defpath)
    real = os.path.realpath(true)
    assert as_plugin([f"process:execute:{real}"], lambda: subprocess.run(["true"]).returncode) == 0
    denied(["process:execute:false"], lambda: subprocess.run([true], shell=False))
    denied(["process:execute:true"], lambda: subprocess.run("true", shell=True))  # /bin/sh
    denied(["process:execute:true"], lambda: os.system("true"))
    denied(["process:execute:true"], lambda: os.posix_spawn("/bin/sh", ["sh"], {}))
    denied(["process:execute:true"], lambda: os.execv("/bin/sh", ["sh"]))
    # os.spawn* is fork + exec in Python on POSIX: the exec is denied in the forked child,
    # which exits with 127 instead of running the program
    marker = tree / "ran"
    argv = ["sh", "-c", f"touch {marker}"]
    assert as_plugin(["process:execute:true"], lambda: os.spawnv(os.P_WAIT, "/bin/sh", argv)) == 127
    assert not marker.exists()


def test_environment_view(monkeypatch):
    monkeypatch.setenv("GUARD_OK", "1")
    monkeypatch.setenv("GUARD_SECRET", "2")
    monkeypatch.setenv("GUARD_PREFIX_A", "3")
    grants = ["env:read:GUARD_OK", "env:read:GUARD_PREFIX_*"]

    def look() -> tuple[Any, ...]:
        return (
            os.environ["GUARD_OK"],
            os.getenv("GUARD_SECRET"),
            os.environ.get("GUARD_SECRET", "unset"),
            "GUARD_SECRET" in os.environ,
            sorted(k for k in os.environ if k.startswith("GUARD")),
            os.getenv("GUARD_PREFIX_A"),
        )

    assert as_plugin(grants, look) == (
        "1",
        None,
        "unset",
        False,
        ["GUARD_OK", "GUARD_PREFIX_A"],
        "3",
    )
    exc = denied(grants, lambda: os.environ["GUARD_SECRET"])
    assert isinstance(exc, KeyError)
    assert exc.capability == "env:read:GUARD_SECRET"
    as_plugin(grants, lambda: os.environ.__setitem__("GUARD_SET", "4"))
    assert os.environ["GUARD_SET"] == "4"  # writes reach the real environment
    del os.environ["GUARD_SET"]
    assert os.environ["GUARD_SECRET"] == "2"  # restored after the call


def test_attribution_nests_and_restores():
    guard.install()
    a = guard.Running(guard.Policy("a", []))
    b = guard.Running(guard.Policy("b", [parse("env:read")]))
    with a:
        assert guard.current() == "a"
        with b:
            assert guard.current() == "b"
            with guard.TRUSTED:
                assert guard.current() is None
            assert guard.current() == "b"
        with a:  # re-entrant
            assert guard.current() == "a"
        assert guard.current() == "a"
    assert guard.current() is None
    assert os.environ is guard._real_environ


def test_own_files():
    import click

    assert guard.own_files("file", "/p/a.py", None) == ["/p/a.py"]
    assert guard.own_files("entry-point", "", "click.core:Command") == [
        os.path.dirname(click.__file__)
    ]
    assert guard.own_files("entry-point", "", "no_such_module_x:P") == []
    assert guard.own_files("executable", "/bin/x", None) == []


def test_other_socket_families_need_an_unscoped_network_grant():
    def netlink() -> None:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as s:
            s.connect((0, 0))

    exc = denied(["network:http:localhost"], netlink)
    assert exc.capability == "network:http"
    as_plugin(["network:http"], netlink)

    def abstract() -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect("\0conduit-guard-test-nobody-listens")

    exc = denied(["filesystem:write"], abstract)
    assert exc.target == "unix socket @conduit-guard-test-nobody-listens"


def test_the_plugin_data_directory_needs_no_grant(tree):
    data = tree / "ok"

    def keep() -> str:
        (data / "state.json").write_text("{}")
        return (data / "state.json").read_text()

    assert as_plugin([], keep, plugin_data=str(data)) == "{}"
    denied([], lambda: (tree / "no" / "x").write_text("x"), plugin_data=str(data))


def test_ipv6_addresses_suggest_a_grant_that_parses():
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 sockets here")

    def connect() -> None:
        with socket.socket(socket.AF_INET6) as s:
            s.connect_ex(("::1", 9))

    exc = denied(["network:http:localhost:9"], connect)
    assert (exc.target, exc.capability) == ("[::1]:9", "network:http")
    parse(exc.capability)


def test_what_the_kernel_names_as_the_plugins_own_is_readable(tmp_path):
    # the kernel passes the plugin's files and its inline dependencies' directory
    # (test_permissions_inprocess.py runs that end to end)
    where = str(tmp_path / "deps")
    os.makedirs(os.path.join(where, "pkg"))
    data = os.path.join(where, "pkg", "data.txt")
    with open(data, "w") as f:
        f.write("d")

    def read() -> str:
        with open(data) as f:
            return f.read()

    assert as_plugin([], read, own=[where]) == "d"
    assert denied([], read).capability == f"filesystem:read:{data}"

"""The permission matrix, in-process column: real `conduit` runs of a real single-file
plugin under the in-process guard (PEP 578 audit hook), each case denied or allowed with
the exact line the user sees. Servers listen on 127.0.0.1 only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _factory import hello_server, manifest_block, write

PROBE = """
import os, socket, subprocess, sys, urllib.request
import click
from conduit.sdk import Plugin


@click.command("probe")
@click.argument("op")
@click.argument("target")
def probe(op, target):
    import fractions, decimal  # Python's own imports keep working under the guard
    if op == "read":
        with open(target) as f:
            click.echo(f"read: {f.read().strip()}")
    elif op == "write":
        with open(target, "w") as f:
            f.write("written")
        click.echo("wrote")
    elif op == "fetch":
        with urllib.request.urlopen(target, timeout=10) as r:
            click.echo(f"fetched: {r.read().decode()}")
    elif op == "connect":
        host, port = target.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=10).close()
        click.echo("connected")
    elif op == "exec":
        subprocess.run(target.split(), check=True)
    elif op == "system":
        os.system(target)
    elif op == "env":
        click.echo(f"env: {os.environ[target]}")
    elif op == "data":
        path = os.path.join(CTX.data_dir, target)
        with open(path, "w") as f:
            f.write("kept")
        click.echo(f"kept {open(path).read()}")
    elif op == "getenv":
        click.echo(f"getenv: {os.getenv(target)!r} {target in os.environ} {len(os.environ)}")


class Probe(Plugin):
    def boot(self, ctx):
        global CTX
        CTX = ctx
        ctx.register_command(probe)
"""


def probe_source(capabilities: list[str], name: str = "probe", version: str = "1.0") -> str:
    caps = ", ".join(f'"{c}"' for c in capabilities)
    toml = f"""
        name = "{name}"
        version = "{version}"
        api = ">=1.0,<2"
        capabilities = [{caps}]

        [[commands]]
        name = "probe"
        help = "Try one operation."
        usage = "OP TARGET"
        """
    return manifest_block(toml) + PROBE


def grant(home: Path, name: str, capabilities: list[str]) -> None:
    caps = ", ".join(f'"{c}"' for c in capabilities)
    with open(home / "config.toml", "a") as f:
        f.write(f"[grants]\n{name} = [{caps}]\n")


def conduit(
    *args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", *drop)}
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args],
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "in.txt").write_text("inside")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    return {"granted": granted, "in": granted / "in.txt", "outside": outside}


def setup(plugin_dir: Path, home: Path, capabilities: list[str]) -> None:
    write(plugin_dir, "probe.py", probe_source(capabilities))
    grant(home, "probe", capabilities)


def denied_line(plugin: str, what: str, capability: str) -> str:
    return (
        f"error: plugin '{plugin}': {what} is not granted "
        f"(run 'conduit plugins grant {plugin} {capability}' to allow it)"
    )


# -- filesystem --------------------------------------------------------------------------------


def test_read_inside_the_grant_is_allowed(plugin_dir, conduit_home, files):
    setup(plugin_dir, conduit_home, [f"filesystem:read:{files['granted']}"])
    proc = conduit("probe", "read", str(files["in"]))
    assert (proc.returncode, proc.stdout, errors(proc)) == (0, "read: inside\n", [])


def test_imports_and_bytecode_caching_need_no_grant(plugin_dir, conduit_home, files):
    setup(plugin_dir, conduit_home, [f"filesystem:read:{files['granted']}"])
    old = time.time() - 60  # (a plugin saved within the last two seconds gets no .pyc)
    os.utime(plugin_dir / "probe.py", (old, old))
    # a fresh interpreter that writes .pyc files: the plugin's own __pycache__ is created
    proc = conduit("probe", "read", str(files["in"]), drop=("PYTHONDONTWRITEBYTECODE",))
    assert (proc.returncode, proc.stdout, errors(proc)) == (0, "read: inside\n", [])
    assert [p.name.split(".")[0] for p in (plugin_dir / "__pycache__").iterdir()] == ["probe"]


def test_the_plugin_data_directory_needs_no_grant(plugin_dir, conduit_home):
    setup(plugin_dir, conduit_home, [])
    proc = conduit("probe", "data", "state.txt")
    assert (proc.returncode, proc.stdout, errors(proc)) == (0, "kept kept\n", [])
    assert (conduit_home / "state" / "plugins" / "probe" / "state.txt").read_text() == "kept"


def test_inline_dependencies_need_no_grant(plugin_dir, conduit_home):
    from conduit.store.envs import env_dir

    # installed already (conduit.store.envs would install them here): the kernel lets the
    # guard read where they are, as the rest of sys.path
    deps = env_dir(str(conduit_home / "cache"), ["cguard-dep==1.0"])
    os.makedirs(deps)
    Path(deps, "data.txt").write_text("dependency data")
    source = probe_source([]).replace(
        '# api = ">=1.0,<2"\n', '# api = ">=1.0,<2"\n# dependencies = ["cguard-dep==1.0"]\n'
    )
    assert "# dependencies" in source
    write(plugin_dir, "probe.py", source)
    # the user consented to installing them (docs/permissions.md#dependencies)
    (conduit_home / "config.toml").write_text(
        '[dependencies.consented]\nprobe = ["cguard-dep==1.0"]\n'
    )
    proc = conduit("probe", "read", os.path.join(deps, "data.txt"))
    assert (proc.returncode, proc.stdout, errors(proc)) == (0, "read: dependency data\n", [])


def test_read_outside_the_grant_is_denied(plugin_dir, conduit_home, files):
    setup(plugin_dir, conduit_home, [f"filesystem:read:{files['granted']}"])
    proc = conduit("probe", "read", str(files["outside"]))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert errors(proc) == [
        denied_line("probe", f"reading {files['outside']}", f"filesystem:read:{files['outside']}")
    ]


def test_write_inside_the_grant_is_allowed(plugin_dir, conduit_home, files):
    setup(plugin_dir, conduit_home, [f"filesystem:write:{files['granted']}"])
    target = files["granted"] / "new.txt"
    proc = conduit("probe", "write", str(target))
    assert (proc.returncode, proc.stdout, errors(proc)) == (0, "wrote\n", [])
    assert target.read_text() == "written"


def test_write_outside_the_grant_is_denied(plugin_dir, conduit_home, files):
    # A read grant on the same file does not allow writing it.
    setup(
        plugin_dir,
        conduit_home,
        [f"filesystem:write:{files['granted']}", f"filesystem:read:{files['outside']}"],
    )
    proc = conduit("probe", "write", str(files["outside"]))
    assert proc.returncode == 1
    assert errors(proc) == [
        denied_line("probe", f"writing {files['outside']}", f"filesystem:write:{files['outside']}")
    ]
    assert files["outside"].read_text() == "outside"


# -- network -----------------------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[int]:
    with hello_server() as port:
        yield port


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket on 127.0.0.1 that counts nobody in: a denied connect never arrives."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(0.2)
    yield sock
    sock.close()


def test_connect_to_a_granted_host_is_allowed(plugin_dir, conduit_home, http_server):
    setup(plugin_dir, conduit_home, [f"network:http:localhost:{http_server}"])
    proc = conduit("probe", "fetch", f"http://localhost:{http_server}/")
    assert (proc.returncode, proc.stdout, errors(proc)) == (
        0,
        "fetched: hello from 127.0.0.1\n",
        [],
    )


def test_connect_to_an_ungranted_host_is_denied(plugin_dir, conduit_home, http_server, listener):
    setup(plugin_dir, conduit_home, [f"network:http:localhost:{http_server}"])
    port = listener.getsockname()[1]
    proc = conduit("probe", "connect", f"127.0.0.1:{port}")
    assert proc.returncode == 1
    assert errors(proc) == [
        denied_line("probe", f"connecting to 127.0.0.1:{port}", f"network:http:127.0.0.1:{port}")
    ]
    with pytest.raises(TimeoutError):
        listener.accept()  # the connection was never made


def test_a_granted_name_does_not_allow_another_port(
    plugin_dir, conduit_home, http_server, listener
):
    setup(plugin_dir, conduit_home, [f"network:http:localhost:{http_server}"])
    port = listener.getsockname()[1]
    proc = conduit("probe", "connect", f"localhost:{port}")
    assert errors(proc) == [
        denied_line("probe", f"connecting to localhost:{port}", f"network:http:localhost:{port}")
    ]


# -- processes ---------------------------------------------------------------------------------


def test_exec_without_a_grant_is_denied(plugin_dir, conduit_home):
    setup(plugin_dir, conduit_home, ["process:execute:true"])
    proc = conduit("probe", "exec", "echo from-the-child")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert errors(proc) == [denied_line("probe", "running echo", "process:execute:echo")]


def test_exec_of_the_granted_program_is_allowed(plugin_dir, conduit_home):
    setup(plugin_dir, conduit_home, ["process:execute:echo"])
    proc = conduit("probe", "exec", "echo from-the-child")
    assert (proc.returncode, proc.stdout, errors(proc)) == (0, "from-the-child\n", [])


def test_os_system_needs_the_shell(plugin_dir, conduit_home):
    setup(plugin_dir, conduit_home, ["process:execute:echo"])
    proc = conduit("probe", "system", "echo hi")
    assert errors(proc) == [
        denied_line("probe", "running 'echo hi' through /bin/sh", "process:execute:/bin/sh")
    ]


# -- environment -------------------------------------------------------------------------------


def test_reading_an_ungranted_variable_is_denied(plugin_dir, conduit_home):
    setup(plugin_dir, conduit_home, ["env:read:PROBE_OK"])
    proc = conduit("probe", "env", "PROBE_SECRET", env={"PROBE_SECRET": "s3cret"})
    assert proc.returncode == 1
    assert "s3cret" not in proc.stdout + proc.stderr
    assert errors(proc) == [
        denied_line(
            "probe", "reading the environment variable PROBE_SECRET", "env:read:PROBE_SECRET"
        )
    ]


def test_ungranted_variables_look_unset_to_getenv(plugin_dir, conduit_home):
    setup(plugin_dir, conduit_home, ["env:read:PROBE_OK"])
    env = {"PROBE_SECRET": "s3cret", "PROBE_OK": "fine"}
    proc = conduit("probe", "getenv", "PROBE_SECRET", env=env)
    assert (proc.returncode, proc.stdout) == (0, "getenv: None False 1\n")
    proc = conduit("probe", "env", "PROBE_OK", env=env)
    assert (proc.returncode, proc.stdout) == (0, "env: fine\n")


# -- attribution -------------------------------------------------------------------------------

NOSY = manifest_block(
    """
    name = "nosy"
    api = ">=1.1,<2"
    activation = ["event:before_command"]
    """
) + (
    "from conduit.sdk import Plugin\n\n"
    "class Nosy(Plugin):\n"
    "    def boot(self, ctx):\n"
    "        ctx.register_hook('before_command', self.peek)\n\n"
    "    def peek(self, command, argv):\n"
    "        open(argv[-1]).read()\n"
)


def test_a_denial_in_one_plugin_does_not_affect_another(plugin_dir, conduit_home, files):
    setup(plugin_dir, conduit_home, [f"filesystem:read:{files['granted']}"])
    write(plugin_dir, "nosy.py", NOSY)
    proc = conduit("probe", "read", str(files["in"]))
    # nosy's hook runs first, in the same interpreter, and is stopped; probe's grant is
    # not nosy's, and nosy's denial does not stop probe.
    assert proc.returncode == 0
    assert proc.stdout == "read: inside\n"
    assert proc.stderr.splitlines() == [
        f"conduit: warning: plugin 'nosy': hook 'before_command' failed: reading {files['in']} "
        f"is not granted (run 'conduit plugins grant nosy filesystem:read:{files['in']}' "
        "to allow it)"
    ]


def test_builtin_commands_do_not_load_the_guard(plugin_dir, conduit_home):
    from _factory import imported_by

    setup(plugin_dir, conduit_home, [])
    code, modules = imported_by("plugins", "list")
    assert code == 0
    assert "conduit.security.guard" not in modules
    code, modules = imported_by("probe", "getenv", "X")
    assert code == 0
    assert "conduit.security.guard" in modules  # deny by default: no capabilities, still guarded

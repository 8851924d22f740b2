"""The process host: a plugin in a child process, reached over the documented protocol."""

from __future__ import annotations

import json

import pytest

from _factory import manifest_block, write

PLUGIN = """
import os
import click
from conduit.sdk import Plugin

class Counter:
    def incr(self, n):
        return n + 1

@click.command("iso-hello")
@click.option("--name", default="world")
def hello(name):
    click.echo(f"hello {name} from {os.getpid()}")
    click.echo("to stderr", err=True)

@click.command("iso-env")
def env():
    click.echo(f"{os.getcwd()} {os.environ.get('ISO_VAR')}")

@click.command("iso-exit")
def exit_():
    raise SystemExit(7)

@click.command("iso-ask")
def ask():
    click.echo(click.get_current_context().obj)

class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(hello)
        ctx.register_command(env)
        ctx.register_command(exit_, "iso-exit")
        ctx.register_service("counter", Counter)
        ctx.register_hook("before_command", lambda command: click.echo(f"[iso saw {command}]"))
"""

TOML = """name = "iso"
api = ">=1.0,<2"
isolation = "process"
[provides]
services = ["counter"]
[[commands]]
name = "iso-hello"
[[commands]]
name = "iso-env"
[[commands]]
name = "iso-exit"
"""


def test_command_runs_in_a_child_process(plugin_dir, run):
    import os

    write(plugin_dir, "iso.py", manifest_block(TOML) + PLUGIN)
    r = run("iso-hello", "--name", "x")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "[iso saw iso-hello]"  # its hook, proxied into the kernel
    assert lines[1].startswith("hello x from ")
    assert int(lines[1].rsplit(" ", 1)[1]) != os.getpid()
    assert r.err == "to stderr\n"


def test_cwd_env_and_exit_code_cross_over(plugin_dir, run, tmp_path, monkeypatch):
    write(plugin_dir, "iso.py", manifest_block(TOML) + PLUGIN)
    # the sandbox passes granted variables only (tests/security/test_permissions_process.py)
    (plugin_dir.parent / "config.toml").write_text('[grants]\niso = ["env:read:ISO_VAR"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ISO_VAR", "forty-two")
    assert run("iso-env").out.splitlines()[-1] == f"{tmp_path} forty-two"
    assert run("iso-exit").code == 7


def test_service_of_a_process_plugin_is_proxied(plugin_dir, run):
    write(plugin_dir, "iso.py", manifest_block(TOML) + PLUGIN)
    user = manifest_block('name = "user"\napi = ">=1.0,<2"\n[[commands]]\nname = "count"') + (
        "import click\nfrom conduit.sdk import Plugin\n"
        "class P(Plugin):\n    def boot(self, ctx):\n"
        "        @click.command('count')\n        def count():\n"
        "            click.echo(ctx.service('counter').incr(41))\n"
        "        ctx.register_command(count)\n"
    )
    write(plugin_dir, "user.py", user)
    r = run("count")
    assert (r.code, r.out.splitlines()[-1]) == (0, "42"), r.err


def test_policy_forces_a_stricter_host(plugin_dir, run, conduit_home):
    src = manifest_block('name = "plain"\napi = ">=1.0,<2"\n[[commands]]\nname = "where"') + (
        "import os, click\nfrom conduit.sdk import Plugin\n"
        "@click.command()\ndef where():\n    click.echo(os.getpid())\n"
        "class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(where)\n"
    )
    write(plugin_dir, "plain.py", src)
    import os

    assert run("where").out.strip() == str(os.getpid())
    (conduit_home / "config.toml").write_text('[isolation]\nplain = "process"\n')
    assert run("where").out.strip() != str(os.getpid())
    info = json.loads(run("plugins", "info", "plain", "--json", "--no-load").out)
    assert info["isolation"] == "process"


def test_trusted_plugins_may_share_a_host(plugin_dir, conduit_home):
    from conduit.indexer.build import load
    from conduit.kernel import Kernel
    from conduit.paths import resolve
    from conduit.timing import Profile

    for name in ("one", "two", "three"):
        src = manifest_block(
            f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "process"\n'
            f'[[commands]]\nname = "{name}-pid"'
        ) + (
            "import os, click\nfrom conduit.sdk import Plugin\n"
            f"@click.command('{name}-pid')\ndef pid():\n    click.echo(os.getpid())\n"
            "class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(pid)\n"
        )
        write(plugin_dir, f"{name}.py", src)
    (conduit_home / "config.toml").write_text('[process]\nshared = ["one", "two"]\n')
    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths)
    hosts = {name: kernel.host_for(kernel.record(name)) for name in ("one", "two", "three")}
    assert hosts["one"] is hosts["two"]
    assert hosts["three"] is not hosts["one"]
    for name in ("one", "two", "three"):
        kernel.activate(name)
    pids = {name: hosts[name].proc.pid for name in ("one", "two", "three")}  # type: ignore[union-attr]
    assert pids["one"] == pids["two"] != pids["three"]
    kernel.deactivate("one")
    assert hosts["two"].alive  # still serving "two"
    kernel.shutdown()
    assert not hosts["two"].alive and not hosts["three"].alive


COUNTER_TOML = """name = "iso"
api = ">=1.0,<2"
[provides]
services = ["counter"]
"""

COUNTER = """
from conduit.sdk import Plugin

class Counter:
    def __init__(self):
        self.calls = 0

    def incr(self, n):
        self.calls += 1
        if n < 0:
            raise ValueError(f"negative: {n}")
        return n + 1

    def seen(self):
        return self.calls

class P(Plugin):
    def boot(self, ctx):
        ctx.register_service("counter", Counter)
"""


def _kernel():  # type: ignore[no-untyped-def]
    from conduit.indexer.build import load
    from conduit.kernel import Kernel
    from conduit.paths import resolve
    from conduit.timing import Profile

    paths = resolve()
    return Kernel(load(paths, Profile(False)), paths)


def test_call_many_pipelines_calls_to_a_process_service(plugin_dir, conduit_home):
    import pytest

    from conduit.errors import ConduitError
    from conduit.hosts.process import ServiceProxy
    from conduit.sdk import call_many

    write(plugin_dir, "iso.py", manifest_block(COUNTER_TOML) + COUNTER)
    for isolation in ("process", "in-process"):
        policy = '[isolation]\niso = "process"\n' if isolation == "process" else ""
        (conduit_home / "config.toml").write_text(policy)
        kernel = _kernel()
        try:
            counter = kernel.service("counter")
            assert isinstance(counter, ServiceProxy) == (isolation == "process")
            # more calls than one window holds, so several windows of requests
            assert call_many(counter, "incr", [(i,) for i in range(3000)]) == list(range(1, 3001))
            assert call_many(counter, "incr", []) == []
            # a failing call: every call is still made, the first failure is raised,
            # and the connection stays in step for the next call
            # (a ConduitError naming the plugin from a host; the exception itself in-process)
            with pytest.raises((ConduitError, ValueError), match="negative: -1"):
                call_many(counter, "incr", [(1,), (-1,), (-2,), (3,)])
            assert counter.seen() == 3004
            assert counter.incr(9) == 10
        finally:
            kernel.shutdown()


def test_call_many_on_a_process_service_writes_its_requests_without_waiting(
    plugin_dir, conduit_home, monkeypatch
):
    """sdk.call_many pipelines a ServiceProxy's calls (ServiceProxy.__conduit_call_many__):
    never one request and its answer per call."""
    from conduit.sdk import call_many

    write(plugin_dir, "iso.py", manifest_block(COUNTER_TOML) + COUNTER)
    (conduit_home / "config.toml").write_text('[isolation]\niso = "process"\n')
    kernel = _kernel()
    try:
        counter = kernel.service("counter")
        host = kernel.host_for(kernel.record("iso"))
        assert counter.seen() == 0
        endpoint = host.endpoint  # type: ignore[attr-defined]
        first = endpoint.last_id

        def one_by_one(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise AssertionError("call_many made a call of its own")

        monkeypatch.setattr(host, "call", one_by_one)
        monkeypatch.setattr(endpoint, "request", one_by_one)
        assert call_many(counter, "incr", [(i,) for i in range(600)]) == list(range(1, 601))
        assert endpoint.last_id == first + 600
        monkeypatch.undo()
        assert counter.seen() == 600
    finally:
        monkeypatch.undo()
        kernel.shutdown()


def test_call_many_uses_the_pipelined_call_of_the_service_class():
    """What sdk.call_many asks of a service: ``__conduit_call_many__`` on its class, if
    there; looked up on the class, so a proxy's ``__getattr__`` is never asked for it."""
    from conduit.sdk import call_many

    class Batched:
        def __init__(self):  # type: ignore[no-untyped-def]
            self.batches = []

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            raise AssertionError(f"asked for {name}")

        def __conduit_call_many__(self, method, calls):  # type: ignore[no-untyped-def]
            self.batches.append((method, calls))
            return [sum(args) for args in calls]

    service = Batched()
    assert call_many(service, "add", [(1, 2), [3, 4]]) == [3, 7]
    assert service.batches == [("add", [(1, 2), (3, 4)])]

    class Plain:
        def add(self, a, b):  # type: ignore[no-untyped-def]
            return a + b

    plain = Plain()
    plain.__conduit_call_many__ = None  # type: ignore[attr-defined]  # not on the class
    assert call_many(plain, "add", [(1, 2)]) == [3]


def test_call_many_restarts_a_host_killed_while_idle(plugin_dir, conduit_home):
    import os
    import signal

    from conduit.sdk import call_many

    write(plugin_dir, "iso.py", manifest_block(COUNTER_TOML) + COUNTER)
    (conduit_home / "config.toml").write_text('[isolation]\niso = "process"\n')
    kernel = _kernel()
    try:
        counter = kernel.service("counter")
        assert counter.incr(1) == 2
        host = kernel.host_for(kernel.record("iso"))
        first = host.proc.pid  # type: ignore[attr-defined]
        os.kill(first, signal.SIGKILL)
        os.waitid(os.P_PID, first, os.WEXITED | os.WNOWAIT)
        assert call_many(counter, "incr", [(1,), (2,)]) == [2, 3]
        assert host.proc.pid != first  # type: ignore[attr-defined]
    finally:
        kernel.shutdown()


COLLECTOR = """
import click
from conduit.sdk import Plugin

def collect():
    \"\"\"Each implementation returns one value.\"\"\"

@click.command("gather")
@click.pass_context
def gather(click_ctx):
    click.echo(sorted(PLUGIN_CTX[0].hook("collect")))

PLUGIN_CTX = []

class P(Plugin):
    def boot(self, ctx):
        PLUGIN_CTX.append(ctx)
        ctx.register_hookspec(collect)
        ctx.register_hook("collect", lambda: "one")
        ctx.register_hook("collect", lambda: "two")
        ctx.register_command(gather)
"""


@pytest.mark.parametrize("isolation", ["in-process", "process"])
def test_two_implementations_of_a_hook_each_give_a_result(plugin_dir, run, isolation):
    """One proxy per implementation: a process plugin contributes what it would in-process."""
    toml = (
        f'name = "collector"\napi = ">=1.0,<2"\nisolation = "{isolation}"\n'
        '[provides]\nhooks = ["collect"]\n[[commands]]\nname = "gather"\n'
    )
    write(plugin_dir, "collector.py", manifest_block(toml) + COLLECTOR)
    r = run("gather")
    assert (r.code, r.out) == (0, "['one', 'two']\n"), r.err

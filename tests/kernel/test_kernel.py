"""The kernel as a library: activation, deactivation, hosts, services."""

from __future__ import annotations

import sys

import pytest

from conduit.errors import ConduitError, PluginError, PluginLoadError
from conduit.hosts.fake import FakeHost
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
from conduit.sdk import Plugin, PluginContext
from conduit.timing import Profile

from _factory import simple_plugin, write


def make_kernel(**kwargs) -> Kernel:  # type: ignore[no-untyped-def]
    paths = resolve()
    return Kernel(load(paths, Profile(False)), paths, **kwargs)


FULL = """
import click
from conduit.sdk import Plugin

EVENTS = []

@click.command()
def hello():
    click.echo("hi")

@click.command("status")
def status():
    click.echo("ok")

class Full(Plugin):
    def boot(self, ctx):
        ctx.register_command(hello)
        ctx.register_command(status, "repos status")
        ctx.register_service("greeter", lambda: "hello service")
        ctx.register_hook("before_command", lambda **kw: None)
        EVENTS.append("boot")

    def shutdown(self):
        EVENTS.append("shutdown")
"""


def _full_plugin(plugin_dir):  # type: ignore[no-untyped-def]
    from _factory import manifest_block

    toml = (
        'name = "full"\napi = ">=1.0,<2"\n'
        '[provides]\nservices = ["greeter"]\n'
        '[[commands]]\nname = "hello"\n[[commands]]\nname = "repos status"\n'
    )
    write(plugin_dir, "full.py", manifest_block(toml) + FULL)


def test_activate_then_deactivate_leaves_nothing_registered(plugin_dir):
    _full_plugin(plugin_dir)
    kernel = make_kernel()
    ctx = kernel.activate("full")
    assert isinstance(ctx, PluginContext)
    assert sorted(kernel.registry.owned_by("full")) == [
        "command hello",
        "command repos status",
        "hook before_command",
        "service greeter",
    ]
    assert kernel.service("greeter") == "hello service"
    module = sys.modules["conduit_plugin_full"]
    kernel.deactivate("full")
    assert kernel.registry.owned_by("full") == []
    assert kernel.registry.service_instances == {}
    assert kernel.registry.hooks == {}
    assert "conduit_plugin_full" not in sys.modules
    assert module.EVENTS == ["boot", "shutdown"]
    assert kernel.states["full"] == "inactive"
    # and it can come back
    kernel.activate("full")
    assert len(kernel.registry.owned_by("full")) == 4
    kernel.shutdown()
    assert kernel.registry.owned_by("full") == []


def test_activation_is_idempotent(plugin_dir):
    _full_plugin(plugin_dir)
    kernel = make_kernel()
    assert kernel.activate("full") is kernel.activate("full")
    kernel.shutdown()


def test_failed_boot_leaves_nothing_registered(plugin_dir):
    src = simple_plugin("half", ("one", "two")).replace(
        "        ctx.register_command(cmd_1, 'two')",
        "        ctx.register_command(cmd_1, 'two')\n        raise RuntimeError('late')",
    )
    write(plugin_dir, "half.py", src)
    kernel = make_kernel()
    with pytest.raises(PluginLoadError, match="failed to boot: RuntimeError: late"):
        kernel.activate("half")
    assert kernel.registry.owned_by("half") == []
    assert kernel.states["half"] == "failed"


def test_service_activates_its_provider_lazily(plugin_dir):
    _full_plugin(plugin_dir)
    kernel = make_kernel()
    assert kernel.states == {}
    assert kernel.service("greeter") == "hello service"
    assert kernel.states["full"] == "active"
    with pytest.raises(ConduitError, match="no plugin provides the service 'nope'"):
        kernel.service("nope")
    kernel.shutdown()


def test_two_providers_of_one_service_is_an_error(plugin_dir):
    _full_plugin(plugin_dir)
    kernel = make_kernel()
    kernel.activate("full")
    ctx = kernel.contexts["full"]
    with pytest.raises(PluginError, match="already provided by plugin 'full'"):
        ctx.register_service("greeter", lambda: None)
    kernel.shutdown()


def test_fake_host_receives_the_routed_command(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    seen: list[list[str]] = []
    host = FakeHost({"alpha": {"hello": lambda argv: seen.append(argv) or 7}})
    kernel = make_kernel(hosts={"in-process": host})
    assert kernel.run("alpha", ["hello", "--x"]) == 7
    assert seen == [["--x"]]
    kernel.shutdown()
    assert host.calls == [
        ("activate", "alpha", ()),
        ("run", "alpha", ("hello", "--x")),
        ("deactivate", "alpha", ()),
    ]
    assert "conduit_plugin_alpha" not in sys.modules  # the fake host imports nothing


class PreparingHost(FakeHost):
    """A fake host with the optional ``prepare_command()`` step."""

    def prepare_command(self) -> None:
        self.calls.append(("prepare", "", ()))


def test_run_prepares_the_host_before_activating_anything(plugin_dir):
    # the in-process host imports Click there, before any plugin code and the guard's
    # audit hook (docs/performance.md, "The cold command path")
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    toml = 'activation = ["startup"]'
    write(plugin_dir, "early.py", simple_plugin("early", ("other",), extra_toml=toml))
    host = PreparingHost({"alpha": {"hello": lambda argv: 0}})
    kernel = make_kernel(hosts={"in-process": host})
    assert kernel.run("alpha", ["hello"]) == 0
    kernel.shutdown()
    assert host.calls[:3] == [
        ("prepare", "", ()),
        ("activate", "early", ()),
        ("activate", "alpha", ()),
    ]
    assert [c for c in host.calls if c[0] == "prepare"] == [("prepare", "", ())]


def test_a_plugin_that_cannot_be_activated_is_not_prepared_for(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    host = PreparingHost({"alpha": {"hello": lambda argv: 0}})
    kernel = make_kernel(hosts={"in-process": host}, disabled=["alpha"])
    with pytest.raises(PluginLoadError, match="plugin is disabled"):
        kernel.run("alpha", ["hello"])
    assert host.calls == []


def test_a_run_without_activation_events_does_not_import_the_evaluator(plugin_dir):
    import subprocess

    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    code = (
        "import sys\n"
        "from conduit.indexer.build import load\n"
        "from conduit.kernel.core import Kernel\n"
        "from conduit.paths import resolve\n"
        "from conduit.timing import Profile\n"
        "paths = resolve()\n"
        "kernel = Kernel(load(paths, Profile(False)), paths)\n"
        "kernel.run('alpha', ['hello'])\n"
        "kernel.shutdown()\n"
        "print('conduit.kernel.activation' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["alpha", "hello", "False"]


def test_python_source_cannot_run_in_the_wasm_host(plugin_dir):
    write(plugin_dir, "iso.py", simple_plugin("iso", ("x",), extra_toml='isolation = "wasm"'))
    kernel = make_kernel()
    with pytest.raises(PluginLoadError, match="isolation 'wasm' needs a WebAssembly module"):
        kernel.activate("iso")


def test_disabled_plugin_cannot_be_activated(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    kernel = make_kernel(disabled={"alpha"})
    with pytest.raises(PluginLoadError, match="plugin is disabled"):
        kernel.activate("alpha")


def test_entry_may_name_a_class_or_an_instance(plugin_dir):
    from _factory import manifest_block

    body = (
        "import click\nfrom conduit.sdk import Plugin\n"
        "@click.command()\ndef hi():\n    click.echo('inst')\n"
        "class P(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(hi)\n"
        "plugin = P()\n"
    )
    toml = 'name = "inst"\napi = ">=1.0,<2"\nentry = "plugin"\n[[commands]]\nname = "hi"'
    write(plugin_dir, "inst.py", manifest_block(toml) + body)
    kernel = make_kernel()
    kernel.activate("inst")
    assert "command hi" in kernel.registry.owned_by("inst")
    kernel.shutdown()


def test_sdk_plugin_base_requires_boot():
    class Nothing(Plugin):
        pass

    with pytest.raises(NotImplementedError, match="must implement boot"):
        Nothing().boot(None)  # type: ignore[arg-type]
    Nothing().shutdown()


def test_the_kernel_provides_conduit_admin_to_built_ins_only(plugin_dir):
    from conduit.kernel.admin import Admin

    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    kernel = make_kernel(disabled={"devtools"})
    admin = kernel.service("conduit.admin")  # the kernel's own caller: no plugin asks
    assert isinstance(admin, Admin)
    assert admin.index is kernel.index
    assert admin.disabled == frozenset({"devtools"})
    assert kernel.service("conduit.admin", for_plugin="plugins") is admin
    assert kernel.activate("plugins").service("conduit.admin", Admin) is admin
    third_party = kernel.activate("alpha")
    with pytest.raises(PluginError) as info:
        third_party.service("conduit.admin")
    assert info.value.message == (
        "plugin 'alpha': service 'conduit.admin' is reserved for Conduit's built-in plugins"
    )
    assert info.value.hint == "it belongs to Conduit itself; a third-party plugin cannot use it"
    with pytest.raises(PluginError) as info:
        kernel.service("conduit.admin", for_plugin="nobody")
    assert info.value.plugin == "nobody"
    assert kernel.registry.owned_by("alpha") == ["command hello"]
    kernel.shutdown()
    assert kernel.service("conduit.admin") is admin  # the kernel's, not a plugin's


def test_a_plugin_may_provide_and_use_a_service_named_conduit_dot(plugin_dir):
    """Only the services the kernel provides itself are refused: a plugin's own service is
    served to every plugin, whatever its name (API 1.3 behaviour, kept in 1.4)."""
    from _factory import manifest_block

    clock = (
        "from conduit.sdk import Plugin\n"
        "class Clock(Plugin):\n"
        "    def boot(self, ctx):\n"
        "        ctx.register_service('conduit.clock', lambda: 'noon')\n"
    )
    write(
        plugin_dir,
        "clock.py",
        manifest_block(
            'name = "clock"\napi = ">=1.0,<2"\n[provides]\nservices = ["conduit.clock"]\n'
        )
        + clock,
    )
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    kernel = make_kernel()
    assert kernel.activate("alpha").service("conduit.clock") == "noon"
    kernel.shutdown()


def test_admin_times_a_plugin_in_a_kernel_of_its_own(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    write(
        plugin_dir,
        "bad.py",
        simple_plugin("bad", ("oops",), boot_prefix="        raise RuntimeError('no')\n"),
    )
    kernel = make_kernel()
    admin = kernel.service("conduit.admin")
    load = admin.measure_load("alpha")
    assert isinstance(load, dict)
    assert sorted(load) == ["boot_ms", "import_ms", "total_ms"]
    assert load["total_ms"] >= load["import_ms"] + load["boot_ms"] - 0.01
    assert "alpha" not in kernel.states  # timed elsewhere: this kernel did not load it
    assert admin.measure_load("bad") == "plugin 'bad': failed to boot: RuntimeError: no"
    rebuilt = admin.rebuild()
    assert rebuilt is not kernel.index
    assert sorted(rebuilt["plugins"]) == sorted(kernel.index["plugins"])

"""The hot-reload engine of ``conduit dev`` (conduit.kernel.reload), driven directly: real
plugins from source files, a real kernel, in-process and process hosts."""

from __future__ import annotations

import gc
import os
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from _wasmbuild import build_cache, copy_example, seed_cache
from conduit.errors import ConduitError
from conduit.kernel.reload import Reloader
from conduit.paths import resolve

from _factory import manifest_block, simple_plugin

#: a plugin with two commands, a service, a hookspec with an implementation, an event
#: listener (after_command), a non-daemon thread and an open file, both released by
#: ctx.on_dispose(); VERSION changes at each edit
LEAKY = manifest_block(
    """
    name = "leaky"
    api = ">=1.6,<2"
    description = "Registers one of everything"
    provides = { services = ["leaky.clock"], hooks = ["leaky_ping"] }

    [[commands]]
    name = "leaky"
    help = "Print the version."

    [[commands]]
    name = "leaky other"
    help = "Another one."
    """
) + textwrap.dedent(
    """
    import os
    import threading

    import click
    from conduit.sdk import Plugin

    VERSION = "v0"


    @click.group()
    def leaky():
        pass


    @leaky.command()
    def show():
        click.echo(f"leaky {VERSION}")


    @click.command()
    def other():
        click.echo("other")


    def leaky_ping():
        "Answer a ping."


    class Clock:
        def now(self):
            return VERSION


    class Leaky(Plugin):
        def boot(self, ctx):
            ctx.register_command(leaky)
            ctx.register_command(other, "leaky other")
            ctx.register_service("leaky.clock", Clock)
            ctx.register_hookspec(leaky_ping)
            ctx.register_hook("leaky_ping", lambda: f"pong {VERSION}")
            ctx.register_hook("after_command", lambda command: print(f"after {command}"))
            stop = threading.Event()
            worker = threading.Thread(target=stop.wait, name="leaky-worker")
            worker.start()
            log = open(__file__, encoding="utf-8")

            def dispose():
                stop.set()
                worker.join()

            ctx.on_dispose(dispose)
            ctx.on_dispose(log.close)
    """
)


def _edit(path: Path, version: str) -> None:
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition('VERSION = "')
    path.write_text(head + f'VERSION = "{version}"' + rest.partition('"')[2], encoding="utf-8")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _sizes(reloader: Reloader) -> tuple[int, int, int, int, int]:
    assert reloader.kernel is not None
    reg = reloader.kernel.registry
    return (
        len(reg.commands),
        len(reg.services),
        sum(len(v) for v in reg.hooks.values()),
        len(reg.hookspecs),
        len(reloader.kernel.contexts),
    )


@pytest.fixture
def reloader_of(tmp_path: Path) -> Iterator[object]:
    made: list[Reloader] = []

    def make(*targets: Path) -> Reloader:
        reloader = Reloader([str(t) for t in targets], resolve(), thread_grace=0.5)
        made.append(reloader)
        return reloader

    yield make
    for reloader in made:
        reloader.close()


def test_two_hundred_reloads_leak_nothing(
    tmp_path: Path, reloader_of: object, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "leaky.py"
    source.write_text(LEAKY, encoding="utf-8")
    reloader: Reloader = reloader_of(source)  # type: ignore[operator]
    report = reloader.start()
    assert report.ok and report.loaded == ["leaky"], report.errors
    kernel = reloader.kernel
    assert kernel is not None
    sizes = _sizes(reloader)
    assert sizes == (2, 2, 2, 1, 1)  # services: its own and the kernel's conduit.admin
    assert "leaky.clock" in kernel.registry.services
    threads, fds = threading.active_count(), _fds()
    tracemalloc.start()
    try:
        baseline = None
        for i in range(1, 201):
            _edit(source, f"v{i}")
            report = reloader.reload([str(source)])
            assert report.ok and report.loaded == ["leaky"], (i, report.errors, report.notes)
            assert not report.notes, report.notes
            assert _sizes(reloader) == sizes
            # the hook fires once per call, in the new version
            assert kernel.hook("leaky_ping", raise_errors=True) == [f"pong v{i}"]
            assert kernel.service("leaky.clock").now() == f"v{i}"
            assert threading.active_count() == threads
            assert _fds() == fds
            if i % 50 == 0:
                assert reloader.run(["leaky", "show"]) == 0
                out = capsys.readouterr().out
                assert out == f"leaky v{i}\nafter leaky\n"  # one listener call per command
            if i == 20:  # caches warmed: measure from here
                gc.collect()
                baseline = tracemalloc.take_snapshot()
        gc.collect()
        assert baseline is not None
        grown = sum(
            s.size_diff for s in tracemalloc.take_snapshot().compare_to(baseline, "filename")
        )
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, f"{grown} bytes more after 180 reloads"
    assert reloader.close() == []
    assert threading.active_count() == threads - 1  # its worker joined at shutdown
    assert _fds() == fds - 1  # and its file closed


def test_a_manifest_error_keeps_the_previous_version(tmp_path: Path, reloader_of: object) -> None:
    source = tmp_path / "hello.py"
    source.write_text(simple_plugin("hello", output="one"), encoding="utf-8")
    reloader: Reloader = reloader_of(source)  # type: ignore[operator]
    assert reloader.start().ok
    source.write_text(
        simple_plugin("hello", output="two").replace("api =", "apo ="), encoding="utf-8"
    )
    report = reloader.reload([str(source)])
    assert not report.ok and report.loaded == []
    assert "apo: unknown field" in report.errors[0].message
    assert reloader.kernel is not None
    assert reloader.kernel.states["hello"] == "active"  # still serving, version one
    source.write_text(simple_plugin("hello", output="three"), encoding="utf-8")
    assert reloader.reload([str(source)]).loaded == ["hello"]


def test_dependants_reload_after_what_they_require(
    tmp_path: Path, reloader_of: object, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.py"
    base.write_text(
        simple_plugin(
            "base",
            ("base",),
            extra_toml='provides = { services = ["base.value"] }',
            boot_prefix='        ctx.register_service("base.value", lambda: VALUE)\n',
            module_prefix='\nVALUE = "b1"\n',
        ),
        encoding="utf-8",
    )
    user = tmp_path / "user.py"
    user.write_text(
        simple_plugin(
            "user",
            ("user",),
            extra_toml='requires = { plugins = ["base"] }',
            boot_prefix='        print("user boots with", ctx.service("base.value"))\n',
        ),
        encoding="utf-8",
    )
    other = tmp_path / "other.py"
    other.write_text(simple_plugin("other", ("other",)), encoding="utf-8")
    reloader: Reloader = reloader_of(base, user, other)  # type: ignore[operator]
    assert reloader.start().ok
    assert "user boots with b1" in capsys.readouterr().out
    base.write_text(base.read_text().replace('"b1"', '"b2"'), encoding="utf-8")
    report = reloader.reload([str(base)])
    assert report.ok
    assert report.loaded == ["base", "user"]  # not `other`; `user` after `base`
    assert "user boots with b2" in capsys.readouterr().out


def test_a_plugin_leaving_a_thread_running_is_held(tmp_path: Path, reloader_of: object) -> None:
    marker = tmp_path / "stop-now"
    source = tmp_path / "sticky.py"
    waits = f"""
import threading, time, pathlib

def _wait():
    while not pathlib.Path({str(marker)!r}).exists():
        time.sleep(0.01)
"""
    source.write_text(
        simple_plugin(
            "sticky",
            ("sticky",),
            module_prefix=waits,
            boot_prefix='        threading.Thread(target=_wait, name="sticky-loop").start()\n',
        ),
        encoding="utf-8",
    )
    reloader: Reloader = reloader_of(source)  # type: ignore[operator]
    assert reloader.start().ok
    report = reloader.reload([str(source)])
    assert report.loaded == []
    (error,) = report.errors
    assert error.message == (
        "plugin 'sticky': left 1 non-daemon thread(s) running after its shutdown "
        "('sticky-loop'); it stays unloaded until they end"
    )
    assert error.hint is not None and "ctx.on_dispose()" in error.hint
    assert reloader.kernel is not None
    assert reloader.kernel.states["sticky"] == "inactive"
    with pytest.raises(ConduitError, match="stays unloaded"):
        reloader.run(["sticky"])
    marker.touch()  # the old thread ends; the next save loads the plugin again
    for thread in threading.enumerate():
        if thread.name == "sticky-loop":
            thread.join()
    marker.unlink()
    source.write_text(source.read_text().replace(".start()", ".daemon"))
    report = reloader.reload([str(source)])
    assert report.loaded == ["sticky"], (report.errors, report.notes)
    assert reloader.run(["sticky"]) == 0


def test_disposers_run_newest_first_and_one_failing_stops_none(
    tmp_path: Path, reloader_of: object, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "disp.py"
    boot = (
        '        ctx.on_dispose(lambda: print("first"))\n'
        "        ctx.on_dispose(lambda: 1 / 0)\n"
        '        ctx.on_dispose(lambda: print("third"))\n'
    )
    source.write_text(simple_plugin("disp", ("disp",), boot_prefix=boot), encoding="utf-8")
    reloader: Reloader = reloader_of(source)  # type: ignore[operator]
    assert reloader.start().ok
    report = reloader.reload([str(source)])
    assert report.ok
    assert capsys.readouterr().out == "third\nfirst\n"
    (note,) = report.notes
    assert note.startswith("plugin 'disp': disposer ")
    assert note.endswith("failed: ZeroDivisionError: division by zero")


def test_an_interrupted_disposer_leaves_no_registration_behind(
    tmp_path: Path, reloader_of: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C (or sys.exit()) in a disposer: the other disposers and undos still run and
    the plugin is inactive, so that `conduit dev` ends cleanly (no KeyError at close)."""
    source = tmp_path / "intr.py"
    boot = (
        '        ctx.on_dispose(lambda: print("first"))\n'
        "        ctx.on_dispose(_interrupt)\n"
        '        ctx.on_dispose(lambda: print("third"))\n'
    )
    interrupt = "def _interrupt():\n    raise KeyboardInterrupt\n"
    source.write_text(
        simple_plugin("intr", ("intr",), boot_prefix=boot, module_prefix=interrupt),
        encoding="utf-8",
    )
    reloader: Reloader = reloader_of(source)  # type: ignore[operator]
    assert reloader.start().ok
    kernel = reloader.kernel
    assert kernel is not None
    assert len(kernel.registry.commands) == 1
    with pytest.raises(KeyboardInterrupt):
        reloader.reload([str(source)])
    assert capsys.readouterr().out == "third\nfirst\n"
    assert kernel.states["intr"] == "inactive"
    assert len(kernel.registry.commands) == 0
    assert "intr" not in kernel.contexts
    assert reloader.close() == []


@pytest.mark.parametrize("template", [False, True], ids=["exec", "template"])
def test_a_process_plugin_gets_a_new_host(tmp_path: Path, template: bool) -> None:
    source = tmp_path / "proc.py"
    source.write_text(
        simple_plugin(
            "proc",
            ("proc",),
            extra_toml='isolation = "process"',
            module_prefix="import os",
            boot_prefix="        mark = os.path.join(ctx.data_dir, 'disposed')\n"
            "        ctx.on_dispose(lambda: open(mark, 'w').close())\n",
        ),
        encoding="utf-8",
    )
    reloader = Reloader([str(source)], resolve(), template=template)
    try:
        _process_reload(reloader)
    finally:
        assert reloader.close() == []
    from conduit.hosts import process

    assert process.TEMPLATE is None


def test_a_failing_disposer_in_a_process_host_is_printed_inert(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The host's warning carries the plugin's exception text: escaped, not raw."""
    source = tmp_path / "esc.py"
    raising = 'def _fail():\n    raise ValueError("\\x1b[31mred\\x1b]0;title\\x07")\n'
    source.write_text(
        simple_plugin(
            "esc",
            ("esc",),
            extra_toml='isolation = "process"',
            module_prefix=raising,
            boot_prefix="        ctx.on_dispose(_fail)\n",
        ),
        encoding="utf-8",
    )
    reloader = Reloader([str(source)], resolve())
    try:
        assert reloader.start().ok
        assert reloader.reload([str(source)]).ok
    finally:
        reloader.close()
    err = capfd.readouterr().err
    assert "disposer _fail failed: ValueError: \\x1b[31mred\\x1b]0;title\\x07\n" in err
    assert "\x1b" not in err and "\x07" not in err


def _process_reload(reloader: Reloader) -> None:
    assert reloader.start().ok
    kernel = reloader.kernel
    assert kernel is not None
    first = kernel.host_for(kernel.index["plugins"]["proc"])
    pid = first.proc.pid  # type: ignore[attr-defined]
    report = reloader.reload()
    assert report.ok, report.errors
    second = kernel.host_for(kernel.index["plugins"]["proc"])
    assert second.proc.pid != pid  # type: ignore[attr-defined]
    # its disposer ran in its process, which may write only its data directory
    assert os.path.exists(os.path.join(resolve().plugin_data("proc"), "disposed"))


def _project_files(project: Path, package: Path, about: str = "", command: str = "") -> None:
    """A project's pyproject.toml (its plugin, named as ``package``, an entry point) and
    the package's manifest with one command of that name; ``about`` and ``command``: more
    lines of the manifest's top and of its command."""
    name = package.name
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0.1.0"\n\n'
        f'[project.entry-points."conduit.plugins"]\n{name} = "{name}:ThePlugin"\n',
        encoding="utf-8",
    )
    (package / "conduit-plugin.toml").write_text(
        f'name = "{name}"\napi = ">=1.0,<2"\n{about}\n[[commands]]\nname = "{name}"\n{command}',
        encoding="utf-8",
    )


def test_a_package_plugin_reloads_its_submodules(tmp_path: Path, reloader_of: object) -> None:
    project = tmp_path / "proj"
    package = project / "src" / "pkgplug"
    package.mkdir(parents=True)
    _project_files(project, package, 'description = "A package"\n', 'help = "Print the word."\n')
    (package / "words.py").write_text('WORD = "alpha"\n', encoding="utf-8")
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            import click
            from conduit.sdk import Plugin

            from pkgplug.words import WORD


            @click.command()
            def pkgplug():
                click.echo(WORD)


            class ThePlugin(Plugin):
                def boot(self, ctx):
                    ctx.register_command(pkgplug)
            """
        ),
        encoding="utf-8",
    )
    reloader: Reloader = reloader_of(project)  # type: ignore[operator]
    assert reloader.start().ok
    assert reloader.affected([str(package / "words.py")])
    assert not reloader.affected([str(tmp_path / "elsewhere.py")])
    (package / "words.py").write_text('WORD = "beta"\n', encoding="utf-8")
    report = reloader.reload([str(package / "words.py")])
    assert report.loaded == ["pkgplug"], report.errors
    assert sys.modules["pkgplug.words"].WORD == "beta"


def test_a_project_does_not_shadow_the_standard_library(
    tmp_path: Path, reloader_of: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flat project's root joins sys.path after the standard library: its own
    colorsys.py (queue.py, types.py...) does not replace the module that Conduit, or
    another plugin, imports later; an installed copy of the plugin still comes after."""
    project = tmp_path / "flat"
    package = project / "flatplug"
    package.mkdir(parents=True)
    _project_files(project, package)
    (package / "__init__.py").write_text(
        "from conduit.sdk import Plugin\n\n\nclass ThePlugin(Plugin):\n"
        "    def boot(self, ctx):\n        pass\n",
        encoding="utf-8",
    )
    (project / "colorsys.py").write_text("SHADOW = True\n", encoding="utf-8")
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    reloader: Reloader = reloader_of(project)  # type: ignore[operator]
    assert reloader.start().ok
    import colorsys

    assert not hasattr(colorsys, "SHADOW"), colorsys.__file__
    site_packages = os.path.dirname(os.path.dirname(os.path.abspath(__import__("click").__file__)))
    assert sys.path.index(str(project)) < sys.path.index(site_packages)


def test_a_source_does_not_take_an_installed_plugins_unbound_grants(tmp_path: Path) -> None:
    """Grants not yet bound to an identity (an older config) belong to the installed
    plugin of that name: a source of the same name loaded by `conduit dev` is asked
    (here: refused, no terminal) and does not bind them to itself."""
    paths = resolve()
    os.makedirs(paths.plugin_dir, exist_ok=True)
    Path(paths.plugin_dir, "foo.py").write_text(simple_plugin("foo", ("foo",)), encoding="utf-8")
    Path(paths.config_file).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.config_file).write_text('[grants]\nfoo = ["env:read"]\n', encoding="utf-8")
    source = tmp_path / "foo.py"
    source.write_text(
        simple_plugin("foo", ("foo",), extra_toml='capabilities = ["env:read"]'),
        encoding="utf-8",
    )
    reloader = Reloader([str(source)], resolve())
    try:
        report = reloader.start()
    finally:
        reloader.close()
    assert [type(e).__name__ for e in report.errors] == ["NotGranted"], report
    assert Path(paths.config_file).read_text(encoding="utf-8") == '[grants]\nfoo = ["env:read"]\n'


def _printing_module(text: str) -> bytes:
    """A WASI command module that prints ``text`` and a newline."""
    wasmtime = pytest.importorskip("wasmtime")
    line = text + "\n"
    return wasmtime.wat2wasm(
        f"""(module
 (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
 (memory (export "memory") 1)
 (data (i32.const 100) "{text}\\0a")
 (func (export "_start")
   (i32.store (i32.const 0) (i32.const 100))
   (i32.store (i32.const 4) (i32.const {len(line)}))
   (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
    )


WASM_MANIFEST = 'name = "wgreet"\napi = ">=1.0"\n\n[[commands]]\nname = "wgreet"\nhelp = "Greet."\n'


def test_a_webassembly_source_is_rebuilt_and_its_module_swapped(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A prebuilt plugin.wasm swapped for another: built again with 'plugins build''s
    build, compiled with the same engine, served; a module wasmtime refuses or a manifest
    error is one line and the previous module keeps serving."""
    from conduit.builtins.plugins import build_wasm
    from conduit.hosts.wasm.runtime import WasmSettings, runtime

    source = tmp_path / "wgreet"
    source.mkdir()
    manifest = source / "conduit-plugin.toml"
    manifest.write_text(WASM_MANIFEST, encoding="utf-8")
    wasm = source / "plugin.wasm"
    wasm.write_bytes(_printing_module("one"))
    reloader = Reloader([str(source)], resolve(), build_wasm=build_wasm)
    try:
        report = reloader.start()
        assert report.ok and report.loaded == ["wgreet"] and list(report.built) == ["wgreet"]
        assert reloader.kernel is not None
        assert reloader.kernel.index["plugins"]["wgreet"]["isolation"] == "wasm"
        engine = runtime(WasmSettings(), resolve().cache_dir).engine
        assert reloader.run(["wgreet"]) == 0
        assert capfd.readouterr().out == "one\n"
        assert reloader.affected([str(wasm)]) and not reloader.affected([str(source / "x.c")])

        wasm.write_bytes(_printing_module("two"))  # the same size: a new build is told apart
        report = reloader.reload([str(wasm)])
        assert report.ok and report.loaded == ["wgreet"] and list(report.built) == ["wgreet"]
        assert reloader.run(["wgreet"]) == 0
        assert capfd.readouterr().out == "two\n"
        assert runtime(WasmSettings(), resolve().cache_dir).engine is engine  # reused

        wasm.write_bytes(b"\0asm\x01\0\0\0 not a module")
        report = reloader.reload([str(wasm)])
        assert not report.ok and report.loaded == []
        assert "not a valid WebAssembly module" in report.errors[0].message
        assert "\n" not in report.errors[0].message
        assert reloader.run(["wgreet"]) == 0
        assert capfd.readouterr().out == "two\n"  # the previous module keeps serving

        wasm.write_bytes(_printing_module("three"))
        manifest.write_text(WASM_MANIFEST.replace("api =", "apo ="), encoding="utf-8")
        report = reloader.reload([str(manifest)])
        assert not report.ok and report.loaded == []
        assert "apo: unknown field" in report.errors[0].message
        assert reloader.run(["wgreet"]) == 0
        assert capfd.readouterr().out == "two\n"

        manifest.write_text(WASM_MANIFEST, encoding="utf-8")
        assert reloader.reload([str(manifest)]).loaded == ["wgreet"]
        assert reloader.run(["wgreet"]) == 0
        assert capfd.readouterr().out == "three\n"
        build_root = reloader._build_root
        assert build_root is not None and len(os.listdir(build_root)) == 1  # old builds gone
    finally:
        reloader.close()
    assert not os.path.exists(build_root)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_python_component_is_rebuilt_with_componentize_py(
    tmp_path: Path, conduit_home: Path, pyhash_built: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """app.py built with componentize-py (``plugins build``'s build): an error in it is
    componentize-py's last line, on one line, and the previous component keeps serving;
    the source made the same again is the module built before (the build cache).

    The first build is of the session's pyhash (``pyhash_built``, tests/_wasmbuild.py),
    whose module and artifact seed this home's cache: it takes the module built before, as
    the rebuild does; the broken build runs componentize-py."""
    pytest.importorskip("wasmtime")
    from conduit.builtins.plugins import build_wasm

    seed_cache(conduit_home, pyhash_built, compiled=True)
    source = copy_example(tmp_path / "pyhash")
    # granted in the config, not asked for (the source stays the one built)
    (conduit_home / "config.toml").write_text(
        '[grants]\npyhash = ["filesystem:read:${workspace}"]\n', encoding="utf-8"
    )
    app = source / "app.py"
    good = app.read_text(encoding="utf-8")
    reloader = Reloader([str(source)], resolve(), build_wasm=build_wasm)
    try:
        report = reloader.start()
        assert report.loaded == ["pyhash"], [e.message for e in report.errors]
        assert reloader.run(["pyhash", "-h"]) == 0
        assert capfd.readouterr().out.startswith("usage: conduit pyhash")
        cached = [p.name for p in build_cache(pyhash_built)]
        assert [p.name for p in build_cache(conduit_home)] == cached  # the module built before

        app.write_text(good + "\ndef broken(:\n", encoding="utf-8")
        report = reloader.reload([str(app)])
        assert not report.ok and report.loaded == []
        message = report.errors[0].message
        assert message.startswith(f"componentize-py could not build {app} (exit ")
        assert "SyntaxError" in message and "\n" not in message
        assert capfd.readouterr().out == ""  # its output is in the error, not printed
        assert reloader.run(["pyhash", "-h"]) == 0
        assert capfd.readouterr().out.startswith("usage: conduit pyhash")

        app.write_text(good, encoding="utf-8")
        report = reloader.reload([str(app)])
        assert report.loaded == ["pyhash"] and list(report.built) == ["pyhash"]
        assert reloader.run(["pyhash", "-h"]) == 0
        assert capfd.readouterr().out.startswith("usage: conduit pyhash")
        assert [p.name for p in build_cache(conduit_home)] == cached
    finally:
        reloader.close()

"""Start-up stays lean: what ``conduit --help`` and a command import, checked in a fresh
interpreter through ``sys.modules`` (timing belongs in benchmarks/, not here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conduit

from _factory import imported_by, simple_plugin, write

# Never on the start-up path: each costs more than the rest of start-up together.
FORBIDDEN_AT_STARTUP = {
    "click",
    "pluggy",
    "importlib.metadata",
    "msgspec",
    "tomllib",
    "tomlkit",
    "typing",
    "re",
    "pathlib",
    "json",
    "platformdirs",
    "filelock",
    "packaging",
    "conduit.kernel",
    "conduit.manifest",
    "conduit.indexer",
    "conduit.sdk",
}


def probe(*args: str, command: bool = False) -> tuple[int, set[str]]:
    return imported_by(*args, watch_kernel=command)


def test_help_imports_no_plugin_and_no_heavy_module(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    probe("--help")  # the first run builds the index
    code, new = probe("--help")
    assert code == 0
    assert not new & FORBIDDEN_AT_STARTUP, sorted(new & FORBIDDEN_AT_STARTUP)
    assert not [m for m in new if m.startswith("conduit_plugin_")]
    assert not [m for m in new if m.startswith("conduit.builtins")]
    # The whole start-up path is Conduit's own stdlib-only modules plus marshal.
    outside = {m for m in new if not m.startswith("conduit")} - {"marshal", "__future__"}
    assert not outside, sorted(outside)
    # ... and only these of Conduit's: the error tree comes on the error path only.
    assert {m for m in new if m.startswith("conduit")} == {
        "conduit",
        "conduit.cli",
        "conduit.index",
        "conduit.paths",
        "conduit.timing",
    }


def test_completion_imports_nothing_heavy(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    probe("--help")
    code, new = probe("__complete", "he")
    assert code == 0
    assert not new & FORBIDDEN_AT_STARTUP
    assert "conduit.errors" not in new


@pytest.mark.parametrize(
    "words",
    [
        ("he",),
        ("alpha:",),
        ("plugins", "info", ""),
        ("hello", "--"),
        ("plugins", "graph", "--format", ""),
    ],
)
def test_completion_imports_what_help_imports(plugin_dir, words):
    """Plugin names, options and option values come from the index: completing them
    imports nothing that `--help` does not."""
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    probe("--help")
    _, for_help = probe("--help")
    code, new = probe("__complete", *words)
    assert code == 0
    assert new <= for_help, sorted(new - for_help)


def test_an_unknown_command_imports_the_error_tree_to_say_so(plugin_dir):
    probe("--help")
    code, new = probe("nosuchcommand")
    assert code == 2
    assert "conduit.errors" in new
    assert not new & (FORBIDDEN_AT_STARTUP - {"difflib"})


def test_command_imports_only_its_plugin(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    write(plugin_dir, "beta.py", simple_plugin("beta", ("other",)))
    probe("--help")
    code, new = probe("hello", command=True)
    assert code == 0
    assert "conduit_plugin_alpha" in new
    assert "conduit_plugin_beta" not in new
    assert not [m for m in new if m.startswith("conduit.builtins.")]
    # Routing a command still needs no metadata scan, manifest parsing or msgspec.
    assert not [m for m in new if m == "conduit.indexer" or m.startswith("conduit.indexer.")]
    assert not new & {"importlib.metadata", "msgspec", "tomllib"}
    # The guard answers Click's and gettext's environment look-ups (LANG, LC_ALL, ...)
    # without building an error for each ungranted one: no shlex for grant commands.
    assert "shlex" not in new
    # ... and a plugin that holds no grant needs no grants module.
    assert "conduit.security.grants" not in new


# What a routed command imports before its plugin, and what every command's kernel imports:
# nothing a process or WebAssembly command would pay for without needing it (Click brings
# its own, on the in-process path).
KERNEL_COMMAND_PATH = (
    "conduit.cli",
    "conduit.errors",
    "conduit.kernel.core",
    "conduit.kernel.activation",
    "conduit.hosts.inprocess",
    "conduit.runlog",
    "conduit.sdk",
    "conduit.style",
)
NOT_ON_THE_KERNEL_PATH = {
    "typing",
    "contextlib",
    "re",
    "collections",
    "collections.abc",
    "enum",
    "functools",
    "importlib.util",
    "fnmatch",
}


def test_the_kernel_imports_no_typing_contextlib_or_re():
    code = f"import sys, {', '.join(KERNEL_COMMAND_PATH)}; print(*sorted(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    assert not loaded & NOT_ON_THE_KERNEL_PATH, sorted(loaded & NOT_ON_THE_KERNEL_PATH)


def entry_point_plugin(site: Path, name: str = "synth-ep") -> None:
    """A trivial installed plugin, as a wheel leaves it: a package with its manifest and a
    ``.dist-info`` with the entry point (``site`` goes on PYTHONPATH)."""
    module = name.replace("-", "_")
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(
        "import sys\n"
        "CLICK_FIRST = 'click' in sys.modules\n"
        "import gc\n"
        "import click\n"
        "from conduit.sdk import Plugin\n\n\n"
        f"@click.command({name!r})\n"
        "def cmd():\n"
        "    click.echo(f'ok {CLICK_FIRST} {gc.get_freeze_count() > 0}')\n\n\n"
        "class P(Plugin):\n"
        "    def boot(self, ctx):\n"
        "        ctx.register_command(cmd)\n",
        encoding="utf-8",
    )
    (site / module / "conduit-plugin.toml").write_text(
        f'name = "{name}"\napi = ">=1.0,<2"\n\n[[commands]]\nname = "{name}"\nhelp = "ok"\n',
        encoding="utf-8",
    )
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[conduit.plugins]\n{name} = {module}:P\n", encoding="utf-8"
    )


MODULES_AFTER = """
import sys
SCRIPT
sys.stdout.flush()
print("\\n@@", *sorted(sys.modules))
"""

ROUTED = """
from conduit.cli import main
main(sys.argv[1:])
"""

CLICK_SCRIPT = """
import click

@click.command("synth-ep")
def cmd():
    click.echo("ok")

try:
    cmd()
except SystemExit:
    pass
"""


def modules_after(script: str, *args: str, env: dict[str, str]) -> tuple[str, set[str]]:
    """Run ``script`` in a fresh interpreter: its output and every module it imported."""
    proc = subprocess.run(
        [sys.executable, "-c", MODULES_AFTER.replace("SCRIPT", script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    out, _, modules = proc.stdout.rpartition("\n@@")
    assert modules, proc.stderr
    return out, set(modules.split())


def test_a_routed_plugin_command_imports_only_what_a_click_script_does(tmp_path):
    """A trivial in-process Click command of an installed plugin imports what the same
    command as a standalone Click script imports, Conduit's own modules, the plugin, and
    ``gc`` (built in): no typing/contextlib/re of its own, no importlib.util (the guard's
    look-up of the plugin's files), no grammar of grants, no activation module when no
    plugin declared an activation event, no colour module without --color."""
    site = tmp_path / "site"
    entry_point_plugin(site)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    modules_after(ROUTED, "--help", env=env)  # builds the index
    out, routed = modules_after(ROUTED, "synth-ep", env=env)
    assert out.startswith("ok "), out
    _, script = modules_after(CLICK_SCRIPT, env=env)
    extra = {m for m in routed - script if not m.startswith(("conduit.", "synth_ep"))}
    assert extra <= {"conduit", "gc"}, sorted(extra)
    assert not routed & {
        "conduit.kernel.activation",
        "conduit.security.capabilities",
        "conduit.style",
    }, sorted(m for m in routed if m.startswith("conduit."))


def test_click_is_imported_before_the_plugin_under_a_frozen_collector(tmp_path):
    """The in-process host imports Click before the plugin's code runs under the guard's
    audit hook (with any audit hook CPython copies each unmarshalled .pyc), with the
    collector held off, then frozen (docs/performance.md)."""
    site = tmp_path / "site"
    entry_point_plugin(site)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    modules_after(ROUTED, "--help", env=env)
    out, _ = modules_after(ROUTED, "synth-ep", env=env)
    assert out.strip() == "ok True True"


def test_the_entry_point_group_is_cheap_to_import():
    # Defined once in conduit.indexer.discover; the authoring tools and the store import
    # it from there without the manifest parser, msgspec or a metadata scan.
    code = "import sys, conduit.authoring, conduit.indexer.discover; print(*sorted(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    assert "conduit.indexer.discover" in loaded
    heavy = {"importlib.metadata", "msgspec", "click", "conduit.manifest", "conduit.sdk"}
    heavy |= {"conduit.builtins", "conduit.index", "conduit.indexer.build"}
    assert not loaded & heavy, sorted(loaded & heavy)


COUNT_RECORDS = """
import sys
loads = []
def hook(event, args):  # count data, not the code objects of imported .pyc files
    if event == "marshal.loads" and bytes(args[0][:1]) != b"\\xe3":
        loads.append(1)
sys.addaudithook(hook)
from conduit.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(f"\\n@@{code} {len(loads)}")
"""


def test_startup_decodes_only_the_records_it_needs(plugin_dir):
    """The index keeps each plugin record as its own blob: `--help` decodes none of them
    and a command decodes only its own plugin's, so start-up stays flat in N."""
    for i in range(40):
        write(plugin_dir, f"p{i:02d}.py", simple_plugin(f"p{i:02d}", (f"cmd{i:02d}",)))
    probe("--help")

    def count(*args: str) -> int:
        proc = subprocess.run(
            [sys.executable, "-c", COUNT_RECORDS, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy(),
        )
        code, loads = proc.stdout.rpartition("\n@@")[2].split()
        assert code == "0", proc.stderr
        return int(loads)

    assert count("--help") == 1  # the index header itself
    # completion of a command word reads the header's table of top-level words; of what
    # follows one, only that plugin's record (plugin names come from the header too)
    assert count("__complete", "cmd0") == 1
    assert count("__complete", "p03:") == 1
    assert count("__complete", "cmd07", "--") == 3
    assert count("__complete", "plugins", "info", "") == 3
    # header, the name table, and the routed plugin's record
    assert count("cmd07") == 3


# What a process plugin host has imported when its plugin's module runs: the host's own
# start-up is part of every process plugin's cold start (docs/performance.md).
HOST_FORBIDDEN = {
    "typing",
    "re",
    "enum",
    "json",
    "contextlib",
    "collections",
    "importlib.util",
    "signal",
    "msgspec",
    "click",
    "pluggy",
    "packaging",
    "conduit.kernel",
    "conduit.manifest",
}

PROBE = """\
# /// conduit
# name = "probe"
# api = ">=1.0,<2"
# isolation = "process"
# [provides]
# services = ["probe"]
# ///
import sys

from conduit.sdk import Plugin

SEEN = sorted(sys.modules)


class Probe:
    def modules(self):
        return SEEN

    def start(self):
        return {"no_site": sys.flags.no_site, "path": sys.path, "exit": exit is sys.exit}


class ProbePlugin(Plugin):
    def boot(self, ctx):
        ctx.register_service("probe", Probe)
"""


def test_process_host_imports_little_before_its_plugin(plugin_dir):
    from conduit.hosts.process import ServiceProxy
    from conduit.indexer.build import load
    from conduit.kernel import Kernel
    from conduit.paths import resolve
    from conduit.timing import Profile

    write(plugin_dir, "probe.py", PROBE)
    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths)
    try:
        probe = kernel.service("probe")
        assert isinstance(probe, ServiceProxy)  # it really is in a host process
        seen = set(probe.modules())
        start = probe.start()
    finally:
        kernel.shutdown()
    assert "conduit.sdk" in seen and "conduit.hosts._child" in seen
    assert not seen & HOST_FORBIDDEN, sorted(seen & HOST_FORBIDDEN)
    # started without site, with the kernel's sys.path (not "", the current directory)
    assert start["no_site"] == 1 and start["exit"]
    assert "" not in start["path"]
    assert os.path.dirname(os.path.dirname(conduit.__file__)) in start["path"]


def test_process_host_keeps_site_for_an_import_finder_from_a_pth_file(monkeypatch, tmp_path):
    # a setuptools editable install puts such a finder on sys.meta_path from a .pth file:
    # a child started without site would not find the package
    from conduit.hosts.process import _child_argv

    assert "-S" in _child_argv(str(tmp_path))
    finder = type("EditableFinder", (), {"__module__": "__editable___demo_1_0_finder"})()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    argv = _child_argv(str(tmp_path))
    assert "-S" not in argv and argv[1:] == ["-c", "from conduit.hosts._child import main; main()"]
    env_dir = os.path.join(str(tmp_path), "envs", "abc")
    monkeypatch.setattr(sys, "meta_path", sys.meta_path[1:])
    monkeypatch.setattr(sys, "path", [*sys.path, env_dir])
    assert env_dir not in _child_argv(str(tmp_path))  # a single-file plugin's own env


BYTECODE_PROBE = """\
# /// conduit
# name = "cached"
# api = ">=1.0,<2"
# isolation = "process"
# [provides]
# services = ["cached"]
# ///
from conduit.sdk import Plugin

VALUE = "A"


class Cached:
    def value(self):
        return VALUE


class CachedPlugin(Plugin):
    def boot(self, ctx):
        ctx.register_service("cached", Cached)
"""


def cached_value() -> str:
    """What the `cached` plugin's service answers, in a kernel of its own (its host a
    new process)."""
    from conduit.indexer.build import load
    from conduit.kernel import Kernel
    from conduit.paths import resolve
    from conduit.timing import Profile

    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths)
    try:
        return str(kernel.service("cached").value())
    finally:
        kernel.shutdown()


def test_process_host_runs_the_bytecode_the_kernel_compiled(plugin_dir, monkeypatch):
    # The host may not write next to the plugin, so the kernel writes the plugin's .pyc
    # where Python would and the host may read it: no compiling on every start. Shown
    # with a source changed behind the .pyc's back (same size, same mtime), which Python
    # does not notice: the host runs what the .pyc holds.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    path = write(plugin_dir, "cached.py", BYTECODE_PROBE)
    old = time.time() - 60  # (a source saved within two seconds gets no .pyc)
    os.utime(path, (old, old))

    assert cached_value() == "A"
    assert (plugin_dir / "__pycache__" / f"cached.{sys.implementation.cache_tag}.pyc").is_file()
    stat = path.stat()
    path.write_text(BYTECODE_PROBE.replace('VALUE = "A"', 'VALUE = "B"'), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cached_value() == "A"


def test_current_bytecode_is_not_loaded_again_for_the_host(plugin_dir, monkeypatch):
    # The kernel makes sure a process plugin's .pyc is current before its host may read
    # it: a current one is recognised from its header (0.3-0.5 ms of every command less
    # than loading it); a stale one (another mtime, another size) is written again.
    from importlib.machinery import SourceFileLoader

    from conduit.security import sandbox

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    path = write(plugin_dir, "cached.py", BYTECODE_PROBE)
    pyc = plugin_dir / "__pycache__" / f"cached.{sys.implementation.cache_tag}.pyc"
    old = time.time() - 60
    os.utime(path, (old, old))
    assert sandbox._bytecode(str(path)) == [str(pyc)]
    loaded = []
    real = SourceFileLoader.get_code
    monkeypatch.setattr(
        SourceFileLoader, "get_code", lambda self, name: loaded.append(name) or real(self, name)
    )
    assert sandbox._bytecode(str(path)) == [str(pyc)]
    assert loaded == []
    path.write_text(BYTECODE_PROBE.replace('VALUE = "A"', 'VALUE = "BB"'), encoding="utf-8")
    os.utime(path, (old + 1, old + 1))
    assert sandbox._bytecode(str(path)) == [str(pyc)]
    assert loaded == ["conduit_plugin"]
    source = path.stat()
    assert sandbox._current(str(pyc), source)
    assert int.from_bytes(pyc.read_bytes()[12:16], "little") == source.st_size


def test_a_plugin_edited_twice_within_a_second_runs_its_last_version(run, plugin_dir, monkeypatch):
    # The .pyc written by the first run recorded the source's mtime in whole seconds; an
    # edit of the same size in that second ran the old code (with bytecode writing on).
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    path = write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    saved = path.stat()
    assert run("hello").out == "alpha hello\n"
    path.write_text(simple_plugin("alpha", ("howdy",)), encoding="utf-8")
    os.utime(path, ns=(saved.st_atime_ns, saved.st_mtime_ns + 1))  # the same second
    assert path.stat().st_size == saved.st_size
    assert run("howdy").out == "alpha howdy\n"
    # once the source is older, its bytecode is cached again
    old = time.time() - 60
    os.utime(path, (old, old))
    assert run("howdy").out == "alpha howdy\n"
    assert (plugin_dir / "__pycache__" / f"alpha.{sys.implementation.cache_tag}.pyc").is_file()


def test_reading_the_warm_servers_state_imports_no_click():
    # `conduit server status | stop` read the server's state through conduit.warm.server;
    # its rehearsals' Click (conduit.hosts.inprocess) is imported in the server only.
    code = "import sys, conduit.warm.server; print(sorted(m for m in sys.modules if m.split('.')[0] == 'click' or m == 'conduit.hosts.inprocess'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_only_conduit_dev_imports_watchfiles(plugin_dir):
    """The optional extra `dev` (watchfiles) and the reload engine stay off every other
    command's path: --help, a plugin's command, another built-in's."""
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    for args, command in ((("--help",), False), (("hello",), True), (("config", "path"), True)):
        code, new = probe(*args, command=command)
        assert code == 0, args
        assert not {m for m in new if m.split(".")[0] in ("watchfiles", "anyio")}, args
        assert not new & {"conduit.kernel.reload", "conduit.builtins.dev"}, args


def test_the_sandbox_caches_no_bytecode_of_a_plugin_saved_within_two_seconds(
    plugin_dir, monkeypatch
):
    # The kernel compiles a process plugin's .pyc for its host (which may not write it):
    # for a source saved within two seconds it must not either, or an edit of the same
    # size in the same second is hidden behind it once the source is older (the host
    # then trusts the .pyc) and the old code runs for good.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    path = write(plugin_dir, "cached.py", BYTECODE_PROBE)
    pyc = plugin_dir / "__pycache__" / f"cached.{sys.implementation.cache_tag}.pyc"

    # (saved "in the future": just saved however long the test takes, as for the host)
    soon = time.time() + 60
    os.utime(path, (soon, soon))
    saved = path.stat()
    assert cached_value() == "A"
    assert not pyc.exists()
    path.write_text(BYTECODE_PROBE.replace('VALUE = "A"', 'VALUE = "B"'), encoding="utf-8")
    os.utime(path, ns=(saved.st_atime_ns, saved.st_mtime_ns + 1))  # the same second
    assert cached_value() == "B"
    assert not pyc.exists()
    # once the source is older, its bytecode is cached again, from the last version
    old = time.time() - 60
    os.utime(path, (old, old))
    assert cached_value() == "B"
    assert pyc.is_file()


def test_a_process_plugin_command_imports_no_shutil(plugin_dir):
    # shutil imports zlib, bz2 and lzma (about 3.8 ms of a cold process-isolated command);
    # the host's terminal size is found without it.
    write(
        plugin_dir,
        "iso.py",
        simple_plugin("iso", ("iso",), extra_toml='isolation = "process"'),
    )
    probe("--help")  # the index is built
    code, new = probe("iso", command=True)
    assert code == 0
    assert "conduit.hosts.process" in new
    assert not new & {"shutil", "zlib", "bz2", "lzma"}, sorted(
        new & {"shutil", "zlib", "bz2", "lzma"}
    )


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"COLUMNS": "100"},
        {"LINES": "7", "COLUMNS": "x"},
        {"COLUMNS": "0", "LINES": "-3"},
        {"COLUMNS": " 90 ", "LINES": "+9"},
    ],
)
@pytest.mark.parametrize("terminal", [False, True])
def test_the_terminal_size_a_host_is_told_is_shutils(env, terminal, tmp_path):
    source = (
        "import shutil; from conduit.hosts.process import terminal_size; "
        "print(tuple(shutil.get_terminal_size()), terminal_size())"
    )
    argv = [sys.executable, "-c", source]
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if terminal:  # a pseudo-terminal of 33 lines by 121 columns on stdout
        import fcntl
        import pty
        import struct
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 121, 0, 0))
        out = tmp_path / "out"
        with open(out, "w") as f:
            subprocess.run(argv, stdout=slave, stderr=f, env={**base, **env}, check=True)
        os.close(slave)
        text = os.read(master, 4096).decode()
        os.close(master)
    else:
        text = subprocess.run(
            argv, capture_output=True, text=True, env={**base, **env}, check=True
        ).stdout
    theirs, ours = text.strip().split(") (")
    assert theirs + ")" == "(" + ours, text

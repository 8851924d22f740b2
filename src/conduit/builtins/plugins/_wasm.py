"""``conduit plugins build``: turn a plugin source directory into a WebAssembly plugin.

A source directory holds ``conduit-plugin.toml`` (with ``name``) and either ``app.py``
(a Python guest of the ``conduit:plugin`` world, built into a component with
componentize-py) or ``plugin.wasm`` (a module or component built by any toolchain). The
result is ``NAME.wasm`` + ``NAME.toml`` in the plugin directory (or ``--output``), and
its compiled artifact in the cache, so that the first run does not compile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import click

from conduit.errors import ConduitError

if TYPE_CHECKING:
    from conduit.hosts.wasm.runtime import WasmSettings

__all__ = ["build_cmd", "build_plugin", "wit_dir"]

WORLD = "plugin"
#: the module componentize-py builds: the plugin's ``app`` with its commands run in the
#: workspace. wasi-libc starts every guest in ``/``, and Conduit tells it the workspace
#: in ``PWD`` (docs/wasm.md, "Paths").
ENTRY = "_conduit_entry"
ENTRY_SOURCE = """\
import os

import app


class Command(app.Command):
    def run(self, args):
        workspace = os.environ.get("PWD")
        if workspace:
            try:
                os.chdir(workspace)
            except OSError:
                pass
        return super().run(args)
"""


def wit_dir() -> str:
    """The directory of the ``conduit:plugin`` WIT world shipped with Conduit."""
    import conduit

    return os.path.join(os.path.dirname(conduit.__file__ or ""), "wit")


def _componentize_py() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "componentize-py")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    found = shutil.which("componentize-py")
    if found is None:
        raise ConduitError(
            "building a Python plugin needs componentize-py, which is not installed",
            hint="pip install 'componentize-py>=0.25,<0.26' (into Conduit's environment)",
        )
    return found


def _source_files(root: str) -> list[str]:
    """The files under ``root`` that go into a build, relative, sorted; bytecode caches
    (``__pycache__``, ``*.pyc``) are left out: the interpreter writes them, not the author."""
    found = []
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [
            os.path.relpath(os.path.join(top, f), root) for f in files if not f.endswith(".pyc")
        ]
    return sorted(found)


def _build_key(source: str, componentize_py: str) -> str:
    """What a componentize-py build depends on, hashed: its version, the WIT world, the
    entry module, every source file (path and bytes) and the names (so versions) of what
    is installed in the site-packages it also bundles from."""
    import hashlib
    import site

    h = hashlib.sha256(b"conduit-build-1\0")
    version = subprocess.run(
        [componentize_py, "--version"], capture_output=True, text=True, check=False
    ).stdout
    h.update(f"{version}\0{WORLD}\0{ENTRY}\0{ENTRY_SOURCE}\0".encode())
    for label, root in (("wit", wit_dir()), ("src", source)):
        for rel in _source_files(root):
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read()
            h.update(f"{label}\0{rel}\0{len(data)}\0".encode() + data)
    sites = list(site.getsitepackages())
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        sites.append(venv)
    for root in sites:
        with contextlib.suppress(OSError):
            h.update(f"site\0{root}\0{sorted(os.listdir(root))}\0".encode())
    return h.hexdigest()[:32]


def _build_component(source: str, app: str, name: str, target: str) -> None:
    """componentize-py ``source`` into ``target``, or take the module built from the same
    inputs before (``CACHE/wasm/build-KEY.wasm``).

    componentize-py's output differs from build to build (0.25: its pre-initialisation
    snapshots an interpreter whose string hashes are seeded at random), and a different
    module is compiled again; so the same source gives the module built the first time.
    It builds from a copy, at a fixed path, without bytecode caches: pre-initialisation
    writes ``__pycache__`` into the directories it is given, which would change the next
    build's input."""
    from conduit.fs import atomic_write
    from conduit.hosts.wasm.runtime import prune
    from conduit.paths import resolve

    tool = _componentize_py()
    cache = os.path.join(resolve().cache_dir, "wasm")
    cached = os.path.join(cache, f"build-{_build_key(source, tool)}.wasm")
    if os.path.isfile(cached):
        shutil.copyfile(cached, target)
        os.utime(cached)  # recency, for pruning
        size = os.path.getsize(target) / 1e6
        click.echo(f"built {target} ({size:.1f} MB): unchanged, the module built before")
        return
    with tempfile.TemporaryDirectory(prefix="conduit-build-") as tmp:
        built = os.path.join(tmp, f"{name}.wasm")
        copy = os.path.join(tmp, "src")
        for rel in _source_files(source):
            os.makedirs(os.path.dirname(os.path.join(copy, rel)), exist_ok=True)
            shutil.copy2(os.path.join(source, rel), os.path.join(copy, rel))
        entry = os.path.join(tmp, "entry")  # -p bundles the whole directory
        os.mkdir(entry)
        with open(os.path.join(entry, f"{ENTRY}.py"), "w", encoding="utf-8") as f:
            f.write(ENTRY_SOURCE)
        command = [
            tool,
            "-d",
            wit_dir(),
            "-w",
            WORLD,
            "componentize",
            "-p",
            copy,
            "-p",
            entry,
            ENTRY,
            "-o",
            built,
        ]
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise ConduitError(
                f"componentize-py could not build {app} (exit {proc.returncode})",
                hint="its own error is printed above",
            )
        with open(built, "rb") as f:
            data = f.read()
        try:
            atomic_write(cached, data)
            settings, _ = _settings()
            prune(cache, settings.cache_mb << 20, keep=cached)
        except OSError:
            pass  # an unwritable cache only costs the next build
        shutil.move(built, target)
        size = len(data) / 1e6
        click.echo(f"built {target} ({size:.1f} MB) in {time.perf_counter() - started:.1f} s")


def build_plugin(source: str, output: str) -> tuple[str, str]:
    """Build the plugin in ``source`` into ``output``; return the paths of NAME.wasm and
    NAME.toml."""
    from conduit.errors import ManifestError
    from conduit.manifest import MANIFEST_FILENAME, read_manifest_file

    manifest_path = os.path.join(source, MANIFEST_FILENAME)
    if not os.path.isfile(manifest_path):
        raise ConduitError(
            f"{source}: no {MANIFEST_FILENAME}",
            hint="a plugin source directory holds conduit-plugin.toml and app.py or plugin.wasm",
        )
    manifest = read_manifest_file(manifest_path)
    if manifest.name is None:
        raise ManifestError(manifest_path, "required field is missing", field="name")
    if manifest.isolation not in ("in-process", "wasm"):  # "in-process" is the default
        raise ManifestError(
            manifest_path,
            f"isolation '{manifest.isolation}': a WebAssembly plugin runs in the wasm host",
            field="isolation",
            hint='set isolation = "wasm" or leave it out',
        )
    name = manifest.name
    os.makedirs(output, exist_ok=True)
    target = os.path.join(output, f"{name}.wasm")
    app = os.path.join(source, "app.py")
    prebuilt = os.path.join(source, "plugin.wasm")
    if os.path.isfile(app):
        _build_component(source, app, name, target)
    elif os.path.isfile(prebuilt):
        _check_module_commands(prebuilt, manifest_path, bool(manifest.commands))
        shutil.copyfile(prebuilt, target)
    else:
        raise ConduitError(
            f"{source}: neither app.py nor plugin.wasm",
            hint="write app.py (a Python plugin) or put your compiled module in plugin.wasm",
        )
    toml = os.path.join(output, f"{name}.toml")
    with open(manifest_path, "rb") as src, open(toml, "wb") as dst:
        dst.write(src.read())
    return target, toml


def _check_module_commands(prebuilt: str, manifest_path: str, listed: bool) -> None:
    """A core module cannot be asked for its commands (a component can: ``describe``),
    so its manifest must list them; installing it without any would install nothing."""
    from conduit.hosts.wasm.runtime import is_component

    with open(prebuilt, "rb") as f:
        if listed or is_component(f.read(8)):
            return
    raise ConduitError(
        f"{manifest_path}: lists no [[commands]], and {prebuilt} is a WASI module, which "
        "cannot be asked for its commands",
        hint="add one [[commands]] table per command to the manifest, e.g. [[commands]] "
        'name = "NAME" help = "What it does." (docs/wasm.md)',
    )


def _settings() -> tuple[WasmSettings, str]:
    from conduit.hosts.wasm.runtime import WasmSettings
    from conduit.indexer.build import load
    from conduit.paths import resolve
    from conduit.timing import Profile

    paths = resolve()
    index = load(paths, Profile(False))
    return WasmSettings.from_table(index["config"].get("wasm")), paths.cache_dir


def _echo_precompiled(state: str, started: float) -> None:
    """Report what loading into the artifact cache did (``ArtifactCache.last``)."""
    took = time.perf_counter() - started
    click.echo(f"precompiled in {took:.1f} s" if state != "hit" else "already precompiled")


def precompile(path: str) -> None:
    """Compile ``path`` into the artifact cache with the configured engine."""
    from conduit.hosts.wasm.runtime import runtime

    settings, cache_dir = _settings()
    started = time.perf_counter()
    rt = runtime(settings, cache_dir, os.path.basename(path))
    rt.load(path)
    _echo_precompiled(rt.cache.last, started)


def sync_commands(wasm: str, toml: str, name: str) -> None:
    """Ask a component for its commands (``describe``): fill in a manifest that lists
    none, or check that the manifest lists the same ones. Compiles it into the cache."""
    import json

    from conduit.hosts.wasm.component import describe
    from conduit.hosts.wasm.runtime import runtime
    from conduit.manifest import read_manifest_file

    settings, cache_dir = _settings()
    started = time.perf_counter()
    described = describe(wasm, settings, cache_dir, name)
    _echo_precompiled(runtime(settings, cache_dir, name).cache.last, started)
    manifest = read_manifest_file(toml, expected_name=name)
    listed = [c.name for c in manifest.commands]
    names = [c["name"] for c in described]
    if not listed:
        with open(toml, "a", encoding="utf-8") as f:
            for info in described:
                f.write("\n[[commands]]\n")
                for key in ("name", "help", "usage"):
                    if info[key]:
                        f.write(f"{key} = {json.dumps(info[key])}\n")
        read_manifest_file(toml, expected_name=name)  # what we wrote must be valid
        click.echo(f"commands from the component: {', '.join(names) or 'none'}")
    elif sorted(listed) != sorted(names):
        raise ConduitError(
            f"{toml}: the manifest lists the commands {', '.join(listed)}, but the component "
            f"describes {', '.join(names) or 'none'}",
            hint="make them the same, or drop [[commands]] from the manifest to take the "
            "component's",
        )


@click.command("build")
@click.argument("source", type=click.Path(exists=True, file_okay=False), default=".")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write NAME.wasm and NAME.toml here instead of installing them.",
)
@click.option(
    "--no-precompile",
    is_flag=True,
    help="Do not compile it now (a component's commands are then not checked).",
)
def build_cmd(source: str, output: str | None, no_precompile: bool) -> None:
    """Build a WebAssembly plugin from SOURCE and install it (see docs/wasm.md)."""
    from conduit.hosts.wasm.runtime import is_component
    from conduit.manifest import read_manifest_file
    from conduit.paths import resolve

    target, toml = build_plugin(source, output or resolve().plugin_dir)
    name = os.path.basename(target)[: -len(".wasm")]
    with open(target, "rb") as f:
        component = is_component(f.read(8))
    if not output:
        click.echo(f"installed {target}")
    if no_precompile:
        if not read_manifest_file(toml, expected_name=name).commands:
            raise ConduitError(
                f"{toml}: the manifest lists no commands",
                hint="build without --no-precompile to take them from the component",
            )
    elif component:
        sync_commands(target, toml, name)
    else:
        precompile(target)
    if not output:
        _offer_grants(name)


def _offer_grants(name: str) -> None:
    """Installed: its capabilities are asked for once on a terminal, as by
    ``plugins install`` (listed with the grant command otherwise)."""
    from conduit.indexer.build import load
    from conduit.paths import resolve
    from conduit.security.grants import offer
    from conduit.timing import Profile

    paths = resolve()
    for line in offer(load(paths, Profile(False)), [name], paths.config_file, ask=True):
        click.echo(line)

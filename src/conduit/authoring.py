"""A plugin project on disk, before it is installed: for authors' tools and tests.

Used by ``conduit plugins manifest``, ``conduit plugins check`` and :mod:`conduit.testing`.
It finds the plugins in a path (a single-file plugin, a directory holding some, or a
project whose ``pyproject.toml`` declares ``conduit.plugins`` entry points), reads their
manifests, and can import and boot one with a recording context to see which Click
commands it registers. That last step runs plugin code: it is for authors, never for the
kernel.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from conduit.errors import ConduitError, ManifestError, PluginLoadError, UsageError
from conduit.hosts.recording import RecordingContext
from conduit.indexer.discover import ENTRY_POINT_GROUP

if TYPE_CHECKING:
    import click

    from conduit.indexer.records import PluginRec
    from conduit.manifest import CommandSpec, Manifest

__all__ = [
    "PluginSource",
    "RecordingContext",
    "boot_commands",
    "derive_commands",
    "find_plugins",
]


@dataclass
class PluginSource:
    """One plugin found in a project: where its manifest and code are."""

    name: str
    #: "file" (a single ``.py`` with an inline manifest) or "package" (an entry point)
    kind: str
    #: the file holding the manifest: the ``.py`` file, or ``conduit-plugin.toml``
    manifest_path: str
    #: for a package, ``module:attr`` as in the entry point; for a file, ``entry`` or None
    entry: str | None
    #: the directory to put on ``sys.path`` to import a package plugin
    import_root: str | None = None
    #: what to pass to ``conduit plugins ...`` for this plugin: the file or project dir
    project: str = ""
    #: the package's distribution name and version, from ``pyproject.toml``
    dist: str | None = None
    dist_version: str | None = None
    #: the Python files that make up the plugin (for the capability lint)
    sources: list[str] = field(default_factory=list)
    #: a single-file plugin's inline ``dependencies`` (installed like the host does)
    dependencies: list[str] = field(default_factory=list)
    manifest: Manifest | None = None
    error: ManifestError | None = None

    @property
    def top_module(self) -> str | None:
        """The top-level module of a package plugin (what to drop from ``sys.modules``)."""
        if self.kind != "package" or not self.entry:
            return None
        return self.entry.partition(":")[0].strip().split(".")[0]


def _read_file_plugin(path: str) -> PluginSource | None:
    from conduit.manifest import parse_inline_manifest

    path = os.path.abspath(path)
    stem = os.path.basename(path)[:-3]
    src = PluginSource(stem, "file", path, None, sources=[path], project=path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        src.error = ManifestError(path, f"cannot read: {exc}")
        return src
    try:
        manifest = parse_inline_manifest(text, path)
    except ManifestError as exc:
        src.error = exc
        return src
    if manifest is None:
        return None
    assert manifest.name is not None
    src.name = manifest.name
    src.manifest = manifest
    src.entry = manifest.entry
    src.dependencies = list(manifest.dependencies)
    return src


def _module_file(root: str, module: str) -> tuple[str, str] | None:
    """Find ``module`` under ``root/src`` or ``root``: (import root, package or file)."""
    rel = module.replace(".", os.sep)
    for base in (os.path.join(root, "src"), root):
        for candidate in (os.path.join(base, rel), os.path.join(base, rel + ".py")):
            if os.path.exists(candidate):
                return base, candidate
    return None


def _python_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return out


def _read_package(root: str) -> list[PluginSource]:
    from conduit.manifest import MANIFEST_FILENAME, read_manifest_file

    pyproject = os.path.join(root, "pyproject.toml")
    try:
        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConduitError(
            f"{pyproject}: cannot read: {exc}", hint="fix pyproject.toml (it must be TOML)"
        ) from None
    project = data.get("project", {})
    eps = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    found = []
    for name, value in eps.items():
        module = str(value).partition(":")[0].strip()
        src = PluginSource(
            name,
            "package",
            pyproject,
            str(value).strip(),
            dist=project.get("name"),
            dist_version=project.get("version"),
            project=root,
        )
        located = _module_file(root, module)
        if located is None:
            src.error = ManifestError(
                pyproject,
                f"entry point {name} = '{value}': module '{module}' not found under "
                f"{os.path.join(root, 'src')} or {root}",
                field=f'project.entry-points."{ENTRY_POINT_GROUP}".{name}',
                hint="fix the entry point's module path",
            )
            found.append(src)
            continue
        src.import_root, code = located
        package_dir = code if os.path.isdir(code) else os.path.dirname(code)
        src.sources = _python_files(package_dir if os.path.isdir(code) else code)
        # The nearest conduit-plugin.toml, up to the top-level package, as discovery does.
        parts = module.split(".")
        manifest = None
        for depth in range(len(parts), 0, -1):
            candidate = os.path.join(src.import_root, *parts[:depth], MANIFEST_FILENAME)
            if os.path.isfile(candidate):
                manifest = candidate
                break
        if manifest is None:
            src.error = ManifestError(
                package_dir,
                f"no {MANIFEST_FILENAME} found next to module '{module}'",
                hint=f"create {os.path.join(package_dir, MANIFEST_FILENAME)}",
            )
            found.append(src)
            continue
        src.manifest_path = manifest
        try:
            src.manifest = read_manifest_file(manifest, expected_name=name)
        except ManifestError as exc:
            src.error = exc
        found.append(src)
    return found


def find_plugins(path: str) -> list[PluginSource]:
    """The plugins in ``path``: a ``.py`` file, a project directory with a
    ``pyproject.toml`` declaring ``conduit.plugins`` entry points, or a directory of
    single-file plugins. Raises :class:`UsageError` when there is none."""
    path = os.path.abspath(path)
    found: list[PluginSource] = []
    if os.path.isfile(path):
        if path.endswith(".py"):
            one = _read_file_plugin(path)
            found = [one] if one is not None else []
    elif os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "pyproject.toml")):
            found = _read_package(path)
        if not found:
            for fname in sorted(os.listdir(path)):
                if fname.endswith(".py") and not fname.startswith((".", "_")):
                    one = _read_file_plugin(os.path.join(path, fname))
                    if one is not None:
                        found.append(one)
    else:
        raise UsageError(f"{path}: no such file or directory")
    from conduit.manifest import is_wasm_source

    if not found and is_wasm_source(path):
        raise UsageError(
            f"{path}: a WebAssembly plugin's source: 'plugins manifest' and 'plugins check' "
            "read Python plugins",
            hint=f"'conduit plugins build {path}' checks its manifest against the commands "
            "the component describes",
        )
    if not found:
        raise UsageError(
            f"{path}: no Conduit plugin found",
            hint="expected a .py file with a '# /// conduit' block, or a project whose "
            f'pyproject.toml declares [project.entry-points."{ENTRY_POINT_GROUP}"]',
        )
    return found


@contextlib.contextmanager
def importable(src: PluginSource) -> Iterator[None]:
    """Make a package plugin importable for the duration; forget its modules after."""
    root = src.import_root
    top = src.top_module
    added = root is not None and root not in sys.path
    before = set(sys.modules)
    if added:
        sys.path.insert(0, cast(str, root))
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cast(str, root))
        if top:  # only what this import added: never a module that was loaded before
            for mod in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                if mod not in before:
                    del sys.modules[mod]


def _record_for(src: PluginSource) -> PluginRec:
    return cast(
        "PluginRec",
        {
            "name": src.name,
            "origin": src.manifest_path,
            "entry": src.entry,
            "source": "file" if src.kind == "file" else "entry-point",
            "dependencies": src.dependencies,
        },
    )


def load_object(src: PluginSource) -> Any:
    """Import the plugin's code the way the in-process host does; return its entry object."""
    from conduit.hosts.inprocess import load_entry

    try:
        return load_entry(_record_for(src))
    except ConduitError:
        raise
    except Exception as exc:
        raise PluginLoadError(
            src.name,
            f"failed to import: {type(exc).__name__}: {exc}",
            hint="run with --debug for the traceback",
        ) from exc


def boot_commands(src: PluginSource, data_dir: str) -> dict[str, click.Command]:
    """Import and boot the plugin with a :class:`RecordingContext`; return the commands
    it registered, by full name. The plugin's modules are forgotten afterwards."""
    import click

    # Under an empty Click context of its own: when an author command runs, the root
    # context's ``obj`` is the built-in ``plugins`` plugin's context, not this plugin's.
    with importable(src), click.Context(click.Command(src.name)):
        try:
            obj = load_object(src)
            instance = obj() if isinstance(obj, type) else obj
            ctx = RecordingContext(src.name, data_dir)
            instance.boot(ctx)
        except ConduitError:
            raise
        except Exception as exc:
            raise PluginLoadError(
                src.name,
                f"failed to boot: {type(exc).__name__}: {exc}",
                hint="run with --debug for the traceback",
            ) from exc
        finally:
            if src.kind == "file":
                from conduit.hosts.inprocess import file_module_name

                sys.modules.pop(file_module_name(src.name), None)
    return ctx.commands()


# -- the manifest from code ----------------------------------------------------------------


def _one_line(cmd: click.Command) -> str:
    """``short_help``, else the first sentence of the help text's first paragraph."""
    if cmd.short_help:
        return " ".join(cmd.short_help.split())
    paragraph = (cmd.help or "").split("\f")[0].strip().split("\n\n")[0]
    words: list[str] = []
    for word in paragraph.split():
        words.append(word)
        if word.endswith("."):
            break
    return " ".join(words)


def _usage(cmd: click.Command) -> str:
    """A usage summary from the command's parameters: arguments as Click shows them, then
    each option (``[--json]``, ``[--tag TAG]...``, ``[--format text|dot]``)."""
    import click

    ctx = click.Context(cmd, info_name=cmd.name)
    parts: list[str] = []
    for param in cmd.params:
        if isinstance(param, click.Argument):
            parts.append(param.make_metavar(ctx))
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        opt = max(param.opts, key=len)
        if param.is_flag or param.count:
            text = opt
        else:
            if isinstance(param.type, click.Choice):
                value = "|".join(str(c) for c in param.type.choices)
            elif param.metavar:
                value = param.metavar
            else:
                value = opt.lstrip("-").replace("-", "_").upper()
            text = f"{opt} {value}"
        parts.append(text if param.required else f"[{text}]")
        if param.multiple or param.count:
            parts[-1] += "..."
    return " ".join(parts)


def derive_commands(
    commands: dict[str, click.Command], existing: dict[str, CommandSpec] | None = None
) -> list[CommandSpec]:
    """The ``[[commands]]`` entries that describe ``commands`` (full name -> Click command):
    each command, and each subcommand of a group as ``group sub``, in registration order,
    subcommands sorted by name.

    A group that exists only because commands were registered under it (``repos status``
    without a ``repos`` command) has no Click object to read; its entry is taken from
    ``existing`` (the manifest's current entries) or left without help."""
    import click

    from conduit.manifest import CommandSpec

    specs: list[CommandSpec] = []
    seen: set[str] = set()

    def add(name: str, cmd: click.Command) -> None:
        if name in seen:
            return
        seen.add(name)
        usage = "" if isinstance(cmd, click.Group) else _usage(cmd)
        specs.append(CommandSpec(name=name, help=_one_line(cmd), usage=usage, hidden=cmd.hidden))
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd, info_name=name)
            for sub in cmd.list_commands(ctx):
                subcmd = cmd.get_command(ctx, sub)
                if subcmd is not None:
                    add(f"{name} {sub}", subcmd)

    for name, cmd in commands.items():
        words = name.split(" ")
        for depth in range(1, len(words)):
            parent = " ".join(words[:depth])
            if parent not in commands and parent not in seen:
                seen.add(parent)
                specs.append((existing or {}).get(parent) or CommandSpec(name=parent))
        add(name, cmd)
    return specs

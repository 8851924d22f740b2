"""Hot reload for plugin authors: the engine of ``conduit dev`` (docs/plugin-guide.md,
"Developing with hot reload").

A :class:`Reloader` loads the plugins at some paths from their source, without
installing them, into a long-lived :class:`~conduit.kernel.core.Kernel`, beside the
installed ones (a source plugin takes the place of an installed one of the same name).
:meth:`Reloader.reload` swaps a plugin for its edited source in place:

1. its manifest is read and validated again, and a new index is built; an error is
   reported and the previous version keeps serving;
2. the plugin and the active plugins that require it are deactivated, dependants first:
   ``shutdown()``, every registration undone and every ``ctx.on_dispose()`` disposer
   called (the kernel's :class:`~conduit.kernel.core.Context` records both with an undo);
   a process plugin's host exits with its last plugin;
3. a plugin that left non-daemon threads running is refused: it stays unloaded (see
   :attr:`Reloader.held`) until a later change finds those threads ended;
4. its modules are dropped from ``sys.modules`` (with their bytecode caches, whose
   one-second source timestamps cannot tell two quick edits apart) and the import
   caches invalidated;
5. it is imported and booted again, then its dependants, in dependency order (a process
   plugin in a new host process).

A WebAssembly plugin's source directory (``conduit-plugin.toml`` with ``app.py`` or a
prebuilt ``plugin.wasm``, as ``conduit plugins build`` takes it) is built by the
caller's ``build_wasm`` (that command's build, cached by its inputs) into a directory of
its own per build, and the new module is compiled with the wasm host's engine before the
previous version is deactivated: a failed build or compile leaves it serving.

Watching files is the caller's (``conduit dev`` uses watchfiles): this module only maps
changed paths to plugins (:meth:`Reloader.affected`). Not thread-safe by itself: callers
that reload from another thread hold :attr:`Reloader.lock`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conduit.errors import ConduitError, PluginLoadError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from conduit.authoring import PluginSource
    from conduit.indexer.build import Cache
    from conduit.indexer.discover import Found
    from conduit.indexer.records import Index
    from conduit.kernel.core import Kernel
    from conduit.paths import Paths
    from conduit.security.grants import Approver

__all__ = ["THREAD_GRACE", "Reload", "Reloader"]

#: seconds a reload waits for threads a plugin started to end after its shutdown
THREAD_GRACE = 1.0
_EXTENSION_SUFFIXES = (".so", ".pyd")


@dataclass
class Reload:
    """What one load or reload did."""

    #: plugins loaded again (the changed ones and their dependants), in activation order
    loaded: list[str] = field(default_factory=list)
    #: one error per problem; with any, the previous version of a plugin whose manifest
    #: failed keeps serving
    errors: list[ConduitError] = field(default_factory=list)
    #: things to know that did not stop the reload (a disposer raised, a C extension)
    notes: list[str] = field(default_factory=list)
    #: wall time of the reload, ms
    ms: float = 0.0
    #: WebAssembly plugins built again, with the build's wall time in ms (part of ``ms``)
    built: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _cause(output: str) -> str:
    """The line of a failed build's output that says why (componentize-py: the line after
    "Caused by:", else the last ``...Error: ...`` line), else its last line."""
    import re

    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line == "Caused by:":
            return lines[i + 1]
    for line in reversed(lines):
        if re.match(r"([A-Za-z_][\w.]*(Error|Exception)|error)\b.*:", line):
            return line
    return lines[-1] if lines else ""


def _before_site() -> int:
    """The index in ``sys.path`` of the first site-packages directory (its end if none)."""
    import site

    sites = {*site.getsitepackages(), site.getusersitepackages()}
    sites = {os.path.abspath(p) for p in sites}
    for i, entry in enumerate(sys.path):
        if i and entry and os.path.abspath(entry) in sites:
            return i
    return len(sys.path)


class Reloader:
    """Loads plugins from source into a long-lived kernel and reloads them in place."""

    def __init__(
        self,
        targets: Iterable[str],
        paths: Paths,
        *,
        approve: Approver | None = None,
        thread_grace: float = THREAD_GRACE,
        template: bool = False,
        build_wasm: Callable[[str, str], tuple[str, str]] | None = None,
    ) -> None:
        """``template``: fork process plugins' hosts from a host template
        (:mod:`conduit.hosts.zygote`, as the warm kernel does) started before the first
        activation, while this process has no thread and no plugin loaded: a process
        plugin's reload then costs a fork, not an interpreter's start.

        ``build_wasm(source, output)``: builds a WebAssembly plugin's source directory
        into ``output`` and returns the paths of NAME.wasm and NAME.toml (``conduit dev``
        passes ``conduit plugins build``'s); without it such a target is an error."""
        self.targets = [os.path.abspath(t) for t in targets]
        self.paths = paths
        self.approve = approve
        self.thread_grace = thread_grace
        #: the source plugins by name, as last read without error
        self.sources: dict[str, PluginSource] = {}
        self.kernel: Kernel | None = None
        #: plugins not loaded, with why (threads left running after their shutdown)
        self.held: dict[str, str] = {}
        #: taken around a reload or a command by callers that use threads
        self.lock = threading.RLock()
        self._cache: Cache | None = None
        self._threads: dict[str, set[int]] = {}  # threads alive before each activation
        self._modules: dict[str, set[str]] = {}  # modules each plugin's import added
        self._added_paths: list[str] = []
        #: the threads alive before the activation of each held plugin
        self._held_threads: dict[str, set[int]] = {}
        self._template = template
        self._template_pid = 0
        self.build_wasm = build_wasm
        #: WebAssembly targets: the stamp of their inputs and the source last built
        self._builds: dict[str, tuple[tuple[object, ...], PluginSource]] = {}
        self._build_root: str | None = None
        self._build_serial = 0
        #: the plugins built by the last _read, with the build's ms
        self._built: dict[str, float] = {}

    # -- sources ---------------------------------------------------------------------------
    def _read(self) -> tuple[dict[str, PluginSource], list[ConduitError]]:
        """Every plugin at the targets, read and validated now."""
        from conduit.authoring import find_plugins
        from conduit.manifest import is_wasm_source

        found: dict[str, PluginSource] = {}
        errors: list[ConduitError] = []
        self._built = {}
        for target in self.targets:
            try:
                if is_wasm_source(target):
                    sources = [self._wasm_source(target)]
                else:
                    sources = find_plugins(target)
            except ConduitError as exc:
                errors.append(exc)
                continue
            for src in sources:
                if src.error is not None:
                    errors.append(src.error)
                elif src.name in found:
                    errors.append(
                        UsageError(
                            f"{src.manifest_path}: plugin '{src.name}' is also at "
                            f"{found[src.name].manifest_path}",
                            hint="give each plugin a name of its own",
                        )
                    )
                else:
                    found[src.name] = src
        return found, errors

    @staticmethod
    def _wasm_inputs(target: str) -> list[str]:
        """What a build of the WebAssembly source ``target`` reads: for ``app.py`` every
        file in the directory (componentize-py bundles it), bytecode caches aside; for a
        prebuilt module its manifest and ``plugin.wasm`` (whatever builds that file, e.g.
        the author's ``make``, is the author's)."""
        from conduit.manifest import MANIFEST_FILENAME

        if not os.path.isfile(os.path.join(target, "app.py")):
            names = [MANIFEST_FILENAME, "plugin.wasm"]
            return [os.path.join(target, n) for n in names]
        out = []
        for top, dirs, files in os.walk(target):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            out += [os.path.join(top, f) for f in sorted(files) if not f.endswith(".pyc")]
        return out

    def _wasm_source(self, target: str) -> PluginSource:
        """The WebAssembly plugin at ``target``, built again if its inputs changed since
        the last build; a failed build is raised, its own error on one line."""
        import contextlib
        import io
        import shutil

        from conduit.authoring import PluginSource
        from conduit.manifest import MANIFEST_FILENAME, loads_toml, parse_manifest

        inputs = self._wasm_inputs(target)
        stamp: list[object] = []
        for path in inputs:
            try:
                st = os.stat(path)
            except OSError:
                stamp.append((path, None))
                continue
            stamp.append((path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        previous = self._builds.get(target)
        if previous is not None and previous[0] == tuple(stamp):
            return previous[1]
        if self.build_wasm is None:
            raise UsageError(f"{target}: a WebAssembly plugin's source, which is not built here")
        if self._build_root is None:
            import tempfile

            self._build_root = tempfile.mkdtemp(prefix="conduit-dev-")
        # A directory per build: the wasm host remembers a module's hash by its path and
        # stat, which two quick builds of the same size could share
        self._build_serial += 1
        out = os.path.join(self._build_root, str(self._build_serial))
        started = time.perf_counter()
        said = io.StringIO()  # the build's own output (componentize-py's errors)
        try:
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                wasm, toml = self.build_wasm(target, out)
            with open(toml, "rb") as f:
                data = loads_toml(f.read().decode("utf-8"), toml)
            data.setdefault("isolation", "wasm")  # as discovery reads an installed one
            name = os.path.basename(wasm)[: -len(".wasm")]
            manifest = parse_manifest(
                data, os.path.join(target, MANIFEST_FILENAME), expected_name=name
            )
        except ConduitError as exc:
            shutil.rmtree(out, ignore_errors=True)
            cause = _cause(said.getvalue())
            if not cause:
                raise
            raise ConduitError(
                f"{exc.message}: {cause}",
                hint="fix it and save again",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            shutil.rmtree(out, ignore_errors=True)
            raise ConduitError(f"{target}: the build failed: {exc}") from None
        self._built[name] = (time.perf_counter() - started) * 1e3
        src = PluginSource(
            name,
            "wasm",
            os.path.join(target, MANIFEST_FILENAME),
            wasm,
            project=target,
            sources=inputs,
            manifest=manifest,
        )
        self._builds[target] = (tuple(stamp), src)
        return src

    def _compile_wasm(self, index: Index, names: Iterable[str]) -> list[ConduitError]:
        """Compile the WebAssembly plugins just built (``names``) with the wasm host's
        engine, into its artifact cache, so that activation finds them compiled and a
        module wasmtime refuses is reported before the previous version is unloaded."""
        from conduit.hosts.wasm.runtime import WasmSettings, first_line, runtime

        errors: list[ConduitError] = []
        settings = WasmSettings.from_table(index["config"].get("wasm"))
        for name in names:
            target, path = self._build_of(name)
            before = len(errors)
            try:
                runtime(settings, self.paths.cache_dir, name).load(path)
            except ConduitError as exc:
                errors.append(exc)
            except OSError as exc:
                errors.append(PluginLoadError(name, f"cannot read {path}: {exc.strerror}"))
            except Exception as exc:  # wasmtime.WasmtimeError: invalid module
                errors.append(
                    PluginLoadError(
                        name,
                        f"not a valid WebAssembly module: {first_line(exc)}",
                        hint="fix it and save again",
                    )
                )
            if len(errors) > before:
                del self._builds[target]  # built again at the next change, and refused again
        return errors

    def _build_of(self, name: str) -> tuple[str, str]:
        """The target and module path of the WebAssembly plugin ``name``'s last build."""
        for target, (_, src) in self._builds.items():
            if src.name == name and src.entry:
                return target, src.entry
        raise KeyError(name)

    def _prune_builds(self) -> None:
        """Remove the build directories no longer served nor remembered."""
        import shutil

        root = self._build_root
        if root is None:
            return
        keep = {os.path.dirname(src.entry or "") for _, src in self._builds.values()}
        keep |= {os.path.dirname(s.entry or "") for s in self.sources.values() if s.kind == "wasm"}
        for entry in os.listdir(root):
            path = os.path.join(root, entry)
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def _found(self, src: PluginSource) -> Found:
        from conduit.indexer.discover import Found

        if src.kind == "wasm":
            return Found(
                src.name, "wasm", src.manifest_path, entry=src.entry, manifest=src.manifest
            )
        if src.kind == "file":
            return Found(
                src.name, "file", src.manifest_path, entry=src.entry, manifest=src.manifest
            )
        return Found(
            src.name,
            "entry-point",
            src.manifest_path,
            dist=src.dist or src.name,
            dist_version=src.dist_version or "0.0.0",
            entry=src.entry,
            manifest=src.manifest,
        )

    def _index(self, sources: dict[str, PluginSource]) -> Index:
        from conduit.indexer.build import Cache, build

        if self._cache is None:
            self._cache = Cache()
        for src in sources.values():
            root = src.import_root
            if root and root not in sys.path:
                # After the standard library (a project's own queue.py must not replace
                # the one Conduit imports), before the installed distributions (an
                # installed copy of the plugin); a process host's child gets the
                # kernel's sys.path too
                sys.path.insert(_before_site(), root)
                self._added_paths.append(root)
        return build(
            self.paths,
            ("conduit-dev",),
            self._cache,
            extra=[self._found(s) for s in sources.values()],
        )

    @staticmethod
    def _index_error(index: Index, name: str) -> ConduitError | None:
        rec = index["plugins"].get(name)
        if rec is None:
            for broken in index["broken"]:
                if broken["name"] == name:
                    return PluginLoadError(name, broken["error"], hint=broken["hint"])
            return PluginLoadError(name, "not in the index")
        if rec["blocked"]:
            return PluginLoadError(name, rec["blocked"], hint=rec["blocked_hint"])
        if not rec["enabled"]:
            return PluginLoadError(
                name,
                "plugin is disabled in the config",
                hint=f"enable it with 'conduit plugins enable {name}'",
            )
        return None

    def files(self, name: str) -> set[str]:
        """The files whose change reloads ``name``."""
        src = self.sources[name]
        owned = {os.path.abspath(f) for f in src.sources}
        owned.add(os.path.abspath(src.manifest_path))
        if src.kind == "package":
            owned.add(os.path.join(os.path.abspath(src.project), "pyproject.toml"))
        for mod in self._modules.get(name, ()):
            path = getattr(sys.modules.get(mod), "__file__", None)
            if path:
                owned.add(os.path.abspath(path))
        return owned

    def _roots(self, name: str) -> list[str]:
        """Directories whose new or changed Python files belong to ``name``."""
        src = self.sources[name]
        if src.kind in ("file", "wasm"):
            return []
        top = src.top_module
        base = os.path.join(src.import_root or "", *(top.split(".") if top else []))
        return [base + os.sep] if os.path.isdir(base) else []

    def watched(self) -> list[str]:
        """The directories to watch: each target's (a file's own directory)."""
        out = []
        for target in self.targets:
            where = target if os.path.isdir(target) else os.path.dirname(target)
            if where not in out:
                out.append(where)
        return out

    def affected(self, changed: Iterable[str]) -> bool:
        """Whether any of the ``changed`` paths belongs to a plugin here (or may be a
        new plugin in a target directory)."""
        owned: set[str] = set()
        roots: list[str] = []
        for name in self.sources:
            owned |= self.files(name)
            roots += self._roots(name)
        dirs = [t for t in self.targets if os.path.isdir(t)]
        for path in changed:
            path = os.path.abspath(path)
            if "__pycache__" in path.split(os.sep):
                continue
            if path in owned or path in self.targets:
                return True
            if path.endswith((".py", ".toml")) and (
                any(path.startswith(r) for r in roots) or os.path.dirname(path) in dirs
            ):
                return True
        return False

    # -- loading ---------------------------------------------------------------------------
    def start(self) -> Reload:
        """Read the targets, build the kernel and activate every source plugin. A target
        that is no plugin, or a manifest error, is raised (nothing is loaded yet)."""
        from conduit.kernel.core import Kernel

        started = time.perf_counter()
        sources, errors = self._read()
        if errors:
            raise errors[0]
        built = self._built
        index = self._index(sources)
        for name in sources:
            problem = self._index_error(index, name)
            if problem is not None:
                raise problem
        if built:
            errors = self._compile_wasm(index, built)
            if errors:
                raise errors[0]
        self.sources = sources
        if self._template and any(index["plugins"][n]["isolation"] == "process" for n in sources):
            from conduit.hosts import process
            from conduit.hosts.zygote import start

            process.TEMPLATE, self._template_pid = start()
        self.kernel = Kernel(index, self.paths, approve=self.approve)
        report = Reload(built=built)
        self._activate(self._in_order(index, set(sources)), report)
        report.ms = (time.perf_counter() - started) * 1e3
        return report

    def reload(self, changed: Iterable[str] | None = None) -> Reload:
        """Read the sources again and reload the plugins that own the ``changed`` paths
        (every source plugin without them), new and removed ones, and the active plugins
        that require any of those, dependants after what they require."""
        started = time.perf_counter()
        report = Reload()
        kernel = self.kernel
        assert kernel is not None, "start() first"
        sources, errors = self._read()
        report.built = self._built
        if not errors:
            index = self._index(sources)
            errors = [e for n in sources if (e := self._index_error(index, n)) is not None]
        if not errors and report.built:
            errors = self._compile_wasm(index, report.built)
        if errors:  # the previous version keeps serving
            report.errors = errors
            report.ms = (time.perf_counter() - started) * 1e3
            self._prune_builds()
            return report
        old = kernel.index
        active = {n for n, state in kernel.states.items() if state == "active"}
        gone = set(self.sources) - set(sources)
        names = self._owners(changed) if changed is not None else set(sources)
        names = (names & set(sources)) | (set(sources) - set(self.sources)) | gone
        affected = names | self._dependants(old, names) | self._dependants(index, names)
        for name in reversed(old["boot_order"]):
            if name in affected:
                self._deactivate(name, report)
        for name in gone:
            self.held.pop(name, None)
        self.sources = sources
        self._check_threads(affected, report)
        kernel.reindex(index)
        wanted = (affected - gone) & (set(sources) | active)
        for name in list(wanted):
            if self._blocked_by_held(index, name):
                wanted.discard(name)
        self._activate(self._in_order(index, wanted), report)
        self._prune_builds()
        report.ms = (time.perf_counter() - started) * 1e3
        return report

    def _owners(self, changed: Iterable[str]) -> set[str]:
        """The source plugins that own any of the ``changed`` paths."""
        paths = {os.path.abspath(p) for p in changed}
        out = set()
        for name in self.sources:
            roots = self._roots(name)
            if self.files(name) & paths or any(p.startswith(r) for p in paths for r in roots):
                out.add(name)
        return out

    @staticmethod
    def _in_order(index: Index, names: set[str]) -> list[str]:
        order = [n for n in index["boot_order"] if n in names]
        return order + sorted(names.difference(order))

    @staticmethod
    def _dependants(index: Index, names: set[str]) -> set[str]:
        """The plugins that require any of ``names``, directly or through others."""
        plugins = index["plugins"]
        out: set[str] = set()
        grew = True
        while grew:
            grew = False
            for name, rec in plugins.items():
                if name not in out and any(a in names or a in out for a in rec["after"]):
                    out.add(name)
                    grew = True
        return out

    def _blocked_by_held(self, index: Index, name: str) -> bool:
        if name in self.held:
            return True
        return any(a in self.held for a in self._requirements(index, name))

    @staticmethod
    def _requirements(index: Index, name: str) -> set[str]:
        plugins = index["plugins"]
        out: set[str] = set()
        todo = [name]
        while todo:
            rec = plugins.get(todo.pop())
            for dep in rec["after"] if rec is not None else ():
                if dep not in out:
                    out.add(dep)
                    todo.append(dep)
        return out

    def _activate(self, names: list[str], report: Reload) -> None:
        kernel = self.kernel
        assert kernel is not None
        for name in names:
            before_threads = {t.ident for t in threading.enumerate() if t.ident is not None}
            before_modules = set(sys.modules)
            try:
                kernel.activate(name, "conduit dev")
            except ConduitError as exc:
                report.errors.append(exc)
                continue
            finally:
                self._modules[name] = self._own_modules(name, set(sys.modules) - before_modules)
            if kernel.index["plugins"][name]["isolation"] == "in-process":
                self._threads[name] = before_threads
            report.loaded.append(name)
        report.notes += [w.message for w in kernel.warnings]
        kernel.warnings.clear()
        kernel.activations.clear()  # the run journal's, which a dev kernel does not write

    def _own_modules(self, name: str, new: set[str]) -> set[str]:
        """The modules that importing ``name`` added from its own directory: dropped at its
        reload with its main module (a single file's helper modules beside it)."""
        src = self.sources.get(name)
        if src is None:
            return set()
        where = os.path.dirname(os.path.abspath(src.manifest_path)) + os.sep
        roots = [where, *self._roots(name)]
        out = set()
        for mod in new:
            path = getattr(sys.modules.get(mod), "__file__", None)
            if path and any(os.path.abspath(path).startswith(r) for r in roots):
                out.add(mod)
        return out

    def _deactivate(self, name: str, report: Reload) -> None:
        kernel = self.kernel
        assert kernel is not None
        try:
            kernel.deactivate(name)
        except ConduitError as exc:
            report.notes.append(exc.message)
        report.notes += [w.message for w in kernel.warnings]
        kernel.warnings.clear()
        self._forget(name, report)

    def _forget(self, name: str, report: Reload) -> None:
        """Drop ``name``'s modules and their bytecode caches."""
        import importlib.util
        import linecache

        from conduit.hosts.inprocess import file_module_name

        src = self.sources.get(name)
        modules = set(self._modules.pop(name, ()))
        if src is not None and src.kind == "file":
            modules.add(file_module_name(name))
        if src is not None and src.top_module:
            top = src.top_module
            modules |= {m for m in sys.modules if m == top or m.startswith(top + ".")}
        files = set(src.sources) if src is not None else set()
        for mod in modules:
            module = sys.modules.pop(mod, None)
            path = getattr(module, "__file__", None)
            if not path:
                continue
            if path.endswith(_EXTENSION_SUFFIXES):
                report.notes.append(
                    f"plugin '{name}': the C extension {mod} cannot be reloaded in place; "
                    "restart 'conduit dev' to load a new build of it"
                )
            else:
                files.add(path)
        for path in files:
            if path.endswith(".py"):
                with contextlib.suppress(OSError, ValueError, NotImplementedError):
                    os.unlink(importlib.util.cache_from_source(path))
        importlib.invalidate_caches()
        linecache.checkcache()

    def _check_threads(self, names: set[str], report: Reload) -> None:
        """Hold back each plugin of ``names`` that left non-daemon threads running."""
        me = threading.current_thread()
        deadline = time.monotonic() + self.thread_grace
        for name in sorted(names):
            before = self._threads.pop(name, None)
            if before is None:
                before = self._held_threads.get(name)
            if before is None:
                continue
            left = [
                t
                for t in threading.enumerate()
                if t.ident not in before and not t.daemon and t is not me and t.is_alive()
            ]
            for thread in left:
                thread.join(max(0.0, deadline - time.monotonic()))
            left = [t for t in left if t.is_alive()]
            if not left:
                self.held.pop(name, None)
                self._held_threads.pop(name, None)
                continue
            shown = ", ".join(repr(t.name) for t in left[:3])
            message = (
                f"left {len(left)} non-daemon thread(s) running after its shutdown ({shown}); "
                "it stays unloaded until they end"
            )
            self.held[name] = message
            self._held_threads[name] = before
            report.errors.append(
                PluginLoadError(
                    name,
                    message,
                    hint="stop and join them in shutdown() or a ctx.on_dispose() function, "
                    "then save again",
                )
            )

    # -- commands --------------------------------------------------------------------------
    def commands(self) -> list[str]:
        """The top-level command words the dev kernel serves (for completion)."""
        assert self.kernel is not None
        return sorted(self.kernel.index["routes"])

    def route(self, word: str) -> str:
        """The plugin that serves the command ``word``."""
        from conduit.errors import did_you_mean

        assert self.kernel is not None
        index = self.kernel.index
        plugin, sep, command = word.partition(":")
        if sep and plugin in index["plugins"]:
            word = command
        else:
            claimants = index["routes"].get(word)
            if not claimants:
                close = did_you_mean(word, index["routes"])
                raise UsageError(
                    f"unknown command '{word}'",
                    hint=f"did you mean '{close}'?" if close else "see 'conduit --help'",
                )
            plugin = claimants[0]
        if plugin in self.held:
            raise PluginLoadError(
                plugin,
                self.held[plugin],
                hint="stop and join its threads in shutdown() or a ctx.on_dispose() function",
            )
        return plugin

    def run(self, argv: list[str]) -> int:
        """Run ``conduit ARGV...`` in the dev kernel (its plugins stay active after);
        errors are raised, the kernel's warnings are left in ``kernel.warnings``."""
        kernel = self.kernel
        assert kernel is not None and argv
        plugin = self.route(argv[0])
        word = argv[0].partition(":")[2] or argv[0]
        return kernel.run(plugin, [word, *argv[1:]], "conduit")

    def close(self) -> list[str]:
        """Deactivate every plugin; return the problems (one line each)."""
        notes: list[str] = []
        kernel = self.kernel
        if kernel is not None:
            try:
                kernel.shutdown()
            except ConduitError as exc:
                notes.append(exc.message)
            notes += [w.message for w in kernel.warnings]
            kernel.warnings.clear()
        if self._template_pid:
            from conduit.hosts import process

            if process.TEMPLATE is not None:
                process.TEMPLATE.close()  # it exits when no host holds it either
                process.TEMPLATE = None
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._template_pid, 0)
            self._template_pid = 0
        for root in self._added_paths:
            while root in sys.path:
                sys.path.remove(root)
        self._added_paths.clear()
        if self._build_root is not None:
            import shutil

            shutil.rmtree(self._build_root, ignore_errors=True)
            self._build_root = None
            self._builds.clear()
        return notes

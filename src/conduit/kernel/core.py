"""The kernel: plugin states, activation, and the registry of what plugins contribute.

No printing and no Click here: the kernel is a library another pluggable CLI could use.
It works on the plain-data index (see :mod:`conduit.index`) and reaches plugin code only
through a :class:`~conduit.hosts.Host`.

A plugin's lifecycle::

    inactive ──activate──► active ──deactivate──► inactive
        │                                   (every registration removed)
        └── import/boot fails ──► failed     (registrations made so far removed)
"""

from __future__ import annotations

import os
import time

from conduit.errors import ConduitError, PluginError, PluginLoadError
from conduit.hosts import command_key, registered_twice
from conduit.timing import Profile

# Not typing's TYPE_CHECKING, and no contextlib or collections.abc at run time: every
# command imports this module, a process or WebAssembly command before anything that
# needs those (docs/performance.md, "The command path").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from contextlib import AbstractContextManager
    from typing import Any

    import click

    from conduit.hosts.base import Host
    from conduit.indexer.records import Index, PluginRec
    from conduit.kernel.hooks import HookBus
    from conduit.paths import Paths
    from conduit.security.capabilities import Capability
    from conduit.security.grants import Approver
    from conduit.security.guard import Running

__all__ = ["ADMIN_SERVICE", "KERNEL_HOOKS", "KERNEL_OWNER", "Context", "Kernel", "Registry"]

#: the hooks the kernel calls itself (their specs are conduit.kernel.hookspecs; a test checks
#: that the two agree)
KERNEL_HOOKS = ("after_command", "before_command", "config_loaded", "on_command_error")
#: the owner of the services the kernel provides itself (a name no plugin can have)
KERNEL_OWNER = "conduit"
#: the kernel's service for Conduit's built-in plugins (conduit.kernel.admin.Admin)
ADMIN_SERVICE = "conduit.admin"


class _NoGuard:
    """The attribution of code that no guard watches (no guarded plugin active): a context
    manager that does nothing (contextlib's nullcontext without importing contextlib)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NOGUARD: AbstractContextManager[None] = _NoGuard()

INACTIVE = "inactive"
ACTIVE = "active"
FAILED = "failed"


class Registry:
    """Everything active plugins have registered, each entry tagged with its owner."""

    def __init__(self) -> None:
        self.commands: dict[tuple[str, str], click.Command] = {}
        self.services: dict[str, tuple[str, Callable[[], Any]]] = {}
        self.service_instances: dict[str, Any] = {}
        self.hooks: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
        self.hookspecs: dict[str, tuple[str, Callable[..., Any], bool]] = {}
        #: bumped on every hook or hookspec change, so the pluggy manager is rebuilt
        self.generation = 0

    def owned_by(self, plugin: str) -> list[str]:
        """Describe every registration ``plugin`` still holds (empty when it holds none)."""
        held = [f"command {name}" for (owner, name) in self.commands if owner == plugin]
        held += [f"service {n}" for n, (owner, _) in self.services.items() if owner == plugin]
        held += [
            f"hook {h}" for h, impls in self.hooks.items() for owner, _ in impls if owner == plugin
        ]
        held += [f"hookspec {h}" for h, (owner, _, _) in self.hookspecs.items() if owner == plugin]
        return held


class Context:
    """The kernel's implementation of :class:`conduit.sdk.PluginContext`."""

    def __init__(self, kernel: Kernel, record: PluginRec) -> None:
        self._kernel = kernel
        self._record = record
        self._undo: list[Callable[[], None]] = []

    @property
    def name(self) -> str:
        return self._record["name"]

    @property
    def data_dir(self) -> str:
        path = self._kernel.paths.plugin_data(self.name)
        with self._kernel._trusted:  # the kernel creates it, not the plugin
            os.makedirs(path, exist_ok=True)
        return path

    @property
    def registrations(self) -> int:
        """How many registrations this context holds."""
        return len(self._undo)

    def register_command(self, command: click.Command, name: str | None = None) -> None:
        key = command_key(self.name, command, name)
        registry = self._kernel.registry
        if (self.name, key) in registry.commands:
            raise registered_twice(self.name, key)
        registry.commands[(self.name, key)] = command
        owner = self.name

        def undo() -> None:
            registry.commands.pop((owner, key), None)

        self._undo.append(undo)

    def register_service(self, name: str, factory: Callable[[], Any]) -> None:
        registry = self._kernel.registry
        guard = self._kernel._guards.get(self.name)
        if guard is not None:  # the factory runs as this plugin, whoever asks
            factory = guard.wrap(factory)
        if name in registry.services:
            owner = registry.services[name][0]
            raise PluginError(
                self.name,
                f"service '{name}' is already provided by plugin '{owner}'",
                hint="a service has exactly one provider; disable one of the plugins",
            )
        registry.services[name] = (self.name, factory)

        def undo() -> None:
            registry.services.pop(name, None)
            registry.service_instances.pop(name, None)

        self._undo.append(undo)

    def register_hook(self, hook: str, implementation: Callable[..., Any]) -> None:
        registry = self._kernel.registry
        guard = self._kernel._guards.get(self.name)
        if guard is not None:  # the implementation runs as this plugin, whoever calls
            implementation = guard.wrap(implementation)
        entry = (self.name, implementation)
        registry.hooks.setdefault(hook, []).append(entry)
        registry.generation += 1

        def undo() -> None:
            impls = registry.hooks.get(hook, [])
            if entry in impls:
                impls.remove(entry)
            if not impls:
                registry.hooks.pop(hook, None)
            registry.generation += 1

        self._undo.append(undo)

    def register_hookspec(self, spec: Callable[..., Any], *, firstresult: bool = False) -> None:
        registry = self._kernel.registry
        name = spec.__name__
        if name in KERNEL_HOOKS:
            raise PluginError(
                self.name, f"hook '{name}' is a kernel hook", hint="give your hook another name"
            )
        if name in registry.hookspecs:
            owner = registry.hookspecs[name][0]
            raise PluginError(self.name, f"hook '{name}' is already specified by '{owner}'")
        registry.hookspecs[name] = (self.name, spec, firstresult)
        registry.generation += 1

        def undo() -> None:
            registry.hookspecs.pop(name, None)
            registry.generation += 1

        self._undo.append(undo)

    def on_dispose(self, dispose: Callable[[], object]) -> None:
        """Call ``dispose()`` at deactivation, in the reverse order of everything this
        context registered (conduit.sdk)."""

        def undo() -> None:
            dispose()

        undo.__qualname__ = getattr(dispose, "__qualname__", "dispose")
        self._undo.append(undo)

    def hook(self, name: str, **kwargs: Any) -> list[Any]:
        return self._kernel.hook(name, raise_errors=True, **kwargs)

    def service(self, name: str, kind: type[Any] | None = None) -> Any:
        instance = self._kernel.service(name, for_plugin=self.name)
        if kind is not None and isinstance(kind, type) and not isinstance(instance, kind):
            raise PluginError(
                self.name,
                f"service '{name}' is a {type(instance).__name__}, not a {kind.__name__}",
            )
        return instance

    @property
    def config(self) -> dict[str, Any]:
        tables = self._kernel.index["config"].get("plugin", {})
        assert isinstance(tables, dict)
        return dict(tables.get(self.name, {}))

    def commands(self) -> dict[str, click.Command]:
        """This plugin's registered commands, by full name."""
        return {
            key: cmd
            for (owner, key), cmd in self._kernel.registry.commands.items()
            if owner == self.name
        }

    def unregister_all(self) -> list[PluginError]:
        """Undo every registration and call every disposer, newest first; return what
        the disposers raised (one failing does not stop the others). A disposer
        interrupted (Ctrl-C, ``sys.exit()``) stops none of the others either: that is
        raised after the last."""
        errors: list[PluginError] = []
        interrupted: BaseException | None = None
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:
                errors.append(
                    PluginError(
                        self.name,
                        f"disposer {undo.__qualname__} failed: {type(exc).__name__}: {exc}",
                        hint="fix the function given to ctx.on_dispose()",
                    )
                )
            except BaseException as exc:
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        return errors


def _timings(entry: dict[str, Any], name: str, spans: list[Any], total_ns: int) -> None:
    """Import and boot times of one activation from the spans its host recorded
    (``import:NAME``, ``boot:NAME``; the process host reports its child's), in ms."""
    entry["load_ms"] = round(total_ns / 1e6, 3)
    for span in spans:
        kind, _, who = span[0].partition(":")
        if who == name and kind in ("import", "boot"):
            entry[f"{kind}_ms"] = round((span[2] - span[1]) / 1e6, 3)


class Kernel:
    """Activates plugins from an index in their hosts and runs their commands."""

    def __init__(
        self,
        index: Index,
        paths: Paths,
        *,
        hosts: dict[str, Host] | None = None,
        disabled: Iterable[str] = (),
        profile: Profile | None = None,
        approve: Approver | None = None,
        check_grants: bool = True,
    ) -> None:
        self.index = index
        self.paths = paths
        self.profile = profile or Profile(False)
        self.disabled = frozenset(disabled)
        self.registry = Registry()
        self.states: dict[str, str] = {}
        self.contexts: dict[str, Context] = {}
        self._hosts: dict[str, Host] = dict(hosts or {})
        self._order: list[str] = []
        #: why each plugin was activated ("command:build", "required by x", ...)
        self.reasons: dict[str, str] = {}
        #: problems that did not stop the command (a side plugin failed, a hook raised)
        self.warnings: list[ConduitError] = []
        #: each activation attempt, for the run journal (conduit.runlog): name, why,
        #: import/boot/run times in ms, ok, error, the plugin's metrics()
        self.activations: list[dict[str, Any]] = []
        self._bus: HookBus | None = None
        self._activating: list[str] = []
        self._usable: frozenset[str] | None = None
        #: asked when a plugin lacks grants (default: a prompt if there is a terminal)
        self.approve = approve
        #: False only for install verification (kernel/verify.py): no grant check, no
        #: prompt, nothing bound or written; plugins run with the grants they hold
        self.check_grants = check_grants
        #: the in-process guard's attribution of each guarded plugin (security.guard)
        self._guards: dict[str, Running] = {}
        #: entered around the kernel's own work once the guard is installed
        self._trusted: AbstractContextManager[None] = _NOGUARD
        # The kernel's own service for built-in plugins (owner "conduit": no plugin).
        self.registry.services[ADMIN_SERVICE] = (KERNEL_OWNER, self._admin)

    def record(self, name: str) -> PluginRec:
        """The index record of an installed, usable plugin, or a PluginLoadError."""
        rec = self.index["plugins"].get(name)
        if rec is None:
            for broken in self.index["broken"]:
                if broken["name"] == name:
                    raise PluginLoadError(name, broken["error"], hint=broken["hint"])
            raise PluginLoadError(name, "no such plugin", hint="see 'conduit plugins list'")
        if not rec["enabled"] or name in self.disabled:
            raise PluginLoadError(
                name, "plugin is disabled", hint=f"enable it with 'conduit plugins enable {name}'"
            )
        if rec["blocked"]:
            raise PluginLoadError(name, rec["blocked"], hint=rec["blocked_hint"])
        return rec

    def host_for(self, rec: PluginRec) -> Host:
        """The host of ``rec``, created on first use.

        Hosts given to the constructor serve their isolation kind (tests inject fakes).
        Each process plugin and each executable gets a host of its own, so that a crash
        stays with the plugin that caused it; plugins listed in ``[process] shared``
        share one.
        """
        name, kind = rec["name"], rec["isolation"]
        table = self.index["config"].get("process")
        process = table if isinstance(table, dict) else {}
        if rec["source"] == "executable":
            key = f"executable:{name}"
        elif kind == "process" and kind not in self._hosts:
            from conduit.security.sandbox import shared_plugins

            key = "process:shared" if name in shared_plugins(self.index) else f"process:{name}"
        else:
            key = kind
        if key not in self._hosts:
            self._hosts[key] = self._new_host(rec, process)
        return self._hosts[key]

    def _new_host(self, rec: PluginRec, process: dict[str, Any]) -> Host:
        executable = rec["source"] == "executable"
        if executable and rec["protocol"] != "jsonrpc":
            from conduit.hosts.executable import ExecHost

            return ExecHost()
        if executable or rec["isolation"] == "process":
            from conduit.hosts.process import ProcessHost, ProcessSettings

            command = [rec["origin"], "--conduit-rpc"] if executable else None
            return ProcessHost(self, ProcessSettings(process), command=command)
        if rec["isolation"] == "in-process":
            from conduit.hosts.inprocess import InProcessHost

            return InProcessHost()
        if rec["isolation"] == "wasm":
            from conduit.hosts.wasm.host import WasmHost

            return WasmHost(self)
        raise PluginLoadError(
            rec["name"],
            f"isolation '{rec['isolation']}' is not supported by this Conduit release",
            hint='set isolation = "in-process" in the manifest, or upgrade Conduit',
        )

    def activate(self, name: str, reason: str = "requested") -> Context:
        """Activate ``name`` after what it requires (idempotent); return its context."""
        if self.states.get(name) == ACTIVE:
            return self.contexts[name]
        with self._trusted:
            return self._activate(name, reason)

    def _guard_for(self, rec: PluginRec, host: Host) -> AbstractContextManager[None]:
        """The in-process guard's attribution for a third-party plugin in a guarded host."""
        name = rec["name"]
        if rec["source"] == "builtin" or not getattr(host, "guarded", False):
            return _NOGUARD
        from conduit.security import guard

        own = guard.own_files(rec["source"], rec["origin"], rec["entry"])
        if rec.get("dependencies"):
            # a single-file plugin's inline dependencies (conduit.store.envs): read like
            # the rest of sys.path, although they join it after the policy is built
            from conduit.store.envs import env_dir

            own.append(env_dir(self.paths.cache_dir, list(rec["dependencies"])))
        guard.install()
        grants: list[Capability] = []
        table = self.index["config"].get("grants")
        # most plugins hold no grant at all; a first-party one holds what it declares
        if (isinstance(table, dict) and name in table) or rec.get("first_party"):
            from conduit.security.grants import granted

            grants = granted(self.index, name)
        policy = guard.Policy(name, grants, own=own, plugin_data=self.paths.plugin_data(name))
        self._guards[name] = running = guard.Running(policy)
        self._trusted = guard.TRUSTED
        return running

    def _activate(self, name: str, reason: str) -> Context:
        rec = self.record(name)
        grants = self.index["config"].get("grants")
        if (
            self.check_grants
            and rec["source"] != "builtin"
            and (
                rec["capabilities"]
                or rec.get("dependencies")
                or (isinstance(grants, dict) and name in grants)
            )
        ):
            # checks its requests and consent to install its inline dependencies, and
            # binds unbound grants to it on first use
            from conduit.security.grants import ensure_granted

            ensure_granted(self.index, rec, self.paths.config_file, self.approve)
        if name in self._activating:  # resolution blocks cycles; this is a safety net
            chain = " -> ".join([*self._activating, name])
            raise PluginLoadError(name, f"dependency cycle {chain}")
        self._activating.append(name)
        try:
            for dep in rec["after"]:
                try:
                    self.activate(dep, f"required by {name}")
                except PluginLoadError as exc:
                    raise PluginLoadError(
                        name,
                        f"requires '{dep}', which failed to load: {exc.message}",
                        hint=exc.hint,
                    ) from exc
        finally:
            self._activating.remove(name)
        host = self.host_for(rec)
        ctx = Context(self, rec)
        entry: dict[str, Any] = {"name": name, "why": reason, "ok": True}
        self.activations.append(entry)
        spans = self.profile.spans
        first, start = len(spans), time.perf_counter_ns()
        try:
            with self._guard_for(rec, host):
                host.activate(rec, ctx, self.profile)
        except BaseException as exc:
            self.warnings.extend(ctx.unregister_all())
            self._guards.pop(name, None)
            self.states[name] = FAILED
            entry["ok"] = False
            entry["error"] = getattr(exc, "message", "") or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            _timings(entry, name, spans[first:], time.perf_counter_ns() - start)
        self.contexts[name] = ctx
        self.states[name] = ACTIVE
        self.reasons[name] = reason
        self._order.append(name)
        return ctx

    def reindex(self, index: Index) -> None:
        """Serve from ``index`` from now on (``conduit dev``, after a plugin's manifest
        changed): the plugins it changes must be deactivated first."""
        self.index = index
        self._usable = None

    def usable(self) -> frozenset[str]:
        """Names of the plugins that may be activated in this kernel (computed once: the
        index and the disabled set do not change during a kernel's life)."""
        if self._usable is None:
            self._usable = frozenset(self.index["usable"]).difference(self.disabled)
        return self._usable

    def _activate_quietly(self, name: str, reason: str) -> None:
        """Activate a plugin some event asked for; its failure is a warning, not fatal."""
        try:
            self.activate(name, reason)
        except PluginLoadError as exc:
            self.warnings.append(
                PluginLoadError(name, f"not activated for {reason}: {exc.detail}", hint=exc.hint)
            )

    def activate_for(self, command: list[str], environ: dict[str, str], cwd: str) -> None:
        """Activate the plugins whose events fire for running ``command``."""
        events = self.index["events"]
        if not (events["startup"] or events["env"] or events["file"] or events["command"]):
            return  # the usual case: no module to import, nothing to evaluate
        from conduit.kernel.activation import triggered

        for name, event in triggered(
            self.index, command=command, environ=environ, cwd=cwd, usable=self.usable()
        ):
            with self.profile.span(f"event:{event}"):
                self._activate_quietly(name, event)

    def hook(self, name: str, *, raise_errors: bool = False, **kwargs: Any) -> list[Any]:
        """Call the hook ``name``; plugins with ``event:NAME`` are activated first.

        pluggy is imported only if the hook has implementations. A failing
        implementation is attributed to its plugin: raised when ``raise_errors``,
        otherwise added to :attr:`warnings` while the others still run.
        """
        for plugin in self.index["events"]["event"].get(name, ()):
            if plugin in self.usable():
                self._activate_quietly(plugin, f"event:{name}")
        if not self.registry.hooks.get(name):
            return []
        if self._bus is None:
            from conduit.kernel.hooks import HookBus

            self._bus = HookBus(self.registry)
        bus = self._bus
        before = len(bus.failures)
        with self.profile.span(f"hook:{name}"):
            results = bus.call(name, kwargs)
        failures = bus.failures[before:]
        del bus.failures[before:]
        if failures and raise_errors:
            raise failures[0]
        self.warnings.extend(failures)
        return results

    def deactivate(self, name: str) -> None:
        """Shut ``name`` down and remove everything it registered."""
        if self.states.get(name) != ACTIVE:
            return
        ctx = self.contexts.pop(name)
        rec = self.index["plugins"][name]
        try:
            with self._guards.pop(name, _NOGUARD):
                host = self.host_for(rec)
                self._collect_metrics(name, rec, ctx, host)
                host.deactivate(rec, ctx)
        finally:
            try:
                self.warnings.extend(ctx.unregister_all())
            finally:
                self.states[name] = INACTIVE
                self._order.remove(name)

    def _collect_metrics(self, name: str, rec: PluginRec, ctx: Context, host: Host) -> None:
        """The plugin's optional ``metrics()`` into its journal entry (hosts that cannot
        ask have no ``metrics`` method); a failing or malformed one is left out."""
        collect = getattr(host, "metrics", None)
        if collect is None:
            return
        try:
            values = collect(rec, ctx)
        except Exception:  # a plugin's bug in a diagnostic: the command's result stands
            return
        if not values:
            return
        entry = next((a for a in reversed(self.activations) if a["name"] == name), None)
        if entry is not None:
            entry["metrics"] = values

    def shutdown(self) -> None:
        """Deactivate every active plugin, the last activated first."""
        errors: list[ConduitError] = []
        for name in reversed(list(self._order)):
            try:
                self.deactivate(name)
            except ConduitError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def run(
        self,
        plugin: str,
        argv: list[str],
        prog: str = "conduit",
        *,
        environ: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        """Run ``plugin``'s command ``argv[0]`` with ``argv[1:]``.

        First the plugins whose activation events fire are activated (their failures
        are warnings), then ``plugin`` itself; the kernel hooks frame the command.
        """
        words = [argv[0]]
        for arg in argv[1:3]:  # subcommand words, up to the first option
            if arg.startswith("-"):
                break
            words.append(arg)
        self._prepare_command(plugin)
        self.activate_for(
            words,
            dict(os.environ if environ is None else environ),
            os.getcwd() if cwd is None else cwd,
        )
        ctx = self.activate(plugin, f"command:{argv[0]}")
        rec = self.index["plugins"][plugin]
        self.hook("config_loaded", config=self.index["config"])
        self.hook("before_command", command=argv[0], argv=argv[1:])
        entry: dict[str, Any] = next(
            (a for a in reversed(self.activations) if a["name"] == plugin), {}
        )
        start = time.perf_counter_ns()
        try:
            with self.profile.span(f"run:{plugin}"), self._guards.get(plugin, _NOGUARD):
                code = self.host_for(rec).run_command(rec, ctx, argv, prog)
        except ConduitError as exc:
            entry["run_ms"] = round((time.perf_counter_ns() - start) / 1e6, 3)
            self.hook("on_command_error", command=argv[0], argv=argv[1:], error=exc.message)
            self.hook("after_command", command=argv[0], argv=argv[1:], exit_code=exc.exit_code)
            raise
        entry["run_ms"] = round((time.perf_counter_ns() - start) / 1e6, 3)
        self.hook("after_command", command=argv[0], argv=argv[1:], exit_code=code)
        return code

    def _prepare_command(self, plugin: str) -> None:
        """Let the host of ``plugin`` load what running a command needs before any plugin
        code runs: the in-process host imports Click ahead of the guard's audit hook (with
        any audit hook installed, CPython copies each ``.pyc`` it unmarshals for the
        ``marshal.loads`` event: 4 M instructions for Click's import alone). A plugin that
        cannot be activated is left to :meth:`activate` to report."""
        if self.states.get(plugin) == ACTIVE:
            return
        try:
            host = self.host_for(self.record(plugin))
        except PluginLoadError:
            return
        prepare = getattr(host, "prepare_command", None)
        if prepare is not None:
            with self._trusted:
                prepare()

    def _admin(self) -> Any:
        """The factory of :data:`~conduit.kernel.ADMIN_SERVICE`, imported when a built-in
        asks for it (most commands never do)."""
        from conduit.kernel.admin import Admin

        return Admin(self)

    def service(self, name: str, *, for_plugin: str | None = None) -> Any:
        """The service ``name``; its provider is activated on first use.

        ``for_plugin`` names the plugin that asks; ``None`` is the kernel's own caller
        (the command line, a library user). The services the kernel provides itself
        (:mod:`conduit.kernel.admin`) are served to built-in plugins only: any other
        plugin gets a :class:`~conduit.errors.PluginError`.
        """
        registry = self.registry
        owner = registry.services.get(name, ("",))[0]
        if for_plugin is not None and owner == KERNEL_OWNER:
            rec = self.index["plugins"].get(for_plugin)
            if rec is None or rec["source"] != "builtin":
                raise PluginError(
                    for_plugin,
                    f"service '{name}' is reserved for Conduit's built-in plugins",
                    hint="it belongs to Conduit itself; a third-party plugin cannot use it",
                )
        if name in registry.service_instances:
            return registry.service_instances[name]
        if name not in registry.services:
            ambiguous = self.index["ambiguous"].get(name)
            if ambiguous:
                raise ConduitError(
                    f"service '{name}' is provided by {' and '.join(ambiguous)}",
                    hint=f'choose one in the config: [pins] "service:{name}" = "{ambiguous[0]}"',
                )
            usable = self.usable()
            for pname in self.index["events"]["service"].get(name, ()):
                if pname in usable and pname != self.index["services"].get(name):
                    self._activate_quietly(pname, f"service:{name}")
            provider = self.index["services"].get(name)
            if provider is not None and name not in registry.services:
                self.activate(provider, f"service:{name}")
        if name not in registry.services:
            raise ConduitError(
                f"no plugin provides the service '{name}'",
                hint="install a plugin that provides it (see 'conduit plugins list')",
            )
        owner, factory = registry.services[name]
        try:
            instance = factory()
        except ConduitError:
            raise
        except Exception as exc:
            raise PluginError(
                owner, f"service '{name}' failed to start: {type(exc).__name__}: {exc}"
            ) from exc
        registry.service_instances[name] = instance
        return instance

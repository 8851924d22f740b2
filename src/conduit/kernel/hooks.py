"""Calling hooks through pluggy, imported only when a hook with implementations fires.

The kernel's registry records who registered which hook implementation and hookspec;
this module turns that into a ``pluggy.PluginManager`` when it is first needed (and again
after registrations change), wraps every implementation so that its failure is
attributed to its plugin, and checks implementations against their specs.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conduit.errors import PluginError

if TYPE_CHECKING:
    import pluggy

    from conduit.kernel.core import Registry

__all__ = ["HookBus"]


class HookBus:
    """A pluggy manager mirroring a :class:`~conduit.kernel.core.Registry`'s hooks."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._pm: pluggy.PluginManager | None = None
        self._generation = -1
        self._invalid: dict[str, list[PluginError]] = {}
        self.failures: list[PluginError] = []

    def _wrap(self, owner: str, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                # A Conduit error (a process plugin's host failing) already says what
                # happened; anything else is the implementation's own exception.
                detail = getattr(exc, "detail", None)
                why = detail if detail else f"{type(exc).__name__}: {exc}"
                error = PluginError(owner, f"hook '{hook}' failed: {why}")
                error.__cause__ = exc
                self.failures.append(error)
                return None

        return call

    def _manager(self) -> pluggy.PluginManager:
        if self._pm is not None and self._generation == self._registry.generation:
            return self._pm
        import pluggy

        from conduit.kernel import hookspecs

        pm = pluggy.PluginManager("conduit")
        pm.add_hookspecs(hookspecs)
        spec = pluggy.HookspecMarker("conduit")
        for name, (_owner, fn, firstresult) in self._registry.hookspecs.items():
            marked = spec(firstresult=firstresult)(fn)
            pm.add_hookspecs(type(f"{name}_spec", (), {name: staticmethod(marked)}))
        impl = pluggy.HookimplMarker("conduit")
        self._invalid = {}
        for name, entries in self._registry.hooks.items():
            for i, (owner, fn) in enumerate(entries):
                holder = types.SimpleNamespace(**{name: impl(self._wrap(owner, name, fn))})
                try:
                    pm.register(holder, name=f"{owner}/{name}/{i}")
                except pluggy.PluginValidationError as exc:
                    # Skipped, and reported each time the hook is called.
                    reason = str(exc).strip().splitlines()[-1]
                    self._invalid.setdefault(name, []).append(
                        PluginError(
                            owner,
                            f"hook '{name}': implementation {getattr(fn, '__name__', fn)!s} does "
                            f"not match the hookspec: {reason}",
                            hint="an implementation may only take arguments the hookspec names",
                        )
                    )
        self._pm = pm
        self._generation = self._registry.generation
        return pm

    def call(self, name: str, kwargs: dict[str, Any]) -> list[Any]:
        """Call every implementation of ``name``; failures go to :attr:`failures`."""
        pm = self._manager()
        self.failures.extend(self._invalid.get(name, ()))
        caller = getattr(pm.hook, name)
        result = caller(**kwargs)
        if caller.spec is not None and caller.spec.opts.get("firstresult"):
            return [] if result is None else [result]
        return list(result)

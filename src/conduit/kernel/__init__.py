"""The kernel: plugin states, activation, services and hooks (no printing, no Click).

Internal to Conduit. :class:`Kernel` is importable from here for library use without a
semver promise; the face is lazy so that importing a submodule (``conduit.kernel.activation``
on the command path) does not import :mod:`conduit.kernel.core` and what it needs.

- ``core``: :class:`Kernel`, the per-plugin ``Context`` and the ``Registry`` of what
  active plugins registered; ``KERNEL_HOOKS`` and the kernel's own service names
- ``activation``: activation events evaluated from the index (stdlib only)
- ``hooks`` / ``hookspecs``: the pluggy bus, built only when a hook has implementations
- ``admin``: the ``conduit.admin`` service that built-in plugins use (imported when one
  asks for it)
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conduit.kernel.core import Kernel

__all__ = ["Kernel"]


def __getattr__(name: str) -> object:
    if name == "Kernel":
        from conduit.kernel.core import Kernel

        return Kernel
    raise AttributeError(f"module 'conduit.kernel' has no attribute {name!r}")

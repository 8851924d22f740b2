"""Conduit: a developer CLI built as a microkernel.

Importing this package must stay free: the command-line start-up path imports it.
Plugin authors import :mod:`conduit.sdk`, never this module's internals.
"""

__version__ = "0.1.0"
#: the distribution Conduit is installed as (`conduit` and `conduit-cli` are taken on PyPI)
DISTRIBUTION = "conduit-devtool"

__all__ = ["DISTRIBUTION", "__version__"]

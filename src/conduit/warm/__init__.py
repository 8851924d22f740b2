"""The warm kernel: a per-user, per-environment server with the kernel imported, which
forks a fresh child for each command (``server``), and the client every ``conduit``
command tries first (``client``). See docs/warm-kernel.md.

This face imports nothing: the client is on the start-up path.
"""

__all__: list[str] = []

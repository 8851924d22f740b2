"""``python -m conduit`` and the ``conduit`` console script.

A command goes to the warm kernel first when one serves this environment
(conduit/warm/client.py, which imports next to nothing); otherwise, or when the warm
kernel cannot take it, it runs here, on the cold path (conduit/cli.py).
"""

from __future__ import annotations

import os
import sys

__all__ = ["main", "wanted"]

_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


def _off(name: str) -> bool | None:
    """Whether variable ``name`` says off (True), on (False), or nothing (None)."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in _FALSE else False if value in _TRUE or value else None


#: global options that take a value
_VALUED = ("--color", "--profile-out")
#: global options the cold path answers itself (faster than a connection, or about it)
_COLD_OPTIONS = ("-h", "--help", "--version", "--all", "--profile")


def wanted(args: list[str]) -> bool:
    """Whether ``conduit ARGS`` goes to the warm kernel: a command that loads the kernel.
    Not ``--help``, ``--version`` or completion (answered from the index faster than a
    connection), not ``--profile`` (it times the cold path), not ``server`` (it manages
    the warm kernel), not ``mcp`` (a long-running server: a client that kills it must end
    it, and a client's SIGKILL cannot be relayed), nothing that is a usage error of the
    global options, nothing with ``CONDUIT_WARM=0``, nothing on a system other than Linux."""
    if _off("CONDUIT_WARM") is True or _off("CONDUIT_PROFILE") is False:
        return False
    if not sys.platform.startswith("linux"):  # SO_PEERCRED, pidfds, POLLRDHUP: Linux's
        return False
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        if arg in _COLD_OPTIONS or arg.startswith("--profile-out") or arg == "--":
            return False
        if arg in _VALUED:
            i += 1
        elif not (arg in ("--debug", "--no-plugins") or arg.startswith("--color=")):
            return False
        i += 1
    return i < len(args) and args[i] not in ("__complete", "server", "mcp")


def _leave(code: int) -> None:
    """The warm kernel ran the command: end now, without the interpreter's teardown (it
    frees, one by one, what this process set up, for nobody: about 8 M instructions, a
    fifth of a ``python -c pass``). Nothing registered an exit handler here, and the
    streams are flushed (the client writes nothing of its own to them but a lost
    status's line)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code & 0xFF)


def main() -> int:
    """Run ``conduit`` with ``sys.argv[1:]``; return the exit code."""
    args = sys.argv[1:]
    missing = False
    if wanted(args):
        from conduit.warm.client import try_warm

        code, reason = try_warm(args)
        if code is not None:
            _leave(code)
        missing = reason == "no server"
    from conduit.cli import main as run

    return run(args, start_server=missing)


if __name__ == "__main__":
    sys.exit(main())

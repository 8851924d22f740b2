"""Load one plugin for real in a child process: ``plugins doctor --deep``.

:func:`check` starts ``python -m conduit.kernel.verify NAME``, which activates the plugin
in a fresh kernel of its own, in the plugin's own host kind: an in-process plugin in
that child interpreter, a process plugin in its sandboxed host, a WebAssembly module
compiled and loaded; then shuts it down. A plugin that crashes or hangs takes the child
with it, never the caller. Grants are never asked for: a plugin that lacks them is
reported as such, not as broken.

(The store verifies new installations in ``store/``; this is the kernel-side check of
what is installed, kept small so that the two can share one helper.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

__all__ = ["check"]

#: seconds one plugin may take to load in the child
TIMEOUT = 60.0


def check(name: str, timeout: float = TIMEOUT) -> dict[str, object]:
    """``{"name", "ok", "error", "needs_grants", "ms"}`` of loading ``name`` in a child."""
    env = dict(os.environ)
    env.pop("CONDUIT_PROFILE", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "conduit.kernel.verify", name],
            capture_output=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {"name": name, "ok": False, "error": f"did not load within {timeout:g} s"}
    last = proc.stdout.decode("utf-8", "replace").strip().rpartition("\n")[2]
    try:
        result = json.loads(last)
        if not isinstance(result, dict):
            raise ValueError
    except ValueError:
        how = f"exit status {proc.returncode}" if proc.returncode >= 0 else "killed by a signal"
        err = proc.stderr.decode("utf-8", "replace").strip().rpartition("\n")[2]
        return {"name": name, "ok": False, "error": f"its check crashed ({how}): {err}".strip()}
    return result


def _main(name: str) -> int:
    import time

    from conduit.errors import ConduitError, NotGranted
    from conduit.indexer.build import load
    from conduit.kernel.core import Kernel
    from conduit.paths import resolve
    from conduit.timing import Profile

    paths = resolve()
    kernel = Kernel(load(paths, Profile(False)), paths, approve=lambda rec, caps: False)
    result: dict[str, object] = {"name": name, "ok": True, "error": ""}
    start = time.perf_counter()
    try:
        try:
            kernel.activate(name, "doctor --deep")
        finally:
            kernel.shutdown()
    except NotGranted as exc:
        result.update(needs_grants=True, error=exc.message)
    except ConduitError as exc:
        result.update(ok=False, error=exc.message)
    except Exception as exc:  # a bug shows as a failure of this plugin's check
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    result["ms"] = round((time.perf_counter() - start) * 1000, 3)
    result["activations"] = kernel.activations
    sys.stdout.flush()
    os.write(1, ("\n" + json.dumps(result) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))

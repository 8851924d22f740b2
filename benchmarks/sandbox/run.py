#!/usr/bin/env python3
"""Benchmark: what the process host's sandbox costs.

1. Host cold start, spawn to the answer of ``initialize`` (the real child,
   ``conduit.hosts._child``, over a socketpair, as ``ProcessHost`` starts it), interleaved
   in one run: without the sandbox (no ``CONDUIT_SANDBOX`` policy), with the sandbox and no
   grants (namespace, Landlock, seccomp), and with a scoped ``network:http`` grant (plus
   the loopback, the proxy listener and thread in the child and the proxy in the kernel).
2. ``sandbox.apply()`` alone, timed inside the child.
3. The cost of one ``open()`` + ``close()`` of a file, in processes restricted by each
   mechanism alone and by all of them, interleaved, against an unrestricted one.

Everything runs pinned to CPU 0 (``os.sched_setaffinity``; children inherit it), the
kernel side and the child on the same CPU. Standard library and Conduit only.

    .venv/bin/python benchmarks/sandbox/run.py            # markdown to stdout
    .venv/bin/python benchmarks/sandbox/run.py --starts 10
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

try:
    import conduit  # noqa: F401
except ImportError:  # run from a checkout without an installed Conduit
    sys.path.insert(0, os.path.join(REPO, "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(REPO, "src"), os.environ.get("PYTHONPATH")) if p
    )

from conduit import rpc  # noqa: E402
from conduit.paths import Paths  # noqa: E402
from conduit.security import sandbox  # noqa: E402

CHILD = "from conduit.hosts._child import main; main()"


def _prepare(state_dir: str, grants: list[str]) -> sandbox.Plan:
    """The sandbox of a plugin ``bench`` with ``grants``, from data alone."""
    index: Any = {"config": {"grants": {"bench": grants}}, "plugins": {}}
    return sandbox.prepare(index, Paths(state_dir, state_dir, state_dir), "bench")


def start_once(state_dir: str, grants: list[str] | None) -> float:
    """Spawn a host child and wait for its answer to ``initialize``; seconds."""
    env = dict(os.environ)
    plan = None
    if grants is not None:
        plan = _prepare(state_dir, grants)
        env = plan.child_env(env)
    parent, child = socket.socketpair()
    env["CONDUIT_RPC_FD"] = str(child.fileno())
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        pass_fds=(child.fileno(), *(plan.pass_fds if plan else ())),
        env=env,
    )
    child.close()
    if plan is not None:
        plan.started()
    endpoint = rpc.Endpoint(rpc.Channel(parent.fileno(), parent.fileno()))
    endpoint.request(
        "initialize",
        {"protocol": rpc.PROTOCOL_VERSION, "conduit_api": "1.0", "codecs": ["json"], "plugins": []},
        10.0,
    )
    elapsed = time.perf_counter() - t0
    endpoint.request("shutdown", {}, 5.0)
    proc.wait(5)
    parent.close()
    if plan is not None:
        plan.close()
    return elapsed


_APPLY = r"""
import json, os, time
from conduit.security.sandbox import apply
t = time.perf_counter()
apply()
print(json.dumps(time.perf_counter() - t))
"""

_OPENS = r"""
import os, sys, time
from conduit.security import sandbox, seccomp
n, variant = int(sys.argv[1]), sys.argv[2]
policy = {"plugins": ["b"], "read": [], "write": [], "exec": None, "net": "none", "tmp": "/"}
if "ns" in variant:
    sandbox._unshare_network()
if variant != "plain":
    sandbox._prctl_no_new_privs()
if "landlock" in variant:
    sandbox._landlock(policy, "none")
if "seccomp" in variant:
    seccomp.install(allow_exec=False, allow_inet=False)
target = os.__file__  # the stdlib: readable in the sandbox too
rounds = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(n):
        os.close(os.open(target, os.O_RDONLY))
    rounds.append((time.perf_counter() - t) / n)
print(sorted(rounds)[2])
"""
OPEN_VARIANTS = ("plain", "ns", "landlock", "seccomp", "ns+landlock+seccomp")


def apply_time(state_dir: str) -> float:
    """``sandbox.apply()`` (no grants) timed inside a fresh process; seconds."""
    plan = _prepare(state_dir, [])
    env = plan.child_env(dict(os.environ))
    out = subprocess.run(
        [sys.executable, "-c", _APPLY], env=env, capture_output=True, text=True, check=True
    ).stdout
    plan.close()
    return float(json.loads(out))


def open_time(variant: str, opens: int) -> float:
    """Seconds per ``os.open()`` + ``os.close()`` in a process restricted by ``variant``."""
    out = subprocess.run(
        [sys.executable, "-c", _OPENS, str(opens), variant],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=30, help="cold starts per variant")
    parser.add_argument("--opens", type=int, default=20000, help="opens per measurement")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    load_start = os.getloadavg()[0]
    variants: dict[str, list[str] | None] = {
        "no sandbox": None,
        "sandbox, no grants": [],
        "sandbox, network:http:localhost (proxy)": ["network:http:localhost"],
    }
    starts: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as state:
        for _ in range(3):  # warm the page cache and .pyc files
            for grants in variants.values():
                start_once(state, grants)
        for _ in range(args.starts):  # interleaved: the machine's noise hits all alike
            for name, grants in variants.items():
                starts[name].append(start_once(state, grants))
        applies = [apply_time(state) for _ in range(9)]
    opens: dict[str, list[float]] = {v: [] for v in OPEN_VARIANTS}
    for _ in range(8):  # interleaved processes
        for variant in OPEN_VARIANTS:
            opens[variant].append(open_time(variant, args.opens))
    base = statistics.median(starts["no sandbox"])
    load_end = os.getloadavg()[0]
    print(f"## Sandbox set-up ({datetime.date.today()}, {platform.machine()}, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, everything on CPU 0, load average "
          f"{load_start:.1f} at start, {load_end:.1f} at end)\n")  # fmt: skip
    print("| host child | cold start median (ms) | p90 (ms) | vs no sandbox |")
    print("|---|---:|---:|---:|")
    for name, values in starts.items():
        values.sort()
        median = statistics.median(values)
        p90 = values[min(len(values) - 1, -(-len(values) * 9 // 10) - 1)]
        print(f"| {name} | {median * 1e3:.1f} | {p90 * 1e3:.1f} | "
              f"{median - base:+.4f} s ({median / base:.2f}x) |")  # fmt: skip
    apply_ms = statistics.median(applies) * 1e3
    print(f"\n`sandbox.apply()` alone (no grants), inside the child: {apply_ms:.1f} ms "
          f"(median of {len(applies)} processes)\n")  # fmt: skip
    print("| `os.open()` + `os.close()` of a stdlib file, process restricted by | us (median "
          "of 8 interleaved processes) | vs plain |")  # fmt: skip
    print("|---|---:|---:|")
    plain = statistics.median(opens["plain"])
    for variant, values in opens.items():
        median = statistics.median(values)
        print(f"| {variant} | {median * 1e6:.2f} | {(median - plain) * 1e6:+.2f} us "
              f"({median / plain:.2f}x) |")  # fmt: skip


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark: is the import time ``conduit plugins check`` reports right, and what does the
check cost?

For each fixture plugin in tests/fixtures/check (a light one, one that sleeps 0.2 s at
import, one that holds 64 MB):

1. ``conduit plugins check FIXTURE --runs N`` under the given ``taskset`` placement: the
   import + boot time and memory growth it reports (its own median of N child runs);
2. an independent measurement from outside, in the same run and placement: wall time of
   ``python -c "<imports a host already has>; <load and boot the plugin>"`` against the
   same command without the plugin, interleaved, N rounds; the difference of the medians
   is the plugin's cost as a user would see it (it also contains the process exit, which
   frees the plugin's memory).

Then the wall time of a whole ``conduit plugins check`` (default 3 runs) against
``conduit plugins list`` as the same-run baseline, interleaved.

    .venv/bin/python benchmarks/author/run.py              # markdown to stdout
    .venv/bin/python benchmarks/author/run.py --rounds 30 --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "check")
CONDUIT = [sys.executable, "-m", "conduit"]

_BASE = "import importlib.util, click, conduit.sdk, conduit.hosts.inprocess, conduit.authoring"
_LOAD = """
import json, sys
from conduit.authoring import PluginSource, RecordingContext, load_object
src = PluginSource(**json.loads(sys.argv[1]))
obj = load_object(src)
(obj() if isinstance(obj, type) else obj).boot(RecordingContext(src.name, sys.argv[2]))
"""


def _pin(cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu] if cpu else []


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return (time.perf_counter() - start) * 1000


def reported(
    fixture: str, rounds: int, cpu: str | None, env: dict[str, str]
) -> tuple[float, float]:
    cmd = [*_pin(cpu), *CONDUIT, "plugins", "check", fixture, "--runs", str(rounds)]
    cmd += ["--import-budget-ms", "1e9", "--memory-budget-mb", "1e9"]
    out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
    ms = float(re.search(r"import: (\d+\.\d) ms", out).group(1))  # type: ignore[union-attr]
    mb = float(re.search(r"memory: \+(\d+\.\d) MB", out).group(1))  # type: ignore[union-attr]
    return ms, mb


def outside(fixture: str, rounds: int, cpu: str | None, env: dict[str, str]) -> tuple[float, float]:
    from conduit.authoring import find_plugins

    (src,) = find_plugins(fixture)
    args = {k: getattr(src, k) for k in ("name", "kind", "manifest_path", "entry", "import_root")}
    data_dir = tempfile.mkdtemp(prefix="conduit-bench-")
    base = [*_pin(cpu), sys.executable, "-c", _BASE]
    plugin = [*_pin(cpu), sys.executable, "-c", _BASE + "\n" + _LOAD, json.dumps(args), data_dir]
    _wall(base, env), _wall(plugin, env)  # warm the page cache and .pyc files
    a, b = [], []
    for _ in range(rounds):
        a.append(_wall(base, env))
        b.append(_wall(plugin, env))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cpu", default="1", help="taskset CPU list ('' for unpinned)")
    opts = parser.parse_args()
    cpu = opts.cpu or None
    home = tempfile.mkdtemp(prefix="conduit-bench-home-")
    env = {**os.environ, "CONDUIT_HOME": home}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(REPO, "src"), os.environ.get("PYTHONPATH")) if p
    )
    subprocess.run([*CONDUIT, "plugins", "list"], check=True, env=env, capture_output=True)

    print(
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"python {platform.python_version()}; placement: taskset -c {cpu or '(none)'}; "
        f"load average {os.getloadavg()[0]:.1f}; rounds {opts.rounds}\n"
    )
    print(
        "| fixture | plugins check: import+boot | plugins check: memory | outside: "
        "baseline / with plugin (median wall ms) | outside: difference |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in ("good.py", "slow-import.py", "big-memory.py"):
        fixture = os.path.join(FIXTURES, name)
        ms, mb = reported(fixture, opts.rounds, cpu, env)
        base, plugin = outside(fixture, opts.rounds, cpu, env)
        print(
            f"| {name} | {ms:.1f} ms | +{mb:.1f} MB | {base:.1f} / {plugin:.1f} | "
            f"{plugin - base:.1f} ms |"
        )

    fixture = os.path.join(FIXTURES, "good.py")
    check = [*_pin(cpu), *CONDUIT, "plugins", "check", fixture]
    listing = [*_pin(cpu), *CONDUIT, "plugins", "list"]
    a, b = [], []
    for _ in range(max(5, opts.rounds // 4)):
        a.append(_wall(listing, env))
        b.append(_wall(check, env))
    print(
        f"\nwhole `plugins check good.py` (3 runs): median {statistics.median(b):.0f} ms; "
        f"`plugins list` in the same run: {statistics.median(a):.0f} ms "
        f"(ratio {statistics.median(b) / statistics.median(a):.1f}x)"
    )


if __name__ == "__main__":
    main()

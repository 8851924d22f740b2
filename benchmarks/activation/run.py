"""Benchmark: evaluating every activation event with N plugins installed.

Writes N single-file plugins with a realistic mix of activation events into a temporary
CONDUIT_HOME, builds the real index, then times ``conduit.kernel.activation.triggered`` (what
the kernel runs before every command) against the same call with no plugins, in the same
run. Plain script, standard library only:

    python benchmarks/activation/run.py --sizes 0,100,500,1000

Run it pinned to one CPU (``taskset -c 0``) and say so when quoting its figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

EVENT_MIX = [
    ["command:build"],
    ["env:CI"],
    ["env:CONDUIT_ENV=production"],
    ["file:pyproject.toml"],
    ["file:Cargo.toml", "env:RUST_LOG"],
    ["event:before_command"],
    ["service:vcs"],
    ["command:repos status", "file:*.tf"],
    [],
    [],
]


def write_plugins(plugin_dir: str, n: int) -> None:
    os.makedirs(plugin_dir, exist_ok=True)
    for i in range(n):
        events = ", ".join(f'"{e}"' for e in EVENT_MIX[i % len(EVENT_MIX)])
        with open(os.path.join(plugin_dir, f"p{i:04d}.py"), "w") as f:
            f.write(
                f'# /// conduit\n# name = "p{i:04d}"\n# api = ">=1.0,<2"\n'
                f"# activation = [{events}]\n"
                f'# [[commands]]\n# name = "cmd-{i:04d}"\n# ///\n'
            )


def measure(n: int, repeat: int, number: int, workspace: str) -> dict[str, float]:
    home = tempfile.mkdtemp(prefix=f"conduit-act-{n}-")
    os.environ["CONDUIT_HOME"] = home
    write_plugins(os.path.join(home, "plugins"), n)
    from conduit.indexer.build import load
    from conduit.kernel.activation import triggered
    from conduit.paths import resolve
    from conduit.timing import Profile

    index = load(resolve(), Profile(False))
    assert len(index["plugins"]) >= n, "index did not pick up the synthetic plugins"
    environ = {"CI": "1", "CONDUIT_ENV": "staging", "PATH": "/usr/bin"}
    fired = triggered(index, command=["build"], environ=environ, cwd=workspace)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            triggered(index, command=["build"], environ=environ, cwd=workspace)
        samples.append((time.perf_counter_ns() - start) / number / 1000)
    return {
        "n": n,
        "fired": len(fired),
        "median_us": statistics.median(samples),
        "min_us": min(samples),
        "max_us": max(samples),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100,500,1000")
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--number", type=int, default=200)
    args = parser.parse_args()
    # A workspace like a real one: a repository with a pyproject.toml, two levels down.
    root = tempfile.mkdtemp(prefix="conduit-ws-")
    os.makedirs(os.path.join(root, ".git"))
    open(os.path.join(root, "pyproject.toml"), "w").close()
    workspace = os.path.join(root, "src", "pkg")
    os.makedirs(workspace)
    rows = [measure(int(n), args.repeat, args.number, workspace) for n in args.sizes.split(",")]
    try:
        placement = f"CPUs {sorted(os.sched_getaffinity(0))}"
    except AttributeError:  # pragma: no cover - not Linux
        placement = "unknown"
    print(f"python {sys.version.split()[0]}, {placement}, {args.repeat}x{args.number} calls")
    print("| plugins | events fired | median per evaluation | min | max |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['n']} | {r['fired']} | {r['median_us']:.1f} us | {r['min_us']:.1f} us "
            f"| {r['max_us']:.1f} us |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

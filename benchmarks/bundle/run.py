#!/usr/bin/env python3
"""Bundle benchmark (issue 23): ``python TOOL.pyz`` against ``python -c pass`` and the
installed ``conduit``, interleaved.

Builds a bundle of this environment's Conduit (``conduit bundle``, plugins as installed)
in a temporary directory, runs it once (extraction), then per round, in a shuffled order,
each lane once, timed with ``time.perf_counter`` around ``subprocess.run``:

- ``floor``: ``python -c pass`` (a fresh venv's python, which runs the bundle);
- ``floor-installed``: the same in the venv where Conduit is installed (its .pth files);
- ``pyz-open``: a zip with the bundle's members whose ``__main__.py`` is ``pass`` (what
  opening a flat, shiv-style zip costs zipimport);
- ``help-installed`` / ``help-bundle``: ``conduit --help`` and ``python TOOL.pyz --help``;
- ``help-zipimport``: ``--help`` with Conduit imported from the zip itself instead of the
  extracted directory (the alternative layout);
- ``cmd-installed`` / ``cmd-bundle``: ``completion bash``, a plugin's Click command.

    taskset -c 1 .venv/bin/python benchmarks/bundle/run.py --rounds 40

Standard library and Conduit only; writes only into a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

ZIPIMPORT_MAIN = """import os, sys
archive = os.path.abspath(sys.path[0])
sys.path[:] = [archive, archive + "/site-packages"] + [
    p for p in sys.path[1:] if p.startswith(sys.base_prefix) and "-packages" not in p]
import conduit.paths
conduit.paths.BUNDLE = (os.environ["BENCH_ROOT"], os.environ["BENCH_ID"], False)
from conduit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _variant(src: str, dst: str, main: str) -> None:
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as b:
        for info in a.infolist():
            if info.filename == "__main__.pyc":
                continue
            data = main.encode() if info.filename == "__main__.py" else a.read(info)
            b.writestr(info, data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    conduit = os.path.join(os.path.dirname(sys.executable), "conduit")
    tmp = tempfile.mkdtemp(prefix="bench-bundle-")
    # The bundle's lanes run with a fresh venv's python (no .pth files, nothing installed)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", os.path.join(tmp, "v")], check=True
    )
    py = os.path.join(tmp, "v", "bin", "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUIT_", "PYTHON"))}
    env.update(CONDUIT_HOME=os.path.join(tmp, "home"), CONDUIT_WARM="0")
    pyz = os.path.join(tmp, "tool.pyz")
    subprocess.run([conduit, "bundle", "-o", pyz], env=env, check=True, capture_output=True)
    subprocess.run([py, pyz, "--help"], env=env, check=True, capture_output=True)
    bundles = os.path.join(tmp, "home", "cache", "bundles")
    root = os.path.join(bundles, os.listdir(bundles)[0])
    env.update(BENCH_ROOT=root, BENCH_ID=root.rsplit("-", 1)[1])
    empty, zipped = os.path.join(tmp, "open.pyz"), os.path.join(tmp, "zipimport.pyz")
    _variant(pyz, empty, "pass\n")
    _variant(pyz, zipped, ZIPIMPORT_MAIN)
    with zipfile.ZipFile(pyz) as z:
        members = len(z.namelist())
    lanes = {
        "floor": [py, "-c", "pass"],
        "floor-installed": [sys.executable, "-c", "pass"],
        "pyz-open": [py, empty],
        "help-installed": [conduit, "--help"],
        "help-bundle": [py, pyz, "--help"],
        "help-zipimport": [py, zipped, "--help"],
        "cmd-installed": [conduit, "completion", "bash"],
        "cmd-bundle": [py, pyz, "completion", "bash"],
    }
    for argv in lanes.values():  # warm the caches, write the bytecode
        subprocess.run(argv, env=env, check=True, capture_output=True)
    times: dict[str, list[float]] = {k: [] for k in lanes}
    for _ in range(args.rounds):
        order = list(lanes)
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            subprocess.run(lanes[name], env=env, check=True, stdout=subprocess.DEVNULL)
            times[name].append((time.perf_counter() - start) * 1000)
    floor = statistics.median(times["floor"])
    print(
        f"python {sys.version.split()[0]}, {args.rounds} rounds, bundle of {members} "
        f"members, {os.path.getsize(pyz) // 1024} KiB; load {os.getloadavg()[0]:.2f}, "
        f"cpus {sorted(os.sched_getaffinity(0))}"
    )
    print("| lane | median ms | min ms | x floor |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {min(values):.1f} | {med / floor:.2f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Bundle benchmark (issue 23): ``python TOOL.pyz`` against ``python -c pass`` and the
installed ``conduit``, interleaved.

Builds a bundle of this environment's Conduit (``conduit bundle``, plugins as installed)
in a temporary directory, runs it once (extraction), then per round, in a shuffled order,
each lane once, timed with ``time.perf_counter`` around ``subprocess.run``:

- ``floor``: ``python -c pass`` (a fresh venv's python, which runs the bundle);
- ``floor-installed``: the same in the venv where Conduit is installed (its .pth files);
- ``pyz-open``: the bundle with ``__main__.pyc`` compiled from ``pass`` (what running any
  zip application costs: runpy and zipimport; the bundle's zip has four members);
- ``flat-open``: the same for a flat zip of the payload's ~450 members (the first
  layout, shiv's: zipimport reads that central directory on every run);
- ``help-installed`` / ``help-bundle``: ``conduit --help`` and ``python TOOL.pyz --help``;
- ``help-direct``: ``./TOOL.pyz --help`` (the bundle's sh header starts its extracted copy
  with ``python -S -c``, no runpy); ``floor-S``: ``python -S -c pass`` (what that skips);
- ``help-zipimport``: ``--help`` with Conduit imported from a flat zip of the payload
  instead of the extracted directory (the alternative layout);
- ``cmd-installed`` / ``cmd-bundle`` / ``cmd-direct``: ``completion bash``, a plugin's
  Click command.

With ``--callgrind``, each lane runs once under ``valgrind --tool=callgrind`` instead and
the instruction counts are printed (steadier than times on a loaded machine); the direct
lanes count the Python process only (``--trace-children``, the last image: what ``sh``
execs), so the header's own cost shows only in the times.

    taskset -c 1 .venv/bin/python benchmarks/bundle/run.py --rounds 40
    .venv/bin/python benchmarks/bundle/run.py --callgrind

Standard library and Conduit only; writes only into a temporary directory.
"""

from __future__ import annotations

import argparse
import io
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


def _pyc(source: str, tmp: str) -> bytes:
    import py_compile

    path = os.path.join(tmp, "main.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    out = py_compile.compile(
        path,
        path + "c",
        dfile="__main__.py",
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    with open(out, "rb") as f:
        return f.read()


def _variant(src: str, dst: str, main: bytes, flat: bool) -> None:
    """``src`` with ``main`` as its ``__main__.pyc``; ``flat``: the payload's members
    instead of the bundle's own (one zip of everything, as shiv lays it out)."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        b.writestr("__main__.pyc", main)
        if flat:
            with zipfile.ZipFile(io.BytesIO(a.read("payload.zip"))) as inner:
                for info in inner.infolist():
                    b.writestr(info, inner.read(info))
            return
        for info in a.infolist():
            if not info.filename.startswith("__main__"):
                b.writestr(info, a.read(info))


def _instructions(argv: list[str], env: dict[str, str]) -> int:
    """Instructions of ``argv``'s process; after an ``exec`` (the bundle's sh header),
    of the program it execs only."""
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            "--callgrind-out-file=/dev/null",
            *argv,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    return int(proc.stderr.split("Collected :")[-1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--callgrind", action="store_true", help="instruction counts")
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
    empty, flat = os.path.join(tmp, "open.pyz"), os.path.join(tmp, "flat.pyz")
    zipped = os.path.join(tmp, "zipimport.pyz")
    _variant(pyz, empty, _pyc("pass\n", tmp), flat=False)
    _variant(pyz, flat, _pyc("pass\n", tmp), flat=True)
    _variant(pyz, zipped, _pyc(ZIPIMPORT_MAIN, tmp), flat=True)
    with zipfile.ZipFile(pyz) as z, zipfile.ZipFile(flat) as f:
        members = f"{len(z.namelist())} members ({len(f.namelist()) - 1} in the payload)"
    lanes = {
        "floor": [py, "-c", "pass"],
        "floor-installed": [sys.executable, "-c", "pass"],
        "floor-S": [py, "-S", "-c", "pass"],
        "pyz-open": [py, empty],
        "flat-open": [py, flat],
        "help-installed": [conduit, "--help"],
        "help-bundle": [py, pyz, "--help"],
        "help-direct": [pyz, "--help"],
        "help-zipimport": [py, zipped, "--help"],
        "cmd-installed": [conduit, "completion", "bash"],
        "cmd-bundle": [py, pyz, "completion", "bash"],
        "cmd-direct": [pyz, "completion", "bash"],
    }
    for argv in lanes.values():  # warm the caches, write the bytecode
        subprocess.run(argv, env=env, check=True, capture_output=True)
    if args.callgrind:
        counts = {name: _instructions(argv, env) for name, argv in lanes.items()}
        print(
            f"python {sys.version.split()[0]}, bundle of {members}; instructions; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        print("| lane | instructions (M) | x floor |")
        print("| --- | --- | --- |")
        for name, n in counts.items():
            print(f"| {name} | {n / 1e6:.1f} | {n / counts['floor']:.2f} |")
        return
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
        f"python {sys.version.split()[0]}, {args.rounds} rounds, bundle of {members}, "
        f"{os.path.getsize(pyz) // 1024} KiB; load {os.getloadavg()[0]:.2f}, "
        f"cpus {sorted(os.sched_getaffinity(0))}"
    )
    print("| lane | median ms | min ms | x floor |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {min(values):.1f} | {med / floor:.2f} |")


if __name__ == "__main__":
    main()

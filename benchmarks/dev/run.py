#!/usr/bin/env python3
"""Hot reload benchmark (issue 21): file saved -> plugin ready, under ``conduit dev``.

Lanes, interleaved in a shuffled order in each round, in one temporary CONDUIT_HOME:

1. ``in-process``: ``conduit dev tiny.py --run tiny`` runs in the background; a round
   rewrites tiny.py (its command prints a new word) and times from just before the write
   to the moment the new word arrives on the dev process's stdout: the watcher's
   notification, the reload (manifest, index, deactivate, import, boot) and the command;
2. ``process``: the same with ``isolation = "process"`` (a new sandboxed host process
   per reload);
3. ``cold``: the baseline, what a save costs without ``conduit dev``: one cold
   ``conduit tinyc`` (the same plugin installed in the plugin directory), timed around
   ``subprocess.run``.

The dev processes' own ``reloaded ... in N ms`` lines (the engine alone) are reported
too. Everything runs under ``taskset -c CPU`` when taskset exists (one CPU for the dev
processes, their hosts and the cold runs); the load average and the placement are
printed with the figures.

    .venv/bin/python benchmarks/dev/run.py --rounds 40 [--cpu 1] [--markdown]

Standard library, Conduit and its ``dev`` extra (watchfiles) only. Writes only into a
temporary directory.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PLUGIN = """\
# /// conduit
# name = "{name}"
# api = ">=1.0,<2"
# description = "A tiny plugin"
# isolation = "{isolation}"
#
# [[commands]]
# name = "{name}"
# help = "Print a word."
# ///
import click
from conduit.sdk import Plugin


@click.command()
def {name}():
    click.echo("{name} {word}")


class Tiny(Plugin):
    def boot(self, ctx):
        ctx.register_command({name})
"""


class Lines:
    """A stream's lines with their arrival times (perf_counter), read in a thread."""

    def __init__(self, stream: object) -> None:
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            now = time.perf_counter()
            with self.cond:
                self.lines.append((now, line))
                self.cond.notify_all()

    def wait(self, text: str, start: int = 0, timeout: float = 30.0) -> tuple[float, int]:
        """The arrival time of the first line from ``start`` holding ``text``, and the
        index after it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i][1]:
                        return self.lines[i][0], i + 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no line with {text!r}: {self.lines[-5:]}")
                self.cond.wait(left)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (taskset)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="conduit-dev-bench-")
    env = dict(os.environ, CONDUIT_HOME=os.path.join(work, "home"), CONDUIT_WARM="0")
    pin: list[str] = []
    if args.cpu is not None and shutil.which("taskset"):
        pin = ["taskset", "-c", str(args.cpu)]
    src = os.path.join(work, "src")
    os.makedirs(src)
    os.makedirs(os.path.join(env["CONDUIT_HOME"], "plugins"))
    lanes = {"in-process": ("tiny", "in-process"), "process": ("tinyp", "process")}
    for name, isolation in lanes.values():
        with open(os.path.join(src, f"{name}.py"), "w", encoding="utf-8") as f:
            f.write(PLUGIN.format(name=name, isolation=isolation, word="w0"))
    with open(os.path.join(env["CONDUIT_HOME"], "plugins", "tinyc.py"), "w") as f:
        f.write(PLUGIN.format(name="tinyc", isolation="in-process", word="w0"))
    cold = [*pin, sys.executable, "-m", "conduit", "tinyc"]
    subprocess.run(cold, env=env, check=True, capture_output=True)  # index built

    procs: dict[str, tuple[subprocess.Popen[str], Lines, Lines]] = {}
    try:
        for lane, (name, _) in lanes.items():
            proc = subprocess.Popen(
                [*pin, sys.executable, "-m", "conduit", "dev", f"{name}.py", "--run", name],
                cwd=src,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            out, err = Lines(proc.stdout), Lines(proc.stderr)
            err.wait("watching")
            procs[lane] = (proc, out, err)
        seen = dict.fromkeys(procs, (0, 0))
        times: dict[str, list[float]] = {"in-process": [], "process": [], "cold": []}
        engine: dict[str, list[float]] = {"in-process": [], "process": []}
        for i in range(1, args.rounds + 1):
            order = [*lanes, "cold"]
            random.shuffle(order)
            for lane in order:
                if lane == "cold":
                    start = time.perf_counter()
                    subprocess.run(cold, env=env, check=True, capture_output=True)
                    times["cold"].append((time.perf_counter() - start) * 1e3)
                    continue
                name, isolation = lanes[lane]
                proc, out, err = procs[lane]
                text = PLUGIN.format(name=name, isolation=isolation, word=f"w{i}")
                path = os.path.join(src, f"{name}.py")
                start = time.perf_counter()
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                arrived, o = out.wait(f"{name} w{i}\n", seen[lane][0])
                times[lane].append((arrived - start) * 1e3)
                _, e = err.wait("reloaded", seen[lane][1])
                line = err.lines[e - 1][1]
                match = re.search(r" in (\d+) ms", line)
                if match:
                    engine[lane].append(float(match.group(1)))
                seen[lane] = (o, e)
    finally:
        for proc, _, _ in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    load = os.getloadavg()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = f"taskset -c {args.cpu}" if pin else "not pinned"
    print(
        f"# {when}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {where}, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}, {args.rounds} rounds"
    )
    rows = [
        ("in-process: saved -> new output", times["in-process"]),
        ("in-process: the engine's reload", engine["in-process"]),
        ("process: saved -> new output", times["process"]),
        ("process: the engine's reload", engine["process"]),
        ("baseline: cold `conduit CMD`", times["cold"]),
    ]
    if args.markdown:
        print("| lane | p50 | p95 | mean |\n| --- | --- | --- | --- |")
    for label, values in rows:
        if not values:
            continue
        p50, p95, mean = pct(values, 50), pct(values, 95), statistics.fmean(values)
        if args.markdown:
            print(f"| {label} | {p50:.0f} ms | {p95:.0f} ms | {mean:.0f} ms |")
        else:
            print(f"{label:36} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  mean {mean:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Hot reload benchmark (issue 21): file saved -> plugin ready, under ``conduit dev``.

Lanes, interleaved in a shuffled order in each round, in one temporary CONDUIT_HOME:

1. ``in-process``: ``conduit dev tiny.py --run tiny`` runs in the background; a round
   rewrites tiny.py (its command prints a new word) and times from just before the write
   to the moment the new word arrives on the dev process's stdout: the watcher's
   notification, the reload (manifest, index, deactivate, import, boot) and the command;
2. ``process``: the same with ``isolation = "process"`` (a new sandboxed host process
   per reload);
3. ``wasm`` (when wasmtime is installed): ``conduit dev tinyw --run tinyw`` on a
   WebAssembly source (``conduit-plugin.toml`` + a prebuilt ``plugin.wasm``, from WAT); a
   round writes a new ``plugin.wasm``: the rebuild (``plugins build``'s), the compile of
   the new module with the running engine, the swap and the command;
4. ``cold``: the baseline, what a save costs without ``conduit dev``: one cold
   ``conduit tinyc`` (the same plugin installed in the plugin directory), timed around
   ``subprocess.run``.

The dev processes' own ``reloaded ... in N ms`` lines (the engine alone) are reported
too, and for ``wasm`` its ``built ... in N ms`` line (the build alone; the compile is in
the reload). Everything runs under ``taskset -c CPU`` when taskset exists (one CPU for the dev
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


WASM_MANIFEST = """\
name = "tinyw"
api = ">=1.0,<2"
description = "A tiny WebAssembly plugin"

[[commands]]
name = "tinyw"
help = "Print a word."
"""


def wasm_module(word: str) -> bytes:
    """A WASI command module printing ``tinyw WORD``."""
    import wasmtime

    text = f"tinyw {word}\n"
    return wasmtime.wat2wasm(
        '(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32)'
        ' (result i32))) (memory (export "memory") 1)'
        f' (data (i32.const 100) "{text[:-1]}\\0a") (func (export "_start")'
        " (i32.store (i32.const 0) (i32.const 100))"
        f" (i32.store (i32.const 4) (i32.const {len(text)}))"
        " (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"
    )


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
    try:
        import wasmtime  # noqa: F401
    except ImportError:
        print("# no wasmtime: no wasm lane", file=sys.stderr)
    else:
        lanes["wasm"] = ("tinyw", "wasm")
        os.makedirs(os.path.join(src, "tinyw"))
        with open(os.path.join(src, "tinyw", "conduit-plugin.toml"), "w") as f:
            f.write(WASM_MANIFEST)
        with open(os.path.join(src, "tinyw", "plugin.wasm"), "wb") as f:
            f.write(wasm_module("w0"))
    with open(os.path.join(env["CONDUIT_HOME"], "plugins", "tinyc.py"), "w") as f:
        f.write(PLUGIN.format(name="tinyc", isolation="in-process", word="w0"))
    cold = [*pin, sys.executable, "-m", "conduit", "tinyc"]
    subprocess.run(cold, env=env, check=True, capture_output=True)  # index built

    procs: dict[str, tuple[subprocess.Popen[str], Lines, Lines]] = {}
    try:
        for lane, (name, _) in lanes.items():
            proc = subprocess.Popen(
                [
                    *pin,
                    sys.executable,
                    "-m",
                    "conduit",
                    "dev",
                    name if lane == "wasm" else f"{name}.py",
                    "--run",
                    name,
                ],
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
        times: dict[str, list[float]] = {lane: [] for lane in (*lanes, "cold")}
        engine: dict[str, list[float]] = {lane: [] for lane in lanes}
        built: list[float] = []
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
                if lane == "wasm":
                    data = wasm_module(f"w{i}")
                    start = time.perf_counter()
                    with open(os.path.join(src, name, "plugin.wasm"), "wb") as f:
                        f.write(data)
                else:
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
                if lane == "wasm":
                    for _, previous in err.lines[seen[lane][1] : e]:
                        match = re.search(r"^conduit dev: built .* in (\d+) ms", previous)
                        if match:
                            built.append(float(match.group(1)))
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
        ("wasm: saved -> new output", times.get("wasm", [])),
        ("wasm: the engine's reload (build + compile + swap)", engine.get("wasm", [])),
        ("wasm: the rebuild alone", built),
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

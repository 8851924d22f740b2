#!/usr/bin/env python3
"""Benchmark: what ``[security] sandbox-third-party`` costs per command.

One tiny Click plugin (a single file whose command prints ``ok``), run as a whole
``conduit tiny`` command from the console script: in-process (the default) and in the
process sandbox (``[security] sandbox-third-party = true``: a host child started, its
sandbox applied, the plugin imported there, the command run over RPC, the child shut
down), with ``python -c pass`` as the floor. Timed with ``hyperfine -N``, interleaved:
each round runs hyperfine once over the three commands in a shuffled order; the per-run
times of all rounds are pooled. Everything is pinned to one CPU with ``taskset``.

    .venv/bin/python benchmarks/sandbox/command.py               # markdown to stdout
    .venv/bin/python benchmarks/sandbox/command.py --rounds 10 --runs 10 --cpu 0

Needs ``hyperfine`` and ``taskset`` on PATH, Linux (the process sandbox). Writes only
into a temporary directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

PLUGIN = """\
# /// conduit
# name = "tiny"
# api = ">=1.0,<2"
# description = "A tiny Click plugin"
# [[commands]]
# name = "tiny"
# help = "Print ok."
# ///
import click
from conduit.sdk import Plugin


@click.command("tiny")
def tiny():
    click.echo("ok")


class Tiny(Plugin):
    def boot(self, ctx):
        ctx.register_command(tiny)
"""


def home(root: str, name: str, config: str) -> str:
    path = os.path.join(root, name)
    os.makedirs(os.path.join(path, "plugins"))
    with open(os.path.join(path, "plugins", "tiny.py"), "w") as f:
        f.write(PLUGIN)
    with open(os.path.join(path, "config.toml"), "w") as f:
        f.write(config)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cpu", default="0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for tool in ("hyperfine", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} is not on PATH")
    conduit = os.path.join(os.path.dirname(sys.executable), "conduit")
    root = tempfile.mkdtemp(prefix="conduit-bench-cmd-")
    homes = {
        "in-process": home(root, "inproc", ""),
        "process-sandbox": home(root, "sandbox", "[security]\nsandbox-third-party = true\n"),
    }
    commands = {key: f"env CONDUIT_HOME={path} {conduit} tiny" for key, path in homes.items()}
    commands["python -c pass"] = f"{sys.executable} -c pass"
    for key, path in homes.items():  # warm: the index, the plugin's bytecode
        for _ in range(2):
            out = subprocess.run(
                [conduit, "tiny"],
                env={**os.environ, "CONDUIT_HOME": path},
                capture_output=True,
                text=True,
                check=True,
            )
        assert out.stdout == "ok\n" and not out.stderr, (key, out)
    host = subprocess.run(
        [conduit, "plugins", "permissions", "tiny", "--json"],
        env={**os.environ, "CONDUIT_HOME": homes["process-sandbox"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(host.stdout)["host"] == "process (sandboxed)", host.stdout
    times: dict[str, list[float]] = {key: [] for key in commands}
    paired: list[float] = []  # per round: median(process-sandbox) - median(in-process)
    rng = random.Random(args.seed)
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        order = list(commands)
        rng.shuffle(order)
        export = os.path.join(root, "round.json")
        subprocess.run(
            [
                "taskset", "-c", args.cpu, "hyperfine", "-N", "--style", "none",
                "--runs", str(args.runs), "--warmup", str(args.warmup),
                "--export-json", export,
                *[commands[key] for key in order],
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with open(export) as f:
            medians = {}
            for key, result in zip(order, json.load(f)["results"], strict=True):
                times[key] += [t * 1000 for t in result["times"]]
                medians[key] = statistics.median(result["times"]) * 1000
        paired.append(medians["process-sandbox"] - medians["in-process"])
    load_after = os.getloadavg()
    shutil.rmtree(root, ignore_errors=True)

    print(f"date: {datetime.date.today()}, machine: {platform.machine()} "
          f"{platform.processor() or ''} {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}; pinned with taskset -c {args.cpu}; "
          f"{args.rounds} rounds x {args.runs} runs (+{args.warmup} warm-up) per command; "
          f"load {load_before[0]:.2f} before, {load_after[0]:.2f} after")  # fmt: skip
    print()
    print("| command | median ms | mean ms | stdev ms | min ms | runs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key, values in times.items():
        print(
            f"| {key} | {statistics.median(values):.1f} | {statistics.mean(values):.1f} | "
            f"{statistics.stdev(values):.1f} | {min(values):.1f} | {len(values)} |"
        )
    extra = statistics.median(times["process-sandbox"]) - statistics.median(times["in-process"])
    fastest = min(times["process-sandbox"]) - min(times["in-process"])
    print()
    print(
        f"process sandbox - in-process, per command: {extra:+.1f} ms (pooled medians), "
        f"{statistics.median(paired):+.1f} ms (median of the per-round differences), "
        f"{fastest:+.1f} ms (fastest runs)"
    )


if __name__ == "__main__":
    main()

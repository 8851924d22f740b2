#!/usr/bin/env python3
"""The first ``conduit`` run after installing one plugin, at N installed plugins.

Builds a venv with Conduit and N synthetic plugins (run.py's wheels), then, interleaved
in every round in a shuffled order, times:

* ``first``:  ``conduit --help`` right after ``uv pip install`` of one more plugin (the
  index is rebuilt); before each sample that plugin is uninstalled and the index brought
  up to date (untimed), so every sample is the first run after an install;
* ``help``:   ``conduit --help`` with a current index;
* ``python``: ``VENV/bin/python -c pass``.

With ``--baseline-repo DIR`` a second venv gets that tree (Conduit before a change) and the
same lanes, prefixed ``base-``, in the same rounds. ``--callgrind`` also counts each lane's
instructions once with valgrind (steadier than wall time on a shared machine).

Standard library only, plus ``uv`` (and valgrind for ``--callgrind``). Every process is
pinned to one CPU (``--cpu``, default 1) by setting this script's affinity.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run  # noqa: E402  (run.py beside this file: the wheel writer and the venv tools)

LANES = ("first", "help", "python")


class Tree:
    """One Conduit source tree in its own venv with N synthetic plugins installed."""

    def __init__(self, work: str, uv: str, repo: str, n: int, prefix: str = "") -> None:
        self.uv, self.repo, self.n, self.prefix = uv, repo, n, prefix
        self.root = os.path.join(work, "first-run", f"{prefix}n{n:04d}")
        self.home = os.path.join(work, "first-run", f"{prefix}home-n{n:04d}")
        self.python = os.path.join(self.root, "bin", "python")
        self.conduit = os.path.join(self.root, "bin", "conduit")
        self.env = run.clean_env(self.home)
        self.extra = ""  # the wheel installed and uninstalled around each `first` sample
        self.extra_dist = run.plugin_name(n).replace("synth", "conduit-synth")

    def create(self, wheels: list[str], extra: str) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)
        run.run([self.uv, "venv", "-q", "--python", sys.executable, self.root])
        pip = self.pip("install", "--compile-bytecode")
        run.run([*pip, self.repo])
        if wheels:
            run.run([*pip, "--no-index", *wheels])
        self.extra = extra
        self.conduit_help()  # builds the index

    def pip(self, *args: str) -> list[str]:
        return [self.uv, "pip", *args[:1], "-q", "--python", self.python, *args[1:]]

    def conduit_help(self) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [self.conduit, "--help"], env=self.env, capture_output=True, text=True, check=False
        )
        if out.returncode != 0 or out.stderr.strip():
            run.die(f"{self.conduit} --help failed: {out.stderr[-2000:]}")
        return out

    def prepare_first(self) -> None:
        """Uninstall the extra plugin, bring the index up to date, install it again."""
        subprocess.run(self.pip("uninstall", self.extra_dist), check=False, capture_output=True)
        self.conduit_help()
        run.run([*self.pip("install", "--no-index"), self.extra])

    def argv(self, lane: str) -> list[str]:
        if lane == "python":
            return [self.python, "-c", "pass"]
        return [self.conduit, "--help"]

    def check(self) -> None:
        self.prepare_first()
        out = self.conduit_help()
        listed = sum(1 for line in out.stdout.splitlines() if line.startswith("  synth-"))
        if listed != self.n + 1:
            run.die(f"{self.tree()}: --help lists {listed} synthetic commands, not {self.n + 1}")
        profile = subprocess.run(
            [self.conduit, "--profile", "--help"], env=self.env, capture_output=True, text=True
        )
        if "index:rebuild" in profile.stderr:
            run.die(f"{self.tree()}: a second --help rebuilt the index")

    def tree(self) -> str:
        return "baseline" if self.prefix else "current"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def instructions(argv: list[str], env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if match is None:
        run.die(f"valgrind failed for {argv}: {proc.stderr[-500:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="plugins installed (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--runs", type=int, default=3, help="samples of each lane per round")
    p.add_argument("--cpu", default="1", help="CPU to pin to; 'none' to not pin")
    p.add_argument("--work", default=run.DEFAULT_WORK)
    p.add_argument("--repo", default=run.REPO)
    p.add_argument("--baseline-repo", help="a second tree measured in the same rounds")
    p.add_argument("--reuse", action="store_true", help="keep the venvs of an earlier run")
    p.add_argument("--callgrind", action="store_true", help="also count instructions")
    p.add_argument("--out", help="write the result as JSON")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if args.cpu.lower() != "none":
        os.sched_setaffinity(0, {int(args.cpu)})  # inherited by every process started
    uv = run.find_uv(args.work)
    wheel_dir = os.path.join(args.work, "wheels")
    os.makedirs(wheel_dir, exist_ok=True)
    wheels = [run.build_wheel(wheel_dir, i) for i in range(args.n + 1)]
    trees = [Tree(args.work, uv, os.path.abspath(args.repo), args.n)]
    if args.baseline_repo:
        trees.append(Tree(args.work, uv, os.path.abspath(args.baseline_repo), args.n, "base-"))
    for tree in trees:
        if args.reuse and os.path.exists(tree.python):
            tree.extra = wheels[-1]
        else:
            run.log(f"creating the {tree.tree()} venv with {args.n} plugins")
            tree.create(wheels[:-1], wheels[-1])
        tree.check()

    load_before = run.loadavg()
    rng = random.Random(args.seed)
    samples: dict[str, list[float]] = {}
    rounds: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        order = [(t, lane) for t in trees for lane in LANES]
        rng.shuffle(order)
        for tree, lane in order:
            times = []
            for _ in range(args.runs):
                if lane == "first":
                    tree.prepare_first()
                else:
                    timed(tree.argv(lane), tree.env)  # warm-up: caches, bytecode
                times.append(timed(tree.argv(lane), tree.env))
            samples.setdefault(tree.prefix + lane, []).extend(times)
            rounds.setdefault(tree.prefix + lane, []).append(statistics.median(times))
        run.log(f"round {rnd + 1}/{args.rounds} done")
    load_after = run.loadavg()

    results = {k: run.summarize(v, rounds[k]) for k, v in samples.items()}
    ratios = {}
    for tree in trees:
        first, help_, python = (tree.prefix + lane for lane in LANES)
        ratios[tree.prefix + "first_vs_help"] = round(
            statistics.median(a / b for a, b in zip(rounds[first], rounds[help_], strict=True)),
            3,
        )
        ratios[tree.prefix + "first_vs_python"] = round(
            statistics.median(a / b for a, b in zip(rounds[first], rounds[python], strict=True)),
            3,
        )
    counts: dict[str, int] = {}
    if args.callgrind:
        for tree in trees:
            tree.prepare_first()
            counts[tree.prefix + "first"] = instructions(tree.argv("first"), tree.env)
            counts[tree.prefix + "help"] = instructions(tree.argv("help"), tree.env)
            counts[tree.prefix + "python"] = instructions(tree.argv("python"), tree.env)

    report = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "uname": " ".join(platform.uname()),
            "cpu_model": run.cpu_model(),
            "placement": f"sched_setaffinity CPU {args.cpu}",
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "n": args.n,
            "rounds": args.rounds,
            "runs_per_round": args.runs,
            "repo": run.git(args.repo, "rev-parse", "--short", "HEAD"),
            "baseline": run.git(args.baseline_repo, "rev-parse", "--short", "HEAD")
            if args.baseline_repo
            else None,
        },
        "results": results,
        "paired_ratios": ratios,
        "instructions": counts,
    }
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    for key, r in results.items():
        print(f"{key:>14}: median {r['median_ms']:.1f} ms (min {r['min_ms']:.1f})")
    for key, value in ratios.items():
        print(f"{key}: {value}")
    for key, value in counts.items():
        print(f"{key} instructions: {value / 1e6:.1f} M")
    print(f"load average {load_before} -> {load_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the run journal's cost per command (conduit.runlog), with a same-run baseline.

Each sample is a fresh interpreter (the journal module is imported once per command, so
its import is part of the cost) that has already loaded what a command run has loaded
(``conduit.kernel.core``, ``click``), then times, with ``time.perf_counter_ns``:

- ``baseline``: the same steps with nothing written (the loop overhead, and the building
  of the argument values);
- ``ring``: ``from conduit.runlog import record`` + one ``record(...)`` of a typical run
  (two plugin activations, metrics), appended to a journal of a few hundred lines, what
  Conduit does;
- ``sqlite``: the alternative the issue names: ``import sqlite3`` + connect + one INSERT
  + commit + close, in WAL mode.

and, end to end, ``conduit hello`` (a single-file plugin) run by ``conduit.cli.main`` in a
fresh interpreter with ``[journal] enabled = true`` and ``false``, alternated in the same
run. Plain script, standard library only:

    taskset -c 1 python benchmarks/journal/run.py --samples 60

State the CPU placement when quoting its figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

_SAMPLE = r"""
import os, sys, time
import click, conduit.kernel.core  # loaded by every command run already
from conduit.paths import resolve
kind = sys.argv[1]
paths = resolve()
acts = [
    {"name": "alpha", "why": "command:hello", "ok": True, "load_ms": 12.5, "import_ms": 11.0,
     "boot_ms": 0.02, "run_ms": 0.4, "metrics": {"hits": 3, "ratio": 0.5}},
    {"name": "git-tools", "why": "file:.git", "ok": True, "load_ms": 3.1, "import_ms": 2.9,
     "boot_ms": 0.01},
]
t0 = time.perf_counter_ns()
if kind == "ring":
    from conduit.runlog import record
    record(paths, {"enabled": True, "max-kb": 1024}, command="hello", plugin="alpha", code=0,
           error="", started_ns=t0, activations=acts)
elif kind == "sqlite":
    import sqlite3, json
    db = sqlite3.connect(os.path.join(paths.state_dir, "runs.sqlite"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS runs (t REAL, cmd TEXT, plugin TEXT, code INT,"
               " error TEXT, plugins TEXT)")
    db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?)",
               (time.time(), "hello", "alpha", 0, "", json.dumps(acts)))
    db.commit()
    db.close()
t1 = time.perf_counter_ns()
print((t1 - t0) / 1e6)
"""

_E2E = r"""
import sys, time
from conduit.cli import main
t0 = time.perf_counter_ns()
main(["hello"])
print("\n@@%f" % ((time.perf_counter_ns() - t0) / 1e6))
"""

PLUGIN = """# /// conduit
# name = "alpha"
# api = ">=1.0,<2"
# [[commands]]
# name = "hello"
# help = "Say hello."
# ///
import click
from conduit.sdk import Plugin

@click.command()
def hello():
    click.echo("hello")

class Alpha(Plugin):
    def boot(self, ctx):
        ctx.register_command(hello)
"""


def _run(code: str, args: list[str], env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    ).stdout
    return float(out.rpartition("@@")[2] if "@@" in out else out)


def _summary(name: str, values: list[float]) -> str:
    values = sorted(values)
    p95 = values[max(0, int(len(values) * 0.95) - 1)]
    return (
        f"| {name} | {statistics.median(values):.3f} | {statistics.mean(values):.3f} "
        f"| {p95:.3f} | {len(values)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    # As installed: byte-compiled (this machine's environment sets PYTHONDONTWRITEBYTECODE,
    # which would compile conduit.runlog from source on every import, ~1.5 ms).
    import conduit

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.dirname(conduit.__file__)], check=True
    )
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "CONDUIT_HOME": home}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        os.makedirs(os.path.join(home, "plugins"))
        os.makedirs(os.path.join(home, "state"))
        with open(os.path.join(home, "plugins", "alpha.py"), "w") as f:
            f.write(PLUGIN)
        config = os.path.join(home, "config.toml")
        results: dict[str, list[float]] = {"baseline": [], "ring": [], "sqlite": []}
        e2e: dict[str, list[float]] = {"journal on": [], "journal off": []}
        for kind in ("ring", "sqlite"):  # a journal of a few hundred runs already
            for _ in range(5):
                _run(_SAMPLE, [kind], env)
        for _ in range(args.samples):  # interleaved: drift hits all alike
            for kind in results:
                results[kind].append(_run(_SAMPLE, [kind], env))
            for label, enabled in (("journal on", "true"), ("journal off", "false")):
                with open(config, "w") as f:
                    f.write(f"[journal]\nenabled = {enabled}\n")
                _run(_E2E, [], env)  # the config changed: this run rebuilds the index
                e2e[label].append(_run(_E2E, [], env))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"python {sys.version.split()[0]}, CPUs allowed: {cpus}, samples: {args.samples}")
    rule = "| --- | --- | --- | --- | --- |"
    print(f"\n| step (fresh interpreter, ms) | median | mean | p95 | n |\n{rule}")
    for kind, values in results.items():
        print(_summary(kind, values))
    base = statistics.median(results["baseline"])
    print(f"\nring - baseline (median): {statistics.median(results['ring']) - base:.3f} ms")
    print(f"sqlite - baseline (median): {statistics.median(results['sqlite']) - base:.3f} ms")
    print(f"\n| `conduit hello` in main() (ms) | median | mean | p95 | n |\n{rule}")
    for label, values in e2e.items():
        print(_summary(label, values))


if __name__ == "__main__":
    main()

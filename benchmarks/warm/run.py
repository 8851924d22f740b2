#!/usr/bin/env python3
"""Warm kernel benchmark: the targets of issue 20, cold and warm, against ``python -c pass``.

One CONDUIT_HOME with three trivial plugins, and the lanes (README.md beside this file):

1. ``conduit tiny``: a single-file in-process Click plugin printing ``ok``, cold
   (``CONDUIT_WARM=0``) and warm (``CONDUIT_WARM=1``, the server running);
2. ``conduit tinyp``: the same plugin with ``isolation = "process"`` (sandbox applied, no
   grants), cold and warm;
3. ``conduit wasm-hi``: a WAT module printing a line (benchmarks/wasm), cold and warm;
4. the standalone Click script doing what lane 1 does (benchmarks/startup);
5. the first command after the server starts: per round ``conduit server stop``,
   ``conduit server start``, then one warm ``conduit tiny`` timed from Python
   (``time.perf_counter`` around ``subprocess.run``), against a cold ``conduit tiny``
   timed the same way in the same round.

Lanes 1-4 run with ``hyperfine -N`` under ``taskset -c CPU``: per round two hyperfine
invocations in a shuffled order, one with ``CONDUIT_WARM=0`` (floor, Click script and the
cold lanes) and one with ``CONDUIT_WARM=1`` (floor and the warm lanes), each over its
commands in a shuffled order; the floor ``python -c pass`` (the same interpreter) is in
both. The server is started with ``taskset -c CPU conduit server start`` and lane 5 runs
with this process pinned to CPU, so the client, the server and everything they start
share the CPU; the server's affinity is read back from /proc and recorded.

    .venv/bin/python benchmarks/warm/run.py --markdown --out /tmp/warm.json

Standard library and Conduit only (the ``wasm`` extra for lane 3), plus ``hyperfine``
and ``taskset``. Writes only into a temporary directory, and stops its server at exit.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import importlib.util
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from types import ModuleType

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.dirname(HERE)
REPO = os.path.dirname(BENCHMARKS)


def _load(name: str, relpath: str) -> ModuleType:
    """Import a sibling benchmark's module by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, relpath))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


startup = _load("_bench_startup", "startup/run.py")  # hyperfine, summarize, machine facts
sandbox_cmd = _load("_bench_sandbox_command", "sandbox/command.py")  # the tiny plugin
wasm_bench = _load("_bench_wasm", "wasm/run.py")  # the wasm-hi module

# The lane-2 plugin: lane 1's file, renamed, with isolation = "process".
PLUGIN_PROCESS = (
    sandbox_cmd.PLUGIN.replace('"tiny"', '"tinyp"')
    .replace('# api = ">=1.0,<2"\n', '# api = ">=1.0,<2"\n# isolation = "process"\n')
    .replace("A tiny Click plugin", "A tiny Click plugin in the process sandbox")
)

FLOOR = "floor"
# key -> (label, CONDUIT_WARM, argv after the conduit script or None for the others)
LANES: dict[str, tuple[str, str, list[str] | None]] = {
    FLOOR: ("python -c pass", "", None),
    "click": ("standalone Click script (lane 4)", "0", None),
    "inproc-cold": ("conduit tiny, in-process, cold", "0", ["tiny"]),
    "process-cold": ('conduit tinyp, isolation = "process", cold', "0", ["tinyp"]),
    "wasm-cold": ("conduit wasm-hi, WebAssembly, cold", "0", ["wasm-hi"]),
    "inproc-warm": ("conduit tiny, in-process, warm", "1", ["tiny"]),
    "process-warm": ('conduit tinyp, isolation = "process", warm', "1", ["tinyp"]),
    "wasm-warm": ("conduit wasm-hi, WebAssembly, warm", "1", ["wasm-hi"]),
}
FIRST = {
    "first-cold": "conduit tiny, cold (same round, same timing)",
    "first-warm": "conduit tiny, first warm command after `server start`",
}
EXPECTED = {"tiny": "ok\n", "tinyp": "ok\n", "wasm-hi": "hi from wasm\n"}
# A warm client hands the command over: it must not import these (a cold one does).
COLD_MARKERS = ("click", "wasmtime", "conduit.kernel")

# target name -> (numerator, denominator, limit)
TARGETS = {
    "warm in-process plugin / python -c pass": ("inproc-warm", FLOOR, 1.5),
    "warm process-isolated plugin / python -c pass": ("process-warm", FLOOR, 2.0),
    "warm WebAssembly module / python -c pass": ("wasm-warm", FLOOR, 2.0),
    "first command after server start / cold": ("first-warm", "first-cold", 1.10),
    "cold in-process plugin / standalone Click script": ("inproc-cold", "click", 1.10),
}


def log(text: str) -> None:
    sys.stderr.write(f"[warm-bench] {text}\n")
    sys.stderr.flush()


def die(text: str) -> None:
    sys.stderr.write(f"error: {text}\n")
    raise SystemExit(2)


class Bench:
    """The scratch CONDUIT_HOME, its plugins, and the commands run against it."""

    def __init__(self, work: str, cpu: str) -> None:
        self.python = sys.executable
        self.conduit = os.path.join(os.path.dirname(self.python), "conduit")
        if not os.access(self.conduit, os.X_OK):
            die(f"no conduit console script beside {self.python}: run with the venv's python")
        self.home = os.path.join(work, "home")
        self.click_script = os.path.join(work, "click_cmd.py")
        self.cpu = cpu
        self.pin = ["taskset", "-c", cpu] if cpu else []
        self.env = startup.clean_env(self.home)  # no PYTHON*, no CONDUIT_* but the home
        self.server_starts = 0
        self.server_cpu = ""

    def env_for(self, warm: str) -> dict[str, str]:
        return {**self.env, "CONDUIT_WARM": warm} if warm else dict(self.env)

    def argv(self, key: str) -> list[str]:
        if key == FLOOR:
            return [self.python, "-c", "pass"]
        if key == "click":
            return [self.python, self.click_script]
        args = LANES[key][2]
        assert args is not None
        return [self.conduit, *args]

    def write(self, wasm: bool) -> None:
        plugins = os.path.join(self.home, "plugins")
        os.makedirs(plugins)
        files = {"tiny.py": sandbox_cmd.PLUGIN, "tinyp.py": PLUGIN_PROCESS}
        if wasm:
            import wasmtime

            with open(os.path.join(plugins, "wasm-hi.wasm"), "wb") as f:
                f.write(wasmtime.wat2wasm(wasm_bench.HI_WAT))
            files["wasm-hi.toml"] = wasm_bench.HI_TOML
        for name, text in files.items():
            with open(os.path.join(plugins, name), "w", encoding="utf-8") as f:
                f.write(text)
        with open(self.click_script, "w", encoding="utf-8") as f:
            f.write(startup.CLICK_SCRIPT)

    def exec(
        self, argv: list[str], warm: str = "0", pinned: bool = False, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env_for(warm), **extra}
        cmd = [*self.pin, *argv] if pinned else argv
        return subprocess.run(cmd, env=env, text=True, capture_output=True, check=False)

    # --- the server ---------------------------------------------------------------------

    def server(self, action: str) -> subprocess.CompletedProcess[str]:
        # Pinned: the server started here (and what it forks) runs on the client's CPU,
        # or on --server-cpu.
        if self.server_cpu:
            argv = ["taskset", "-c", self.server_cpu, self.conduit, "server", action]
            return self.exec(argv, warm="")
        return self.exec([self.conduit, "server", action], warm="", pinned=True)

    def server_supported(self) -> bool:
        return self.server("status").returncode in (0, 3)

    def server_running(self) -> bool:
        return self.server("status").returncode == 0

    def start_server(self) -> None:
        out = self.server("start")
        if out.returncode != 0 or not self.server_running():
            die(f"conduit server start: exit {out.returncode}: {out.stderr[-2000:]}")
        self.server_starts += 1

    def stop_server(self) -> None:
        out = self.server("stop")
        if out.returncode != 0 or self.server_running():
            die(f"conduit server stop: exit {out.returncode}: {out.stderr[-2000:]}")

    def server_affinity(self) -> list[str]:
        """Cpus_allowed_list of every process (but this one) running with our home: the
        server and the host template it forks for process-isolated plugins."""
        found = []
        needle = f"CONDUIT_HOME={self.home}".encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{pid}/status", encoding="utf-8") as f:
                    lines = [ln for ln in f if ln.startswith("Cpus_allowed_list:")]
                cpus = lines[0].split(":", 1)[1].strip() if lines else "?"
            except OSError:
                continue
            found.append(f"pid {pid} CPUs {cpus}")
        return found

    # --- checks -------------------------------------------------------------------------

    def check(self, key: str) -> None:
        """The lane's command prints what it should, nothing on stderr; a warm one is served
        warm (its client imported none of COLD_MARKERS) and a cold one is not."""
        warm = LANES[key][1]
        argv = self.argv(key)
        out = self.exec(argv, warm=warm)
        args = LANES[key][2]
        expected = EXPECTED[args[0]] if args else ("ok\n" if key == "click" else "")
        if out.returncode != 0 or out.stdout != expected or out.stderr:
            die(
                f"{LANES[key][0]}: exit {out.returncode}, stdout {out.stdout!r} "
                f"(expected {expected!r}), stderr {out.stderr[-2000:]!r}"
            )
        if args:
            # -X importtime, not PYTHONPROFILEIMPORTTIME: the warm kernel keys its server
            # on the PYTHON* variables (a client with another set runs cold)
            traced = self.exec([self.python, "-X", "importtime", *argv], warm=warm)
            imported = {ln.rsplit("|", 1)[-1].strip() for ln in traced.stderr.splitlines()}
            went_cold = any(m in imported for m in COLD_MARKERS)
            if warm == "1" and went_cold:
                die(f"{LANES[key][0]}: the client ran the command itself (imported click, "
                    "wasmtime or the kernel): it was not served warm")  # fmt: skip
            if warm == "0" and not went_cold:
                die(f"{LANES[key][0]}: CONDUIT_WARM=0 but the client imported no kernel")

    def check_sandboxed(self) -> str:
        out = self.exec([self.conduit, "plugins", "permissions", "tinyp", "--json"])
        host = json.loads(out.stdout)["host"] if out.returncode == 0 else out.stderr
        if host != "process (sandboxed)":
            die(f"tinyp runs in {host!r}, expected 'process (sandboxed)'")
        return str(host)


def timed(bench: Bench, warm: str) -> float:
    """One pinned ``conduit tiny`` (this process is pinned), wall time in ms."""
    argv, env = bench.argv("inproc-cold"), bench.env_for(warm)
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, check=False)
    took = (time.perf_counter() - start) * 1000
    if out.returncode != 0 or out.stdout != b"ok\n":
        die(f"conduit tiny (CONDUIT_WARM={warm}): exit {out.returncode}, {out.stderr[-2000:]!r}")
    return took


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def paired(rounds: dict[str, list[float]], num: str, den: str) -> float | None:
    """Median over rounds of the ratio of the two lanes' medians in that round (against the
    floor: the floor's median in the lane's own hyperfine invocation)."""
    if not rounds.get(num) or not rounds.get(den):
        return None
    pairs = zip(rounds[num], rounds[den], strict=True)
    return round(statistics.median(x / y for x, y in pairs), 3)


def _num(value: object, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(report: dict[str, object]) -> str:
    meta: dict[str, object] = report["meta"]  # type: ignore[assignment]
    results: dict[str, dict[str, object]] = report["results"]  # type: ignore[assignment]
    targets: dict[str, dict[str, object]] = report["targets"]  # type: ignore[assignment]
    out = [
        f"Run of {meta['date']}, commit `{meta['git_head']}`"
        f"{' (src modified)' if meta['git_dirty_src'] else ''}; {meta['cpu_model']}, "
        f"{meta['nproc']} CPUs, Linux {meta['kernel']}, Python {meta['python']}, "
        f"{meta['hyperfine']}.",
        f"Placement: {meta['placement']}; server: {meta['server_placement']}.",
        f"Load average {meta['loadavg_before']} before, {meta['loadavg_after']} after. "
        f"{meta['rounds']} rounds; lanes 1-4: {meta['runs']} runs (+{meta['warmup']} warm-up) "
        f"per command per round; lane 5: {meta['first_per_round']} per round.",
        "",
        "| lane | median ms | min ms | stddev ms | runs | / floor | / floor (paired) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results.values():
        out.append(
            f"| {s['label']} | {_num(s['median_ms'], '.1f')} | {_num(s['min_ms'], '.1f')} | "
            f"{_num(s['stddev_ms'], '.1f')} | {s['runs']} | {_num(s.get('vs_floor'))} | "
            f"{_num(s.get('vs_floor_paired'))} |"
        )
    out += ["", "| target | value | (paired) | limit | verdict |", "|---|---:|---:|---:|---|"]
    for name, t in targets.items():
        out.append(
            f"| {name} | {_num(t['value'])} | {_num(t['paired'])} | {t['limit']} | {t['verdict']} |"
        )
    notes: list[str] = meta["notes"]  # type: ignore[assignment]
    if notes:
        out += ["", *(f"- {n}" for n in notes)]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=10, help="rounds (default: %(default)s)")
    p.add_argument(
        "--runs", type=int, default=10, help="hyperfine runs per command per round (%(default)s)"
    )
    p.add_argument("--warmup", type=int, default=3, help="hyperfine warm-up runs (%(default)s)")
    p.add_argument(
        "--first",
        type=int,
        default=3,
        help="lane 5: server restarts (each with one warm and one cold command) per round "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--taskset",
        "--cpu",
        dest="cpu",
        default="1",
        metavar="CPU",
        help="taskset -c CPU for hyperfine, the server and lane 5 ('none': not pinned; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--server-cpu",
        default="",
        metavar="CPU",
        help="taskset -c CPU for the server (and so everything it forks) instead of --cpu: "
        "the client on one core, the commands on another",
    )
    p.add_argument("--no-warm", action="store_true", help="only the cold lanes")
    p.add_argument("--no-wasm", action="store_true", help="leave out lane 3")
    p.add_argument("--seed", type=int, default=0, help="seed of the order shuffles")
    p.add_argument("--out", metavar="FILE", help="write the full result as JSON here")
    p.add_argument("--markdown", action="store_true", help="print markdown tables on stdout")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.runs < 2 or args.warmup < 0 or args.first < 0:
        p.error("need --rounds >= 1, --runs >= 2, --warmup >= 0 and --first >= 0")
    args.cpu = "" if args.cpu.lower() in ("none", "off", "") else args.cpu
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("hyperfine", *(["taskset"] if args.cpu else [])):
        if shutil.which(tool) is None:
            die(f"{tool} is not installed (e.g. 'apt-get install -y {tool}')")
    began = time.monotonic()
    notes: list[str] = []
    wasm = not args.no_wasm
    if wasm and importlib.util.find_spec("wasmtime") is None:
        die("lane 3 needs the wasm extra (pip install -e '.[wasm]'), or pass --no-wasm")
    git_head = startup.git(REPO, "rev-parse", "--short", "HEAD")
    git_dirty = bool(startup.git(REPO, "status", "--porcelain", "--", "src"))
    # The shell may set PYTHONDONTWRITEBYTECODE (clean_env drops it for the commands):
    # compile what they import, or every run would parse it.
    import click

    trees = [os.path.join(REPO, "src"), os.path.dirname(click.__file__)]
    if wasm:
        import wasmtime

        trees.append(os.path.dirname(wasmtime.__file__))
    for tree in trees:
        compileall.compile_dir(tree, quiet=1)

    work = tempfile.mkdtemp(prefix="conduit-warm-bench-")
    bench = Bench(work, args.cpu)
    bench.server_cpu = args.server_cpu
    try:
        return run(args, bench, wasm, notes, began, git_head, git_dirty)
    finally:
        if not args.no_warm and bench.server_supported() and bench.server_running():
            bench.server("stop")
        shutil.rmtree(work, ignore_errors=True)


def run(
    args: argparse.Namespace,
    bench: Bench,
    wasm: bool,
    notes: list[str],
    began: float,
    git_head: str,
    git_dirty: bool,
) -> int:
    bench.write(wasm)
    placement = startup.placement_prefix(args.cpu or "none")[1]
    warm = not args.no_warm
    if warm and not bench.server_supported():
        warm = False
        notes.append("this Conduit has no `conduit server`: the warm lanes and lane 5 were skipped")
        log(notes[-1])
    keys = [k for k in LANES if (wasm or "wasm" not in k) and (warm or "warm" not in k)]
    cold_keys = [k for k in keys if LANES[k][1] != "1"]
    warm_keys = [FLOOR, *(k for k in keys if LANES[k][1] == "1")]

    # Warm up: the index, bytecode, the wasm artifact cache; then check every lane.
    for _ in range(2):
        for key in cold_keys:
            bench.exec(bench.argv(key))
    tinyp_host = bench.check_sandboxed()
    for key in cold_keys:
        bench.check(key)
    server_placement = "none"
    if warm:
        bench.start_server()
        for key in warm_keys[1:]:
            bench.exec(bench.argv(key), warm="1")  # first use: wasmtime loaded in the server
            bench.check(key)
        found = bench.server_affinity()
        server_placement = "; ".join(found) or "not found in /proc"
        want = args.server_cpu or args.cpu
        if want and any(_cpus(f.rsplit(" ", 1)[1]) != _cpus(want) for f in found):
            die(f"the server is not pinned as asked (taskset -c {want}): {found}")
        log(f"server: {server_placement}")
    log("sanity checks passed")

    rng = random.Random(args.seed)
    pooled: dict[str, list[float]] = {}
    rounds: dict[str, list[float]] = {}  # per lane, one median per round
    floor_rounds: dict[str, list[float]] = {"0": [], "1": []}  # the floor in each invocation
    own_floor: dict[str, list[float]] = {}  # per lane, the floor of its invocation, per round
    first: dict[str, list[float]] = {"first-cold": [], "first-warm": []}
    first_rounds: dict[str, list[float]] = {"first-cold": [], "first-warm": []}
    restarts_before = bench.server_starts
    load_before = startup.loadavg()
    for rnd in range(args.rounds):
        groups = [("0", cold_keys)] + ([("1", warm_keys)] if warm else [])
        rng.shuffle(groups)
        phases: list[str] = [g[0] for g in groups] + (["first"] if warm and args.first else [])
        rng.shuffle(phases)
        medians: dict[str, float] = {}
        for phase in phases:
            if phase == "first":
                got: dict[str, list[float]] = {"first-cold": [], "first-warm": []}
                os.sched_setaffinity(0, _cpus(args.cpu))
                try:
                    for _ in range(args.first):
                        pair = ["first-cold", "first-warm"]
                        rng.shuffle(pair)
                        for key in pair:
                            if key == "first-warm":
                                bench.stop_server()
                                bench.start_server()
                            got[key].append(timed(bench, "1" if key == "first-warm" else "0"))
                finally:
                    os.sched_setaffinity(0, _all_cpus)
                for key, ts in got.items():
                    first[key] += ts
                    first_rounds[key].append(statistics.median(ts))
                    medians[key] = statistics.median(ts)
                continue
            group = dict(groups)[phase]
            if phase == "1" and not bench.server_running():
                notes.append(f"round {rnd + 1}: the server was not running; started again")
                bench.start_server()
            named = [(k, bench.argv(k)) for k in group]
            rng.shuffle(named)
            prefix = bench.pin
            times = startup.hyperfine(prefix, named, bench.env_for(phase), args.runs, args.warmup)
            if phase == "1" and not bench.server_running():
                notes.append(f"round {rnd + 1}: the server had stopped after the warm lanes")
            floor_here = statistics.median(times[FLOOR])
            floor_rounds[phase].append(floor_here)
            pooled.setdefault(FLOOR, []).extend(times.pop(FLOOR))
            for key, ts in times.items():
                pooled.setdefault(key, []).extend(ts)
                rounds.setdefault(key, []).append(statistics.median(ts))
                own_floor.setdefault(key, []).append(floor_here)
                medians[key] = statistics.median(ts)
        # The round's floor: the median of both invocations' floor runs.
        floor = statistics.median(f[-1] for f in floor_rounds.values() if len(f) > rnd)
        rounds.setdefault(FLOOR, []).append(floor)
        medians[FLOOR] = floor
        order = [*LANES, *FIRST]
        log(
            f"round {rnd + 1}/{args.rounds}: medians ms: "
            + ", ".join(f"{k} {medians[k]:.1f}" for k in order if k in medians)
        )
    load_after = startup.loadavg()
    if warm:
        restarts = bench.server_starts - restarts_before - args.rounds * args.first
        if restarts:
            notes.append(f"the server had to be started {restarts} times between rounds")
        for key in warm_keys[1:]:  # still served warm at the end
            bench.check(key)

    labels = {k: LANES[k][0] for k in LANES} | FIRST
    results: dict[str, dict[str, object]] = {}
    for key in [*LANES, *FIRST]:
        ts = pooled.get(key) or first.get(key)
        if not ts:
            continue
        per_round = rounds.get(key) or first_rounds.get(key) or []
        s: dict[str, object] = {"label": labels[key], **startup.summarize(ts, per_round)}
        if key in LANES:
            s["vs_floor"] = ratio(float(s["median_ms"]), statistics.median(pooled[FLOOR]))
            s["vs_floor_paired"] = paired({**rounds, FLOOR: own_floor.get(key, [])}, key, FLOOR)
        results[key] = s
    all_rounds = {**rounds, **first_rounds}
    targets: dict[str, dict[str, object]] = {}
    for name, (num, den, limit) in TARGETS.items():
        if num not in results or den not in results:
            continue
        value = ratio(float(results[num]["median_ms"]), float(results[den]["median_ms"]))  # type: ignore[arg-type]
        targets[name] = {
            "value": value,
            "paired": paired({**all_rounds, FLOOR: own_floor.get(num, [])}, num, den),
            "limit": limit,
            "verdict": startup.verdict(value, limit),
        }
    report: dict[str, object] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_model": startup.cpu_model(),
            "nproc": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "hyperfine": startup.run(["hyperfine", "--version"]).stdout.strip(),
            "placement": placement,
            "server_placement": server_placement,
            "tinyp_host": tinyp_host,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "git_head": git_head,
            "git_dirty_src": git_dirty,
            "command": shlex.join(["benchmarks/warm/run.py", *sys.argv[1:]]),
            "rounds": args.rounds,
            "runs": args.runs,
            "warmup": args.warmup,
            "first_per_round": args.first if warm else 0,
            "elapsed_s": round(time.monotonic() - began, 1),
            "notes": notes,
        },
        "results": results,
        "targets": targets,
    }
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        log(f"wrote {args.out}")
    if args.markdown:
        print(markdown(report))
    else:
        for s in results.values():
            print(f"{s['label']}: {s['median_ms']} ms, {_num(s.get('vs_floor'))}x the floor")
        for name, t in targets.items():
            print(f"{name}: {t['value']} (limit {t['limit']}) {t['verdict']}")
    log(f"done in {time.monotonic() - began:.0f}s")
    return 0


_all_cpus = os.sched_getaffinity(0)


def _cpus(spec: str) -> set[int]:
    """taskset's CPU list syntax ("1", "0,2", "0-3") as a set; all CPUs when empty."""
    if not spec:
        return set(_all_cpus)
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""WebAssembly plugin benchmark: cold commands with a cached artifact, per-call overhead,
first compile time and memory.

Run from the repository with the venv that has Conduit and the ``wasm`` + ``test``
extras::

    .venv/bin/python benchmarks/wasm/run.py [--rounds 5] [--runs 10] [--cpu 0]
        [--component PATH/pyhash.wasm] [--before OTHER/src] [--callgrind]

It makes a temporary CONDUIT_HOME with two plugins: ``wasm-hi`` (a WAT module printing a
line) and, unless ``--no-component``, the ``pyhash`` example built with componentize-py
(or the ``--component`` given). Then, each pinned with ``taskset -c CPU``:

1. **cold commands** with hyperfine, ``--rounds`` interleaved rounds of ``--runs`` runs
   each: ``python -c pass``, ``python -c 'import wasmtime'``, ``conduit --help``,
   ``conduit wasm-hi`` and ``echo hi | conduit pyb64``; the report gives the median of
   the round medians and the ratio to the same round's ``python -c pass``;
2. **per-call overhead**: one kernel runs the same command 200 times (a fresh store and
   instance each time), median per call, next to an in-process Python plugin's command;
3. **first compile**: a fresh process compiles the module and the component with
   Conduit's engine configuration; wall time and peak RSS (``ru_maxrss``);
4. with ``--callgrind``, **instruction counts** of one run of each cold command under
   ``valgrind --tool=callgrind``: deterministic, unlike wall clock on a shared machine.

``--before OTHER/src`` adds the WebAssembly commands run with another Conduit's source
tree (``PYTHONPATH``, its own CONDUIT_HOME and artifact cache): a before/after baseline
in the same run. Bytecode is compiled first (``compileall``) for this tree, the
``--before`` tree and the installed wasmtime: this environment may set
``PYTHONDONTWRITEBYTECODE``, and then every run would parse wasmtime's 318 KB bindings.

Standard library only, plus the ``hyperfine`` binary and ``taskset``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(REPO, "examples", "wasm", "pyhash")

HI_WAT = """(module
 (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
 (memory (export "memory") 1)
 (data (i32.const 100) "hi from wasm\\n")
 (func (export "_start")
   (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 13))
   (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""

HI_TOML = """api = ">=1.0"
description = "Print a line from a WAT module."
[[commands]]
name = "wasm-hi"
help = "Say hi from WebAssembly."
"""

PY_PLUGIN = """# /// conduit
# name = "pyhi"
# api = ">=1.0"
# [[commands]]
# name = "pyhi"
# help = "Say hi from Python."
# ///
import click
from conduit.sdk import Plugin


@click.command("pyhi")
def hi():
    click.echo("hi from python")


class P(Plugin):
    def boot(self, ctx):
        ctx.register_command(hi)
"""

PER_CALL = """
import os, sys, time, statistics, io, contextlib
from conduit.timing import Profile
from conduit.indexer.build import load
from conduit.kernel import Kernel
from conduit.paths import resolve
paths = resolve()
kernel = Kernel(load(paths, Profile(False)), paths)
out = {}
for plugin, argv in json_args:
    times = []
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        kernel.run(plugin, argv)  # activation, artifact load
        for _ in range(N):
            t = time.perf_counter()
            kernel.run(plugin, argv)
            times.append(time.perf_counter() - t)
    out[" ".join(argv)] = statistics.median(times) * 1e6
kernel.shutdown()
print(json.dumps(out))
"""

COMPILE = """
import json, resource, sys, time
from conduit.hosts.wasm.runtime import WasmSettings, is_component, make_engine
import wasmtime
from wasmtime import component as wc
data = open(sys.argv[1], "rb").read()
engine = make_engine(WasmSettings())
t = time.perf_counter()
kind = wc.Component if is_component(data) else wasmtime.Module
art = kind(engine, data)
took = time.perf_counter() - t
t = time.perf_counter()
blob = art.serialize()
ser = time.perf_counter() - t
print(json.dumps({"seconds": took, "serialize": ser, "artifact_mb": len(blob) / 1e6,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


GC_IMPORT = "import gc; gc.disable(); import wasmtime; gc.freeze(); gc.enable()"


def log(text: str) -> None:
    sys.stderr.write(f"[wasm-bench] {text}\n")
    sys.stderr.flush()


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, check=False, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"error: {cmd[0]} failed with exit code {proc.returncode}")
    return proc  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cpu", default="0", help="taskset CPU list for every timed process")
    ap.add_argument("--component", help="a built pyhash.wasm to use instead of building one")
    ap.add_argument("--no-component", action="store_true")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--skip-compile", action="store_true", help="skip the first-compile part")
    ap.add_argument("--before", help="another Conduit's src/ directory, for baseline rows")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions")
    args = ap.parse_args()
    for tool in ("hyperfine", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"error: {tool} is not installed")

    import wasmtime

    py = sys.executable
    trees = [os.path.join(REPO, "src"), os.path.dirname(os.path.dirname(wasmtime.__file__))]
    if args.before:
        trees.append(os.path.abspath(args.before))
    log("compiling bytecode")
    for tree in trees:
        run([py, "-m", "compileall", "-q", tree])
    conduit = os.path.join(os.path.dirname(py), "conduit")
    work = tempfile.mkdtemp(prefix="conduit-wasm-bench-")
    home = os.path.join(work, "home")
    plugins = os.path.join(home, "plugins")
    os.makedirs(plugins)
    env = {**os.environ, "CONDUIT_HOME": home}
    with open(os.path.join(plugins, "wasm-hi.wasm"), "wb") as f:
        f.write(wasmtime.wat2wasm(HI_WAT))
    with open(os.path.join(plugins, "wasm-hi.toml"), "w") as f:
        f.write(HI_TOML)
    with open(os.path.join(plugins, "pyhi.py"), "w") as f:
        f.write(PY_PLUGIN)
    component = None
    if not args.no_component:
        if args.component:
            shutil.copyfile(args.component, os.path.join(plugins, "pyhash.wasm"))
            shutil.copyfile(
                os.path.join(EXAMPLE, "conduit-plugin.toml"), os.path.join(plugins, "pyhash.toml")
            )
        else:
            log("building the pyhash component (componentize-py)")
            run([conduit, "plugins", "build", EXAMPLE, "--no-precompile"], env=env)
        component = os.path.join(plugins, "pyhash.wasm")
        # what its manifest asks for; without it the command is refused
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write('[grants]\npyhash = ["filesystem:read:${workspace}"]\n')
    results: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "load": os.getloadavg(),
        "cpu": args.cpu,
    }

    # 3. first compile (before anything is cached), in fresh processes
    compiles = {}
    sources = (("module", os.path.join(plugins, "wasm-hi.wasm")), ("component", component))
    for label, path in sources:
        if path is None or args.skip_compile:
            continue
        log(f"first compile of the {label}")
        out = run(["taskset", "-c", args.cpu, py, "-c", COMPILE, path], env=env).stdout
        compiles[label] = json.loads(out)
    results["compile"] = compiles

    # warm the index and the artifact cache
    run([conduit, "wasm-hi"], env=env)
    if component:
        run([conduit, "pyb64"], env=env, input="hi")

    before_env: dict[str, str] = {}
    launch = [py, "-c", "import sys; from conduit.__main__ import main; sys.exit(main())"]
    if args.before:
        # the same plugins and artifacts, another CONDUIT_HOME: its own index
        home_before = os.path.join(work, "home-before")
        shutil.copytree(plugins, os.path.join(home_before, "plugins"))
        config = os.path.join(home, "config.toml")
        if os.path.exists(config):
            shutil.copyfile(config, os.path.join(home_before, "config.toml"))
        wasm_cache = os.path.join(home, "cache", "wasm")
        if os.path.isdir(wasm_cache):
            shutil.copytree(wasm_cache, os.path.join(home_before, "cache", "wasm"))
        before_env = {"PYTHONPATH": os.path.abspath(args.before), "CONDUIT_HOME": home_before}
        run([*launch, "wasm-hi"], env={**env, **before_env})
        if component:
            run([*launch, "pyb64"], env={**env, **before_env}, input="hi")

    # 1. cold commands, interleaved rounds
    # name -> (argv, extra environment, stdin)
    table: dict[str, tuple[list[str], dict[str, str], str | None]] = {
        "python -c pass": ([py, "-c", "pass"], {}, None),
        "python -c 'import wasmtime'": ([py, "-c", "import wasmtime"], {}, None),
        # what Conduit does (hosts/wasm/runtime.py import_wasmtime): the floor for a command
        "python -c 'import wasmtime' (collector held off)": ([py, "-c", GC_IMPORT], {}, None),
        "conduit --help": ([conduit, "--help"], {}, None),
        "conduit wasm-hi": ([conduit, "wasm-hi"], {}, None),
        "conduit pyhi (in-process Python)": ([conduit, "pyhi"], {}, None),
    }
    if component:
        table["echo hi | conduit pyb64"] = ([conduit, "pyb64"], {}, "hi\n")
    if args.before:
        table["conduit wasm-hi (before)"] = ([*launch, "wasm-hi"], before_env, None)
        if component:
            table["echo hi | conduit pyb64 (before)"] = ([*launch, "pyb64"], before_env, "hi\n")

    def shell(argv: list[str], extra: dict[str, str], stdin: str | None) -> str:
        line = " ".join(shlex.quote(a) for a in argv)
        if extra:
            line = " ".join(f"{k}={shlex.quote(v)}" for k, v in extra.items()) + " " + line
        return f"echo hi | {line}" if stdin else line

    commands = {name: shell(*spec) for name, spec in table.items()}
    rounds: dict[str, list[float]] = {k: [] for k in commands}
    ratios: dict[str, list[float]] = {k: [] for k in commands}
    failed: dict[str, int] = {}
    for r in range(args.rounds):
        log(f"hyperfine round {r + 1}/{args.rounds}")
        export = os.path.join(work, f"round{r}.json")
        cmd = ["hyperfine", "--warmup", "2", "--runs", str(args.runs), "--export-json", export]
        # a failed run is counted and reported (failed_runs), not fatal: the --before
        # tree's ticker could exit 141 (EPIPE writing to its own wakeup pipe)
        cmd += ["--style", "none", "--ignore-failure"]
        for name, line in commands.items():
            cmd += ["-n", name, f"taskset -c {args.cpu} sh -c {json.dumps(line)}"]
        run(cmd, env=env)
        with open(export) as f:
            data = json.load(f)["results"]
        medians = {res["command"]: res["median"] * 1000 for res in data}
        for res in data:
            bad = sum(1 for c in res.get("exit_codes", []) if c != 0)
            failed[res["command"]] = failed.get(res["command"], 0) + bad
        base = medians["python -c pass"]
        for name in commands:
            rounds[name].append(medians[name])
            ratios[name].append(medians[name] / base)
    results["failed_runs"] = failed
    results["cold_ms"] = {k: statistics.median(v) for k, v in rounds.items()}
    results["cold_range_ms"] = {k: (min(v), max(v)) for k, v in rounds.items()}
    results["cold_ratio"] = {k: statistics.median(v) for k, v in ratios.items()}

    # 2. per-call overhead in one kernel
    pairs = [("wasm-hi", ["wasm-hi"]), ("pyhi", ["pyhi"])]
    if component:
        pairs.append(("pyhash", ["pyhash", "--help"]))
    code = f"import json\njson_args = {pairs!r}\nN = {args.calls}\n" + PER_CALL
    log("per-call overhead")
    results["per_call_us"] = json.loads(
        run(["taskset", "-c", args.cpu, py, "-c", code], env=env).stdout
    )

    # 4. instruction counts, one run each (deterministic)
    if args.callgrind:
        if shutil.which("valgrind") is None:
            raise SystemExit("error: --callgrind needs valgrind")
        counts: dict[str, float] = {}
        for name, (argv, extra, stdin) in table.items():
            log(f"callgrind: {name}")
            cg = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv]
            # not run(): a --before tree may exit 141 (see --ignore-failure above)
            proc = subprocess.run(
                cg, env={**env, **extra}, input=stdin or "", text=True, capture_output=True
            )
            found = [line for line in proc.stderr.splitlines() if "Collected :" in line]
            if not found:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"error: callgrind of {name} failed")
            counts[name] = int(found[-1].rsplit(":", 1)[1]) / 1e6
            if proc.returncode:
                counts[f"{name}: exit code"] = proc.returncode
        results["instructions_millions"] = counts
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

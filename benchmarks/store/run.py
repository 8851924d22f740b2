#!/usr/bin/env python3
"""Benchmark: installing one small plugin with ``conduit plugins install``, uv and pip.

Builds a venv with Conduit (and pip), serves one small plugin wheel from a PEP 503 index
on 127.0.0.1, and times, in interleaved rounds (shuffled order each round):

- ``uv pip install --python PY cstore-hello``          (baseline: the installer alone)
- ``conduit plugins install cstore-hello --installer uv``
- ``PY -m pip install cstore-hello``                    (baseline)
- ``conduit plugins install cstore-hello --installer pip``

Each install starts from the same state (the plugin is uninstalled, untimed, before it)
with warm caches (a private uv and pip cache, filled by an untimed first round). Conduit's
figure includes what it adds around the installer: reading the environment, the
constraints file, validating the new plugin in a fresh interpreter (an index rebuild) and
writing pylock.conduit.toml (one more ``uv pip compile --format pylock.toml`` for the
file URLs and hashes with uv; none with pip, whose ``--report`` of the install has them).

    .venv/bin/python benchmarks/store/run.py [--rounds 9] [--cpu 1]

Prints a markdown table (medians, min-max, ratio to the same-run baseline) to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _factory import PackageIndex, make_wheel  # noqa: E402

UV = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")


def sh(argv: list[str], env: dict[str, str], check: bool = True) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if check and proc.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cpu", default="1", help="taskset CPU list for everything timed")
    args = parser.parse_args()
    assert UV, "uv is needed (pip install -e '.[test]')"
    tmp = Path(tempfile.mkdtemp(prefix="conduit-bench-store-"))
    try:
        wheel = make_wheel(tmp / "wheels", "cstore-hello", "1.0.0", plugin="hello")
        index = PackageIndex(tmp / "index")
        index.add(wheel)
        subprocess.run(
            [UV, "build", "--wheel", "-q", "--out-dir", str(tmp / "cw"), str(REPO)], check=True
        )
        conduit_wheel = next((tmp / "cw").glob("*.whl"))
        venv = tmp / "venv"
        subprocess.run(
            [UV, "venv", "-q", "--seed", "--python", sys.executable, str(venv)], check=True
        )
        py = str(venv / "bin" / "python")
        subprocess.run(
            [UV, "pip", "install", "-q", "--compile-bytecode", "--python", py, str(conduit_wheel)],
            check=True,
        )
        home = tmp / "home"
        home.mkdir()
        (home / "config.toml").write_text(f'[store]\nindex-url = "{index.url}"\n')
        env = dict(os.environ)
        env.update(
            CONDUIT_HOME=str(home),
            UV_CACHE_DIR=str(tmp / "uv-cache"),
            PIP_CACHE_DIR=str(tmp / "pip-cache"),
            PATH=os.path.dirname(UV) + os.pathsep + env.get("PATH", ""),
        )
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # users have .pyc files; round 0 writes them
        pin = ["taskset", "-c", args.cpu]
        conduit = str(venv / "bin" / "conduit")
        rows = {
            "uv pip install (baseline)": (
                [
                    *pin,
                    UV,
                    "pip",
                    "install",
                    "-q",
                    "--python",
                    py,
                    "--index-url",
                    index.url,
                    "cstore-hello",
                ],
                [UV, "pip", "uninstall", "-q", "--python", py, "cstore-hello"],
            ),
            "conduit plugins install (uv)": (
                [*pin, conduit, "plugins", "install", "cstore-hello", "--installer", "uv"],
                [conduit, "plugins", "uninstall", "hello", "--installer", "uv"],
            ),
            "pip install (baseline)": (
                [
                    *pin,
                    py,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--index-url",
                    index.url,
                    "cstore-hello",
                ],
                [py, "-m", "pip", "uninstall", "-y", "-q", "cstore-hello"],
            ),
            "conduit plugins install (pip)": (
                [*pin, conduit, "plugins", "install", "cstore-hello", "--installer", "pip"],
                [conduit, "plugins", "uninstall", "hello", "--installer", "pip"],
            ),
        }
        times: dict[str, list[float]] = {k: [] for k in rows}
        load_start = os.getloadavg()
        for r in range(args.rounds + 1):
            order = list(rows)
            random.shuffle(order)
            for name in order:
                install, uninstall = rows[name]
                took = sh(install, env)
                sh(uninstall, env)
                if r > 0:  # round 0 fills the caches
                    times[name].append(took)
            print(f"round {r}/{args.rounds}", file=sys.stderr)
        index.close()
        load_end = os.getloadavg()
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(
            f"date: {datetime.date.today()}, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"everything timed under `taskset -c {args.cpu}`, {args.rounds} interleaved rounds, "
            f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end\n"
        )
        print("| command | median (ms) | min-max (ms) | ratio to its installer alone |")
        print("|---|---:|---:|---:|")
        for name, v in times.items():
            base = (
                med["uv pip install (baseline)"] if "uv" in name else med["pip install (baseline)"]
            )
            spread = f"{min(v) * 1000:.0f}-{max(v) * 1000:.0f}"
            print(f"| {name} | {med[name]:.0f} | {spread} | {med[name] / base:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

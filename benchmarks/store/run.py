#!/usr/bin/env python3
"""Benchmark: installing, updating and removing one small plugin: Conduit against uv and pip.

Builds a venv with Conduit (and pip), serves one small plugin wheel from a PEP 503 index
on 127.0.0.1, and times, in interleaved rounds (the four lanes in shuffled order each
round), each lane running install, update --dry-run and uninstall of that plugin:

- uv alone: ``uv pip install``, ``uv pip install --dry-run --upgrade``, ``uv pip uninstall``
- ``conduit plugins install | update --dry-run | uninstall --installer uv``
- pip alone: ``pip install``, ``pip install --dry-run --upgrade``, ``pip uninstall``
- ``conduit plugins install | update --dry-run | uninstall --installer pip``

Caches are warm (a private uv and pip cache, filled by an untimed first round). Conduit's
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
        conduit = [*pin, str(venv / "bin" / "conduit")]
        uv = [*pin, UV, "pip"]
        pip = [*pin, py, "-m", "pip"]
        quiet_pip = ["-q", "--disable-pip-version-check"]
        # One lane per installer and tool; each round runs a lane's three operations in
        # order (install, update --dry-run, uninstall), every one timed; the lanes run in
        # shuffled order each round.
        lanes: dict[str, list[tuple[str, list[str]]]] = {
            "uv": [
                (
                    "install",
                    [
                        *uv,
                        "install",
                        "-q",
                        "--python",
                        py,
                        "--index-url",
                        index.url,
                        "cstore-hello",
                    ],
                ),
                (
                    "update --dry-run",
                    [
                        *uv,
                        "install",
                        "-q",
                        "--dry-run",
                        "--upgrade",
                        "--python",
                        py,
                        "--index-url",
                        index.url,
                        "cstore-hello",
                    ],
                ),
                ("uninstall", [*uv, "uninstall", "-q", "--python", py, "cstore-hello"]),
            ],
            "conduit (uv)": [
                ("install", [*conduit, "plugins", "install", "cstore-hello", "--installer", "uv"]),
                (
                    "update --dry-run",
                    [*conduit, "plugins", "update", "--dry-run", "--installer", "uv"],
                ),
                ("uninstall", [*conduit, "plugins", "uninstall", "hello", "--installer", "uv"]),
            ],
            "pip": [
                (
                    "install",
                    [*pip, "install", *quiet_pip, "--index-url", index.url, "cstore-hello"],
                ),
                (
                    "update --dry-run",
                    [
                        *pip,
                        "install",
                        *quiet_pip,
                        "--dry-run",
                        "--upgrade",
                        "--index-url",
                        index.url,
                        "cstore-hello",
                    ],
                ),
                ("uninstall", [*pip, "uninstall", "-y", "-q", "cstore-hello"]),
            ],
            "conduit (pip)": [
                ("install", [*conduit, "plugins", "install", "cstore-hello", "--installer", "pip"]),
                (
                    "update --dry-run",
                    [*conduit, "plugins", "update", "--dry-run", "--installer", "pip"],
                ),
                ("uninstall", [*conduit, "plugins", "uninstall", "hello", "--installer", "pip"]),
            ],
        }
        times: dict[tuple[str, str], list[float]] = {
            (lane, op): [] for lane, ops in lanes.items() for op, _ in ops
        }
        load_start = os.getloadavg()
        for r in range(args.rounds + 1):
            order = list(lanes)
            random.shuffle(order)
            for lane in order:
                for op, argv in lanes[lane]:
                    took = sh(argv, env)
                    if r > 0:  # round 0 fills the caches and writes the .pyc files
                        times[lane, op].append(took)
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
        print("| operation | installer alone (ms) | conduit (ms) | min-max conduit (ms) | ratio |")
        print("|---|---:|---:|---:|---:|")
        for tool in ("uv", "pip"):
            for op, _ in lanes[tool]:
                base, mine = med[tool, op], med[f"conduit ({tool})", op]
                v = times[f"conduit ({tool})", op]
                spread = f"{min(v) * 1000:.0f}-{max(v) * 1000:.0f}"
                print(f"| {op} ({tool}) | {base:.0f} | {mine:.0f} | {spread} | {mine / base:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Instruction counts of the start-up commands, a noise-free companion to run.py.

Wall-clock medians on a shared 2-core VM move by 10-20 % between runs; the number of
instructions a command executes does not (valgrind's callgrind counts them). This script
reuses the venvs and CONDUIT_HOMEs that ``run.py`` prepared in its work directory and
counts the instructions of the same commands:

    python3 benchmarks/startup/run.py ...            # once, to build the venvs
    python3 benchmarks/startup/instructions.py --sizes 0,100,500,1000
    python3 benchmarks/startup/instructions.py --baseline   # the --baseline-repo tree

Needs valgrind (Debian package ``valgrind``). Each count takes a few seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def count(argv: list[str], env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"valgrind failed for {argv}: {proc.stderr[-500:]}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100,500,1000")
    parser.add_argument("--work", default=os.path.join(HERE, ".work"))
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="count the baseline tree's venvs (run.py --baseline-repo made them: venvs/base-N)",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("error: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    click_script = os.path.join(args.work, "click_cmd.py")
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        venv = os.path.join(args.work, "venvs", f"{'base-' if args.baseline else ''}n{n:04d}")
        home = os.path.join(args.work, "homes", f"n{n:04d}")
        if not os.path.isdir(venv):
            print(f"error: {venv} is missing; run run.py first", file=sys.stderr)
            return 2
        env = {**os.environ, "CONDUIT_HOME": home}
        py, conduit = os.path.join(venv, "bin", "python"), os.path.join(venv, "bin", "conduit")
        subprocess.run([conduit, "--help"], env=env, capture_output=True, check=True)
        row = {
            "n": n,
            "help": count([conduit, "--help"], env),
            "python": count([py, "-c", "pass"], env),
            "click": count([py, click_script], env),
            "plugin": count([conduit, "synth-0000"], env) if n else None,
        }
        rows.append(row)
        print(f"N={n}: {row}", file=sys.stderr)
    print(
        "| N | conduit --help | python -c pass | help / python | conduit synth-0000 "
        "| Click script | plugin / click |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        plugin = f"{r['plugin'] / 1e6:.1f} M" if r["plugin"] else "-"
        ratio = f"{r['plugin'] / r['click']:.3f}" if r["plugin"] else "-"
        print(
            f"| {r['n']} | {r['help'] / 1e6:.1f} M | {r['python'] / 1e6:.1f} M "
            f"| {r['help'] / r['python']:.3f} | {plugin} | {r['click'] / 1e6:.1f} M | {ratio} |"
        )
    big = [r for r in rows if r["n"] >= 100]
    if len(big) >= 2:
        n0, n1 = big[0], big[-1]
        span = n1["n"] - n0["n"]
        print(
            f"\nInstructions per added plugin, N={n0['n']}..{n1['n']}: conduit --help "
            f"{(n1['help'] - n0['help']) / span:,.0f}; python -c pass "
            f"{(n1['python'] - n0['python']) / span:,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

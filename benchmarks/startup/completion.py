"""Completion against ``--help``, in instructions (callgrind), at N single-file plugins.

Completion must cost no more than ``conduit --help``: both read the index and nothing
else. This counts, in one run and one CONDUIT_HOME, the instructions of ``--help`` and of
the completions a user triggers (command words, ``plugin:``, a subcommand, a plugin name,
options):

    python3 benchmarks/startup/completion.py --n 500
    python3 benchmarks/startup/completion.py --n 500 --src /tmp/old/src   # another tree

``--src`` puts another source tree first on PYTHONPATH (the code before a change).
Needs valgrind. Each count takes a few seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from instructions import count

PLUGIN = """# /// conduit
# name = "synth-{i:04d}"
# description = "Synthetic plugin {i}"
# api = ">=1.0,<2"
# [[commands]]
# name = "synth-{i:04d}"
# help = "Run synthetic command {i}."
# usage = "[NAME] [--json] [--format text|json]"
# ///
from conduit.sdk import Plugin


class P(Plugin):
    pass
"""

CASES = {
    "--help": ["--help"],
    "__complete ''": ["__complete", ""],
    "__complete synth-01": ["__complete", "synth-01"],
    "__complete synth-0001:": ["__complete", "synth-0001:"],
    "__complete plugins ''": ["__complete", "plugins", ""],
    "__complete plugins info ''": ["__complete", "plugins", "info", ""],
    "__complete synth-0001 --": ["__complete", "synth-0001", "--"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--src", help="a source tree to run instead of the installed one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        plugins = os.path.join(home, "plugins")
        os.makedirs(plugins)
        for i in range(args.n):
            with open(os.path.join(plugins, f"synth_{i:04d}.py"), "w") as f:
                f.write(PLUGIN.format(i=i))
        env = {**os.environ, "CONDUIT_HOME": home}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # count running the code, not compiling it
        if args.src:
            env["PYTHONPATH"] = os.path.abspath(args.src)
        argv = [sys.executable, "-m", "conduit"]
        for words in CASES.values():  # the index, and each module's .pyc, written once
            subprocess.run([*argv, *words], env=env, capture_output=True, check=True)
        help_count = 0
        print(f"N={args.n} plugins, {sys.executable}, src={args.src or 'installed'}")
        print("| command | instructions | / --help |")
        print("|---|---:|---:|")
        for name, words in CASES.items():
            n = count([*argv, *words], env)
            help_count = help_count or n
            print(f"| `conduit {name}` | {n / 1e6:.1f} M | {n / help_count:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

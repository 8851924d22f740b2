"""Benchmark: what the in-process guard (PEP 578 audit hook) costs per ``open()``.

An audit hook cannot be removed, so every variant runs in a fresh interpreter; the
variants are interleaved round by round so that noise from other work on the machine
hits them alike. Each interpreter times ``open(path, "rb").close()`` of a small file
(best of ``--repeat`` batches of ``--number``) and prints nanoseconds per call.

Variants, all in the same run:

- ``baseline``: no audit hook at all;
- ``noop-hook``: an audit hook that returns at once (the floor of any hook);
- ``abspath-hook``: a hook that makes the path absolute and checks a prefix (the
  reference design the issue quotes);
- ``guard-idle``: Conduit's guard installed, no plugin running (the kernel's own code,
  built-in plugins);
- ``guard-granted``: a plugin running, the file under its ``filesystem:read`` grant;
- ``guard-implicit``: a plugin running, the file under ``sys.prefix`` (no grant needed).

Also times entering and leaving a plugin's attribution (``Running``), which the kernel
does around each call into plugin code.

    taskset -c 1 python benchmarks/guard/run.py --rounds 7

Standard library only (plus Conduit itself for the guard variants).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import os, sys, time
variant, path, number, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mode = sys.argv[5]

if variant == "noop-hook":
    sys.addaudithook(lambda event, args: None)
elif variant == "abspath-hook":
    root = os.path.dirname(path) + os.sep
    def hook(event, args):
        if event == "open" and isinstance(args[0], str):
            if not os.path.abspath(args[0]).startswith(root):
                raise PermissionError(args[0])
    sys.addaudithook(hook)
elif variant.startswith("guard"):
    from conduit.security import guard
    from conduit.security.capabilities import parse
    guard.install()
    if variant == "guard-granted":
        grant = parse("filesystem:read:" + os.path.dirname(path))
        guard.Running(guard.Policy("bench", [grant])).__enter__()
    elif variant == "guard-implicit":
        path = os.__file__
        guard.Running(guard.Policy("bench", [])).__enter__()

def batch():
    start = time.perf_counter_ns()
    for _ in range(number):
        open(path, "rb").close()
    return (time.perf_counter_ns() - start) / number

# The hooks alone, without the system calls: sys.audit raises the same event open() does.
flags = os.O_RDONLY | os.O_CLOEXEC
def audit_batch():
    audit = sys.audit
    start = time.perf_counter_ns()
    for _ in range(number):
        audit("open", path, "rb", flags)
    return (time.perf_counter_ns() - start) / number

if mode == "open":  # one loop, no timing: for instruction counts
    for _ in range(number):
        open(path, "rb").close()
    sys.exit(0)
if mode == "audit":
    for _ in range(number):
        sys.audit("open", path, "rb", flags)
    sys.exit(0)
batch()
audit_batch()
best = min(batch() for _ in range(repeat))
audit_best = min(audit_batch() for _ in range(repeat))
extra = " %.1f" % audit_best
if variant == "guard-idle":
    from conduit.security import guard
    running = guard.Running(guard.Policy("bench", []))
    start = time.perf_counter_ns()
    for _ in range(number):
        with running:
            pass
    extra += " %.1f" % ((time.perf_counter_ns() - start) / number)
print("%.1f%s" % (best, extra))
"""

VARIANTS = [
    "baseline",
    "noop-hook",
    "abspath-hook",
    "guard-idle",
    "guard-granted",
    "guard-implicit",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per call with valgrind's callgrind instead (noise-free)",
    )
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="conduit-guard-bench-")
    path = os.path.join(tmp, "data", "file.txt")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("x" * 100)

    if args.instructions:
        instructions(path)
        return

    per_open: dict[str, list[float]] = {v: [] for v in VARIANTS}
    per_event: dict[str, list[float]] = {v: [] for v in VARIANTS}
    enter_exit: list[float] = []
    for _ in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    variant,
                    path,
                    str(args.number),
                    str(args.repeat),
                    "time",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            per_open[variant].append(float(out[0]))
            per_event[variant].append(float(out[1]))
            if len(out) > 2:
                enter_exit.append(float(out[2]))

    base = statistics.median(per_open["baseline"])
    print(f"open()+close() of a small file, ns per call; median of {args.rounds} interleaved")
    print(f"rounds, each the best of {args.repeat} x {args.number} calls")
    print(f"{'variant':<16} {'median':>8} {'min':>8} {'max':>8} {'+ns vs base':>12} {'ratio':>6}")
    for variant, values in per_open.items():
        med = statistics.median(values)
        print(
            f"{variant:<16} {med:8.1f} {min(values):8.1f} {max(values):8.1f} "
            f"{med - base:12.1f} {med / base:6.2f}"
        )
    base = statistics.median(per_event["baseline"])
    print()
    print('the hooks alone: sys.audit("open", path, "rb", flags), ns per call')
    print(f"{'variant':<16} {'median':>8} {'min':>8} {'max':>8} {'+ns vs base':>12}")
    for variant, values in per_event.items():
        med = statistics.median(values)
        print(f"{variant:<16} {med:8.1f} {min(values):8.1f} {max(values):8.1f} {med - base:12.1f}")
    print(f"Running enter+exit (per plugin call): {statistics.median(enter_exit):.1f} ns median")


def count(argv: list[str]) -> int:
    import re

    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", *argv],
            capture_output=True,
            text=True,
            timeout=900,
        )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"valgrind failed for {argv}: {proc.stderr[-500:]}")
    return int(match.group(1))


def instructions(path: str, low: int = 2000, high: int = 12000) -> None:
    """Instructions per call: (count at ``high`` calls - count at ``low``) / difference,
    which cancels the interpreter's start-up and the variant's set-up."""
    print(f"instructions per call (callgrind, ({high} calls - {low} calls) / {high - low})")
    head = ("variant", "open()+close()", "+ vs base", "hook only", "+ vs base")
    print(f"{head[0]:<16} {head[1]:>15} {head[2]:>10} {head[3]:>10} {head[4]:>10}")
    rows = {}
    for variant in VARIANTS:
        per = []
        for mode in ("open", "audit"):
            n = [
                count([sys.executable, "-c", CHILD, variant, path, str(k), "1", mode])
                for k in (low, high)
            ]
            per.append((n[1] - n[0]) / (high - low))
        rows[variant] = per
    base_open, base_audit = rows["baseline"]
    for variant, (o, a) in rows.items():
        print(f"{variant:<16} {o:15.0f} {o - base_open:10.0f} {a:10.0f} {a - base_audit:10.0f}")


if __name__ == "__main__":
    main()

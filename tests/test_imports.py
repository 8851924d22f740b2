"""Start-up stays lean: what ``conduit --help`` and a command import, checked in a fresh
interpreter through ``sys.modules`` (timing belongs in benchmarks/, not here)."""

from __future__ import annotations

import os
import subprocess
import sys

from _factory import imported_by, simple_plugin, write

# Never on the start-up path: each costs more than the rest of start-up together.
FORBIDDEN_AT_STARTUP = {
    "click",
    "pluggy",
    "importlib.metadata",
    "msgspec",
    "tomllib",
    "tomlkit",
    "typing",
    "re",
    "pathlib",
    "json",
    "platformdirs",
    "filelock",
    "packaging",
    "conduit.kernel",
    "conduit.manifest",
    "conduit._indexer",
    "conduit.sdk",
}


def probe(*args: str, command: bool = False) -> tuple[int, set[str]]:
    return imported_by(*args, watch_kernel=command)


def test_help_imports_no_plugin_and_no_heavy_module(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    probe("--help")  # the first run builds the index
    code, new = probe("--help")
    assert code == 0
    assert not new & FORBIDDEN_AT_STARTUP, sorted(new & FORBIDDEN_AT_STARTUP)
    assert not [m for m in new if m.startswith("conduit_plugin_")]
    assert not [m for m in new if m.startswith("conduit.builtins")]
    # The whole start-up path is Conduit's own stdlib-only modules plus marshal.
    outside = {m for m in new if not m.startswith("conduit")} - {"marshal", "__future__"}
    assert not outside, sorted(outside)


def test_completion_imports_nothing_heavy(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    probe("--help")
    code, new = probe("__complete", "he")
    assert code == 0
    assert not new & FORBIDDEN_AT_STARTUP


def test_command_imports_only_its_plugin(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    write(plugin_dir, "beta.py", simple_plugin("beta", ("other",)))
    probe("--help")
    code, new = probe("hello", command=True)
    assert code == 0
    assert "conduit_plugin_alpha" in new
    assert "conduit_plugin_beta" not in new
    assert not [m for m in new if m.startswith("conduit.builtins.")]
    # Routing a command still needs no metadata scan, manifest parsing or msgspec.
    assert not new & {"importlib.metadata", "msgspec", "tomllib", "conduit._indexer"}


COUNT_RECORDS = """
import sys
loads = []
def hook(event, args):  # count data, not the code objects of imported .pyc files
    if event == "marshal.loads" and bytes(args[0][:1]) != b"\\xe3":
        loads.append(1)
sys.addaudithook(hook)
from conduit.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(f"\\n@@{code} {len(loads)}")
"""


def test_startup_decodes_only_the_records_it_needs(plugin_dir):
    """The index keeps each plugin record as its own blob: `--help` decodes none of them
    and a command decodes only its own plugin's, so start-up stays flat in N."""
    for i in range(40):
        write(plugin_dir, f"p{i:02d}.py", simple_plugin(f"p{i:02d}", (f"cmd{i:02d}",)))
    probe("--help")

    def count(*args: str) -> int:
        proc = subprocess.run(
            [sys.executable, "-c", COUNT_RECORDS, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy(),
        )
        code, loads = proc.stdout.rpartition("\n@@")[2].split()
        assert code == "0", proc.stderr
        return int(loads)

    assert count("--help") == 1  # the index header itself
    # completion reads every help line: O(N) is fine there
    assert count("__complete", "cmd0") <= 2 + 40 + 3
    # header, the name table, and the routed plugin's record
    assert count("cmd07") == 3

"""Helpers that write real plugins to disk for tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def manifest_block(toml: str) -> str:
    """Turn TOML text into a ``# /// conduit`` comment block."""
    lines = textwrap.dedent(toml).strip().splitlines()
    body = "\n".join(f"# {line}" if line else "#" for line in lines)
    return f"# /// conduit\n{body}\n# ///\n"


def simple_plugin(
    name: str,
    commands: tuple[str, ...] = ("hello",),
    *,
    output: str | None = None,
    extra_toml: str = "",
    boot_prefix: str = "",
    module_prefix: str = "",
) -> str:
    """Source of a single-file plugin whose commands print ``output`` (default: name cmd)."""
    toml = f'name = "{name}"\napi = ">=1.0,<2"\ndescription = "The {name} plugin"\n'
    toml += extra_toml.strip() + "\n" if extra_toml.strip() else ""
    for cmd in commands:
        toml += f'\n[[commands]]\nname = "{cmd}"\nhelp = "Run {cmd} of {name}."\n'
    funcs = []
    regs = []
    for i, cmd in enumerate(commands):
        text = output if output is not None else f"{name} {cmd}"
        funcs.append(
            f"@click.command({cmd.split(' ')[-1]!r})\ndef cmd_{i}():\n    click.echo({text!r})\n"
        )
        regs.append(f"        ctx.register_command(cmd_{i}, {cmd!r})")
    return (
        manifest_block(toml)
        + "import click\nfrom conduit.sdk import Plugin\n"
        + module_prefix
        + "\n\n"
        + "\n\n".join(funcs)
        + "\n\nclass ThePlugin(Plugin):\n    def boot(self, ctx):\n"
        + (boot_prefix or "")
        + "\n".join(regs)
        + "\n"
    )


def write(plugin_dir: Path, filename: str, source: str) -> Path:
    path = plugin_dir / filename
    path.write_text(source, encoding="utf-8")
    return path


_PROBE = """
import json, sys
WATCH
before = set(sys.modules)
from conduit.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print("\\n@@" + json.dumps({"code": code, "new": sorted((seen or set(sys.modules)) - before)}))
"""

# Plugins' modules are dropped from sys.modules on deactivation: look just before. This
# imports conduit.kernel up front, so it is only for commands (use watch_kernel=False to
# check what --help imports).
_WATCH_KERNEL = """
import conduit.kernel
seen = set()
original = conduit.kernel.Kernel.shutdown
def shutdown(self):
    seen.update(sys.modules)
    original(self)
conduit.kernel.Kernel.shutdown = shutdown
"""


def imported_by(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    python: str | None = None,
    watch_kernel: bool = True,
) -> tuple[int, set[str]]:
    """Run ``conduit ARGS`` in a fresh interpreter; return its exit code and the modules it
    imported."""
    import json
    import os
    import subprocess
    import sys

    source = _PROBE.replace("WATCH", _WATCH_KERNEL if watch_kernel else "seen = set()")
    proc = subprocess.run(
        [python or sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    tail = proc.stdout.rpartition("\n@@")[2]
    assert tail, proc.stderr
    data = json.loads(tail)
    return data["code"], set(data["new"])

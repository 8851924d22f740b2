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

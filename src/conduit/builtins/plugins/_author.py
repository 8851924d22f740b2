"""``conduit plugins new | manifest | check``: tools for plugin authors.

``new`` writes a plugin project from a template (package data under
``conduit/templates/``); ``manifest`` derives the ``[[commands]]`` of a manifest from
the plugin's Click commands, so that help and usage are written once; ``check`` runs the
checks a plugin should pass before it is published.
"""

from __future__ import annotations

import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import click

from conduit.errors import ConduitError, UsageError

if TYPE_CHECKING:
    from conduit.authoring import PluginSource
    from conduit.manifest import CommandSpec

__all__ = ["check_cmd", "manifest_cmd", "new_cmd"]

TEMPLATES = ("single-file", "package", "process", "wasm")


# -- plugins new ---------------------------------------------------------------------------


def _templates_dir() -> str:
    import conduit

    return os.path.join(os.path.dirname(conduit.__file__ or ""), "templates")


def _api_range() -> str:
    from conduit.sdk import API_VERSION

    major = int(API_VERSION.split(".")[0])
    return f">={major}.0,<{major + 1}"


def render_template(template: str, name: str, target: str) -> list[str]:
    """Write the files of ``template`` for a plugin called ``name`` into ``target``;
    return their paths relative to ``target``."""
    module = name.replace("-", "_")
    cls = "".join(w.capitalize() for w in module.split("_") if w)
    words = {
        "{{name}}": name,
        "{{module}}": module,
        "{{package}}": f"conduit_{module}",
        "{{dist}}": f"conduit-{name}",
        "{{class}}": cls if cls.isidentifier() else f"Plugin{cls}",
        "{{api}}": _api_range(),
    }

    def fill(text: str) -> str:
        for key, value in words.items():
            text = text.replace(key, value)
        return text

    base = os.path.join(_templates_dir(), template)
    written = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fname in sorted(filenames):
            src = os.path.join(dirpath, fname)
            rel = fill(os.path.relpath(src, base)).removesuffix(".tmpl")
            dst = os.path.join(target, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(src, encoding="utf-8") as f:
                text = fill(f.read())
            with open(dst, "w", encoding="utf-8") as f:
                f.write(text)
            written.append(rel)
    return written


@click.command("new")
@click.argument("name")
@click.option(
    "--template",
    type=click.Choice(TEMPLATES),
    default="single-file",
    show_default=True,
    help="The kind of plugin project to create.",
)
@click.option(
    "--dir",
    "parent",
    default=".",
    metavar="DIR",
    help="Create the project directory NAME in DIR (default: here).",
)
def new_cmd(name: str, template: str, parent: str) -> None:
    """Create a plugin project that passes its own tests."""
    from conduit.manifest import NAME_RE

    if not NAME_RE.match(name):
        raise UsageError(
            f"'{name}' is not a valid plugin name",
            hint="use lowercase letters, digits, '-' and '_', starting with a letter or digit "
            "(it is also the command's name)",
        )
    target = os.path.abspath(os.path.join(parent, name))
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise UsageError(
            f"{target} already exists",
            hint="choose another name, or --dir for another parent directory",
        )
    files = render_template(template, name, target)
    click.echo(f"created {target} ({template} plugin '{name}'):")
    for rel in files:
        click.echo(f"  {rel}")
    click.echo("next:")
    click.echo(f"  cd {os.path.relpath(target)}")
    click.echo("  python -m pytest            # its tests pass as generated")
    if template == "single-file":
        # The hint says to copy the file there: make sure it can be done as written.
        plugin_dir = _plugin_dir_hint()
        os.makedirs(plugin_dir, exist_ok=True)
        click.echo(f"  cp {name}.py {plugin_dir}/   # install it")
    elif template == "wasm":
        click.echo("  conduit plugins build .     # build, install and precompile it")
    else:
        click.echo("  conduit plugins install .   # install it next to Conduit")


def _plugin_dir_hint() -> str:
    from conduit.paths import resolve

    return resolve().plugin_dir


# -- plugins manifest ----------------------------------------------------------------------


def _derived(src: PluginSource) -> list[CommandSpec]:
    from conduit.authoring import boot_commands, derive_commands

    if src.error is not None:
        raise src.error
    assert src.manifest is not None
    with tempfile.TemporaryDirectory(prefix="conduit-manifest-") as data_dir:
        commands = boot_commands(src, data_dir)
    existing = {c.name: c for c in src.manifest.commands}
    return derive_commands(commands, existing)


def compare(manifest: list[CommandSpec], code: list[CommandSpec]) -> list[str]:
    """One line per difference between the manifest's commands and the code's."""
    have = {c.name: c for c in manifest}
    want = {c.name: c for c in code}
    out = []
    for name, spec in want.items():
        if name not in have:
            out.append(f"command '{name}' is registered by the code but missing from the manifest")
            continue
        old = have[name]
        for attr in ("help", "usage", "hidden"):
            a, b = getattr(old, attr), getattr(spec, attr)
            if a != b:
                out.append(
                    f"command '{name}': {attr} is {json.dumps(a)} in the manifest, "
                    f"{json.dumps(b)} in the code"
                )
    for name in have:
        if name not in want:
            out.append(f"command '{name}' is in the manifest but the code does not register it")
    return out


def _commands_toml(specs: list[CommandSpec]) -> Any:
    import tomlkit

    aot = tomlkit.aot()
    for spec in specs:
        table = tomlkit.table()
        table["name"] = spec.name
        table["help"] = spec.help
        if spec.usage:
            table["usage"] = spec.usage
        if spec.hidden:
            table["hidden"] = True
        aot.append(table)
    return aot


def _replace_commands(toml_text: str, specs: list[CommandSpec]) -> str:
    import tomlkit

    doc = tomlkit.parse(toml_text)
    if "commands" in doc:
        del doc["commands"]
    text = tomlkit.dumps(doc).rstrip("\n")
    if specs:
        commands = tomlkit.document()
        commands["commands"] = _commands_toml(specs)
        text += "\n\n" + tomlkit.dumps(commands).strip("\n")
    return text + "\n"


def write_manifest(src: PluginSource, specs: list[CommandSpec]) -> None:
    """Replace the ``[[commands]]`` of ``src``'s manifest with ``specs``, keeping the rest."""
    from conduit.fs import atomic_write, locked
    from conduit.manifest import INLINE_RE

    path = src.manifest_path
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if src.kind == "package":
        new = _replace_commands(text, specs)
    else:
        match = next(m for m in INLINE_RE.finditer(text) if m.group("type") == "conduit")
        lines = match.group("content").splitlines()
        body = "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in lines)
        toml = _replace_commands(body + "\n", specs)
        block = "\n".join(f"# {line}" if line else "#" for line in toml.rstrip("\n").split("\n"))
        new = text[: match.start()] + f"# /// conduit\n{block}\n# ///" + text[match.end() :]
    with locked(path):
        atomic_write(path, new.encode("utf-8"), mode=os.stat(path).st_mode & 0o777)


@click.command("manifest")
@click.argument("path", default=".", type=click.Path(exists=True))
@click.option("--write", "mode", flag_value="write", help="Rewrite the manifest's commands.")
@click.option(
    "--check",
    "mode",
    flag_value="check",
    help="Exit 1, listing each difference, if the manifest is stale.",
)
def manifest_cmd(path: str, mode: str | None) -> None:
    """Derive a manifest's commands, help and usage from the plugin's Click commands."""
    from conduit.authoring import find_plugins

    stale = 0
    for src in find_plugins(path):
        derived = _derived(src)
        assert src.manifest is not None
        diffs = compare(list(src.manifest.commands), derived)
        if mode == "check":
            for line in diffs:
                click.echo(f"{src.manifest_path}: {line}", err=True)
            stale += bool(diffs)
        elif mode == "write":
            if diffs:
                write_manifest(src, derived)
                click.echo(f"{src.manifest_path}: wrote {_count(len(derived), 'command')}")
            else:
                click.echo(f"{src.manifest_path}: up to date")
        else:
            import tomlkit

            doc = tomlkit.document()
            doc["commands"] = _commands_toml(derived)
            click.echo(f"# {src.name}: {src.manifest_path}")
            click.echo(tomlkit.dumps(doc).strip("\n"))
    if stale:
        raise ConduitError(
            "the manifest does not match the code"
            if stale == 1
            else f"{stale} manifests do not match the code",
            hint=f"run 'conduit plugins manifest --write {path}'",
        )


# -- plugins check -------------------------------------------------------------------------

#: modules whose import suggests a capability, and the capability it needs
_NETWORK_MODULES = (
    "socket",
    "ssl",
    "http.client",
    "urllib.request",
    "ftplib",
    "smtplib",
    "requests",
    "httpx",
    "aiohttp",
    "urllib3",
)
_LINT: dict[str, tuple[str, str]] = {
    **dict.fromkeys(_NETWORK_MODULES, ("network", "network:http")),
    "subprocess": ("process", "process:execute"),
}


def _imports(path: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return sorted(found)


def lint_capabilities(src: PluginSource) -> list[str]:
    """Heuristic: imports that suggest a capability the manifest does not declare."""
    assert src.manifest is not None
    declared = src.manifest.capabilities
    out = []
    seen: set[tuple[str, str]] = set()
    for path in src.sources:
        for line, module in _imports(path):
            need = _LINT.get(module)
            if need is None:
                continue
            kind, capability = need
            if any(c == capability or c.startswith(capability + ":") for c in declared):
                continue
            if (path, kind) in seen:
                continue
            seen.add((path, kind))
            rel = os.path.relpath(path)
            out.append(
                f"{rel}:{line} imports '{module}' but the manifest declares no {kind} "
                f'capability (add "{capability}" to capabilities if the plugin uses it)'
            )
    return out


_MEASURE = r"""
import json, os, resource, sys, time
import importlib.util, click, conduit.sdk, conduit.hosts.inprocess
from conduit.authoring import PluginSource, RecordingContext, importable, load_object
src = PluginSource(**json.loads(sys.argv[1]))
def rss():
    # The resident set now: ru_maxrss would include the parent's size from before exec.
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
with importable(src):
    before, start = rss(), time.perf_counter()
    obj = load_object(src)
    (obj() if isinstance(obj, type) else obj).boot(RecordingContext(src.name, sys.argv[2]))
    took = time.perf_counter() - start
print(json.dumps({"ms": took * 1000, "mb": (rss() - before) / 2**20}))
"""


def measure_args(src: PluginSource) -> dict[str, Any]:
    """What the measuring child rebuilds ``src`` from: everything it needs to import the
    plugin, so that it parses nothing (Conduit's manifest parser is not the plugin's
    import time)."""
    keys = ("name", "kind", "manifest_path", "entry", "import_root", "sources", "dependencies")
    return {k: getattr(src, k) for k in keys}


def measure(src: PluginSource, runs: int = 3) -> tuple[float, float]:
    """Median import + boot time (ms) and resident memory growth (MB) of the plugin, each
    in a fresh interpreter that has already imported Click and the SDK, as a host has."""
    args = measure_args(src)
    times, mems = [], []
    with tempfile.TemporaryDirectory(prefix="conduit-check-") as data_dir:
        for _ in range(runs):
            proc = subprocess.run(
                [sys.executable, "-c", _MEASURE, json.dumps(args), data_dir],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise ConduitError(f"plugin '{src.name}': importing it failed: {last}")
            data = json.loads(proc.stdout.strip().splitlines()[-1])
            times.append(data["ms"])
            mems.append(data["mb"])
    return statistics.median(times), statistics.median(mems)


def check_one(
    src: PluginSource, budget_ms: float, budget_mb: float, runs: int = 3
) -> list[tuple[bool | None, str]]:
    """Run every check on one plugin: a list of (passed, line); None marks a hint."""
    from packaging.specifiers import SpecifierSet

    from conduit.sdk import API_VERSION

    results: list[tuple[bool | None, str]] = []
    if src.error is not None:
        hint = f" ({src.error.hint})" if src.error.hint else ""
        return [(False, f"manifest: {src.error.message}{hint}")]
    assert src.manifest is not None
    results.append((True, "manifest: valid"))
    api = src.manifest.api
    if SpecifierSet(api).contains(API_VERSION, prereleases=True):
        results.append((True, f"api: {api} includes this Conduit's plugin API {API_VERSION}"))
    else:
        results.append(
            (
                False,
                f"api: the plugin supports plugin API {api}, but this Conduit provides "
                f"{API_VERSION} (update the plugin, or install a Conduit it supports)",
            )
        )
    try:
        diffs = compare(list(src.manifest.commands), _derived(src))
    except ConduitError as exc:
        results.append((False, f"code: {exc.message}"))
        return results
    if diffs:
        results += [(False, f"commands: {d}") for d in diffs]
        results.append((None, f"run 'conduit plugins manifest --write {src.project}'"))
    else:
        counted = _count(len(src.manifest.commands), "command")
        results.append((True, f"commands: the manifest matches the code ({counted})"))
    lint = lint_capabilities(src)
    results += [(False, f"capabilities (heuristic): {line}") for line in lint]
    if not lint:
        results.append((True, "capabilities (heuristic): no undeclared use found"))
    try:
        ms, mb = measure(src, runs)
    except ConduitError as exc:
        results.append((False, f"import: {exc.message}"))
        return results
    results.append(
        _budget(
            "import",
            f"{ms:.1f} ms",
            ms <= budget_ms,
            f"{budget_ms:g} ms",
            "import heavy modules inside the command that needs them, not at the top of the plugin",
        )
    )
    results.append(
        _budget(
            "memory",
            f"+{mb:.1f} MB",
            mb <= budget_mb,
            f"{budget_mb:g} MB",
            "load large data when a command needs it, not when the plugin is imported",
        )
    )
    return results


def _budget(what: str, value: str, within: bool, budget: str, advice: str) -> tuple[bool, str]:
    """One measurement against its budget: a (passed, line) of :func:`check_one`."""
    if within:
        return True, f"{what}: {value} (budget {budget})"
    return False, f"{what}: {value}, over the budget of {budget} ({advice})"


@click.command("check")
@click.argument("path", default=".", type=click.Path(exists=True))
@click.option(
    "--import-budget-ms",
    type=float,
    metavar="MS",
    default=50.0,
    show_default=True,
    help="Fail if importing and booting the plugin takes longer.",
)
@click.option(
    "--memory-budget-mb",
    type=float,
    metavar="MB",
    default=20.0,
    show_default=True,
    help="Fail if importing and booting the plugin grows resident memory by more.",
)
@click.option(
    "--runs",
    type=click.IntRange(1, 99),
    metavar="N",
    default=3,
    show_default=True,
    help="Measure import time and memory this many times and take the median.",
)
def check_cmd(path: str, import_budget_ms: float, memory_budget_mb: float, runs: int) -> None:
    """Check a plugin before publishing: manifest, API range, capabilities, import cost."""
    from conduit.authoring import find_plugins

    problems = 0
    plugins = find_plugins(path)
    for src in plugins:
        click.echo(f"plugin '{src.name}' ({src.manifest_path})")
        for passed, line in check_one(src, import_budget_ms, memory_budget_mb, runs):
            status = "hint" if passed is None else "ok  " if passed else "FAIL"
            click.echo(f"  {status}  {line}")
            problems += passed is False
    if problems:
        raise ConduitError(
            f"{_count(problems, 'problem')} found",
            hint="fix each FAIL line above; the capability lint is a heuristic",
        )
    click.echo(f"all checks passed ({_count(len(plugins), 'plugin')})")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

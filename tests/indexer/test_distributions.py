"""Plugins as real distributions: wheels built with a real backend, installed with uv into
a temporary venv, discovered through entry points, run through the console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from _factory import imported_by

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UV = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")


@dataclass
class Venv:
    root: Path

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def install(self, *args: str) -> None:
        subprocess.run(
            [UV, "pip", "install", "--quiet", "--python", self.python, *args],
            check=True,
            timeout=300,
        )

    def uninstall(self, *names: str) -> None:
        subprocess.run(
            [UV, "pip", "uninstall", "--quiet", "--python", self.python, *names],
            check=True,
            timeout=120,
        )

    def conduit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.root / "bin" / "conduit"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy(),
        )


def build_plugin(
    tmp: Path,
    dist: str,
    version: str,
    plugins: dict[str, list[str]],
    *,
    entry_overrides: dict[str, str] | None = None,
    manifest: bool = True,
    extra_toml: str = "",
    echo: str | None = None,
) -> Path:
    """Build a wheel of a plugin distribution with hatchling and return its path."""
    pkg = dist.replace("-", "_")
    proj = tmp / f"{dist}-{version}"
    src = proj / "src" / pkg
    src.mkdir(parents=True)
    eps = "\n".join(
        f'{name} = "{(entry_overrides or {}).get(name, f"{pkg}.{name}:Plugin")}"'
        for name in plugins
    )
    (proj / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"
        [project]
        name = "{dist}"
        version = "{version}"
        [project.entry-points."conduit.plugins"]
        """)
        + eps
        + f'\n[tool.hatch.build.targets.wheel]\npackages = ["src/{pkg}"]\n'
    )
    (src / "__init__.py").write_text("")
    for name, commands in plugins.items():
        sub = src / name
        sub.mkdir()
        toml = f'api = ">=1.0,<2"\ndescription = "{name} from {dist} {version}"\n{extra_toml}'
        code = "import os, sys\nimport click\nfrom conduit.sdk import Plugin as Base\n"
        regs = []
        for i, cmd in enumerate(commands):
            toml += f'[[commands]]\nname = "{cmd}"\nhelp = "{cmd} help"\n'
            code += (
                f"@click.command({cmd!r})\ndef c{i}():\n"
                f"    click.echo({echo or repr(f'{name} {cmd} {version}')})\n"
            )
            regs.append(f"        ctx.register_command(c{i})")
        code += "class Plugin(Base):\n    def boot(self, ctx):\n" + "\n".join(regs) + "\n"
        if manifest:
            (sub / "conduit-plugin.toml").write_text(toml)
        (sub / "__init__.py").write_text(code)
    out = tmp / "wheels"
    subprocess.run(
        [UV, "build", "--wheel", "--quiet", "--out-dir", str(out), str(proj)],
        check=True,
        timeout=300,
    )
    return next(out.glob(f"{pkg}-{version}-*.whl"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    if UV is None:
        pytest.fail("uv is required for these tests (pip install -e '.[test]' installs it)")
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run(
        [UV, "venv", "--quiet", "--python", sys.executable, str(root)], check=True, timeout=120
    )
    env = Venv(root)
    env.install(str(REPO))
    return env


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheels")
    return {
        "hello-1": build_plugin(tmp, "conduit-hello", "1.0.0", {"hello": ["greet"]}),
        "hello-2": build_plugin(tmp, "conduit-hello", "2.0.0", {"hello": ["greet", "wave"]}),
        "world": build_plugin(
            tmp, "conduit-world", "1.0.0", {"world": ["spin"], "moon": ["orbit"]}
        ),
        "broken": build_plugin(
            tmp,
            "conduit-broken",
            "1.0.0",
            {"noobj": ["nope"], "nomani": ["x"]},
            entry_overrides={"noobj": "conduit_broken.noobj:Missing"},
        ),
        "nomanifest": build_plugin(
            tmp, "conduit-bare", "1.0.0", {"bare": ["bare"]}, manifest=False
        ),
    }


def test_install_upgrade_uninstall_are_noticed(venv: Venv, wheels: dict[str, Path]) -> None:
    venv.install(str(wheels["hello-1"]))
    r = venv.conduit("--help")
    assert r.returncode == 0, r.stderr
    assert "Commands from hello: hello from conduit-hello 1.0.0" in r.stdout
    assert venv.conduit("greet").stdout == "hello greet 1.0.0\n"

    venv.install(str(wheels["world"]))  # one distribution, two plugins
    r = venv.conduit("--help")
    assert "spin" in r.stdout and "orbit" in r.stdout
    assert venv.conduit("orbit").stdout == "moon orbit 1.0.0\n"

    venv.install(str(wheels["hello-2"]))
    assert venv.conduit("wave").stdout == "hello wave 2.0.0\n"
    listed = {p["name"]: p for p in json.loads(venv.conduit("plugins", "list", "--json").stdout)}
    assert listed["hello"]["version"] == "2.0.0"
    assert listed["hello"]["source"] == "entry-point"

    venv.uninstall("conduit-world")
    r = venv.conduit("spin")
    assert r.returncode == 2
    assert r.stderr.startswith("error: unknown command 'spin'")


def _probe(venv: Venv, *args: str) -> set[str]:
    code, modules = imported_by(*args, python=venv.python, watch_kernel=args[0] != "--help")
    assert code == 0
    return modules


def test_running_a_command_imports_only_its_plugin(venv: Venv, wheels: dict[str, Path]) -> None:
    venv.install(str(wheels["hello-2"]), str(wheels["world"]))
    venv.conduit("--help")
    help_modules = _probe(venv, "--help")
    assert not {
        m for m in help_modules if m.startswith(("conduit_", "click", "importlib.metadata"))
    }
    run_modules = _probe(venv, "spin")
    assert "conduit_world.world" in run_modules
    assert "conduit_world.moon" not in run_modules
    assert not {m for m in run_modules if m.startswith("conduit_hello")}
    assert "importlib.metadata" not in run_modules


def test_process_plugin_from_an_installed_distribution(venv: Venv, tmp_path: Path) -> None:
    # The host child starts without site, with the kernel's sys.path: it still finds an
    # installed (not editable) Conduit and the plugin's package in the venv.
    wheel = build_plugin(
        tmp_path,
        "conduit-far",
        "1.0.0",
        {"far": ["away"]},
        extra_toml='isolation = "process"\n',
        echo="f'{os.getppid()} {sys.flags.no_site} {__file__}'",
    )
    venv.install(str(wheel))
    r = venv.conduit("away")
    assert r.returncode == 0, r.stderr
    parent, no_site, where = r.stdout.split()
    assert no_site == "1"
    assert where.startswith(str(venv.root)) and "site-packages" in where
    assert int(parent) != os.getpid()  # its parent is conduit, not this test: a host child


def test_broken_distributions(venv: Venv, wheels: dict[str, Path]) -> None:
    venv.install(str(wheels["broken"]), str(wheels["nomanifest"]))
    r = venv.conduit("nope")
    assert r.returncode == 3
    assert (
        "error: plugin 'noobj': entry point 'conduit_broken.noobj:Missing': module "
        "'conduit_broken.noobj' has no attribute 'Missing'" in r.stderr
    )
    assert "Traceback" not in r.stderr
    # a distribution without a manifest is skipped with one line, everything else works
    r = venv.conduit("--help")
    assert r.returncode == 0
    lines = [x for x in r.stderr.splitlines() if "skipped plugin 'bare'" in x]
    assert len(lines) == 1 and "no conduit-plugin.toml found" in lines[0]
    assert venv.conduit("greet").returncode == 0

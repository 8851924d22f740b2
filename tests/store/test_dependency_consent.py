"""A single-file plugin's inline ``dependencies`` run an installer outside every sandbox:
they need the user's consent, come as wheels only, and never as a URL or a path, unless
the user allows builds for that plugin (docs/permissions.md#dependencies).

Each attack is the red team's: a plugin with no capabilities whose dependency is a
source distribution whose build code writes a marker file outside every grant. The
marker must never appear unless the user allowed it. Real uv and pip, a real index on
127.0.0.1, real plugin hosts.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from _factory import PackageIndex, make_wheel, manifest_block, pty_run

# -- source distributions whose build code leaves a mark ---------------------------------------

_BACKEND = '''\
"""An in-tree PEP 517 backend: no build requirements, so it builds offline."""
import base64, hashlib, os, pathlib, zipfile

MARKER = {marker!r}
if MARKER:  # what a hostile setup.py does: anything, with the user's rights
    pathlib.Path(MARKER).write_text("build code ran")

NAME, VERSION = {name!r}, {version!r}
FILES = {files!r}
METADATA = {metadata!r}
ENTRY_POINTS = {entry_points!r}


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    key = NAME.replace("-", "_")
    info = f"{{key}}-{{VERSION}}.dist-info"
    files = dict(FILES)
    files[info + "/METADATA"] = METADATA
    files[info + "/WHEEL"] = (
        "Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    )
    if ENTRY_POINTS:
        files[info + "/entry_points.txt"] = ENTRY_POINTS
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{{path}},sha256={{b64}},{{len(text.encode())}}")
    record.append(info + "/RECORD,,")
    files[info + "/RECORD"] = "\\n".join(record) + "\\n"
    filename = f"{{key}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return filename
'''


def source_tree(
    root: Path,
    name: str,
    version: str,
    *,
    marker: Path | None,
    files: dict[str, str] | None = None,
    requires: tuple[str, ...] = (),
    entry_points: str = "",
) -> Path:
    """A project directory whose build backend writes ``marker`` when it is run."""
    root.mkdir(parents=True, exist_ok=True)
    key = name.replace("-", "_")
    files = files if files is not None else {f"{key}/__init__.py": f"VERSION = {version!r}\n"}
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    deps = ", ".join(f'"{r}"' for r in requires)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = [{deps}]\n'
    )
    (root / "PKG-INFO").write_text(metadata)
    (root / "backend.py").write_text(
        _BACKEND.format(
            marker=str(marker) if marker else "",
            name=name,
            version=version,
            files=files,
            metadata=metadata,
            entry_points=entry_points,
        )
    )
    return root


def make_sdist(out: Path, name: str, version: str, *, marker: Path, **kw: object) -> Path:
    """``out/NAME-VERSION.tar.gz``: a real sdist of :func:`source_tree`."""
    key = name.replace("-", "_")
    tree = source_tree(out / f"src-{key}-{version}", name, version, marker=marker, **kw)  # type: ignore[arg-type]
    path = out / f"{key}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for file in sorted(tree.iterdir()):
            data = file.read_bytes()
            info = tarfile.TarInfo(f"{key}-{version}/{file.name}")
            info.size = len(data)
            info.mtime = 1577836800
            tar.addfile(info, io.BytesIO(data))
    return path


# -- plugins -----------------------------------------------------------------------------------


def dep_plugin(name: str, deps: list[str], *, isolation: str = "process", caps: str = "") -> str:
    """A single-file plugin with no capabilities (unless ``caps``) declaring ``deps``."""
    listed = ", ".join(f'"{d}"' for d in deps)
    toml = f'name = "{name}"\napi = ">=1.0,<2"\nisolation = "{isolation}"\n'
    toml += f"dependencies = [{listed}]\n{caps}"
    toml += f'[[commands]]\nname = "{name}-run"\nhelp = "Run it."\n'
    return (
        manifest_block(toml)
        + "import click\nfrom conduit.sdk import Plugin\n\n\n"
        + f"@click.command({name + '-run'!r})\ndef run():\n    click.echo('ran')\n\n\n"
        + "class ThePlugin(Plugin):\n    def boot(self, ctx):\n        ctx.register_command(run)\n"
    )


@pytest.fixture
def env(tmp_path: Path, conduit_home: Path) -> dict[str, str]:
    """The environment of a ``conduit`` run: fresh installer caches (a wheel built in
    another test must not be found), and no pip config of this machine."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    out.pop("CI", None)
    out["UV_CACHE_DIR"] = str(tmp_path / "uv-cache")
    out["PIP_CACHE_DIR"] = str(tmp_path / "pip-cache")
    out["PIP_CONFIG_FILE"] = os.devnull
    out["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    out["CONDUIT_HOME"] = str(conduit_home)
    return out


def conduit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def index(tmp_path: Path) -> Iterator[PackageIndex]:
    idx = PackageIndex(tmp_path / "index")
    idx.add()
    yield idx
    idx.close()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Where hostile build code writes: outside every grant, the plugin's data included."""
    return tmp_path / "outside" / "pwned"


@pytest.fixture
def evil_sdist(tmp_path: Path, marker: Path) -> Path:
    marker.parent.mkdir()
    return make_sdist(tmp_path / "dists", "evilpkg", "0.1", marker=marker)


def config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def envs_of(home: Path) -> list[Path]:
    root = home / "cache" / "envs"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


# -- a URL or a path: refused unless the user allows builds for the plugin ---------------------


@pytest.mark.parametrize("isolation", ["process", "in-process"])
def test_a_url_dependency_is_refused_and_its_build_code_never_runs(
    plugin_dir: Path,
    conduit_home: Path,
    env: dict[str, str],
    index: PackageIndex,
    evil_sdist: Path,
    marker: Path,
    isolation: str,
) -> None:
    dep = f"evilpkg @ {evil_sdist.as_uri()}"
    (plugin_dir / "evil.py").write_text(dep_plugin("evil", [dep], isolation=isolation))
    config(conduit_home, f'[store]\nindex-url = "{index.url}"\n')
    r = conduit(env, "evil-run")
    assert r.returncode == 3, r.stderr
    assert r.stderr.splitlines()[0] == (
        f"error: plugin 'evil': its dependency '{dep}' is a URL or path requirement, which "
        "Conduit refuses: it could run build code on your machine (run 'conduit plugins "
        "grant evil --dependencies --allow-build' to allow it, if you trust it)"
    )
    assert "Traceback" not in r.stderr
    assert not marker.exists()
    assert envs_of(conduit_home) == []

    # consent to the list alone does not let a URL through
    assert conduit(env, "plugins", "grant", "evil", "--dependencies").returncode == 0
    r = conduit(env, "evil-run")
    assert r.returncode == 3
    assert "is a URL or path requirement" in r.stderr.splitlines()[0]
    assert not marker.exists()

    # the user allows it, knowingly: then (only then) its build code runs
    r = conduit(env, "plugins", "grant", "evil", "--dependencies", "--allow-build")
    assert r.returncode == 0, r.stderr
    assert "their build code runs with your rights" in r.stderr
    r = conduit(env, "evil-run")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert marker.read_text() == "build code ran"


@pytest.mark.parametrize("installer", ["uv", pytest.param("pip", marks=pytest.mark.slow)])
@pytest.mark.parametrize("where", ["index", "find-links"])
def test_an_sdist_dependency_is_never_built(
    plugin_dir: Path,
    conduit_home: Path,
    env: dict[str, str],
    index: PackageIndex,
    evil_sdist: Path,
    marker: Path,
    installer: str,
    where: str,
) -> None:
    """A plain requirement whose only distribution is an sdist, on the index or a
    --find-links directory: consented, but wheels only."""
    (plugin_dir / "evil.py").write_text(dep_plugin("evil", ["evilpkg"]))
    if where == "index":
        index.add(evil_sdist)
        sources = f'index-url = "{index.url}"\n'
    else:  # the index is empty: the sdist is only in the directory
        sources = f'index-url = "{index.url}"\nfind-links = ["{evil_sdist.parent}"]\n'
    config(conduit_home, f'[store]\ninstaller = "{installer}"\n{sources}')
    r = conduit(env, "evil-run")  # the red team's run: nobody was asked
    assert r.returncode == 3, r.stderr
    assert "consent to install its dependencies not given: evilpkg" in r.stderr
    assert not marker.exists()

    # consented, as on a "yes" at the prompt: still wheels only
    consent = '[dependencies.consented]\nevil = ["evilpkg"]\n'
    config(conduit_home, f'[store]\ninstaller = "{installer}"\n{sources}{consent}')
    r = conduit(env, "evil-run")
    assert r.returncode == 3, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("error: plugin 'evil': cannot install its dependencies (evilpkg): ")
    assert "Traceback" not in r.stderr
    assert not marker.exists()
    assert envs_of(conduit_home) == []
    if installer == "uv":  # uv says why; pip only finds no wheel
        assert r.stderr.splitlines()[1] == (
            "hint: only wheels are installed for a plugin's dependencies; to let them build "
            "from source: conduit plugins grant evil --dependencies --allow-build (their "
            "build code runs with your rights)"
        )

    # allowed for this plugin: built (the test's sdist does build; the refusal was the rule)
    r = conduit(env, "plugins", "grant", "evil", "--dependencies", "--allow-build")
    assert r.returncode == 0, r.stderr
    r = conduit(env, "evil-run")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert marker.exists()


def test_a_dependency_of_a_wheel_is_not_built_either(
    plugin_dir: Path,
    conduit_home: Path,
    env: dict[str, str],
    index: PackageIndex,
    evil_sdist: Path,
    marker: Path,
    tmp_path: Path,
) -> None:
    """The plugin names a wheel; the wheel needs the sdist (uv: refused at any depth)."""
    index.add(make_wheel(tmp_path / "wheels", "carrier", "1.0", requires=("evilpkg",)))
    index.add(evil_sdist)
    (plugin_dir / "evil.py").write_text(dep_plugin("evil", ["carrier"]))
    sources = f'[store]\ninstaller = "uv"\nindex-url = "{index.url}"\n'
    config(conduit_home, sources)
    assert conduit(env, "evil-run").returncode == 3  # not consented
    assert not marker.exists()
    config(conduit_home, sources + '[dependencies.consented]\nevil = ["carrier"]\n')
    r = conduit(env, "evil-run")
    assert r.returncode == 3, r.stderr
    assert "cannot install its dependencies (carrier)" in r.stderr.splitlines()[0]
    assert not marker.exists()


# -- consent -----------------------------------------------------------------------------------


@pytest.fixture
def good_index(index: PackageIndex, tmp_path: Path) -> PackageIndex:
    index.add(
        make_wheel(tmp_path / "wheels", "ccons-dep", "1.0"),
        make_wheel(tmp_path / "wheels", "ccons-other", "1.0"),
    )
    return index


def consented(home: Path) -> dict[str, list[str]]:
    data = tomllib.loads((home / "config.toml").read_text())
    return data.get("dependencies", {}).get("consented", {})


def test_without_a_terminal_dependencies_are_refused_until_consented(
    plugin_dir: Path, conduit_home: Path, env: dict[str, str], good_index: PackageIndex
) -> None:
    (plugin_dir / "dep.py").write_text(dep_plugin("dep", ["ccons-dep==1.0"]))
    config(conduit_home, f'[store]\nindex-url = "{good_index.url}"\n')
    r = conduit(env, "dep-run")
    assert r.returncode == 3
    assert r.stderr == (
        "error: plugin 'dep': consent to install its dependencies not given: ccons-dep==1.0 "
        "(run 'conduit plugins grant dep --dependencies' to allow it)\n"
    )
    assert envs_of(conduit_home) == []  # nothing was installed

    r = conduit(env, "plugins", "grant", "dep", "--dependencies")
    assert (r.returncode, r.stdout) == (
        0,
        "Consented to install the dependencies of 'dep': ccons-dep==1.0.\n",
    ), r.stderr
    assert consented(conduit_home) == {"dep": ["ccons-dep==1.0"]}
    r = conduit(env, "dep-run")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert len(envs_of(conduit_home)) == 1

    # a changed list is a new question, even with the old part installed
    (plugin_dir / "dep.py").write_text(dep_plugin("dep", ["ccons-dep==1.0", "ccons-other"]))
    r = conduit(env, "dep-run")
    assert r.returncode == 3
    assert "not given: ccons-dep==1.0, ccons-other " in r.stderr

    # withdrawn: asked again
    (plugin_dir / "dep.py").write_text(dep_plugin("dep", ["ccons-dep==1.0"]))
    assert conduit(env, "dep-run").returncode == 0
    r = conduit(env, "plugins", "revoke", "dep", "--dependencies")
    assert r.stdout == "Withdrew the consent to install the dependencies of 'dep'.\n"
    assert consented(conduit_home) == {}
    assert conduit(env, "dep-run").returncode == 3


def test_capabilities_and_dependencies_are_asked_together(
    plugin_dir: Path, conduit_home: Path, env: dict[str, str], good_index: PackageIndex
) -> None:
    caps = 'capabilities = ["env:read:HOME"]\n'
    (plugin_dir / "dep.py").write_text(dep_plugin("dep", ["ccons-dep==1.0"], caps=caps))
    config(conduit_home, f'[store]\nindex-url = "{good_index.url}"\n')
    r = conduit(env, "dep-run")
    assert r.returncode == 3
    assert r.stderr == (
        "error: plugin 'dep': capabilities not granted: env:read:HOME; consent to install its "
        "dependencies not given: ccons-dep==1.0 (run 'conduit plugins grant dep "
        "--dependencies env:read:HOME' to allow them)\n"
    )
    r = conduit(env, "plugins", "grant", "dep", "--dependencies", "env:read:HOME")
    assert r.returncode == 0, r.stderr
    r = conduit(env, "dep-run")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr


def test_the_grant_prompt_shows_the_dependencies_and_records_the_consent(
    plugin_dir: Path, conduit_home: Path, env: dict[str, str], good_index: PackageIndex
) -> None:
    (plugin_dir / "dep.py").write_text(dep_plugin("dep", ["ccons-other", "ccons-dep==1.0"]))
    config(conduit_home, f'[store]\nindex-url = "{good_index.url}"\n')
    argv = [sys.executable, "-m", "conduit", "dep-run"]

    code, out, terminal = pty_run(argv, "n", env, timeout=120, pipe_stdout=True)
    assert code == 3, terminal
    assert "consent to install its dependencies declined: ccons-dep==1.0, ccons-other" in terminal
    assert envs_of(conduit_home) == []

    code, out, terminal = pty_run(argv, "y", env, timeout=120, pipe_stdout=True)
    assert (code, out) == (0, "ran\n"), terminal
    assert (
        "┌ conduit: plugin 'dep' requests:\n"
        "├   dependencies: installs these Python packages (wheels only, into a private "
        "directory; with pip, not uv, a URL requirement that a dependency itself declares "
        "can still run build code):\n"
        "├     ccons-dep==1.0\n"
        "├     ccons-other\n"
        "├   ('conduit plugins revoke dep --dependencies' withdraws this consent)\n"
    ) in terminal
    assert "Grant? [y/N] y" in terminal
    assert consented(conduit_home) == {"dep": ["ccons-dep==1.0", "ccons-other"]}

    # recorded: not asked again
    code, out, terminal = pty_run(argv, "y", env, timeout=120, pipe_stdout=True)
    assert (code, out) == (0, "ran\n"), terminal
    assert "Grant?" not in terminal


def test_a_shared_host_installs_nothing_for_a_plugin_without_consent(
    plugin_dir: Path,
    conduit_home: Path,
    env: dict[str, str],
    good_index: PackageIndex,
    evil_sdist: Path,
    marker: Path,
) -> None:
    """A process host shared by several plugins installs all their dependencies when it
    starts, for plugins not activated yet too: each one needs its own consent."""
    good_index.add(evil_sdist)
    (plugin_dir / "good.py").write_text(dep_plugin("good", ["ccons-dep==1.0"]))
    (plugin_dir / "evil.py").write_text(dep_plugin("evil", ["evilpkg"]))
    shared = f'[store]\nindex-url = "{good_index.url}"\n[process]\nshared = ["good", "evil"]\n'
    config(conduit_home, shared)
    assert conduit(env, "good-run").returncode == 3  # nothing consented
    assert not marker.exists()
    config(
        conduit_home,
        shared + '[dependencies]\nallow-build = ["evil"]\n'
        '[dependencies.consented]\ngood = ["ccons-dep==1.0"]\n',
    )
    r = conduit(env, "good-run")
    assert r.returncode == 3
    assert r.stderr.startswith(
        "error: plugin 'evil': consent to install its dependencies not given: evilpkg "
    )
    assert not marker.exists()


# -- plugins info ------------------------------------------------------------------------------


def test_plugins_info_lists_the_dependencies_and_installs_nothing(
    plugin_dir: Path,
    conduit_home: Path,
    env: dict[str, str],
    index: PackageIndex,
    evil_sdist: Path,
    marker: Path,
) -> None:
    index.add(evil_sdist)
    (plugin_dir / "evil.py").write_text(dep_plugin("evil", ["evilpkg>=0.1", "click"]))
    config(conduit_home, f'[store]\nindex-url = "{index.url}"\n')
    r = conduit(env, "plugins", "info", "evil")  # it times loading the plugin, too
    assert r.returncode == 0, r.stderr
    assert (
        "  dependencies: click, evilpkg>=0.1  (not consented yet: asked on first use; "
        "wheels only)\n"
    ) in r.stdout
    assert (
        "  load:         FAILED: plugin 'evil': consent to install its dependencies not given"
        in r.stdout
    )
    assert not marker.exists()
    assert envs_of(conduit_home) == []

    config(
        conduit_home,
        f'[store]\nindex-url = "{index.url}"\n'
        '[dependencies]\nallow-build = ["evil"]\n'
        '[dependencies.consented]\nevil = ["click", "evilpkg>=0.1"]\n',
    )
    r = conduit(env, "plugins", "info", "evil", "--no-load")
    assert "  dependencies: click, evilpkg>=0.1  (consented; may build from source)\n" in r.stdout
    assert json_deps(conduit(env, "plugins", "info", "evil", "--json", "--no-load").stdout) == [
        "evilpkg>=0.1",
        "click",
    ]
    assert not marker.exists()


def json_deps(text: str) -> list[str]:
    import json

    return list(json.loads(text)["dependencies"])


# -- the config --------------------------------------------------------------------------------


def test_a_bad_consent_record_is_a_config_error(
    plugin_dir: Path, conduit_home: Path, env: dict[str, str]
) -> None:
    config(conduit_home, '[dependencies.consented]\nx = ["--index-url=http://evil"]\n')
    r = conduit(env, "plugins", "list")
    assert r.returncode == 4
    assert r.stderr.startswith(
        f"error: {conduit_home / 'config.toml'}:2: dependencies.consented.x[0]: "
        "'--index-url=http://evil' is not a valid requirement"
    )
    config(conduit_home, "[dependencies]\nallow-build = true\n")
    assert conduit(env, "plugins", "list").returncode == 4


def test_grant_dependencies_needs_a_plugin_that_declares_some(
    plugin_dir: Path, conduit_home: Path, env: dict[str, str]
) -> None:
    from _factory import simple_plugin

    (plugin_dir / "plain.py").write_text(simple_plugin("plain"))
    r = conduit(env, "plugins", "grant", "plain", "--dependencies")
    assert r.returncode == 2
    assert r.stderr.startswith("error: plugin 'plain' declares no dependencies\n")


def test_install_time_notes_name_the_dependencies_too(tmp_path: Path) -> None:
    """'plugins install' lists what a new plugin lacks (conduit.security.grants.offer):
    for a package plugin whose manifest declares dependencies, the command consents too,
    and a refused dependency is a warning, not a crash after the commit."""
    from conduit.security.grants import offer

    def rec(name: str, deps: list[str]) -> dict[str, object]:
        return {
            "name": name,
            "source": "entry-point",
            "version": "1.0",
            "capabilities": ["env:read:HOME"],
            "dependencies": deps,
        }

    index = {
        "config": {},
        "plugins": {"a": rec("a", ["rich"]), "b": rec("b", ["x @ https://example.org/x.tgz"])},
    }
    notes = offer(index, ["a", "b"], str(tmp_path / "config.toml"), ask=False)  # type: ignore[arg-type]
    assert notes == [
        "plugin 'a' asks for: env:read:HOME",
        "  grant with: conduit plugins grant a --dependencies env:read:HOME",
        "warning: plugin 'b': its dependency 'x @ https://example.org/x.tgz' is a URL or path "
        "requirement, which Conduit refuses: it could run build code on your machine (run "
        "'conduit plugins grant b --dependencies --allow-build' to allow it, if you trust it)",
    ]
    assert not (tmp_path / "config.toml").exists()

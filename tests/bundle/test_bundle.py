"""`conduit bundle` (issue 23): a real Conduit wheel and real plugin wheels installed with
uv into a venv, a bundle built there, run by the python of a fresh venv without Conduit."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from _factory import EPOCH, UV, build_conduit_wheel, conduit_venv, make_wheel, simple_plugin

pytestmark = [pytest.mark.slow, pytest.mark.skipif(UV is None, reason="needs uv")]

BETA_GRANT = "env:read:BUNDLE_BETA"
BETA_CODE = """
import os
@click.command('beta-env')
def beta_env():
    click.echo('beta sees ' + os.environ.get('BUNDLE_BETA', '(nothing)') + ' pid ' + str(os.getpid()))
class Plugin(Base):
    def boot(self, ctx):
        ctx.register_command(run)
        ctx.register_command(beta_env)
"""


def _compiled_wheel(out: Path) -> Path:
    """A wheel for this platform with a (dummy) extension module in it."""
    files = {"slowlib/__init__.py": "", "slowlib/_speed.so": "not really a shared object\n"}
    info = "slowlib-1.0.dist-info"
    files[f"{info}/METADATA"] = "Metadata-Version: 2.1\nName: slowlib\nVersion: 1.0\n"
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: false\nTag: py3-none-linux_x86_64\n"
    )
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    path = out / "slowlib-1.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(zipfile.ZipInfo(name, EPOCH), text)
    return path


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        dist = root / "dist"
        wheels = [
            make_wheel(dist, "alpha-plugin", "1.0", plugin="alpha"),
            make_wheel(
                dist,
                "beta-plugin",
                "2.0",
                plugin="beta",
                capabilities=(BETA_GRANT,),
                manifest='isolation = "process"\n[[commands]]\nname = "beta-env"\nhelp = "Env."\n',
                code=BETA_CODE,
            ),
            make_wheel(dist, "gamma-plugin", "1.0", plugin="gamma", requires=("slowlib",)),
            _compiled_wheel(dist),
        ]
        conduit = build_conduit_wheel(root / "conduit-wheel")
        self.venv = conduit_venv(root / "venv", conduit, *map(str, wheels))
        self.fresh = root / "fresh"  # a venv without Conduit: only a suitable Python
        subprocess.run(
            [UV, "venv", "--quiet", "--python", sys.executable, str(self.fresh)], check=True
        )
        self.home = root / "home"  # the bundle's user
        self.builder_home = root / "builder-home"

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUIT_", "PYTHON"))}
        env.update(CONDUIT_HOME=str(home), CONDUIT_WARM="0", **extra)
        return env

    def conduit(self, *args: str) -> subprocess.CompletedProcess[str]:
        exe = str(self.venv / "bin" / "conduit")
        return subprocess.run(
            [exe, *args],
            env=self.env(self.builder_home),
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=120,
        )

    def direct(
        self, pyz: Path, *args: str, sh: str | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """``./TOOL.pyz ARGS`` (its sh header), or ``sh TOOL.pyz ARGS`` with ``sh``."""
        return subprocess.run(
            [*([sh] if sh else []), str(pyz), *args],
            env=self.env(self.home, **extra),
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=120,
        )

    def bundle(self, pyz: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        python = str(self.fresh / "bin" / "python")
        return subprocess.run(
            [python, str(pyz), *args],
            env=self.env(self.home, **extra),
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=120,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(tmp_path_factory.mktemp("bundle"))


def test_a_bundle_runs_in_a_venv_without_conduit(env: Env) -> None:
    pyz = env.root / "tool.pyz"
    built = env.conduit("bundle", "-o", str(pyz), "--plugin", "alpha", "--plugin", "beta")
    assert built.returncode == 0, built.stderr
    assert "alpha, beta" in built.stdout
    fresh = env.bundle(pyz, "--help")  # Conduit is not importable in the fresh venv
    assert fresh.returncode == 0, fresh.stderr
    assert "alpha-run" in fresh.stdout and "beta-run" in fresh.stdout
    assert "gamma-run" not in fresh.stdout  # not chosen
    assert env.bundle(pyz, "alpha-run").stdout == "alpha 1.0\n"
    # The process-isolated plugin runs in a child interpreter, from the extracted bundle
    # (it asks for a grant: the user's config applies to a bundle that is not sealed).
    (env.home / "config.toml").write_text(f'[grants]\nbeta = ["{BETA_GRANT}"]\n')
    ran = env.bundle(pyz, "beta-env", BUNDLE_BETA="hello")
    assert ran.returncode == 0, ran.stderr
    words = ran.stdout.split()
    assert words[:3] == ["beta", "sees", "hello"] and int(words[-1]) != 0
    assert env.bundle(pyz, "beta-run").stdout == "beta 2.0\n"
    (env.home / "config.toml").unlink()
    check = env.conduit("bundle", "--check", str(pyz))
    assert check.returncode == 0, check.stderr
    assert "alpha 1.0 (alpha-plugin, in-process) grants requested: none" in check.stdout
    assert f"beta 2.0 (beta-plugin, process) grants requested: {BETA_GRANT}" in check.stdout
    assert "msgspec" in check.stdout and "files: match" in check.stdout
    manifest = json.loads(env.conduit("bundle", "--check", str(pyz), "--json").stdout)
    dists = {d["name"]: d for d in manifest["distributions"]}
    assert dists["beta-plugin"]["version"] == "2.0" and dists["beta-plugin"]["sha256"].startswith(
        "sha256:"
    )
    assert dists["msgspec"]["compiled"] and dists["msgspec"]["role"] == "conduit"


def test_the_index_is_frozen_and_a_changed_bundle_is_extracted_again(env: Env) -> None:
    pyz = env.root / "changing.pyz"
    assert env.conduit("bundle", "-o", str(pyz), "--plugin", "alpha").returncode == 0
    first = env.bundle(pyz, "--profile", "--help")
    assert "alpha-run" in first.stdout and "beta-run" not in first.stdout
    second = env.bundle(pyz, "--profile", "--help")
    assert "index:read" in second.stderr and "index:rebuild" not in second.stderr
    # the index built at bundle time: not even the first run rebuilt it
    assert "index:rebuild" not in first.stderr
    bundles = env.home / "cache" / "bundles"
    before = {p.name for p in bundles.iterdir()}
    assert env.conduit("bundle", "-o", str(pyz), "--plugin", "beta").returncode == 0
    changed = env.bundle(pyz, "--help")
    assert "beta-run" in changed.stdout and "alpha-run" not in changed.stdout
    assert len({p.name for p in bundles.iterdir()} - before) == 1


def test_a_compiled_plugin_dependency_is_refused(env: Env) -> None:
    refused = env.conduit("bundle", "-o", str(env.root / "bad.pyz"), "--plugin", "gamma")
    assert refused.returncode == 1
    assert "compiled dependencies" in refused.stderr and "slowlib" in refused.stderr
    assert "Traceback" not in refused.stderr and not (env.root / "bad.pyz").exists()
    other = env.conduit(
        "bundle", "-o", str(env.root / "bad.pyz"), "--plugin", "gamma", "--platform", "win_amd64"
    )
    assert other.returncode == 2 and "not this interpreter's platform" in other.stderr
    here = env.conduit(
        "bundle", "-o", str(env.root / "ok.pyz"), "--plugin", "gamma", "--platform", "linux_x86_64"
    )
    assert here.returncode == 0, here.stderr


def test_sealed_ignores_the_users_plugins(env: Env) -> None:
    plugins = env.home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "mine.py").write_text(simple_plugin("mine", ("mine-hello",)))
    try:
        open_pyz, sealed_pyz = env.root / "open.pyz", env.root / "sealed.pyz"
        assert env.conduit("bundle", "-o", str(open_pyz), "--plugin", "alpha").returncode == 0
        assert (
            env.conduit("bundle", "-o", str(sealed_pyz), "--plugin", "alpha", "--sealed").returncode
            == 0
        )
        assert env.bundle(open_pyz, "mine-hello").stdout == "mine mine-hello\n"
        sealed = env.bundle(sealed_pyz, "mine-hello")
        assert sealed.returncode == 2 and "unknown command 'mine-hello'" in sealed.stderr
        assert env.bundle(sealed_pyz, "alpha-run").stdout == "alpha 1.0\n"
    finally:
        (plugins / "mine.py").unlink()


def test_another_interpreter_is_refused_in_one_line(env: Env) -> None:
    pyz = env.root / "tool.pyz"
    moved = env.root / "elsewhere.pyz"
    with zipfile.ZipFile(pyz) as src, zipfile.ZipFile(moved, "w") as dst:
        for info in src.infolist():
            if info.filename == "__main__.pyc":
                continue  # (zipimport would run it rather than the source)
            data = src.read(info)
            if info.filename == "__main__.py":
                data = data.replace(b"TARGET = ('cpython-", b"TARGET = ('cpython-0")
            dst.writestr(info, data)
    ran = env.bundle(moved, "--help")
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert len(ran.stderr.splitlines()) == 1 and "built for cpython-0" in ran.stderr


def test_the_zipapp_holds_four_members_and_check_reads_the_payload(env: Env) -> None:
    pyz = env.root / "four.pyz"
    assert env.conduit("bundle", "-o", str(pyz), "--plugin", "alpha").returncode == 0
    assert pyz.read_bytes().startswith(b"#!/bin/sh\n")  # PEP 441 allows any prefix
    with zipfile.ZipFile(pyz) as z:
        infos = {i.filename: i for i in z.infolist()}
        payload = z.read("payload.zip")
    # zipimport reads this directory on every run: four entries, and the bootstrap
    # stored (no zlib); the payload is read only when a run extracts it.
    assert sorted(infos) == ["__main__.py", "__main__.pyc", "conduit-bundle.json", "payload.zip"]
    assert infos["__main__.pyc"].compress_type == zipfile.ZIP_STORED
    # --check verifies the payload's files: change one, and it says which distribution
    changed = env.root / "changed.pyz"
    with zipfile.ZipFile(io.BytesIO(payload)) as src:
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == "site-packages/alpha_plugin/__init__.py":
                    data += b"\n# changed\n"
                dst.writestr(info, data)
    with zipfile.ZipFile(pyz) as src, zipfile.ZipFile(changed, "w") as dst:
        for info in src.infolist():
            dst.writestr(
                info, inner.getvalue() if info.filename == "payload.zip" else src.read(info)
            )
    check = env.conduit("bundle", "--check", str(changed))
    assert check.returncode == 1 and "DO NOT MATCH the manifest for alpha-plugin" in check.stdout
    assert "Traceback" not in check.stderr


def test_extraction_compiles_once_and_removes_older_ids_no_run_uses(env: Env) -> None:
    root = env.root / "extracted"
    pyz = env.root / "ages.pyz"
    ids = []
    for plugins in (["alpha"], ["beta"], ["alpha", "beta"]):
        args = [a for p in plugins for a in ("--plugin", p)]
        assert env.conduit("bundle", "-o", str(pyz), *args).returncode == 0
        ran = env.bundle(pyz, "--help", CONDUIT_BUNDLE_ROOT=str(root), PYTHONDONTWRITEBYTECODE="1")
        assert ran.returncode == 0, ran.stderr
        (found,) = {p.name for p in root.iterdir()} - set(ids)
        ids.append(found)
        if len(ids) == 2:
            # a run of the second id still going: it holds its byte of in-use
            fd = os.open(root / found / "in-use", os.O_WRONLY)
            os.lseek(fd, 12345, os.SEEK_SET)
            os.lockf(fd, os.F_LOCK, 1)
    os.close(fd)
    # the first id removed when the second was extracted; the second kept (in use)
    assert sorted(p.name for p in root.iterdir()) == sorted(ids[1:])
    # bytecode written at extraction, whatever PYTHONDONTWRITEBYTECODE says
    cache = root / ids[2] / "site-packages" / "conduit" / "__pycache__"
    assert any(p.suffix == ".pyc" for p in cache.iterdir())


def test_a_process_host_child_ignores_the_interpreters_pth_files(env: Env) -> None:
    """The fresh venv's site-packages gets a .pth file installing an import finder (as an
    editable install's does): the bundle's child must still start without site, from
    the extracted bundle only."""
    pyz = env.root / "tool.pyz"
    if not pyz.exists():
        assert env.conduit("bundle", "-o", str(pyz), "--plugin", "beta").returncode == 0
    (site,) = (env.fresh / "lib").glob("python*/site-packages")
    finder = site / "_bundle_test_finder.py"
    finder.write_text(
        "import sys\n"
        "class Finder:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        return None\n"
        "sys.meta_path.append(Finder)\n"
    )
    pth = site / "_bundle_test_finder.pth"
    pth.write_text("import _bundle_test_finder\n")
    try:
        env.home.mkdir(exist_ok=True)
        (env.home / "config.toml").write_text(f'[grants]\nbeta = ["{BETA_GRANT}"]\n')
        ran = env.bundle(pyz, "beta-env", BUNDLE_BETA="child")
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("beta sees child")
    finally:
        pth.unlink()
        finder.unlink()
        (env.home / "config.toml").unlink(missing_ok=True)


def test_plugins_doctor_deep_loads_the_bundles_plugins(env: Env) -> None:
    """Its children (one interpreter per plugin) run the bundle's Conduit, not the
    interpreter's (the fresh venv has none)."""
    pyz = env.root / "doctor.pyz"
    assert env.conduit("bundle", "-o", str(pyz), "--plugin", "alpha").returncode == 0
    ran = env.bundle(pyz, "plugins", "doctor", "--deep")
    assert "No module named" not in ran.stdout + ran.stderr
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "enabled plugins load" in ran.stdout and "No broken plugins" in ran.stdout


def test_what_starts_conduit_again_starts_the_bundles(env: Env) -> None:
    """`debug report`'s doctor child and the completion scripts' program ran `python -m
    conduit`, which the bundle's interpreter cannot import (the fresh venv has no
    Conduit): now the bundle itself."""
    pyz = env.root / "again.pyz"
    assert env.conduit("bundle", "-o", str(pyz), "--plugin", "alpha").returncode == 0
    report = env.bundle(pyz, "debug", "report")
    assert report.returncode == 0, report.stderr
    assert "No module named" not in report.stdout
    assert "No broken plugins" in report.stdout
    # the bundle, by the interpreter that runs it (its sh header might find another)
    python = str(env.fresh / "bin" / "python")
    script = env.bundle(pyz, "completion", "bash")
    assert f"< <({python} -S {pyz} __complete " in script.stdout, script.stdout
    direct = env.direct(pyz, "completion", "bash")
    assert direct.returncode == 0, direct.stderr
    assert f" -S {pyz} __complete " in direct.stdout, direct.stdout


def _imports(stderr: str) -> set[str]:
    """The modules ``-X importtime`` (PYTHONPROFILEIMPORTTIME) reports as imported."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    } - {"imported package"}


def _marker_pyc(target: Path, source: Path, text: str) -> None:
    """Write at ``target`` the bytecode of a program that prints ``text``."""
    import py_compile

    source.write_text(f"print({text!r})\n", encoding="utf-8")
    py_compile.compile(str(source), str(target), doraise=True)


def test_direct_execution_extracts_then_skips_runpy(env: Env) -> None:
    """``./TOOL.pyz`` (the bundle's sh header) in a directory with a space, extracted
    into another: the first run goes through the zip (runpy) and extracts; later runs
    start the extracted copy with ``python -S -c``, without runpy; the output is the
    same as ``python TOOL.pyz``'s, which still runs the zip."""
    folder = env.root / "with space"
    folder.mkdir(exist_ok=True)
    pyz = folder / "my tool.pyz"
    built = env.conduit("bundle", "-o", str(pyz), "--name", "my-tool", "--plugin", "alpha")
    assert built.returncode == 0, built.stderr
    assert os.access(pyz, os.X_OK)
    extracted = env.root / "extracted here"
    where = {"CONDUIT_BUNDLE_ROOT": str(extracted), "PYTHONPROFILEIMPORTTIME": "1"}
    first = env.direct(pyz, "--help", **where)
    assert first.returncode == 0, first.stderr
    assert "runpy" in _imports(first.stderr)  # the zip's bootstrap extracted
    (root,) = extracted.iterdir()
    again = env.direct(pyz, "--help", **where)
    assert again.returncode == 0, again.stderr
    assert "runpy" not in _imports(again.stderr) and "site" not in _imports(again.stderr)
    assert "conduit.cli" in _imports(again.stderr)
    assert again.stdout == first.stdout and "alpha-run" in again.stdout
    assert again.stdout.startswith("Usage: conduit ")  # as with python TOOL.pyz
    assert (root / "in-use").exists() and list(extracted.iterdir()) == [root]
    # the run path is compiled once, at extraction: the header's stub runs direct.pyc
    assert (root / "direct.pyc").is_file() and (root / "direct.py").is_file()
    direct_pyc = (root / "direct.pyc").read_bytes()
    _marker_pyc(root / "direct.pyc", env.root / "marker.py", "ran direct.pyc")
    assert env.direct(pyz, "--help", **where).stdout == "ran direct.pyc\n"
    (root / "direct.pyc").unlink()  # a directory extracted without it: python -S -c CODE
    without = env.direct(pyz, "--help", **where)
    assert without.stdout == first.stdout and "runpy" not in _imports(without.stderr)
    (root / "direct.pyc").write_bytes(direct_pyc)
    zipped = env.bundle(pyz, "--help", **where)  # python TOOL.pyz: unchanged
    assert "runpy" in _imports(zipped.stderr) and zipped.stdout == again.stdout
    assert env.direct(pyz, "alpha-run", sh="dash", **where).stdout == "alpha 1.0\n"
    # bad input: the same one line either way
    wrong = env.direct(pyz, "nosuch", CONDUIT_BUNDLE_ROOT=str(extracted))
    assert (
        wrong.returncode == 2
        and wrong.stderr == env.bundle(pyz, "nosuch", CONDUIT_BUNDLE_ROOT=str(extracted)).stderr
    )
    assert "Traceback" not in wrong.stderr


def test_direct_execution_finds_python3_or_says_it_cannot(env: Env) -> None:
    """The interpreter that built the bundle gone: ``python3`` from PATH runs it; no
    ``python3`` either: one line, exit 127."""
    pyz = env.root / "tool.pyz"
    if not pyz.exists():
        assert env.conduit("bundle", "-o", str(pyz), "--plugin", "alpha").returncode == 0
    data = pyz.read_bytes()
    line = data.split(b"\n", 4)[3]
    assert line.startswith(b"p=")
    moved = env.root / "moved.pyz"
    gone = b"p=/nonexistent/python3".ljust(len(line), b"3")  # the zip's offsets kept
    moved.write_bytes(data.replace(line, gone, 1))
    moved.chmod(0o755)
    bin_dir = env.root / "bin-with-python3"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(env.fresh / "bin" / "python")
    path = f"{bin_dir}:/usr/bin:/bin"
    ran = env.direct(moved, "alpha-run", PATH=path)
    assert ran.stdout == "alpha 1.0\n", ran.stderr
    none = env.direct(moved, "alpha-run", PATH="/nonexistent", sh="/bin/sh")
    assert none.returncode == 127 and len(none.stderr.splitlines()) == 1
    assert "needs python3." in none.stderr and "Traceback" not in none.stderr

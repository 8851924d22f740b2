"""`conduit bundle` against hostile or broken input: a crafted bundle to ``--check``, an
output path that cannot be written or has a planted symlink beside it, and a planted
extraction directory. One bundle for the module, built from this environment's Conduit
(no wheels, no venvs: fast)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

MANIFEST = {
    "format": 2,
    "name": "x\x1b]0;pwned\x07",
    "id": "1",
    "sealed": False,
    "conduit": "1",
    "target": {"tag": "a", "platform": "b", "machine": "c"},
    "plugins": [
        {
            "name": "p\x1b[31mRED",
            "version": "1",
            "source": "file",
            "dist": None,
            "isolation": "in-process",
            "capabilities": ["c\x1b[2J"],
        }
    ],
    "distributions": [
        {"name": "d", "version": "1", "role": "plugin", "compiled": False, "sha256": "x"}
    ],
    "files": {"d.py": "d"},
}


def _crafted(path: Path, manifest: object, damaged: bool = False) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("site-packages/d.py", b"x" * 4000 if damaged else b"print(1)\n")
    payload = bytearray(inner.getvalue())
    if damaged:  # bytes of the compressed member flipped (its CRC, or zlib, then fails)
        for i in range(50, 60):
            payload[i] ^= 0xFF
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("conduit-bundle.json", json.dumps(manifest))
        z.writestr("payload.zip", bytes(payload))
    return path


def test_check_prints_no_control_sequence_of_a_crafted_manifest(run, tmp_path):
    r = run("bundle", "--check", str(_crafted(tmp_path / "esc.pyz", MANIFEST)))
    assert r.code == 1  # its files do not match: d's hash is "x"
    assert "\x1b" not in r.out + r.err and "\x07" not in r.out + r.err
    assert "p\\x1b[31mRED 1 (file, in-process) grants requested: c\\x1b[2J" in r.out


@pytest.mark.parametrize(
    "manifest",
    [[1], {"format": 2}, {**MANIFEST, "plugins": [{"name": 3}]}, {**MANIFEST, "target": "t"}],
)
def test_check_of_a_malformed_manifest_is_one_line(run, tmp_path, manifest):
    r = run("bundle", "--check", str(_crafted(tmp_path / "bad.pyz", manifest)))
    assert r.code != 0
    assert r.err.startswith("error: ") and "is not a Conduit bundle" in r.err, r.err
    assert "failed:" not in r.err and "Traceback" not in r.err


def test_check_of_a_damaged_payload_member_says_it_does_not_match(run, tmp_path):
    path = _crafted(tmp_path / "damaged.pyz", MANIFEST, damaged=True)
    r = run("bundle", "--check", str(path))
    assert r.code == 1
    assert "DO NOT MATCH the manifest for d" in r.out
    assert r.err.startswith("error: ") and "failed:" not in r.err, r.err


def test_bundle_into_a_missing_directory_is_one_line(run, tmp_path):
    r = run("bundle", "-o", str(tmp_path / "nowhere" / "tool.pyz"))
    assert r.code == 2
    assert r.err.splitlines()[0] == f"error: -o {tmp_path / 'nowhere' / 'tool.pyz'}: no " + (
        f"directory {tmp_path / 'nowhere'}"
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tool.pyz, built with a symlink planted where the old builder wrote its temp file."""
    out = tmp_path_factory.mktemp("bundle")
    (out / "victim").write_text("precious\n")
    (out / "tool.pyz.tmp").symlink_to(out / "victim")
    env = {**os.environ, "CONDUIT_HOME": str(out / "home"), "CONDUIT_WARM": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "conduit", "bundle", "-o", str(out / "tool.pyz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out / "tool.pyz"


def test_a_planted_symlink_beside_the_output_is_left_alone(bundle):
    assert (bundle.parent / "victim").read_text() == "precious\n"
    assert not bundle.is_symlink() and zipfile.is_zipfile(bundle)


def _run(bundle: Path, root: Path, direct: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONDUIT_BUNDLE_ROOT": str(root), "CONDUIT_WARM": "0"}
    argv = [str(bundle)] if direct else [sys.executable, str(bundle)]
    return subprocess.run(
        [*argv, "--version"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("direct", [False, True], ids=["python-TOOL.pyz", "./TOOL.pyz"])
@pytest.mark.parametrize("plant", ["symlink", "writable", "parent"])
def test_a_planted_extraction_directory_is_refused(bundle, tmp_path, plant, direct):
    root = tmp_path / "shared"
    assert _run(bundle, root, direct).returncode == 0  # extracted, as its user would
    (extracted,) = root.iterdir()
    # what a planter would put there: a direct.pyc that the sh header must not run
    import py_compile

    (tmp_path / "planted.py").write_text("print('PLANTED-PYC')\n", encoding="utf-8")
    py_compile.compile(str(tmp_path / "planted.py"), str(extracted / "direct.pyc"), doraise=True)
    if plant == "symlink":  # someone else's copy, linked where the bundle looks
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        shutil.move(extracted, elsewhere / extracted.name)
        extracted.symlink_to(elsewhere / extracted.name)
    elif plant == "writable":
        extracted.chmod(0o777)
    else:  # anyone may rename it away and put theirs in its place
        root.chmod(0o777)
    done = _run(bundle, root, direct)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "PLANTED-PYC" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"tool: error: will not run the extracted bundle {extracted}: ")

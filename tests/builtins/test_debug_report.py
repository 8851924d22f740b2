"""``conduit debug report``: one redacted report; planted secrets never appear in it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from _factory import simple_plugin, write

TOKEN = "tok-Planted-7f3a9c"  # a config value under a key that looks like a secret
PASSWORD = "pw-Planted-51e0"  # under "password", nested
KEYVAL = "key-Planted-c0ffee"  # under a key ending in "key"
URL_USER, URL_PASS = "alice-Planted", "urlpass-Planted-99d1"  # credentials in a URL
INDEX_PASS = "indexpass-Planted-2b2b"  # in [store] index-url
ENV_VALUE = "envval-Planted-4444"  # the value of a granted environment variable
PREFIX_VALUE = "prefixval-Planted-8888"  # the value of a PREFIX_* granted variable
ERROR_PASS = "errpass-Planted-6d6d"  # quoted by a plugin's error, in a URL
SECRETS = [TOKEN, PASSWORD, KEYVAL, URL_USER, URL_PASS, INDEX_PASS, ENV_VALUE, PREFIX_VALUE]


@pytest.fixture
def planted(conduit_home: Path, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (conduit_home / "config.toml").write_text(
        f"""
[plugin.greeter]
api-token = "{TOKEN}"
greeting = "hello"
mirror = "https://{URL_USER}:{URL_PASS}@example.org/simple"
[plugin.greeter.database]
password = "{PASSWORD}"
[plugin.greeter.signing]
private-key = "{KEYVAL}"

[store]
index-url = "https://bob:{INDEX_PASS}@pypi.example/simple"

[grants]
greeter = ["env:read:GREETER_SERVICE", "env:read:GREETER_EXTRA_*"]
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("GREETER_SERVICE", ENV_VALUE)
    monkeypatch.setenv("GREETER_EXTRA_ONE", PREFIX_VALUE)
    write(plugin_dir, "greeter.py", simple_plugin("greeter", ("greet",)))
    # A plugin whose failure (shown by doctor) quotes a secret value and a URL password.
    write(
        plugin_dir,
        "leaky.py",
        simple_plugin(
            "leaky",
            ("leak",),
            extra_toml='activation = ["startup"]',
            boot_prefix=(
                f"        raise RuntimeError('cannot reach https://carol:{ERROR_PASS}@db"
                f" with {TOKEN} and {ENV_VALUE}')\n"
            ),
        ),
    )


def check_report(text: str) -> None:
    for secret in [*SECRETS, ERROR_PASS]:
        assert secret not in text, secret
    assert "<redacted>" in text
    # The report keeps what is not secret.
    assert '"api-token": "<redacted>"' in text
    assert '"greeting": "hello"' in text
    assert '"mirror": "https://<redacted>@example.org/simple"' in text
    assert '"index-url": "https://<redacted>@pypi.example/simple"' in text
    assert "GREETER_SERVICE: set" in text
    assert "GREETER_EXTRA_*: 1 set" in text
    assert "cannot reach https://<redacted>@db" in text  # doctor's line, scrubbed


def test_report_to_stdout_redacts_every_planted_secret(run, planted: None) -> None:
    # a failed run: the run journal keeps its one-line error (which quotes the secrets)
    assert run("leak").code != 0
    result = run("debug", "report")
    assert result.code == 0, result.err
    text = result.out
    check_report(text)
    for section in ("versions", "sandbox", "plugins", "index", "config", "plugins doctor"):
        assert f"\n== {section}" in text
    assert "landlock ABI: " in text and "seccomp: " in text
    assert "greeter -  file  in-process  api >=1.0,<2  enabled" in text
    assert "plugins 0.1.0  builtin (distribution conduit)" in text
    assert "== recent failures\nleaky:\n" in text  # its failure, redacted like the rest


def test_report_to_a_file_through_a_fresh_process(planted: None, tmp_path: Path) -> None:
    out = tmp_path / "report.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "conduit", "debug", "report", "-o", str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert f"Wrote the debug report to {out}" in proc.stderr
    text = out.read_text(encoding="utf-8")
    check_report(text)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_report_works_in_safe_mode_and_with_a_broken_config(run, conduit_home: Path) -> None:
    (conduit_home / "config.toml").write_text(f'token = "{TOKEN}"\n[oops\n', encoding="utf-8")
    result = run("--no-plugins", "debug", "report")
    # A config that does not parse stops every command (exit 4), the report included:
    # the error names the file, and its text is never printed.
    assert TOKEN not in result.out + result.err
    (conduit_home / "config.toml").write_text("[plugins]\ndisabled = []\n", encoding="utf-8")
    result = run("--no-plugins", "debug", "report")
    assert result.code == 0, result.err
    assert '"disabled": []' in result.out


def test_a_variable_named_like_a_secret_is_scrubbed_granted_or_not(
    run, conduit_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First-party plugins hold GITHUB_TOKEN without a [grants] entry: its value is still
    a secret wherever it shows up (here, quoted under a key that does not look secret)."""
    value = "ghp-Planted-0a1b2c3d"
    monkeypatch.setenv("GITHUB_TOKEN", value)
    (conduit_home / "config.toml").write_text(
        f'[plugin.greeter]\nnote = "pasted {value} here"\n', encoding="utf-8"
    )
    result = run("--no-plugins", "debug", "report")
    assert result.code == 0, result.err
    assert value not in result.out
    assert '"note": "pasted <redacted> here"' in result.out

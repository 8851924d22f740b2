"""The debug report's sections, and the redaction every line goes through.

Redaction, in two passes:

1. the config is parsed and walked: the value of any key that looks like a secret
   (token, secret, password, key, credential, auth, cookie, session) is replaced, and
   the user and password of any URL (``https://user:pass@host``) are;
2. everything removed in pass 1, and the values of the environment variables the
   config's grants name (``env:read:VAR``, ``env:read:PREFIX_*``; with an unscoped
   ``env:read``, every variable whose name looks like a secret), are replaced wherever
   they appear in the finished text, and URL credentials are removed from it again:
   a doctor line or a plugin's error that quotes a secret is caught too.

The environment's values are never printed: only whether a granted variable is set.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from conduit.text import inert

if TYPE_CHECKING:
    from conduit.kernel.admin import Admin
    from conduit.paths import Paths

__all__ = ["REDACTED", "build", "redact", "write"]

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"token|secret|passw|pwd|key|credential|auth|cookie|session", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
_DOCTOR_TIMEOUT = 120.0


def redact(value: Any, found: set[str], key: str = "") -> Any:
    """``value`` with secrets replaced; what was removed is added to ``found``."""
    if isinstance(value, dict):
        return {k: redact(v, found, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, found, key) for v in value]
    if key and _SECRET_KEY.search(key):
        found.add(str(value))
        return REDACTED
    if isinstance(value, str):
        return _strip_urls(value, found)
    return value


def _strip_urls(text: str, found: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        userinfo = match["userinfo"]
        found.add(userinfo)
        found.update(part for part in userinfo.split(":") if part)
        return f"{match['scheme']}{REDACTED}@"

    return _URL_USERINFO.sub(replace, text)


def _env_secrets(grants: dict[str, list[str]]) -> tuple[set[str], list[str]]:
    """Values of the environment variables the grants name, and one line per name."""
    values: set[str] = set()
    lines: list[str] = []
    names: set[str] = set()
    everything = False
    for caps in grants.values():
        for cap in caps if isinstance(caps, list) else []:
            kind, _, scope = str(cap).partition(":read")
            if kind != "env":
                continue
            scope = scope.removeprefix(":")
            if not scope:
                everything = True
            elif scope.endswith("*"):
                names.update(n for n in os.environ if n.startswith(scope[:-1]))
                lines.append(f"{scope}: {sum(n.startswith(scope[:-1]) for n in os.environ)} set")
            else:
                names.add(scope)
                lines.append(f"{scope}: {'set' if scope in os.environ else 'not set'}")
    if everything:
        names.update(n for n in os.environ if _SECRET_KEY.search(n))
        lines.append("(env:read granted unscoped: every variable)")
    values.update(os.environ[n] for n in names if os.environ.get(n))
    return values, sorted(set(lines))


def _scrub(text: str, secrets: set[str]) -> str:
    """The finished text with every known secret and URL credential removed."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return _strip_urls(text, set())


def _config(path: str, found: set[str]) -> tuple[list[str], dict[str, Any]]:
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return [f"{path}: no config file (the defaults)"], {}
    except OSError as exc:
        return [f"{path}: cannot be read: {exc.strerror}"], {}
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # Its text is not shown: a secret in a broken file cannot be told apart.
        return [f"{path}: cannot be parsed ({exc}); its text is left out"], {}
    clean = redact(data, found)
    return [f"{path}:", *json.dumps(clean, indent=2, sort_keys=True).splitlines()], data


def _sandbox() -> list[str]:
    from conduit.security.report import mechanisms, sandbox_report

    have = mechanisms()
    lines = [
        f"landlock ABI: {have['landlock'] or 'not available'}",
        f"seccomp: {'available' if have['seccomp'] else 'not available'}",
        "user and network namespaces: " + ("available" if have["netns"] else "not available"),
    ]
    lines += [("" if ok else "warning: ") + text for ok, text in sandbox_report()]
    return lines


def _plugins(admin: Admin) -> list[str]:
    index = admin.index
    rows = []
    for name, rec in sorted(index["plugins"].items()):
        if not rec["enabled"]:
            state = "disabled"
        elif name in admin.disabled:
            state = "disabled for this run"
        elif rec["blocked"]:
            state = f"blocked: {rec['blocked']}"
        else:
            state = "enabled"
        dist = f" (distribution {rec['dist']})" if rec["dist"] else ""
        rows.append(
            f"{name} {rec['version'] or '-'}  {rec['source']}{dist}  {rec['isolation']}  "
            f"api {rec['api']}  {state}"
        )
        rows.append(f"    origin: {rec['origin']}")
    for broken in index["broken"]:
        rows.append(f"{broken['name']}  broken ({broken['source']}): {broken['error']}")
    return rows


def _index(admin: Admin) -> list[str]:
    index = admin.index
    services = len(index["services"])
    return [
        f"format {index['format']}, built by conduit {index['conduit']}",
        f"{len(index['plugins'])} plugins: {len(index['usable'])} usable, "
        f"{len(index['blocked'])} blocked, {len(index['broken'])} broken "
        f"({len(index['builtins'])} built in)",
        f"{len(index['routes'])} command words, {services} services, "
        f"{len(index['ambiguous'])} ambiguous",
        *(f"warning: {w}" for w in index["warnings"]),
    ]


def _doctor() -> list[str]:
    """``conduit plugins doctor`` in a child process, as the user would run it."""
    from conduit.paths import conduit_argv

    argv = conduit_argv("plugins", "doctor")  # (from a bundle, the bundle's Conduit)
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=_DOCTOR_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return [f"(no answer within {_DOCTOR_TIMEOUT:.0f} s)"]
    except OSError as exc:
        return [f"(could not run: {exc.strerror})"]
    lines = (proc.stdout + proc.stderr).splitlines()
    return [*lines, f"(exit status {proc.returncode})"]


def _failures(paths: Paths) -> list[str]:
    """The plugins failing in the run journal, each with its failures since its last
    successful activation (the newest five)."""
    from conduit.runlog import failing, read

    lines = []
    for name, failures in sorted(failing(read(paths)).items()):
        lines.append(f"{name}:")
        for t, error in failures[-5:]:
            lines.append(f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))}  {error}")
    return lines or ["none in the run journal"]


def build(admin: Admin) -> str:
    """The whole report, redacted."""
    from conduit import __version__
    from conduit.paths import resolve
    from conduit.sdk import API_VERSION

    paths = resolve()
    found: set[str] = set()
    config_lines, config = _config(paths.config_file, found)
    grants = config.get("grants", {}) if isinstance(config.get("grants"), dict) else {}
    env_values, env_lines = _env_secrets(grants)
    found |= env_values
    # a variable named like a secret is one, granted or not (first-party plugins hold
    # their declared grants, GITHUB_TOKEN among them, without a [grants] entry)
    found |= {v for k, v in os.environ.items() if _SECRET_KEY.search(k) and len(v) >= 4}
    sections: list[tuple[str, list[str]]] = [
        (
            "versions",
            [
                f"conduit {__version__}, plugin API {API_VERSION}",
                f"python {platform.python_version()} ({platform.python_implementation()}) "
                f"at {sys.executable}",
                f"platform: {platform.platform()} {platform.machine()}",
            ],
        ),
        ("sandbox", _sandbox()),
        ("plugins", _plugins(admin)),
        ("index", _index(admin)),
        (
            "paths",
            [
                f"config: {paths.config_file}",
                f"plugins: {paths.plugin_dir}",
                f"cache: {paths.cache_dir}",
                f"state: {paths.state_dir}",
            ],
        ),
        ("config (secrets redacted)", config_lines),
        ("granted environment variables (values never shown)", env_lines or ["none"]),
        ("plugins doctor", _doctor()),
        ("recent failures", _failures(paths)),
    ]
    out = [
        "Conduit debug report: secrets are redacted, but read it before you share it.",
        f"written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
    ]
    for title, lines in sections:
        out += ["", f"== {title}", *lines]
    # scrubbed before escaping: a secret holding a character inert() escapes still matches
    return "\n".join(inert(_scrub(line, found)) for line in out) + "\n"


def write(path: str, text: str) -> None:
    """Write the report readable by its owner only (it still describes the machine)."""
    from conduit.fs import atomic_write

    atomic_write(path, text.encode("utf-8"), mode=0o600)

"""Text from plugins never drives the terminal (issue 14, item 3).

A capability such as ``process:execute:git ESC[1A ESC[2K ESC[1B`` used to erase the line
above it in the grant prompt: the user saw one capability, answered ``y`` and granted
two. Now control, bidi and invisible format characters are refused in every identifier
(manifests, probe answers, distribution metadata, the config's grants), and every text
Conduit prints for a plugin shows them escaped (``\\x1b``). The prompt is checked on a
real pseudo-terminal, rendered by a terminal emulator (pyte).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from conduit.errors import EXIT_CONFIG, EXIT_USAGE, ManifestError
from conduit.manifest import parse_manifest
from conduit.security.capabilities import CapabilityError, parse
from conduit.text import inert, unsafe_char

from _factory import manifest_block, pty_run, simple_plugin, write

pyte = pytest.importorskip("pyte")

CONDUIT = [sys.executable, "-m", "conduit"]
ESC = "\x1b"
#: the red team's capability: erases the line above it (the unscoped filesystem:read)
ERASE_ABOVE = "process:execute:git\x1b[1A\x1b[2K\x1b[1B"
#: a right-to-left override: a bidi terminal shows "git", the grant is for "tig"
BIDI = "process:execute:\u202etig"
ATTACKS = {"escape": ERASE_ABOVE, "bidi": BIDI}
#: an escape sequence in plugin text: clear the screen, then a line that looks like Conduit's
CLEAR = "\x1b[2J\x1b[Hall good"
CLEAR_SHOWN = "\\x1b[2J\\x1b[Hall good"


@pytest.fixture(autouse=True)
def no_prompt_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")


@pytest.fixture
def tty_env(conduit_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["CONDUIT_HOME"] = str(conduit_home)
    env["NO_COLOR"] = "1"  # plain text on the terminal (colour: tests/cli/test_surface.py)
    return env


def screen(text: str, columns: int = 400) -> list[str]:
    """What a VT100-like terminal shows after receiving ``text``: one string per line.

    ``pty_run`` returns the terminal's bytes with ``\\r\\n`` turned into ``\\n``; new-line
    mode (LNM) gives ``\\n`` back the carriage return the terminal driver added.
    """
    term = pyte.Screen(columns, 60)
    term.set_mode(pyte.modes.LNM)
    pyte.Stream(term).feed(text)
    return [line.rstrip() for line in term.display if line.strip()]


def toml_str(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def plugin_with_caps(name: str, caps: list[str]) -> str:
    listed = ", ".join(toml_str(c) for c in caps)
    return simple_plugin(name, ("hello",), extra_toml=f"capabilities = [{listed}]")


# -- the grant prompt on a terminal -----------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_plugin_cannot_make_the_prompt_hide_what_it_asks(
    attack, plugin_dir, conduit_home, tty_env
):
    caps = ["filesystem:read", attack]
    write(plugin_dir, "spy.py", plugin_with_caps("spy", caps))
    code, _, text = pty_run([*CONDUIT, "hello"], "y", tty_env)
    shown = "\n".join(screen(text))
    if "Grant?" in shown:  # a prompt, if any, shows every capability it asks for
        assert all(inert(c) in shown for c in caps), shown
    # Answering "y" granted nothing: the plugin is refused before anything is asked,
    # and the one line that says why shows the capability escaped.
    config = conduit_home / "config.toml"
    assert not config.exists() or "grants" not in config.read_text()
    assert code == EXIT_USAGE
    assert f"capabilities[1]: '{inert(attack)}' contains the control character" in shown
    assert ESC not in text and "\u202e" not in text


PROMPT_SCRIPT = """
import sys
from conduit.indexer.build import load
from conduit.paths import resolve
from conduit.security.capabilities import Capability
from conduit.security.grants import terminal_approver
from conduit.timing import Profile

paths = resolve()
rec = load(paths, Profile(False))["plugins"]["spy"]
# Built directly, as an index written before capabilities were checked would hold them.
caps = [Capability("filesystem:read"), Capability("process:execute", sys.argv[1][16:])]
print("granted" if terminal_approver(paths.config_file)(rec, caps) else "refused")
"""


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_the_prompt_shows_every_capability_it_asks_for(attack, plugin_dir, tty_env):
    # The prompt's second line of defence: whatever reaches it is shown escaped.
    write(plugin_dir, "spy.py", simple_plugin("spy"))
    argv = [sys.executable, "-c", PROMPT_SCRIPT, attack]
    code, _, text = pty_run(argv, "n", tty_env)
    assert code == 0, text
    lines = screen(text)
    assert lines[0] == "┌ conduit: plugin 'spy' requests:"
    assert lines[1].split() == ["├", "filesystem:read", "read", "ANY", "file", "(unscoped!)"]
    scope = inert(attack[16:])
    assert lines[2].split() == ["├", inert(attack), "run", "the", "program", scope]
    assert lines[-2:] == ["└ Grant? [y/N] n", "refused"]
    assert ESC not in text and "\u202e" not in text


LONG_LIST_SCRIPT = """
import sys
from conduit.indexer.build import load
from conduit.paths import resolve
from conduit.security.capabilities import Capability
from conduit.security.grants import terminal_approver
from conduit.timing import Profile

paths = resolve()
rec = load(paths, Profile(False))["plugins"]["spy"]
caps = [Capability("filesystem:read")]
caps += [Capability("env:read", f"VAR_{i}") for i in range(40)]
print("granted" if terminal_approver(paths.config_file)(rec, caps) else "refused")
"""


def test_a_long_list_cannot_scroll_an_unscoped_request_out_of_sight(plugin_dir, tty_env):
    # An unscoped capability first, then 40 harmless ones: on a 24-line terminal the
    # first line has scrolled away by the time the question is asked. The line right
    # above the question names it.
    write(plugin_dir, "spy.py", simple_plugin("spy"))
    code, _, text = pty_run([sys.executable, "-c", LONG_LIST_SCRIPT], "n", tty_env)
    assert code == 0, text
    term = pyte.Screen(80, 24)
    term.set_mode(pyte.modes.LNM)
    pyte.Stream(term).feed(text)
    visible = [line.rstrip() for line in term.display]
    assert "┌ conduit: plugin 'spy' requests:" not in visible  # scrolled away
    question = next(i for i, line in enumerate(visible) if line.startswith("└ Grant?"))
    summary = visible[question - 1]
    assert summary.startswith("├ ! In all 41 capabilities; unscoped (all of that kind):")
    assert "filesystem:read" in " ".join(visible[question - 2 : question])


# -- refused in identifiers -------------------------------------------------------------------

BASE = {"name": "spy", "api": ">=1.0,<2"}


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        ({"name": "spy\x1b[2K"}, "name", "spy\x1b[2K"),
        ({"version": "1.0\x1b[1A"}, "version", "1.0\x1b[1A"),
        ({"version": "1.0\x1f"}, "version", "1.0\x1f"),  # PEP 440 takes \x1f as whitespace
        ({"api": ">=1.0\x1b[2K"}, "api", ">=1.0\x1b[2K"),
        ({"entry": "spy:Plugin\x1b[2K"}, "entry", "spy:Plugin\x1b[2K"),
        ({"commands": [{"name": "run\x1b[2K"}]}, "commands[0].name", "run\x1b[2K"),
        ({"activation": ["env:X\x1b[2K"]}, "activation[0]", "env:X\x1b[2K"),
        ({"capabilities": [ERASE_ABOVE]}, "capabilities[0]", ERASE_ABOVE),
        ({"capabilities": [BIDI]}, "capabilities[0]", BIDI),
        ({"capabilities": ["filesystem:read:/tmp/\u2066x"]}, "capabilities[0]", None),
        ({"provides": {"services": ["svc\x9b2K"]}}, "provides.services[0]", "svc\x9b2K"),
        ({"provides": {"hooks": ["hook\x7f"]}}, "provides.hooks[0]", "hook\x7f"),
        ({"requires": {"plugins": ["other\x1b"]}}, "requires.plugins[0]", "other\x1b"),
        ({"requires": {"services": ["svc\u200f"]}}, "requires.services[0]", "svc\u200f"),
        ({"dependencies": ["rich\x1b[2K"]}, "dependencies[0]", "rich\x1b[2K"),
    ],
)
def test_manifest_refuses_control_characters_in_identifiers(data, field, value):
    with pytest.raises(ManifestError) as info:
        parse_manifest({**BASE, **data}, "spy.toml")
    err = info.value
    value = value if value is not None else data["capabilities"][0]
    bad = unsafe_char(value)
    assert (
        err.message == f"spy.toml: {field}: '{inert(value)}' contains the control character {bad}"
    )
    assert err.hint is not None and "control, bidi or invisible format characters" in err.hint
    assert not any(unsafe_char(t) for t in (err.message, err.hint))


def test_free_text_and_ordinary_non_ascii_are_accepted():
    data = {
        **BASE,
        "description": f"café 日本 👩‍💻 {CLEAR}",  # shown escaped wherever it is printed
        "commands": [{"name": "run", "help": f"Help {CLEAR}", "usage": f"[X{ESC}]"}],
        "capabilities": ["filesystem:read:/srv/café/日本/👩‍💻", "process:execute:gît"],
    }
    m = parse_manifest(data, "spy.toml")
    assert m.capabilities == data["capabilities"]


@pytest.mark.parametrize(
    "text",
    [
        ERASE_ABOVE,
        BIDI,
        "env:read:HOME\x00",
        "filesystem:read:/a\u202a",
        "network:http\x85",
        # invisible, so that two scopes look alike
        "filesystem:read:/home/me\u00ad/.ssh",
        "filesystem:read:/srv\u180e",
        "process:execute:gi\u034ft",
        "env:read:HOME\u3164",
        # tag characters: invisible ASCII ("ASCII smuggling"), and the language tag
        "filesystem:read:/srv" + "".join(chr(0xE0000 + ord(c)) for c in "/etc"),
        "env:read:HOME\U000e0001",
        "process:execute:git\U0001d173",
    ],
)
def test_capability_grammar_refuses_control_characters(text):
    with pytest.raises(CapabilityError) as info:
        parse(text)
    assert info.value.message == (
        f"'{inert(text)}' contains the control character {unsafe_char(text)}"
    )


def test_a_single_file_plugin_with_a_control_character_is_skipped_in_one_line(run, plugin_dir):
    write(plugin_dir, "spy.py", plugin_with_caps("spy", ["filesystem:read", ERASE_ABOVE]))
    r = run("--help")
    assert r.code == 0
    lines = [x for x in r.err.splitlines() if "spy" in x]
    assert lines == [
        f"conduit: warning: skipped plugin 'spy': {plugin_dir / 'spy.py'}: capabilities[1]: "
        f"'{inert(ERASE_ABOVE)}' contains the control character \\x1b "
        "(see 'conduit plugins doctor')"
    ]
    assert ESC not in r.err and "spy" not in r.out


def test_a_wasm_manifest_with_a_control_character_is_refused(run, plugin_dir):
    (plugin_dir / "spy.wasm").write_bytes(b"\0asm\1\0\0\0")
    (plugin_dir / "spy.toml").write_text(
        f'api = ">=1.0"\nversion = {toml_str("1.0" + CLEAR)}\n[[commands]]\nname = "spy"\n'
    )
    r = run("--help")
    assert (
        f"{plugin_dir / 'spy.toml'}: version: '1.0{CLEAR_SHOWN}' contains the control "
        "character \\x1b" in r.err
    )
    assert ESC not in r.err


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_an_executables_probe_answer_with_a_control_character_is_refused(run, plugin_dir):
    manifest = {
        "name": "spy",
        "api": ">=1.0,<2",
        "protocol": "jsonrpc",
        "commands": [{"name": "spy"}],
        "capabilities": ["filesystem:read", ERASE_ABOVE],
    }
    script(plugin_dir, "conduit-spy", f"cat <<'EOF'\n{json.dumps(manifest)}\nEOF\n")
    r = run("--help")
    assert (
        f"conduit-spy --conduit-manifest: capabilities[1]: '{inert(ERASE_ABOVE)}' contains "
        "the control character \\x1b" in r.err
    )
    assert ESC not in r.err


def test_an_executable_whose_file_name_has_a_control_character_is_refused(run, plugin_dir):
    # A pass-through executable: its file name would be the plugin's command word.
    name = f"conduit-spy{ESC}[2K"
    script(plugin_dir, name, "echo hi\n")
    r = run("--help")
    assert "spy" not in r.out
    assert f"file name: '{inert(name)}' contains the control character \\x1b" in r.err
    assert ESC not in r.err
    listed = run("plugins", "list").out
    assert "spy\\x1b[2K" in listed and ESC not in listed


def test_distribution_metadata_with_a_control_character_is_refused(run, tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "spy_dist-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: spy-dist\nVersion: 1.0{CLEAR}\n")
    (info / "entry_points.txt").write_text("[conduit.plugins]\nspy = spy_pkg:Plugin\n")
    monkeypatch.setattr(sys, "path", [sys.path[0], str(site), *sys.path[1:]])
    r = run("--help")
    assert f"distribution version: '1.0{CLEAR_SHOWN}' contains the control character \\x1b" in r.err
    assert ESC not in r.err


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            f"[grants]\nspy = [{toml_str(ERASE_ABOVE)}]\n",
            f"2: grants.spy[0]: '{inert(ERASE_ABOVE)}' contains the control character \\x1b",
        ),
        (
            f'[grants]\n{toml_str("spy" + BIDI[-4:])} = ["env:read:HOME"]\n',
            "1: grants: 'spy\\u202etig' contains the control character \\u202e",
        ),
    ],
)
def test_config_grants_refuse_control_characters(run, conduit_home, config, problem):
    (conduit_home / "config.toml").write_text(config)
    r = run("plugins", "list")
    assert r.code == EXIT_CONFIG
    assert r.err.splitlines()[0] == f"error: {conduit_home / 'config.toml'}:{problem}"
    assert ESC not in r.err and "\u202e" not in r.err
    r = run("--help")  # still works: one warning line, escaped too
    assert r.code == 0
    assert ESC not in r.err and "\u202e" not in r.err


def test_the_grant_command_refuses_control_characters(run, plugin_dir):
    write(plugin_dir, "spy.py", simple_plugin("spy"))
    r = run("plugins", "grant", "spy", ERASE_ABOVE)
    assert r.code == EXIT_USAGE
    assert r.err.splitlines()[0] == (
        f"error: '{inert(ERASE_ABOVE)}' contains the control character \\x1b"
    )


# -- shown escaped wherever Conduit prints a plugin's text ------------------------------------


def hostile_plugin(name: str = "spy", *, isolation: str = "in-process", body: str = "") -> str:
    """A plugin whose description, command help and usage hold an escape sequence."""
    toml = textwrap.dedent(f"""\
        name = "{name}"
        api = ">=1.0,<2"
        isolation = "{isolation}"
        description = {toml_str("Spy " + CLEAR)}

        [[commands]]
        name = "peek"
        help = {toml_str("Peek " + CLEAR)}
        usage = {toml_str("[WHAT" + ESC + "[2K]")}

        [[commands]]
        name = "grp sub"
        help = {toml_str("Sub " + CLEAR)}
    """)
    return (
        manifest_block(toml)
        + "import click\nfrom conduit.errors import ConduitError\nfrom conduit.sdk import Plugin\n"
        + textwrap.dedent(body)
        + textwrap.dedent("""
            @click.command("peek")
            @click.argument("how", default="ok")
            def peek(how):
                if how == "conduit-error":
                    raise ConduitError("bad \\x1b[2J thing", hint="try \\x1b[2J this")
                if how == "crash":
                    raise RuntimeError("boom \\x1b[2J")
                print("peeked \\x1b[2J")  # the plugin's own output: not Conduit's to change

            @click.command("sub")
            def sub():
                pass

            class ThePlugin(Plugin):
                def boot(self, ctx):
                    ctx.register_command(peek)
                    ctx.register_command(sub, "grp sub")
            """)
    )


def test_help_shows_plugin_text_escaped(run, plugin_dir, monkeypatch):
    write(plugin_dir, "spy.py", hostile_plugin())
    # rendered when the index is built, then live (a plugin disabled for this run only)
    for disabled in ("", "other"):
        monkeypatch.setenv("CONDUIT_DISABLE_PLUGINS", disabled)
        out = run("--help").out
        assert f"Commands from spy: Spy {CLEAR_SHOWN}" in out
        assert f"Peek {CLEAR_SHOWN}\n" in out and f"Sub {CLEAR_SHOWN}" not in out
        assert ESC not in out
    out = run("grp", "--help").out
    assert f"sub  Sub {CLEAR_SHOWN}" in out and ESC not in out
    out = run("__complete", "pe").out
    assert out == f"peek\tPeek {CLEAR_SHOWN}\n"
    out = run("__complete", "grp", "").out
    assert out == f"sub\tSub {CLEAR_SHOWN}\n"


def test_plugins_info_shows_plugin_text_escaped(run, plugin_dir):
    write(plugin_dir, "spy.py", hostile_plugin())
    out = run("plugins", "info", "spy", "--no-load").out
    assert f"  description:  Spy {CLEAR_SHOWN}" in out
    assert f"    peek [WHAT\\x1b[2K]  Peek {CLEAR_SHOWN}" in out
    assert ESC not in out
    raw = json.loads(run("plugins", "info", "spy", "--no-load", "--json").out)
    assert raw["description"] == f"Spy {CLEAR}"  # JSON escapes it by itself


def test_a_broken_plugins_name_is_shown_escaped(run, plugin_dir):
    # A file's name is the plugin's name when its manifest cannot be read.
    write(plugin_dir, f"spy{ESC}[2K.py", manifest_block('name = "spy"'))
    r = run("plugins", "list")
    assert "spy\\x1b[2K" in r.out and ESC not in r.out + r.err
    assert "skipped plugin 'spy\\x1b[2K'" in r.err
    out = run("plugins", "doctor").out
    assert "error: plugin 'spy\\x1b[2K' (file)" in out and ESC not in out


def tamper(name: str, **fields: object) -> None:
    """Change plugin ``name``'s record in the written index, as an index written before
    these checks existed would hold it (same fingerprint: it is used as it is)."""
    from conduit.fs import atomic_write
    from conduit.index import encode, index_path, records_path
    from conduit.indexer.build import load
    from conduit.paths import resolve
    from conduit.timing import Profile

    paths = resolve()
    index = load(paths, Profile(False))
    index["plugins"] = dict(index["plugins"].items())
    index["plugins"][name] = {**index["plugins"][name], **fields}  # type: ignore[typeddict-item]
    header, records = encode(index)
    path = index_path(paths)
    atomic_write(records_path(path), records)
    atomic_write(path, header)


def test_a_version_that_reached_the_index_is_shown_escaped(run, plugin_dir, conduit_home):
    write(plugin_dir, "spy.py", plugin_with_caps("spy", ["env:read:HOME"]))
    run("--help")
    tamper("spy", version=f"1.0{CLEAR}")
    shown = f"1.0{CLEAR_SHOWN}"
    out = run("plugins", "list").out
    assert shown in out and ESC not in out
    out = run("plugins", "info", "spy", "--no-load").out
    assert out.startswith(f"spy {shown}\n") and ESC not in out
    out = run("plugins", "permissions", "spy").out
    assert out.startswith(f"spy {shown} (file)\n") and ESC not in out
    out = run("plugins", "graph").out
    assert f"spy {shown}" in out and ESC not in out


def test_error_messages_from_plugins_are_shown_escaped(run, plugin_dir):
    write(plugin_dir, "spy.py", hostile_plugin())
    r = run("peek", "conduit-error")
    assert r.err.splitlines() == ["error: bad \\x1b[2J thing", "hint: try \\x1b[2J this"]
    r = run("peek", "crash")
    assert r.err.splitlines()[0] == (
        "error: plugin 'spy': command 'peek' failed: RuntimeError: boom \\x1b[2J"
    )
    r = run("--debug", "peek", "crash")
    assert "RuntimeError: boom \\x1b[2J" in r.err and ESC not in r.err
    r = run("peek")
    assert r.out == f"peeked {ESC}[2J\n"  # the command's own output is the plugin's


def test_a_process_plugins_error_is_shown_escaped(run, plugin_dir):
    write(plugin_dir, "spy.py", hostile_plugin(isolation="process"))
    r = run("peek", "conduit-error")
    assert r.code == 1
    assert r.err.splitlines()[-2:] == [
        "error: plugin 'spy': bad \\x1b[2J thing",
        "hint: try \\x1b[2J this",
    ]
    r = run("--debug", "peek", "crash")
    assert "boom \\x1b[2J" in r.err and ESC not in r.err


def test_warnings_about_plugins_are_shown_escaped(run, plugin_dir):
    write(plugin_dir, "spy.py", hostile_plugin())
    noisy = simple_plugin(
        "noisy",
        ("noise",),
        extra_toml='activation = ["command:peek"]',
        boot_prefix="        raise RuntimeError('no \\x1b[2J boot')\n",
    )
    write(plugin_dir, "noisy.py", noisy)
    r = run("peek")
    assert r.code == 0
    assert (
        "conduit: warning: plugin 'noisy': not activated for command:peek: failed to boot: "
        "RuntimeError: no \\x1b[2J boot" in r.err
    )
    assert ESC not in r.err


def test_a_wasm_log_line_is_shown_escaped(run_subprocess, plugin_dir):
    # In a fresh interpreter: a wasmtime engine made in pytest's process loses its trap
    # handlers to a later in-process pytest run (test_testing_kit), and the next trap of
    # test_wasm.py then kills the whole test run with SIGILL.
    wasmtime = pytest.importorskip("wasmtime")
    message = f"log {CLEAR}"
    data = "".join(c if c.isprintable() and c not in '"\\' else f"\\{ord(c):02x}" for c in message)
    wat = f"""(module
 (import "conduit" "log" (func $log (param i32 i32 i32)))
 (memory (export "memory") 1)
 (data (i32.const 100) "{data}")
 (func (export "_start") (call $log (i32.const 2) (i32.const 100) (i32.const {len(message)}))))
"""
    (plugin_dir / "spy.wasm").write_bytes(wasmtime.wat2wasm(wat))
    (plugin_dir / "spy.toml").write_text('api = ">=1.0"\n[[commands]]\nname = "spy"\n')
    r = run_subprocess("spy")
    assert r.code == 0, r.err
    assert r.err == f"spy: warning: log {CLEAR_SHOWN}\n"


# -- the escaping itself -------------------------------------------------------------------------


def test_inert_escapes_controls_and_keeps_ordinary_text():
    # accents, CJK, Hangul, an emoji with a zero-width joiner, a tag-sequence flag, Hebrew,
    # a zero-width non-joiner: ordinary text, left as it is
    ordinary = (
        "caf\u00e9 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4 \U0001f469\u200d\U0001f4bb "
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f "
        "\u05e2\u05d1\u05e8\u05d9\u05ea \u200cx"
    )
    assert inert(ordinary) == ordinary
    assert unsafe_char(ordinary) is None
    cases = {
        "\x1b[2J": "\\x1b[2J",
        "a\tb\nc\rd": "a\\tb\\nc\\rd",
        "\x00\x7f\x85\x9b": "\\x00\\x7f\\x85\\x9b",
        "\u202a\u202b\u202c\u202d\u202e": "\\u202a\\u202b\\u202c\\u202d\\u202e",
        "\u2066\u2067\u2068\u2069": "\\u2066\\u2067\\u2068\\u2069",
        "\u200e\u200f\u061c\u200b\u2028\u2029\ufeff": (
            "\\u200e\\u200f\\u061c\\u200b\\u2028\\u2029\\ufeff"
        ),
        "\ud800": "\\ud800",
    }
    for raw, shown in cases.items():
        assert inert(raw) == shown
        assert unsafe_char(raw) == inert(next(c for c in raw if inert(c) != c))
    assert inert("one\ntwo\x1b", keep_newlines=True) == "one\ntwo\\x1b"


def test_the_clis_fast_path_leaves_no_invisible_character_through():
    # Printable to Python but invisible (a Hangul filler): the CLI's own check must send
    # it to conduit.text.inert like a control character.
    from conduit.cli import _inert

    assert _inert("café") == "café"
    assert _inert("ab\u3164c") == "ab\\u3164c"
    assert _inert("ok\U000e0041") == "ok\\U000e0041"  # a tag character (invisible "A")


def test_tag_characters_are_escaped_outside_a_subdivision_flag():
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "rm -rf")
    assert inert(f"safe{hidden}") == "safe" + "".join(
        f"\\U{0xE0000 + ord(c):08x}" for c in "rm -rf"
    )
    wales = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbwls") + "\U000e007f"
    assert inert(f"hi {wales}") == f"hi {wales}"  # a flag stays a flag
    assert inert("\U0001f3f4" + hidden) != "\U0001f3f4" + hidden  # no cancel tag: escaped
    assert unsafe_char(f"name{wales}") is None
    assert unsafe_char(f"name{hidden}") == "\\U000e0072"  # the first hidden letter


def test_an_identity_with_a_bidi_override_is_refused_in_the_config():
    from conduit.config import check_identity

    assert check_identity("file:/home/me/notes.py") is None
    assert check_identity("file:/home/me/\u202eyp.seton") == (
        "it contains the control character \\u202e"
    )


def test_the_store_commands_notes_reach_the_terminal_inert(capsys):
    """A store note quotes an installer's message or a package's metadata (a warning that
    a plugin was not updated, why an outdated check failed): never raw on a terminal."""
    from conduit.builtins.plugins._store import _report
    from conduit.store import Result

    _report(Result(notes=[f"warning: cstore-x was not updated: {ERASE_ABOVE}"]), False, "Updated")
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert inert(ERASE_ABOVE) in out

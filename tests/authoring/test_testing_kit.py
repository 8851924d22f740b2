"""``conduit.testing``, the pytest plugin for plugin authors, tested with pytester: each
test writes a plugin and a test file that uses the kit, runs pytest on them, and checks
the outcome."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from _factory import simple_plugin

pytest_plugins = ["pytester"]

HELLO = simple_plugin("hello", ("hello",), output="hi there")

#: plugins the inner runs do not need (hypothesis alone takes seconds to set up), and
#: faulthandler, which an inner run must not have: it shares this process, whose fatal
#: signals the outer run's faulthandler reports, and its end would put back the SIGILL,
#: SIGSEGV and SIGFPE handlers of its start, dropping wasmtime's if a test has run
#: WebAssembly in this process since (the next trap then kills the whole run)
NOPLUG = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:faulthandler")

CONFTEST = 'pytest_plugins = ["conduit.testing"]\n'


def _project(pytester: pytest.Pytester, tests: str, **files: str) -> None:
    pytester.makeconftest(CONFTEST)
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text) if name.endswith("_test.py") else text)
    pytester.makepyfile(test_plugin=textwrap.dedent(tests))


def test_the_same_test_under_each_host_kind(pytester: pytest.Pytester) -> None:
    _project(
        pytester,
        """
        import os
        from pathlib import Path

        def test_hello(conduit, conduit_host):
            conduit.load(Path(__file__).parent / "hello.py")
            result = conduit.run("hello")
            assert (result.exit_code, result.stdout, result.stderr) == (0, "hi there\\n", "")
            info = conduit.run("plugins", "info", "hello", "--json", "--no-load").stdout
            assert f'"isolation": "{conduit_host}"' in info
        """,
        **{"hello.py": HELLO},
    )
    result = pytester.runpytest("-v", *NOPLUG)
    result.stdout.fnmatch_lines(
        ["*test_hello[[]in-process[]] PASSED*", "*test_hello[[]process[]] PASSED*"]
    )
    result.assert_outcomes(passed=2)


def test_the_process_host_really_is_another_process(pytester: pytest.Pytester) -> None:
    plugin = simple_plugin("pid", ("pid",), module_prefix="import os\n").replace(
        "click.echo('pid pid')", "click.echo(os.getpid())"
    )
    _project(
        pytester,
        """
        import os
        from pathlib import Path

        def test_pid(conduit, conduit_host):
            conduit.load(Path(__file__).parent / "pid.py")
            pid = int(conduit.run("pid").stdout)
            assert (pid == os.getpid()) == (conduit_host == "in-process")
        """,
        **{"pid.py": plugin},
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=2)


def test_home_clears_conduit_variables_and_fixes_columns(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the guide promises of ``conduit_home``: the user's Conduit variables are gone."""
    for var in ("CONDUIT_DISABLE_PLUGINS", "CONDUIT_PROFILE", "CONDUIT_REBUILD_INDEX"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("COLUMNS", "200")
    _project(
        pytester,
        """
        import os

        def test_env(conduit_home):
            for var in ("CONDUIT_DISABLE_PLUGINS", "CONDUIT_PROFILE", "CONDUIT_REBUILD_INDEX"):
                assert var not in os.environ, var
            assert os.environ["COLUMNS"] == "80"
        """,
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=1)


def test_home_is_temporary_and_runner_reports_failures(pytester: pytest.Pytester) -> None:
    _project(
        pytester,
        """
        import os
        from pathlib import Path

        def test_home(conduit, conduit_home, tmp_path):
            assert os.environ["CONDUIT_HOME"] == str(conduit_home) == str(conduit.home)
            assert conduit_home.is_relative_to(tmp_path)
            result = conduit.run("nope")
            assert result.exit_code == 2
            assert result.stderr.startswith("error: unknown command 'nope'")

        def test_plugin_errors_and_config(conduit):
            conduit.load(Path(__file__).parent / "cfg.py")
            conduit.configure('[plugin.cfg]\\ngreeting = "howdy"\\n')
            assert conduit.run("cfg").stdout == "howdy\\n"
            failed = conduit.run("cfg", "--fail")
            assert failed.exit_code == 1
            assert failed.stderr == "error: it failed\\nhint: as asked\\n"
        """,
        **{
            "cfg.py": textwrap.dedent("""\
                # /// conduit
                # name = "cfg"
                # api = ">=1.1,<2"
                # [[commands]]
                # name = "cfg"
                # ///
                import click
                from conduit.sdk import ConduitError, Plugin

                class Cfg(Plugin):
                    def boot(self, ctx):
                        @click.command()
                        @click.option("--fail", is_flag=True)
                        def cfg(fail):
                            if fail:
                                raise ConduitError("it failed", hint="as asked")
                            click.echo(ctx.config["greeting"])

                        ctx.register_command(cfg)
                """)
        },
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=2)


PYPROJECT = """\
[project]
name = "conduit-shout"
version = "2.0.0"
[project.entry-points."conduit.plugins"]
shout = "conduit_shout:Shout"
"""

SHOUT = """\
import click
from conduit.sdk import Plugin


@click.command()
@click.argument("text")
def shout(text):
    '''Shout TEXT.'''
    click.echo(text.upper())


class Shout(Plugin):
    def boot(self, ctx):
        ctx.register_command(shout)
"""


def test_loads_a_package_project_without_installing_it(pytester: pytest.Pytester) -> None:
    _project(
        pytester,
        """
        import importlib.metadata
        from pathlib import Path

        import pytest

        def test_shout(conduit, conduit_host):
            assert conduit.load(Path(__file__).parent) == ["shout"]
            result = conduit.run("shout", "hey")
            assert (result.exit_code, result.stdout) == (0, "HEY\\n"), result.stderr
            listed = conduit.run("plugins", "list").stdout
            assert "shout       2.0.0    entry-point" in listed
            if conduit_host == "process":  # the same through a real `python -m conduit`
                assert conduit.run_subprocess("shout", "yo").stdout == "YO\\n"

        def test_not_installed():
            with pytest.raises(importlib.metadata.PackageNotFoundError):
                importlib.metadata.distribution("conduit-shout")

        def test_manifest_check(conduit):
            result = conduit.run("plugins", "manifest", "--check", str(Path(__file__).parent))
            assert result.exit_code == 1
            assert "command 'shout': usage is \\"\\" in the manifest, \\"TEXT\\" in the code" in result.stderr
        """,
        **{
            "pyproject.toml": PYPROJECT,
            "src/conduit_shout/__init__.py": SHOUT,
            "src/conduit_shout/conduit-plugin.toml": (
                'api = ">=1.0,<2"\n[[commands]]\nname = "shout"\nhelp = "Shout TEXT."\n'
            ),
        },
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=4)


def test_a_process_only_plugin_is_skipped_in_process(pytester: pytest.Pytester) -> None:
    plugin = simple_plugin("iso", ("iso",), extra_toml='isolation = "process"')
    _project(
        pytester,
        """
        from pathlib import Path

        def test_iso(conduit, conduit_host):
            conduit.load(Path(__file__).parent / "iso.py")
            assert conduit.run("iso").stdout == "iso iso\\n"
        """,
        **{"iso.py": plugin},
    )
    result = pytester.runpytest("-rs", *NOPLUG)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*plugin 'iso' asks for isolation 'process'*"])


def test_the_kit_is_opt_in(pytester: pytest.Pytester) -> None:
    """Installing Conduit does not add fixtures to every pytest run (no pytest11 entry)."""
    pytester.makepyfile(test_plain="def test_x(conduit):\n    pass\n")
    result = pytester.runpytest(*NOPLUG)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'conduit' not found*"])


def test_a_broken_plugin_fails_load_with_its_manifest_error(pytester: pytest.Pytester) -> None:
    _project(
        pytester,
        """
        from pathlib import Path

        import pytest
        from conduit.errors import ManifestError

        def test_bad(conduit):
            with pytest.raises(ManifestError, match="descripton: unknown field"):
                conduit.load(Path(__file__).parent / "bad.py")
        """,
        **{"bad.py": HELLO.replace("# description", "# descripton")},
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=1)


def test_an_executable_plugin_in_another_language(pytester: pytest.Pytester) -> None:
    script = pytester.path / "conduit-hi.sh"
    script.write_text('#!/bin/sh\necho "hi from sh: $*"\nexit 3\n')
    script.chmod(0o755)
    _project(
        pytester,
        """
        from pathlib import Path

        def test_hi(conduit):
            assert conduit.load(Path(__file__).parent / "conduit-hi.sh") == ["hi"]
            result = conduit.run_subprocess("hi", "there")
            assert (result.exit_code, result.stdout) == (3, "hi from sh: there\\n")
        """,
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=1)


def test_registering_a_command_name_twice_is_an_error(pytester: pytest.Pytester) -> None:
    """What ``PluginContext.register_command`` promises (src/conduit/sdk.py)."""
    _project(
        pytester,
        """
        from pathlib import Path

        import pytest

        def test_twice(conduit, conduit_host):
            conduit.load(Path(__file__).parent / "dup.py")
            result = conduit.run("dup")
            assert result.exit_code != 0
            assert "command 'dup' is registered twice" in result.stderr
        """,
        **{
            "dup.py": textwrap.dedent("""\
                # /// conduit
                # name = "dup"
                # api = ">=1.1,<2"
                # [[commands]]
                # name = "dup"
                # ///
                import click
                from conduit.sdk import Plugin

                @click.command("dup")
                def one():
                    click.echo("one")

                @click.command("dup")
                def two():
                    click.echo("two")

                class Dup(Plugin):
                    def boot(self, ctx):
                        ctx.register_command(one)
                        ctx.register_command(two)
                """)
        },
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=2)


def test_a_hook_name_is_declared_by_one_active_plugin_only(pytester: pytest.Pytester) -> None:
    """What ``PluginContext.register_hookspec`` promises (src/conduit/sdk.py)."""
    _project(
        pytester,
        """
        import textwrap

        def plugin(name, activation):
            return textwrap.dedent(f'''\\
                # /// conduit
                # name = "{name}"
                # api = ">=1.1,<2"
                # activation = {activation}
                # [[commands]]
                # name = "{name}"
                # [provides]
                # hooks = ["on_x"]
                # ///
                import click
                from conduit.sdk import Plugin

                def on_x():
                    \"\"\"A hook both plugins declare.\"\"\"

                @click.command("{name}")
                def cmd():
                    click.echo("{name}")

                class P(Plugin):
                    def boot(self, ctx):
                        ctx.register_hookspec(on_x)
                        ctx.register_command(cmd)
                ''')

        def test_clash(conduit, conduit_host, tmp_path):
            for name, activation in (("first", '["startup"]'), ("second", "[]")):
                (tmp_path / f"{name}.py").write_text(plugin(name, activation))
                conduit.load(tmp_path / f"{name}.py")
            assert conduit.run("first").stdout == "first\\n"
            result = conduit.run("second")
            assert (result.exit_code, result.stderr) == (
                1, "error: plugin 'second': hook 'on_x' is already specified by 'first'\\n"
            )
        """,
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=2)


def test_a_firstresult_hook_returns_at_most_one_result(pytester: pytest.Pytester) -> None:
    """What ``PluginContext.register_hookspec`` and ``hook`` promise (src/conduit/sdk.py):
    with ``firstresult=True`` one result, without it every implementation's."""
    _project(
        pytester,
        """
        import textwrap
        PICK = textwrap.dedent('''\\
            # /// conduit
            # name = "pick"
            # api = ">=1.1,<2"
            # [[commands]]
            # name = "pick"
            # [provides]
            # hooks = ["on_pick", "on_all"]
            # ///
            import click
            from conduit.sdk import Plugin

            def on_pick():
                pass  # the first answer wins

            def on_all():
                pass  # every answer counts

            class P(Plugin):
                def boot(self, ctx):
                    ctx.register_hookspec(on_pick, firstresult=True)
                    ctx.register_hookspec(on_all)
                    ctx.register_hook("on_pick", lambda: "pick")
                    ctx.register_hook("on_all", lambda: "pick")

                    @click.command()
                    def pick():
                        click.echo(f"{len(ctx.hook('on_pick'))} {sorted(ctx.hook('on_all'))}")

                    ctx.register_command(pick)
            ''')
        ANSWER = textwrap.dedent('''\\
            # /// conduit
            # name = "answer"
            # api = ">=1.1,<2"
            # activation = ["event:on_pick", "event:on_all"]
            # ///
            from conduit.sdk import Plugin

            class P(Plugin):
                def boot(self, ctx):
                    ctx.register_hook("on_pick", lambda: "answer")
                    ctx.register_hook("on_all", lambda: "answer")
            ''')

        def test_hooks(conduit, conduit_host, tmp_path):
            for name, text in (("pick", PICK), ("answer", ANSWER)):
                (tmp_path / f"{name}.py").write_text(text)
                conduit.load(tmp_path / f"{name}.py")
            r = conduit.run("pick")
            assert (r.exit_code, r.stdout, r.stderr) == (0, "1 ['answer', 'pick']\\n", "")
        """,
    )
    pytester.runpytest(*NOPLUG).assert_outcomes(passed=2)


#: In a fresh interpreter: fault handlers on as the outer pytest run has them, a WebAssembly
#: trap (wasmtime installs its handlers for SIGILL, SIGSEGV and SIGFPE), an inner pytest run
#: in the same process with this file's options, as pytester's runs are, and a trap again.
TRAP_AFTER_AN_INNER_RUN = """
import faulthandler, sys
import pytest, wasmtime

faulthandler.enable()
engine = wasmtime.Engine()
module = wasmtime.Module(engine, '(module (func (export "f") unreachable))')


def trap():
    store = wasmtime.Store(engine)
    run = wasmtime.Instance(store, module, []).exports(store)["f"]
    try:
        run(store)
    except wasmtime.Trap:
        return
    sys.exit("no trap")


trap()
assert pytest.main(["-q", *sys.argv[2:], sys.argv[1]]) == 0
trap()
print("trapped twice")
"""


def test_an_inner_run_leaves_the_wasm_trap_handlers_alone(tmp_path) -> None:
    """An inner run must not change the signal handlers of the process it shares: pytest's
    faulthandler plugin, disabled at the end of a run, puts back the handlers of the run's
    start and so drops wasmtime's, installed since by a test that ran WebAssembly in
    process; the next trap in the outer run (tests/hosts/test_wasm.py) killed it with
    SIGILL."""
    pytest.importorskip("wasmtime")
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    r = subprocess.run(
        [sys.executable, "-c", TRAP_AFTER_AN_INNER_RUN, str(tmp_path), *NOPLUG],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (r.returncode, r.stdout.splitlines()[-1:]) == (0, ["trapped twice"]), r.stderr

"""The run journal (conduit.runlog) and what reads it: ``plugins list | info | doctor
[--deep] | stats``, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from conduit.paths import resolve
from conduit.runlog import journal_files, read

from _factory import imported_by, manifest_block, simple_plugin, write

BROKEN = manifest_block(
    """
    name = "flaky"
    api = ">=1.0,<2"
    [[commands]]
    name = "boom"
    help = "Boom."
    """
)


def _metrics_plugin(extra_toml: str = "") -> str:
    """A plugin with a ``metrics()`` that returns two good numbers and two bad ones."""
    return simple_plugin("counter", ("tick",), extra_toml=extra_toml).replace(
        "class ThePlugin(Plugin):\n",
        "class ThePlugin(Plugin):\n    def metrics(self):\n"
        "        return {'hits': 3, 'ratio': 0.5, 'bad name': 1, 'flag': True}\n\n",
    )


METRICS = _metrics_plugin()


def _flaky(plugin_dir: Path, works: bool) -> None:
    body = (
        "import click\nfrom conduit.sdk import Plugin\n\n@click.command()\ndef boom():\n"
        "    click.echo('boom ok')\n\nclass P(Plugin):\n    def boot(self, ctx):\n"
        "        ctx.register_command(boom)\n"
    )
    write(plugin_dir, "flaky.py", BROKEN + (body if works else "import no_such_module_x\n"))


def test_a_command_run_is_recorded_with_its_plugin_and_times(plugin_dir, run):
    write(plugin_dir, "counter.py", METRICS)
    assert run("tick").code == 0
    [entry] = read(resolve())
    assert (entry["cmd"], entry["plugin"], entry["code"], entry["error"]) == (
        "tick",
        "counter",
        0,
        "",
    )
    [act] = entry["plugins"]
    assert act["name"] == "counter" and act["why"] == "command:tick" and act["ok"]
    assert {"import_ms", "boot_ms", "run_ms", "load_ms"} <= set(act)
    # only names that are identifiers, only numbers that are not bools
    assert act["metrics"] == {"hits": 3, "ratio": 0.5}


def test_a_usage_error_is_recorded_without_the_arguments_it_quotes(plugin_dir, run):
    write(plugin_dir, "counter.py", METRICS)
    assert run("tick", "--pass=hunter2-Planted").code == 2
    [entry] = read(resolve())
    assert (entry["cmd"], entry["code"], entry["error"]) == ("tick", 2, "usage error")
    assert "hunter2-Planted" not in json.dumps(entry)


def test_a_failing_plugin_is_failing_until_it_loads_again(plugin_dir, run):
    _flaky(plugin_dir, works=False)
    assert run("boom").code == 3
    listed = run("plugins", "list", "--json")
    [row] = [r for r in json.loads(listed.out) if r["name"] == "flaky"]
    assert row["state"] == "failing"
    assert "flaky  " in run("plugins", "list").out and " failing " in run("plugins", "list").out
    info = run("plugins", "info", "flaky", "--no-load")
    assert "failing since:" in info.out
    assert "No module named 'no_such_module_x'" in info.out
    assert "recent failures:" in info.out
    report = run("debug", "report").out
    assert "== recent failures\nflaky:\n  " in report
    assert report.count("No module named 'no_such_module_x'") >= 1
    doctor = run("plugins", "doctor")
    assert doctor.code == 1
    assert "error: plugin 'flaky' failed to load on its last activation" in doctor.out
    assert "conduit plugins disable flaky" in doctor.out
    assert "No broken plugins" not in doctor.out
    # fixed: the next successful activation clears it
    _flaky(plugin_dir, works=True)
    assert run("boom").out == "boom ok\n"
    assert [
        r["state"] for r in json.loads(run("plugins", "list", "--json").out) if r["name"] == "flaky"
    ] == ["enabled"]
    assert run("plugins", "doctor").code == 0


def test_doctor_deep_loads_every_enabled_plugin_in_a_child(plugin_dir, run):
    write(plugin_dir, "alpha.py", simple_plugin("alpha"))
    write(
        plugin_dir,
        "boots_badly.py",
        simple_plugin(
            "boots-badly",
            ("bb",),
            extra_toml='isolation = "process"',
            boot_prefix="        raise RuntimeError('no config here')\n",
        ),
    )
    _flaky(plugin_dir, works=False)
    result = run("plugins", "doctor", "--deep")
    assert result.code == 1, result.out
    assert "error: plugin 'flaky' fails to load: failed to import" in result.out
    assert "error: plugin 'boots-badly' fails to load" in result.out
    assert "no config here" in result.out
    assert "plugin 'alpha'" not in result.out
    # its results are the plugins' latest state
    assert "failing" in run("plugins", "info", "boots-badly", "--no-load").out
    _flaky(plugin_dir, works=True)
    (plugin_dir / "boots_badly.py").unlink()
    result = run("plugins", "doctor", "--deep")
    assert result.code == 0, result.out
    assert "enabled plugins load." in result.out


def test_stats_json_text_and_prometheus(plugin_dir, run):
    write(plugin_dir, "counter.py", METRICS)
    _flaky(plugin_dir, works=False)
    for _ in range(3):
        assert run("tick").code == 0
    assert run("boom").code == 3
    stats = json.loads(run("plugins", "stats", "--json").out)
    counter = stats["plugins"]["counter"]
    assert counter["activations"] == 3 and counter["failures"] == 0
    assert counter["run"]["count"] == 3 and counter["run"]["p50"] <= counter["run"]["p95"]
    assert stats["plugins"]["flaky"]["failures"] == 1
    text = run("plugins", "stats").out
    assert "counter" in text and "metrics of counter: hits=3, ratio=0.5" in text
    prom = run("plugins", "stats", "--format", "prometheus").out
    families = {f.name: f for f in text_string_to_metric_families(prom)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert families["conduit_plugin_activations"].type == "counter"
    assert samples[("conduit_plugin_activations_total", (("plugin", "counter"),))] == 3
    assert samples[("conduit_plugin_failures_total", (("plugin", "flaky"),))] == 1
    assert families["conduit_plugin_run_seconds"].type == "summary"
    assert samples[("conduit_plugin_run_seconds_count", (("plugin", "counter"),))] == 3
    key = ("conduit_plugin_metric", (("name", "hits"), ("plugin", "counter")))
    assert samples[key] == 3


def test_process_plugin_reports_child_timings_and_metrics(plugin_dir, run):
    write(plugin_dir, "counter.py", _metrics_plugin('isolation = "process"'))
    assert run("tick").code == 0
    [act] = read(resolve())[-1]["plugins"]
    assert act["ok"] and "import_ms" in act and "boot_ms" in act
    assert act["metrics"] == {"hits": 3, "ratio": 0.5}


def test_journal_switched_off_in_the_config(plugin_dir, conduit_home, run):
    write(plugin_dir, "alpha.py", simple_plugin("alpha"))
    (conduit_home / "config.toml").write_text("[journal]\nenabled = false\n")
    assert run("hello").code == 0
    assert not os.path.exists(journal_files(resolve())[0])


def test_journal_config_is_validated(conduit_home, run):
    (conduit_home / "config.toml").write_text("[journal]\nmax-kb = 1\n")
    result = run("plugins", "list")
    assert result.code == 4
    assert "journal.max-kb" in result.err and "Traceback" not in result.err


def test_not_imported_for_help_version_completion(plugin_dir):
    write(plugin_dir, "alpha.py", simple_plugin("alpha", ("hello",)))
    imported_by("--help", watch_kernel=False)
    for args in (("--help",), ("--version",), ("__complete", "he"), ("plugins", "--help")):
        code, new = imported_by(*args, watch_kernel=False)
        assert code == 0
        assert "conduit.runlog" not in new, args
    assert not os.path.exists(journal_files(resolve())[0])
    code, new = imported_by("hello", watch_kernel=False)
    assert code == 0 and "conduit.runlog" in new


_WRITER = """
import sys, time
from conduit.paths import resolve
from conduit.runlog import record
paths = resolve()
n = int(sys.argv[1])
for i in range(n):
    record(paths, {"max-kb": 16}, command="w" + sys.argv[2], plugin="p", code=0,
           error="x" * (i % 50), started_ns=time.perf_counter_ns(),
           activations=[{"name": "p", "why": "w", "ok": True, "import_ms": 1.5}])
"""


def _check_whole_lines() -> int:
    current, older = journal_files(resolve())
    lines = 0
    for path in (older, current):
        if os.path.exists(path):
            with open(path, "rb") as f:
                for raw in f:
                    json.loads(raw)  # every line whole
                    lines += 1
    size = sum(os.path.getsize(p) for p in (older, current) if os.path.exists(p))
    assert size <= 16 * 1024 + 1024  # pruned by size: max-kb, plus the last line
    return lines


def test_concurrent_writers_never_corrupt_it_and_it_stays_bounded():
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, "400", str(i)]) for i in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert _check_whole_lines() > 0
    assert read(resolve())


def test_kill_9_mid_write_leaves_whole_lines():
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, "100000", "k"])
        deadline = time.monotonic() + 30
        while not os.path.exists(journal_files(resolve())[0]) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_whole_lines()

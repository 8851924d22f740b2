"""``conduit plugins stats``: per-plugin activation counts, failures, p50/p95 import,
boot and run times, and the plugins' own ``metrics()``, from the run journal
(:mod:`conduit.runlog`).

Imported only when it runs (see ``LAZY_COMMANDS`` in the package face).
"""

from __future__ import annotations

import json
from typing import Any

import click

from conduit.builtins.plugins._common import journal, table
from conduit.text import inert

__all__ = ["stats_cmd"]

#: the timed phases of an activation, as the journal names them (``import_ms`` ...)
PHASES = ("import", "boot", "run")


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n * q)
    return ordered[int(rank) - 1]


def collect(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per plugin: ``activations``, ``failures``, for each phase its ``count``, ``sum``,
    ``p50`` and ``p95`` in ms, and the ``metrics`` of its latest run that had any."""
    from conduit.runlog import activations

    times: dict[str, dict[str, list[float]]] = {}
    out: dict[str, dict[str, Any]] = {}
    for _, act in activations(records):
        name = act["name"]
        row = out.setdefault(name, {"activations": 0, "failures": 0, "metrics": {}})
        row["activations"] += 1
        if not act.get("ok", True):
            row["failures"] += 1
        if isinstance(act.get("metrics"), dict):
            row["metrics"] = {
                k: v
                for k, v in act["metrics"].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        for phase in PHASES:
            value = act.get(f"{phase}_ms")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                times.setdefault(name, {}).setdefault(phase, []).append(float(value))
    for name, row in out.items():
        for phase in PHASES:
            values = times.get(name, {}).get(phase, [])
            row[phase] = (
                {
                    "count": len(values),
                    "sum": round(sum(values), 3),
                    "p50": _percentile(values, 0.5),
                    "p95": _percentile(values, 0.95),
                }
                if values
                else {"count": 0, "sum": 0.0, "p50": None, "p95": None}
            )
    return dict(sorted(out.items()))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(stats: dict[str, dict[str, Any]]) -> str:
    """``stats`` in the Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])

    for key, text in (
        ("activations", "Plugin activations recorded in the run journal."),
        ("failures", "Plugin activations that failed, in the run journal."),
    ):
        name = f"conduit_plugin_{key}_total"
        family(name, "counter", text)
        for plugin, row in stats.items():
            lines.append(f'{name}{{plugin="{_label(plugin)}"}} {row[key]}')
    for phase in PHASES:
        name = f"conduit_plugin_{phase}_seconds"
        family(name, "summary", f"Time of a plugin's {phase}, from the run journal.")
        for plugin, row in stats.items():
            data, label = row[phase], f'plugin="{_label(plugin)}"'
            if data["count"]:
                for q in ("0.5", "0.95"):
                    value = data["p50" if q == "0.5" else "p95"] / 1000
                    lines.append(f'{name}{{{label},quantile="{q}"}} {value:.6g}')
            lines.append(f"{name}_sum{{{label}}} {data['sum'] / 1000:.6g}")
            lines.append(f"{name}_count{{{label}}} {data['count']}")
    name = "conduit_plugin_metric"
    family(name, "gauge", "The latest values a plugin's metrics() returned.")
    for plugin, row in stats.items():
        for metric, value in sorted(row["metrics"].items()):
            lines.append(
                f'{name}{{plugin="{_label(plugin)}",name="{_label(metric)}"}} {float(value):.17g}'
            )
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (same as --format json).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "prometheus"]),
    default="text",
    show_default=True,
    help="A table, JSON, or the Prometheus text format.",
)
def stats_cmd(as_json: bool, fmt: str) -> None:
    """Show per-plugin activations, failures and p50/p95 load and run times."""
    records = journal()
    stats = collect(records)
    if as_json or fmt == "json":
        click.echo(json.dumps({"runs": len(records), "plugins": stats}, indent=2))
        return
    if fmt == "prometheus":
        click.echo(prometheus(stats), nl=False)
        return
    if not stats:
        click.echo(
            "No runs recorded yet (the run journal is empty, or off: [journal] enabled "
            "in the config)."
        )
        return
    cells = [["PLUGIN", "ACTIVATIONS", "FAILURES", "IMPORT p50/p95", "BOOT p50/p95", "RUN p50/p95"]]
    for plugin, row in stats.items():
        cells.append(
            [
                inert(plugin),
                str(row["activations"]),
                str(row["failures"]),
                *(f"{_ms(row[p]['p50'])}/{_ms(row[p]['p95'])}" for p in PHASES),
            ]
        )
    click.echo(f"{len(records)} runs in the journal; times in ms.")
    click.echo(table(cells))
    shown = [(p, row["metrics"]) for p, row in stats.items() if row["metrics"]]
    for plugin, metrics in shown:
        values = ", ".join(f"{k}={v:g}" for k, v in sorted(metrics.items()))
        click.echo(inert(f"metrics of {plugin}: {values}"))

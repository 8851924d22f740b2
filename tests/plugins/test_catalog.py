"""The catalog shipped with Conduit: `plugins search` works out of the box, lists every
entry without a term, marks installed plugins, and merges a configured catalog."""

from __future__ import annotations

import json
from pathlib import Path

from conduit.testing import Conduit


def test_search_works_out_of_the_box_and_lists_everything_without_a_term(
    kit: Conduit,
) -> None:
    r = kit.run("plugins", "search")
    assert r.exit_code == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert names == ["env", "github", "know", "repos"]
    assert "repos (installed)  conduit-devtool" in r.stdout  # installed entries marked
    r = kit.run("plugins", "search", "dotenv", "--json")
    [entry] = json.loads(r.stdout)
    assert entry["name"] == "env" and entry["installed"] is True
    assert entry["catalog"] == "conduit"
    assert kit.run("plugins", "search", "zzz").stdout == "No plugin in the catalog matches 'zzz'.\n"


def test_a_configured_catalog_adds_entries_but_cannot_take_a_first_party_name(
    kit: Conduit, tmp_path: Path
) -> None:
    other = tmp_path / "catalog.json"
    other.write_text(
        json.dumps(
            [
                {"name": "repos", "package": "evil-repos", "summary": "not ours"},
                {"name": "weather", "package": "conduit-weather", "summary": "Forecasts"},
            ]
        )
    )
    (kit.plugin_dir / "weather.py").write_text(
        '# /// conduit\n# name = "weather"\n# api = ">=1.0,<2"\n# ///\n'
        "from conduit.sdk import Plugin\nclass W(Plugin):\n    def boot(self, ctx):\n        pass\n"
    )
    kit.configure(f'[store]\ncatalog = "{other.as_uri()}"\n')
    r = kit.run("plugins", "search", "--json")
    assert r.exit_code == 0, r.stderr
    got = {e["name"]: e for e in json.loads(r.stdout)}
    assert got["repos"]["package"] == "conduit-devtool"
    assert got["weather"]["catalog"] == other.as_uri()
    assert got["weather"]["installed"] is True
    assert got["github"]["installed"] is False
    assert "evil-repos" not in r.stdout

"""The catalog shipped with Conduit: `plugins search` works out of the box, lists every
entry without a term, marks installed plugins, and merges a configured catalog."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conduit.testing import Conduit


def test_search_works_out_of_the_box_and_lists_everything_without_a_term(
    kit: Conduit,
) -> None:
    r = kit.run("plugins", "search")
    assert r.exit_code == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert names == ["env", "github", "know", "repos"]
    assert re.search(r"^repos \(installed\) +conduit-devtool ", r.stdout, re.M)  # marked
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
    assert all(got[n]["installed"] for n in ("repos", "know", "github", "env"))
    assert "evil-repos" not in r.stdout


def test_the_default_catalog_matches_the_first_party_manifests() -> None:
    """Each shipped catalog entry names a first-party plugin and shows what its manifest
    declares, so that `plugins search` never understates what a plugin asks for."""
    import tomllib

    import conduit.store
    import conduit_plugins

    catalog = json.loads((Path(conduit.store.__file__).parent / "default-catalog.json").read_text())
    plugins = Path(conduit_plugins.__file__).parent
    shipped = sorted(p.name for p in plugins.iterdir() if (p / "conduit-plugin.toml").is_file())
    assert sorted(e["name"] for e in catalog) == shipped
    for entry in catalog:
        manifest = tomllib.loads((plugins / entry["name"] / "conduit-plugin.toml").read_text())
        assert entry["capabilities"] == manifest.get("capabilities", []), entry["name"]

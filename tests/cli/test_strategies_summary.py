"""`lsal strategies` describes each strategy in whole sentences (issue 17: it cut them mid-sentence)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app
from core.project_settings import first_sentence
from plugins.strategies import STRATEGIES


def test_first_sentence_ends_where_the_sentence_does():
    text = """BALD (Houlsby et al. 2011; Gal, Islam & Ghahramani,
    ICML 2017): label where the models disagree. More text (e.g. Foo. Bar) follows."""
    assert first_sentence(text) == ("BALD (Houlsby et al. 2011; Gal, Islam & Ghahramani, ICML 2017): label where "
                                    "the models disagree.")
    assert first_sentence("Use e.g. BALD here.\n\nSecond paragraph.") == "Use e.g. BALD here."
    assert first_sentence("no full stop\nat all\n\nnext") == "no full stop at all"


def test_every_summary_is_a_whole_sentence(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    rows = json.loads(CliRunner().invoke(app, ["strategies", "--json"]).output)
    for row in rows:
        summary = row["summary"]
        assert summary.endswith((".", "!", "?")), (row["name"], summary)
        doc = " ".join((STRATEGIES.get(row["name"]).__doc__ or "").split())
        assert doc.startswith(summary), (row["name"], summary)
    badge = next(r for r in rows if r["name"] == "badge")["summary"]
    assert badge.endswith("the rest by ||g|| = ||a|| ||h||.")
    table = CliRunner().invoke(app, ["strategies"]).output
    flat = " ".join(table.replace("│", " ").split())
    assert "label where the models disagree." in flat

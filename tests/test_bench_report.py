"""contrastive/bench/report.py: the markdown table and the peak shares."""

from __future__ import annotations

from contrastive.bench.report import markdown_table, render_shares


def test_markdown_table_has_one_line_per_row_and_escapes_pipes():
    rows = [
        {"row": "1a", "what": "a | b", "a": 30.0, "b": 20.0, "ratio": 1.5, "target": ">= 1.5x", "met": True},
        {"row": "4", "what": "no ratio", "a": "2.0 s"},
    ]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| row | compares (A vs B) | A | B | ratio A/B |")
    assert set(lines[1].replace("|", "")) == {"-"}
    cells = [c.strip() for c in lines[2].strip("|").split(" | ")]
    assert cells[:7] == ["1a", "a \\| b", "30.0", "20.0", "1.50x", ">= 1.5x", "yes"]
    assert lines[3].count("| - |") >= 2  # missing cells are dashes
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])


def test_render_shares_uses_the_final_peak():
    assert render_shares([50e9, " vs ", 25e9], 100e9) == "50.0% vs 25.0%"
    assert render_shares([1e9], None) == "-"
    assert render_shares("100%", 1.0) == "100%" and render_shares(None, 1.0) is None

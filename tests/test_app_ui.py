"""The page: the header and, through Gradio's HTTP API, the Blocks wiring of /compare, /search and /dedup."""

from __future__ import annotations

import re

import pytest
from app_helpers import engine, fake_metrics

from contrastive.app.checkpoints import Checkpoint, Thresholds, load_thresholds
from contrastive.app.server import free_port
from contrastive.app.ui import build_ui, header_markdown


# ---------------------------------------------------------------- rendering
def test_header_says_what_is_served():
    thresholds = load_thresholds(None, 0.8)
    text = header_markdown(Checkpoint(None, "none", "nothing under outputs"), "base/model", thresholds, None)
    assert "No fine-tuned checkpoint found" in text and "base/model" in text and "uncalibrated" in text
    text = header_markdown(
        Checkpoint("/x/best", "latest promoted sweep best"),
        "base/model",
        Thresholds(0.8, 0.7, True, "/x/metrics.json", "", fake_metrics()),
        "ab12",
    )
    assert "/x/best" in text and "latest promoted sweep best" in text and "0.800" in text and "ab12" in text
    assert "val mrr_at_10 0.900 vs 0.800 baseline" in text
    odd = {**fake_metrics(), "objective": {"name": ["mrr_at_10", "pair_ap"], "value": 0.5}}  # no crash on a list
    text = header_markdown(Checkpoint("/x", "checkpoint"), "b", Thresholds(0.8, 0.7, True, "m", "", odd), None)
    assert "0.800" in text and "mrr_at_10" not in text


# ---------------------------------------------------------------- the Gradio wiring, through its API
@pytest.mark.slow
def test_ui_endpoints_over_http(tmp_path):
    """The Blocks served on localhost answer /compare, /search and /dedup (no model, no browser)."""
    from gradio_client import Client

    corpus = ["How do I learn Python?", "How can I lose weight?", "What is the capital of France?"]
    eng = engine(corpus, ft=0.6, base=0.95)
    demo = build_ui(eng, "# test")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        card = client.predict("How do I learn Python fast?", "How do I learn Python?", api_name="/compare")
        assert 'id="cmp-finetuned"' in card and re.search(r'id="cmp-finetuned"[^>]*data-verdict="duplicate"', card)
        assert re.search(r'id="cmp-baseline"[^>]*data-verdict="not duplicate"', card)
        table, info = client.predict("lose weight", 2, api_name="/search")
        assert table["data"][0][2] == "How can I lose weight?" and "ms" in info and "3" in info
        info, groups, download = client.predict("A b c?\na b c?\nZ?", None, 0.9, api_name="/dedup")
        assert "2 distinct" in info and len(groups["data"]) == 2
        with pytest.raises(Exception, match="question 2: empty"):
            client.predict("What?", "", api_name="/compare")
    finally:
        demo.close()

"""End to end: `python -m contrastive.app` on a saved checkpoint, driven in headless Chromium via Playwright.

Chromium comes from Debian (`.ci/install-browser`); Playwright's own browser download is not used.
Screenshots go to tmp_path and, when CONTRASTIVE_SCREENSHOT_DIR is set, there too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from contrastive import PROJECT_ROOT
from contrastive.app.server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FT_THRESHOLD, BASE_THRESHOLD = 0.55, 0.97  # far apart, so the same pair gets two different verdicts
START_TIMEOUT_S = 240

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (run .ci/install-browser)"),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, minilm) -> Path:
    """A run directory like train.py writes: model/ (the untuned model, saved) and metrics.json beside it."""
    run = tmp_path_factory.mktemp("run")
    minilm.save(str(run / "model"))
    metrics = {
        "split": "val",
        "objective": {"name": "mrr_at_10", "value": 0.9},
        "finetuned": {"mrr_at_10": 0.9, "pair_threshold": FT_THRESHOLD},
        "baseline": {"mrr_at_10": 0.9, "pair_threshold": BASE_THRESHOLD},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run / "model"


def _wait_for_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer on {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def app_url(checkpoint, tmp_path_factory):
    """The app as a user starts it, on a free localhost port; stopped after the module's tests."""
    work = tmp_path_factory.mktemp("app")
    port = free_port()
    log = work / "app.log"
    args = [
        sys.executable,
        "-m",
        "contrastive.app",
        f"app.port={port}",
        "data=fixture",
        "model.backend=torch",  # the cosines below are checked against the fp32 model
        f"checkpoint={checkpoint}",
        f"hydra.run.dir={work / 'hydra'}",
        f"paths.cache_dir={work / 'cache'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_http(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.set_default_timeout(60_000)
            tab.goto(app_url)
            tab.wait_for_selector("#q1 textarea")
            yield tab
        finally:
            browser.close()


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("CONTRASTIVE_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / name)
    assert path.stat().st_size > 10_000
    return path


def _cell(page, table: str, row: int, col: int) -> str:
    """The text of one cell of a Gradio Dataframe (a virtual grid of div cells)."""
    cell = page.locator(f"#{table} [data-testid=cell-{row}-{col}]")
    cell.wait_for()
    return cell.inner_text().strip()


def _rows(page, table: str) -> int:
    """Data rows of a Gradio Dataframe (its grid counts the header row too)."""
    return int(page.locator(f"#{table} [role=grid]").get_attribute("aria-rowcount")) - 1


def _cosine(model, a: str, b: str) -> float:
    emb = model.encode([a, b], normalize_embeddings=True)
    return float(emb[0] @ emb[1])


def test_compare_search_and_dedup_in_the_browser(page, checkpoint, minilm, fixture_data, tmp_path):
    header = page.locator("#header").inner_text()
    assert str(checkpoint) in header and "(checkpoint)" in header and f"{FT_THRESHOLD:.3f}" in header

    # Compare: two questions -> each model's cosine and verdict at its own calibrated threshold
    q1, q2 = "How do I learn Python quickly?", "What is the fastest way to learn Python?"
    page.locator("#q1 textarea").fill(q1)
    page.locator("#q2 textarea").fill(q2)
    page.click("#compare-btn")
    page.wait_for_selector("#cmp-finetuned")
    expected = _cosine(minilm, q1, q2)
    assert FT_THRESHOLD <= expected < BASE_THRESHOLD  # the pair sits between the two thresholds
    for side, threshold in (("finetuned", FT_THRESHOLD), ("baseline", BASE_THRESHOLD)):
        row = page.locator(f"#cmp-{side}")
        shown = float(row.get_attribute("data-cosine"))
        assert shown == pytest.approx(expected, abs=1e-4)
        verdict = "duplicate" if shown >= threshold else "not duplicate"
        assert row.get_attribute("data-verdict") == verdict
        assert verdict in row.inner_text() and f"{threshold:.3f}" in row.inner_text()
    _screenshot(page, tmp_path, "app_compare.png")

    # Search: a question of the indexed val+test corpus finds itself first, with the latency shown
    corpus_question = fixture_data.splits["val"]["question1"].iloc[0]
    page.get_by_role("tab", name="Search").click()
    page.locator("#query textarea").fill(corpus_question)
    page.click("#search-btn")
    page.wait_for_selector("#search-info :text('ms')")
    info = page.locator("#search-info").inner_text()
    assert re.search(r"\d+(\.\d+)? ms \(encode", info), info
    n_corpus = int(re.search(r"over ([\d,]+) questions", info).group(1).replace(",", ""))
    split_keys = set()
    for name in ("val", "test"):
        split_keys |= set(fixture_data.splits[name]["key1"]) | set(fixture_data.splits[name]["key2"])
    assert n_corpus == len(split_keys)
    headers = page.locator("#search-results thead").inner_text()
    assert f"fine-tuned (✔ ≥ {FT_THRESHOLD:.3f})" in headers and f"baseline (✔ ≥ {BASE_THRESHOLD:.3f})" in headers
    cells = [_cell(page, "search-results", 0, col) for col in range(4)]  # rank, fine-tuned, baseline, question
    assert cells[0] == "1" and cells[1] == "1.000 ✔" and cells[2] == "1.000 ✔"  # itself, under both models
    assert cells[3] == corpus_question.strip()
    assert _rows(page, "search-results") == 10  # the default top_k
    for row in range(10):  # the same checkpoint on both sides here: one cosine, marked against each threshold
        ft, base = _cell(page, "search-results", row, 1), _cell(page, "search-results", row, 2)
        cosine = float(ft.split()[0])
        assert float(base.split()[0]) == pytest.approx(cosine, abs=1e-3)
        assert ft.endswith("✔") == (cosine >= FT_THRESHOLD) and base.endswith("✔") == (cosine >= BASE_THRESHOLD)
    _screenshot(page, tmp_path, "app_search.png")

    # Deduplicate: a pasted list with a reworded repeat -> one group, downloadable
    page.get_by_role("tab", name="Deduplicate").click()
    pasted = ["How do I learn Python?", "how do i learn python?", "What is the capital of France?"]
    page.locator("#dedup-text textarea").fill("\n".join(pasted))
    page.click("#dedup-btn")
    page.wait_for_selector("#dedup-info :text('distinct')")
    assert "2 distinct" in page.locator("#dedup-info").inner_text()
    assert _rows(page, "dedup-groups") == 2
    assert {_cell(page, "dedup-groups", row, 2) for row in (0, 1)} == set(pasted[:2])
    headers = page.locator("#dedup-groups thead").inner_text()
    assert "fine-tuned cosine to first" in headers and f"baseline cosine to first (✔ ≥ {BASE_THRESHOLD:.3f})" in headers
    assert "baseline group" in headers
    assert "untuned baseline at its threshold" in page.locator("#dedup-info").inner_text()
    _screenshot(page, tmp_path, "app_dedup.png")
    with page.expect_download() as download:
        page.click("#dedup-download")
    assert download.value.suggested_filename.endswith(".csv")
    table = pd.read_csv(download.value.path())
    assert list(table["question"]) == pasted and list(table["group"]) == [1, 1, 2]
    assert {"cosine_to_first", "baseline_cosine_to_first", "baseline_group"} <= set(table.columns)


def test_overlong_input_gets_a_clear_message(page):
    page.locator("#q1 textarea").fill("How?")
    page.locator("#q2 textarea").fill("x" * 1001)  # conf/app.yaml: app.limits.max_chars = 1000
    page.click("#compare-btn")
    page.wait_for_selector("text=question 2: 1,001 characters, the limit is 1,000")
    assert page.locator("#cmp-finetuned").count() == 0


def test_examples_from_the_data_fill_the_inputs(page, fixture_data, tmp_path):
    """Each tab's gr.Examples come from the corpus splits; clicking one fills the inputs, and it runs."""
    from playwright.sync_api import expect

    from contrastive.app.index import pair_examples

    examples = pair_examples(pd.concat([fixture_data.splits[s] for s in ("val", "test")], ignore_index=True))
    a, b = examples.pairs[0]  # a labelled duplicate pair
    page.locator("#compare-examples").get_by_text(a, exact=True).first.click()
    page.click("#compare-btn")  # at once: the example fills the boxes in the page, before this click reads them
    page.wait_for_selector("#cmp-finetuned")
    assert page.locator("#cmp-baseline").count() == 1 and page.locator("text=question 1: empty").count() == 0
    expect(page.locator("#q1 textarea")).to_have_value(a)
    expect(page.locator("#q2 textarea")).to_have_value(b)

    page.get_by_role("tab", name="Search").click()
    page.locator("#search-examples").get_by_text(examples.queries[0], exact=True).first.click()
    expect(page.locator("#query textarea")).to_have_value(examples.queries[0])
    page.click("#search-btn")
    page.wait_for_selector("#search-info :text('ms')")
    assert _cell(page, "search-results", 0, 3) == examples.queries[0].strip()

    page.get_by_role("tab", name="Deduplicate").click()
    first_line = examples.lists[0].splitlines()[0]
    page.locator("#dedup-examples").get_by_text(first_line).first.click()
    expect(page.locator("#dedup-text textarea")).to_have_value(examples.lists[0])
    page.click("#dedup-btn")
    page.wait_for_selector("#dedup-info :text('distinct')")
    assert _rows(page, "dedup-groups") >= 2  # at least the two labelled pairs group together
    _screenshot(page, tmp_path, "app_dedup_example.png")


def test_the_api_page_is_linked_at_the_foot(page):
    """README's "Use via API" link at the page's foot opens the API page (?view=api) listing the three endpoints.
    (Gradio 6.31 draws that page only from the link: a typed ?view=api address loads without it.)"""
    page.get_by_text("Use via API").first.click()
    page.wait_for_selector("text=/search")
    assert "view=api" in page.url
    body = page.locator("body").inner_text()
    assert "/compare" in body and "/dedup" in body and "compare_html" not in body

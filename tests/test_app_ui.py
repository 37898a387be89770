"""The page: the header and, through Gradio's HTTP API, the Blocks wiring of /compare, /search and /dedup."""

from __future__ import annotations

import pytest
from app_helpers import engine, fake_metrics

from contrastive.app.checkpoints import Checkpoint, Thresholds, load_thresholds
from contrastive.app.index import Examples
from contrastive.app.server import free_port
from contrastive.app.ui import build_ui, dedup_rows, header_markdown, search_rows


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
    assert "0.800" in text and "mrr_at_10" not in text and "onnx" not in text
    text = header_markdown(Checkpoint("/x", "checkpoint"), "b", Thresholds(0.8, 0.7, True, "m"), None, "onnx-int8")
    assert "Encoders on **onnx-int8**" in text and "model.backend=torch" in text


def test_tables_for_people_mark_each_models_threshold():
    eng = engine(["How do I learn Python?", "How can I lose weight?"], ft=0.6, base=0.95)
    table, _ = eng.search("How do I learn Python fast?", 2)
    shown = search_rows(table, eng.thresholds)
    assert list(shown.columns) == ["rank", "fine-tuned (✔ ≥ 0.600)", "baseline (✔ ≥ 0.950)", "question"]
    assert shown.iloc[0, 1] == "0.913 ✔" and shown.iloc[0, 2] == "0.913"  # above 0.6, below 0.95
    table, _ = eng.dedup(["How do I learn Python?", "How do I learn Python fast?", "Z?"], 0.6)
    shown = dedup_rows(table, 0.6, eng.thresholds)
    assert len(shown) == 2 and list(shown.iloc[1, 3:]) == ["0.913 ✔", "0.913", 2]


# ---------------------------------------------------------------- the Gradio wiring, through its API
@pytest.mark.slow
def test_ui_endpoints_over_http_return_numbers(tmp_path):
    """The Blocks served on localhost answer /compare, /search and /dedup with JSON (no model, no browser)."""
    import pandas as pd
    from gradio_client import Client

    corpus = ["How do I learn Python?", "How can I lose weight?", "What is the capital of France?"]
    eng = engine(corpus, ft=0.6, base=0.95)
    demo = build_ui(eng, "# test", examples=Examples([["A?", "B?"]], ["A?"], ["A?\nB?"]))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert set(api) == {"/compare", "/search", "/dedup"}  # the page's own HTML/table events are undocumented
        named = {name: [r["label"] for r in spec["returns"]] for name, spec in api.items()}
        assert named == {
            "/compare": ["comparison"],
            "/search": ["search results"],
            "/dedup": ["duplicate groups", "duplicate groups csv"],
        }
        assert [p["parameter_name"] for p in api["/dedup"]["parameters"]] == ["questions", "file", "threshold"]

        out = client.predict("How do I learn Python fast?", "How do I learn Python?", api_name="/compare")
        ft, base = out["models"]
        assert (ft["model"], ft["duplicate"], ft["threshold"]) == ("finetuned", True, 0.6)
        assert (base["model"], base["duplicate"], base["threshold"]) == ("baseline", False, 0.95)
        assert isinstance(ft["cosine"], float) and out["thresholds"] == {
            "finetuned": 0.6,
            "baseline": 0.95,
            "calibrated": True,
        }

        out = client.predict(query="lose weight", k=2, api_name="/search")
        top = out["results"][0]
        assert top["question"] == "How can I lose weight?" and len(out["results"]) == 2
        assert {"cosine", "duplicate", "baseline_cosine", "baseline_duplicate"} <= set(top)
        assert out["timing"]["corpus"] == 3 and out["timing"]["total_ms"] >= 0

        summary, csv = client.predict("A b c?\na b c?\nZ?", None, 0.9, api_name="/dedup")
        assert summary["questions"] == 3 and summary["groups"] == 2 and summary["threshold"] == 0.9
        assert [r["group"] for r in summary["rows"]] == [1, 1, 2] and summary["rows"][0]["baseline_group"] == 1
        table = pd.read_csv(csv)  # a file downloaded by the client, not an update dict
        assert list(table["question"]) == ["A b c?", "a b c?", "Z?"] and list(table["group"]) == [1, 1, 2]

        with pytest.raises(Exception, match="question 2: empty"):
            client.predict("What?", "", api_name="/compare")
    finally:
        demo.close()


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(tmp_path):
    import pandas as pd

    from contrastive.app.ui import write_csv

    table = pd.DataFrame(
        {"question": ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "How do I learn Python?"], "cosine": [-0.5] * 5}
    )
    path = write_csv(table)
    back = pd.read_csv(path, keep_default_na=False)
    assert back["question"].tolist() == [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "How do I learn Python?",
    ]
    assert back["cosine"].tolist() == [-0.5] * 5  # numbers stay numbers


def test_earlier_csv_downloads_are_cleaned_up(tmp_path):
    import os
    import time
    from pathlib import Path

    import pandas as pd

    from contrastive.app.ui import remove_stale_csv_dirs, write_csv

    old = Path(write_csv(pd.DataFrame({"q": ["a"]}))).parent
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = Path(write_csv(pd.DataFrame({"q": ["b"]}))).parent  # writing removes directories older than an hour
    assert not old.exists() and fresh.exists()
    assert remove_stale_csv_dirs(max_age_s=0) >= 1 and not fresh.exists()


def test_error_toasts_carry_no_server_paths_or_internal_text():
    import gradio as gr

    from contrastive.app.ui import _ui_errors, public_message
    from contrastive.errors import DataError

    assert public_message("upload f.csv: cannot read /tmp/gradio/ab12/f.csv as csv") == (
        "upload f.csv: cannot read f.csv as csv"
    )
    assert public_message("see https://example.org/a/b, 1/2") == "see https://example.org/a/b, 1/2"

    @_ui_errors
    def user_mistake():
        raise DataError("upload q.csv: cannot read /tmp/gradio/x1/q.csv as csv: no columns")

    @_ui_errors
    def bug():
        raise ValueError("cannot convert float NaN to integer at /work/secret/engine.py")

    with pytest.raises(gr.Error) as told:
        user_mistake()
    assert told.value.message == "upload q.csv: cannot read q.csv as csv: no columns"
    with pytest.raises(gr.Error) as told:
        bug()
    assert told.value.message == "the request failed on the server (details in its log)"


def test_the_queued_app_serves_50_concurrent_requests_and_a_dedup_without_errors(tmp_path):
    """The load the app must hold: 50 concurrent compare/search requests and a dedup (of the test limits' 50 lines)
    in parallel, through the queue `serve` sets up from conf/app.yaml (app.queue); every request answered."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    from contrastive.app.server import configure_queue
    from contrastive.app.settings import AppQueue

    corpus = [f"How do I learn topic {i}?" for i in range(200)]
    demo = build_ui(engine(corpus), "# load", examples=Examples([["A?", "B?"]], ["A?"], ["A?\nB?"]))
    configure_queue(demo, AppQueue())
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        url = f"http://127.0.0.1:{port}/"

        def call(i: int):
            client = Client(url, verbose=False)
            if i == 0:
                lines = "\n".join(f"How do I learn topic {j % 30}?" for j in range(50))  # LIMITS: 50
                return client.predict(lines, None, 0.9, api_name="/dedup")[0]["questions"]
            if i % 2:
                return client.predict(f"learn topic {i}", f"How do I learn topic {i}?", api_name="/compare")["models"]
            return client.predict(query=f"learn topic {i}", k=5, api_name="/search")["results"]

        with ThreadPoolExecutor(max_workers=51) as pool:
            results = list(pool.map(call, range(51)))
        assert results[0] == 50  # the dedup
        assert all(len(r) == 2 for r in results[1::2])  # compare: both models' verdicts
        assert all(len(r) == 5 for r in results[2::2])  # search: 5 hits each
    finally:
        demo.close()


def test_this_process_download_dirs_go_at_shutdown():
    """Seen: 67 contrastive-dedup-* temp dirs stayed after the app stopped. The app's shutdown removes its own."""
    from pathlib import Path

    import pandas as pd

    from contrastive.app.ui import remove_csv_dirs, write_csv

    remove_csv_dirs()  # earlier tests' downloads in this process
    made = [Path(write_csv(pd.DataFrame({"q": [str(i)]}))).parent for i in range(3)]
    assert all(d.is_dir() for d in made)
    assert remove_csv_dirs() == 3 and not any(d.exists() for d in made)
    assert remove_csv_dirs() == 0


@pytest.mark.slow
def test_bad_request_values_get_one_line_without_exception_text_and_big_bodies_get_413(tmp_path, caplog):
    """Seen: k='abc' answered with "...Original error: TypeError...", a missing argument with a Textbox repr, a
    traceback in the log per rejected slider value, and a 20 MB body parsed before being refused."""
    import logging

    import requests
    from gradio_client import Client
    from starlette.middleware import Middleware

    from contrastive.app.server import BodyLimit

    eng = engine(["How do I learn Python?", "How can I lose weight?"], ft=0.6, base=0.95)
    demo = build_ui(eng, "# test")
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        ssr_mode=False,
        app_kwargs={"middleware": [Middleware(BodyLimit, max_bytes=1_000_000)]},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        client = Client(url + "/", verbose=False)
        told = []
        with caplog.at_level(logging.INFO, logger="contrastive.app"):
            for args in (("lose weight", "abc"), ("lose weight", 10_000), ("lose weight", None)):
                with pytest.raises(Exception) as err:  # noqa: PT011 - gradio_client's AppError
                    client.predict(*args, api_name="/search")
                told.append(str(err.value))
            with pytest.raises(Exception) as err:  # noqa: PT011
                client.predict({"not": "text"}, "B?", api_name="/compare")
            told.append(str(err.value))
        for message in told:
            assert "Original error" not in message and "object at 0x" not in message and "Traceback" not in message
        assert told[0] == "number of results: got 'abc'; must be a number", told[0]
        assert told[1] == "number of results: got 10000; Value 10000 is greater than maximum value 50.", told[1]
        assert told[3] == "Question 1: got a dict; missing, or not text", told[3]
        rejected = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected ")]
        assert len(rejected) >= 3 and all("\n" not in m for m in rejected)

        big = requests.post(url + "/gradio_api/call/search", data=b"x" * 2_000_000, timeout=30)
        assert big.status_code == 413 and "request body over" in big.text

        def chunks():
            for _ in range(40):
                yield b"y" * 100_000

        streamed = requests.post(url + "/gradio_api/call/search", data=chunks(), timeout=30)
        assert streamed.status_code == 413
        ok = requests.post(url + "/gradio_api/call/search", json={"data": ["weight", 1]}, timeout=30)
        assert ok.status_code == 200
    finally:
        demo.close()


# ---------------------------------------------------------------- progress, the API page, integer k
class RecordedProgress:
    """A stand-in for gr.Progress: records each call the way Gradio's progress bar receives it."""

    def __init__(self, on_call=None) -> None:
        self.calls: list[tuple] = []
        self.on_call = on_call

    def __call__(self, progress, desc=None, total=None, unit="steps") -> None:
        self.calls.append((progress, desc, unit))
        if self.on_call is not None:
            self.on_call()


def _handlers(demo) -> dict:
    """The Blocks' event handlers by function name (on_dedup, on_upload, on_search, api_dedup, ...)."""
    return {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}


def test_dedup_and_uploads_report_progress_per_encode_batch(tmp_path):
    """Seen: a 3,000-question dedup showed only a spinner with a stale estimate. Each encode batch now moves the
    page's bar: the fine-tuned encode, then the baseline's (the stand-in's batches are 2 texts)."""
    handlers = _handlers(build_ui(engine(), "# test"))
    texts = "How do I learn Python?\nhow do i learn python?\nWhat is love?\nWhy is the sky blue?\nZ?"
    bar = RecordedProgress()
    info, table, _ = handlers["on_dedup"](texts, None, 0.9, bar)
    assert "5 questions" in info and len(table) == 2
    fine, base = "encoding (fine-tuned)", "encoding (untuned baseline)"
    assert bar.calls == [((n, 5), what, "questions") for what in (fine, base) for n in (2, 4, 5)]

    bar = RecordedProgress()
    handlers["api_dedup"](texts, None, 0.9, bar)
    assert [c[0] for c in bar.calls] == [(2, 5), (4, 5), (5, 5)] * 2

    upload = tmp_path / "mine.txt"
    upload.write_text("Best pizza in Rome?\nWhere to eat pizza in Naples?\nWhy is the sky blue?\n")
    bar = RecordedProgress()
    index, corpus_line = handlers["on_upload"](str(upload), bar)
    assert len(index) == 3 and "upload mine.txt" in corpus_line
    assert bar.calls == [((2, 3), "indexing mine.txt", "questions"), ((3, 3), "indexing mine.txt", "questions")]


def test_a_search_waiting_for_the_first_corpus_encode_shows_how_far_it_is():
    """The default corpus is encoded on a thread at start; a search meanwhile shows that encode's progress."""
    import threading

    from app_helpers import bag_of_words

    from contrastive.app.index import BackgroundIndex
    from contrastive.search import CorpusIndex

    corpus = ["How do I learn Python?", "How can I lose weight?", "What is AI?", "Why is the sky blue?"]
    reported, release = threading.Event(), threading.Event()

    def build(report):
        report(2, 4)  # half the corpus encoded, then the build waits until the search has shown it
        reported.set()
        release.wait(10)
        return CorpusIndex(corpus, bag_of_words(corpus), "slow corpus")

    eng = engine(corpus)
    eng.index = BackgroundIndex(build, "slow corpus", 4).start()
    assert reported.wait(10)
    bar = RecordedProgress(on_call=release.set)
    table, info = _handlers(build_ui(eng, "# test"))["on_search"]("lose weight", 2, None, bar)
    assert bar.calls[0] == ((2, 4), "encoding the search corpus (first start)", "questions")
    assert table.iloc[0, -1] == "How can I lose weight?" and "slow corpus" in info


@pytest.mark.slow
def test_the_served_page_links_its_api_page_and_types_k_as_an_integer(tmp_path):
    """Seen: README says "Use via API" at the page's foot, but footer_links=["gradio"] had removed the link and
    `?view=api` showed nothing (the page draws it only with the link), and the API typed k as a float. The app's
    own launch options (`launch_options`) are served here."""
    import requests
    from conftest import compose_config
    from gradio_client import Client

    from contrastive.app.server import bound_shutdown, launch_options
    from contrastive.app.settings import load_app

    demo = build_ui(engine(["How do I learn Python?", "How can I lose weight?", "What is AI?"]), "# test")
    port = free_port()
    demo.launch(**launch_options(load_app(compose_config("app")).app, port))
    bound_shutdown(demo, 0.5)
    url = f"http://127.0.0.1:{port}"
    try:
        assert "api" in requests.get(url + "/config", timeout=30).json()["footer_links"]
        info = requests.get(url + "/gradio_api/info", timeout=30).json()["named_endpoints"]
        assert set(info) == {"/compare", "/search", "/dedup"}
        types = {p["parameter_name"]: p["type"]["type"] for p in info["/search"]["parameters"]}
        assert types == {"query": "string", "k": "integer"}
        assert info["/dedup"]["parameters"][2]["type"]["type"] == "number"  # the threshold stays a cosine
        out = Client(url + "/", verbose=False).predict(query="lose weight", k=2, api_name="/search")
        assert len(out["results"]) == 2
    finally:
        demo.close()


def test_examples_fill_the_boxes_in_the_page_without_a_server_round_trip():
    """Seen once under load: Compare 1.5 s after picking an example said "question 1: empty" while the box showed
    the example: gr.Examples fills the boxes through the server, and the Compare click had read them before that
    answer landed. The examples are a js-only event now: the page fills the boxes itself, at the click."""
    import json

    demo = build_ui(engine(), "# test", examples=Examples([["A?", "B?"], ["C?", "D?"]], ["A?"], ["A?\nB?"]))
    config = demo.get_config_file()
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    for elem_id, boxes, samples in (
        ("compare-examples", ["q1", "q2"], [["A?", "B?"], ["C?", "D?"]]),
        ("search-examples", ["query"], [["A?"]]),
        ("dedup-examples", ["dedup-text"], [["A?\nB?"]]),
    ):
        (fill,) = [d for d in config["dependencies"] if (ids[elem_id], "click") in map(tuple, d["targets"])]
        assert not fill["backend_fn"] and fill["outputs"] == [ids[b] for b in boxes]
        assert fill["js"] == f"(i) => {json.dumps(samples)}[i]"

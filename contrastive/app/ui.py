"""The page: HTML/markdown rendering of results and the header, the CSS, and the Gradio Blocks that wire the
Compare, Search and Deduplicate tabs to `Engine` (gradio is imported only when the UI is built)."""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from contrastive.app.checkpoints import Checkpoint, Thresholds
from contrastive.app.engine import Engine, Progress
from contrastive.app.index import Examples
from contrastive.errors import Interrupted, UserError
from contrastive.search import CorpusIndex

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- rendering
def threshold_label(thresholds: Thresholds) -> str:
    """How the thresholds were set, in a word for the page and the console."""
    return "calibrated" if thresholds.calibrated else "uncalibrated"


def render_compare(rows: Sequence[dict[str, Any]], thresholds: Thresholds) -> str:
    """The Compare result as an HTML card: one line per model with cosine, threshold and verdict."""
    lines = []
    for row in rows:
        verdict = "duplicate" if row["duplicate"] else "not duplicate"
        css = "dup" if row["duplicate"] else "nodup"
        lines.append(
            f'<tr class="cmp-row" id="cmp-{row["model"]}" data-cosine="{row["cosine"]:.6f}" data-verdict="{verdict}">'
            f'<td class="cmp-name">{html.escape(row["name"])}</td>'
            f'<td class="cmp-cos">{row["cosine"]:.3f}</td>'
            f'<td class="cmp-thr">&ge; {row["threshold"]:.3f}</td>'
            f'<td><span class="verdict {css}">{verdict}</span></td></tr>'
        )
    note = (
        ""
        if thresholds.calibrated
        else (
            f'<p class="cmp-note">Uncalibrated threshold (app.fallback_threshold): {html.escape(thresholds.note)}.</p>'
        )
    )
    return (
        '<table class="cmp-table"><thead><tr><th>model</th><th>cosine</th><th>duplicate if</th>'
        f"<th>verdict</th></tr></thead><tbody>{''.join(lines)}</tbody></table>{note}"
    )


def marked(cosine: float, threshold: float) -> str:
    """A cosine for a table cell, with ✔ when it is at or above the duplicate threshold."""
    return f"{cosine:.3f} ✔" if cosine >= threshold else f"{cosine:.3f}"


def search_columns(thresholds: Thresholds, with_baseline: bool) -> list[str]:
    """The Search table's headers: rank, each model's cosine (✔ at/above its threshold), the question."""
    cols = ["rank", f"fine-tuned (✔ ≥ {thresholds.finetuned:.3f})"]
    if with_baseline:
        cols.append(f"baseline (✔ ≥ {thresholds.baseline:.3f})")
    return [*cols, "question"]


def search_rows(table: pd.DataFrame, thresholds: Thresholds) -> pd.DataFrame:
    """Engine.search's table for people: marked cosines under each model beside the question."""
    with_baseline = "baseline_cosine" in table
    rows = {"rank": table["rank"], "ft": [marked(c, thresholds.finetuned) for c in table["cosine"]]}
    if with_baseline:
        rows["base"] = [marked(c, thresholds.baseline) for c in table["baseline_cosine"]]
    rows["question"] = table["question"]
    out = pd.DataFrame(rows)
    out.columns = search_columns(thresholds, with_baseline)
    return out


def dedup_columns(cut: float, thresholds: Thresholds, with_baseline: bool) -> list[str]:
    """The Deduplicate table's headers: group, size, question, cosine to the group's first under each model."""
    cols = ["group", "size", "question", f"fine-tuned cosine to first (✔ ≥ {cut:.3f})"]
    if with_baseline:
        cols += [f"baseline cosine to first (✔ ≥ {thresholds.baseline:.3f})", "baseline group"]
    return cols


def dedup_rows(table: pd.DataFrame, cut: float, thresholds: Thresholds) -> pd.DataFrame:
    """Engine.dedup's rows of groups with more than one question, for people: marked cosines per model."""
    with_baseline = "baseline_group" in table
    shown = table[table["size"] > 1]
    rows = {
        "group": shown["group"],
        "size": shown["size"],
        "question": shown["question"],
        "ft": [marked(c, cut) for c in shown["cosine_to_first"]],
    }
    if with_baseline:
        rows["base"] = [marked(c, thresholds.baseline) for c in shown["baseline_cosine_to_first"]]
        rows["base_group"] = shown["baseline_group"]
    out = pd.DataFrame(rows)
    out.columns = dedup_columns(cut, thresholds, with_baseline)
    return out


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as JSON-ready rows (numpy numbers and bools as plain Python)."""
    return json.loads(table.to_json(orient="records"))


def thresholds_json(thresholds: Thresholds) -> dict[str, Any]:
    """The duplicate thresholds for the API: per model, and whether they were calibrated."""
    return {"finetuned": thresholds.finetuned, "baseline": thresholds.baseline, "calibrated": thresholds.calibrated}


def render_search_info(timing: dict[str, Any]) -> str:
    """One line under the results: latency and corpus."""
    return (
        f"**{timing['total_ms']:.1f} ms** (encode {timing['encode_ms']:.1f} ms + search "
        f"{timing['search_ms']:.1f} ms) over **{timing['corpus']:,}** questions — {timing['description']}"
    )


def render_dedup_info(
    texts: Sequence[str],
    groups: Sequence[Sequence[int]],
    threshold: float,
    origin: str,
    baseline: tuple[int, float] | None = None,
) -> str:
    """A summary of a deduplication: how many questions, groups, and questions that are duplicates; with
    `baseline` (its number of distinct groups, its threshold), what the untuned baseline finds."""
    multi = [g for g in groups if len(g) > 1]
    covered = sum(len(g) for g in multi)
    beside = (
        f" The untuned baseline at its threshold {baseline[1]:.3f} finds **{baseline[0]:,} distinct**."
        if baseline
        else ""
    )
    if not multi:
        return f"{len(texts):,} questions from the {origin}: **no duplicates** at cosine ≥ {threshold:.3f}.{beside}"
    return (
        f"{len(texts):,} questions from the {origin} → **{len(groups):,} distinct**; "
        f"**{len(multi):,} group(s)** hold {covered:,} questions at cosine ≥ {threshold:.3f}.{beside} "
        "The table lists the groups with more than one question; the CSV lists every question."
    )


def header_markdown(
    checkpoint: Checkpoint, baseline_name: str, thresholds: Thresholds, fingerprint: str | None, backend: str = "torch"
) -> str:
    """The page header: which checkpoint is served, beside which baseline, on which backend, at which thresholds."""
    lines = ["# Duplicate question finder"]
    if checkpoint.path is None:
        lines.append(
            f"**No fine-tuned checkpoint found** ({html.escape(checkpoint.note)}): serving the untuned "
            f"baseline `{baseline_name}` alone. Train one (`make train`) or pass `checkpoint=DIR`."
        )
    else:
        fp = f" · weights `{fingerprint}`" if fingerprint else ""
        lines.append(
            f"**Serving** `{checkpoint.path}` ({checkpoint.source}){fp}  \n"
            f"**Beside** the untuned baseline `{baseline_name}`"
        )
    if backend != "torch":
        lines.append(f"Encoders on **{backend}** (`model.backend=torch` for the exact fp32 models)")
    m = thresholds.metrics
    if thresholds.calibrated:
        split = m.get("split", "eval")
        line = (
            f"**Duplicate if cosine ≥ {thresholds.finetuned:.3f}** (fine-tuned) / {thresholds.baseline:.3f} "
            f"(baseline): best-F1 thresholds on the {split} split, from `{thresholds.source}`"
        )
        objective = m.get("objective") or {}
        name = objective.get("name") if isinstance(objective, dict) else None
        name = name if isinstance(name, str) else None
        ft, base = (m.get("finetuned") or {}).get(name), (m.get("baseline") or {}).get(name)
        if name and isinstance(ft, (int, float)) and isinstance(base, (int, float)):
            line += f" · {split} {name} {ft:.3f} vs {base:.3f} baseline"
        lines.append(line)
    else:
        lines.append(
            f"**Duplicate if cosine ≥ {thresholds.finetuned:.3f}**: an uncalibrated fallback "
            f"(`app.fallback_threshold`) — {html.escape(thresholds.note)}"
        )
    if thresholds.calibrated and thresholds.note:
        lines.append(f"_{html.escape(thresholds.note)}_")
    return "\n\n".join(lines)


CSS = """
#header p {margin: .2rem 0}
.cmp-table {width: 100%; border-collapse: collapse; font-size: 1.05rem; margin-top: .25rem; border: none !important}
.cmp-table tr {border: none !important}
.cmp-table th, .cmp-table td {border: none !important; border-bottom: 1px solid var(--border-color-primary) !important;
                              padding: .55rem .75rem; text-align: left; background: none}
.cmp-table th {font-weight: 600; opacity: .7; font-size: .9rem}
.cmp-table .cmp-name {width: 45%}
.cmp-cos {font-variant-numeric: tabular-nums; font-weight: 700; font-size: 1.25rem}
.cmp-thr {font-variant-numeric: tabular-nums; opacity: .8}
.verdict {padding: .2rem .75rem; border-radius: 999px; font-weight: 600; white-space: nowrap}
.verdict.dup {background: #dcfce7; color: #166534}
.verdict.nodup {background: #fee2e2; color: #991b1b}
.cmp-note {margin-top: .5rem; color: #92400e}
"""


# ---------------------------------------------------------------- the UI
def public_message(text: str) -> str:
    """`text` without server paths: an absolute path (an upload's temp copy, a cache file) becomes its file name."""
    return re.sub(r"(?<![\w.:/])/(?:[^\s/:'\"]+/)+([^\s/:'\"]+)", r"\1", text)


class InFlight:
    """How many requests are being handled now, so the shutdown can wait for them: a SIGTERM stops a running encode
    at its next batch (contrastive.stop), and a process that exits with a thread still inside the model aborts
    ("terminate called without an active exception", SIGABRT)."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Counts the request handled inside."""
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for no request to be running; whether none is."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)


in_flight = InFlight()  # every handler of the page and the API (through _ui_errors)


def _ui_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into a Gradio error toast with its one-line message (server paths left out); anything
    else is logged here and the page gets a generic line, never internal error text. The request is counted in
    `in_flight`; one stopped by a SIGTERM (Interrupted) tells its client that the app is stopping."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with in_flight.request():
                return fn(*args, **kwargs)
        except Interrupted:
            raise gr.Error("the app is stopping; try again once it is back", print_exception=False) from None
        except UserError as exc:
            raise gr.Error(public_message(str(exc)), title="Input problem", print_exception=False) from None
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - a bug or an unforeseen input: the details stay in the server log
            log.exception("app request failed")
            raise gr.Error("the request failed on the server (details in its log)", print_exception=False) from None

    return wrapper


def _shown(value: Any, limit: int = 40) -> str:
    """A request value as a message may show it: its repr, cut short; an object without a useful repr by type."""
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def guard_inputs(demo: Any) -> int:
    """Every number, slider and text box of `demo` refuses a value it cannot take (a text for a number, a missing
    argument, a number out of range) with a one-line toast naming the field, logged as one line: Gradio's own
    message holds exception text and object reprs, and its log a traceback per rejected value. How many guarded."""
    import gradio as gr

    kinds = (gr.Slider, gr.Number, gr.Textbox)
    guarded = 0
    for block in list(demo.blocks.values()):
        if not isinstance(block, kinds) or getattr(block, "_guarded", False):
            continue
        name = block.label or block.elem_id or type(block).__name__.lower()
        text = isinstance(block, gr.Textbox)

        def preprocess(
            payload: Any, inner: Callable[[Any], Any] = block.preprocess, name: str = name, text: bool = text
        ):
            if text:
                ok = payload is None or isinstance(payload, str)
            else:
                ok = payload is None or (isinstance(payload, (int, float)) and not isinstance(payload, bool))
            why = "missing, or not text" if text else "must be a number"
            try:
                if ok:
                    return inner(payload)
            except gr.Error as exc:
                why = str(exc.message)
            except Exception:  # noqa: BLE001 - Gradio's own check failed on the value: said in one line below
                pass
            log.info("rejected %s: got %s; %s", name, _shown(payload), why)
            raise gr.Error(f"{name}: got {_shown(payload)}; {why}", title="Input problem", print_exception=False)

        block.preprocess = preprocess
        block._guarded = True
        guarded += 1
    return guarded


CSV_PREFIX = "contrastive-dedup-"
_csv_dirs: set[Path] = set()  # download directories this process made: removed at shutdown (remove_csv_dirs)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell starting with these as a formula


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading quote (OWASP's CSV injection advice)."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def remove_stale_csv_dirs(max_age_s: float = 3600.0) -> int:
    """Delete earlier downloads' temporary directories older than `max_age_s`; how many went."""
    now, removed = time.time(), 0
    for folder in Path(tempfile.gettempdir()).glob(CSV_PREFIX + "*"):
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


def remove_csv_dirs() -> int:
    """Delete every download directory this process made (the app's shutdown); how many went."""
    removed = 0
    for folder in list(_csv_dirs):
        shutil.rmtree(folder, ignore_errors=True)
        _csv_dirs.discard(folder)
        removed += 1
    return removed


def write_csv(table: pd.DataFrame, name: str = "duplicate_groups.csv", max_age_s: float = 3600.0) -> str:
    """Write a table, formula-safe, to a fresh temporary directory (served by Gradio from the system temp dir);
    earlier downloads' directories older than `max_age_s` are removed first."""
    remove_stale_csv_dirs(max_age_s)
    folder = Path(tempfile.mkdtemp(prefix=CSV_PREFIX))
    _csv_dirs.add(folder)
    path = folder / name
    table.map(spreadsheet_safe).to_csv(path, index=False)
    return str(path)


def progress_bar(progress: Any) -> Progress:
    """The Engine's progress reports as a Gradio progress bar (`gr.Progress`): what, and done / total questions."""
    return lambda done, total, what: progress((done, total), desc=what, unit="questions")


def example_picker(samples: Sequence[Sequence[str]], inputs: Sequence[Any], label: str, elem_id: str) -> Any:
    """Clickable examples that fill `inputs` in the browser, with no round trip to the server (a js-only event).

    gr.Examples fills the boxes through a server request; under CPU load that answer can land after the user has
    already clicked the tab's button, whose request then carries the boxes' old, empty values ("question 1: empty"
    with the example shown a moment later). Filled in the page itself, the boxes hold the example before any
    later click can read them."""
    import gradio as gr

    rows = [list(map(str, sample)) for sample in samples]
    dataset = gr.Dataset(
        components=list(inputs), samples=rows, label=label, elem_id=elem_id, samples_per_page=max(len(rows), 1)
    )
    dataset.click(None, dataset, list(inputs), js=f"(i) => {json.dumps(rows)}[i]", queue=False)
    return dataset


def build_ui(
    engine: Engine, header: str, title: str = "contrastive: duplicate questions", examples: Examples | None = None
):
    """The Gradio Blocks: header, then the Compare, Search and Deduplicate tabs (HTML and tables for people),
    and the JSON API endpoints /compare, /search and /dedup (numbers, not HTML; /dedup also returns the CSV)."""
    import gradio as gr

    thr = engine.thresholds
    thr_label = threshold_label(thr)
    shown = examples or Examples()
    with_baseline = engine.embed_baseline is not None
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(header, elem_id="header")
        with gr.Tab("Compare", id="compare"):
            gr.Markdown(
                "Are two questions asking the same thing? Cosine similarity of their embeddings, under "
                "the served model and the untuned baseline, against each model's threshold."
            )
            with gr.Row():
                q1 = gr.Textbox(
                    label="Question 1", lines=2, max_lines=5, elem_id="q1", placeholder="How do I learn Python quickly?"
                )
                q2 = gr.Textbox(
                    label="Question 2",
                    lines=2,
                    max_lines=5,
                    elem_id="q2",
                    placeholder="What is the fastest way to learn Python?",
                )
            compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            compare_out = gr.HTML(elem_id="compare-result", min_height=40)
            if shown.pairs:
                example_picker(
                    shown.pairs,
                    [q1, q2],
                    "Pairs from the data (labelled duplicates first, then non-duplicates): click one",
                    "compare-examples",
                )

            @_ui_errors
            def on_compare(a: str, b: str) -> str:
                return render_compare(engine.compare(a, b), thr)

            gr.on(
                [compare_btn.click, q2.submit],
                on_compare,
                [q1, q2],
                compare_out,
                api_name="compare_html",
                api_visibility="undocumented",
            )

            @_ui_errors
            def api_compare(question1: str, question2: str) -> dict[str, Any]:
                rows = engine.compare(question1, question2)
                pair = {"question1": question1, "question2": question2}
                return {**pair, "models": rows, "thresholds": thresholds_json(thr)}

            compare_json = gr.JSON(label="comparison", visible=False)
            gr.Button(visible=False).click(
                api_compare,
                [q1, q2],
                compare_json,
                api_name="compare",
                api_description="Cosine, threshold and duplicate verdict of two questions under each model.",
            )

        with gr.Tab("Search", id="search"):
            size = f"{engine.index.size:,} questions" if engine.index.size else "no default corpus"
            corpus_md = gr.Markdown(f"Corpus: **{engine.index.description}** ({size}).", elem_id="corpus-info")
            uploaded = gr.State(None)
            with gr.Row():
                query = gr.Textbox(
                    label="Question", scale=4, elem_id="query", placeholder="How can I lose weight fast?"
                )
                k = gr.Slider(  # precision 0: an int in the handler and "integer" in the API's schema
                    1,
                    engine.max_top_k,
                    value=engine.top_k,
                    step=1,
                    precision=0,
                    label="number of results",
                    scale=1,
                    elem_id="top-k",
                )
            search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
            if shown.queries:
                example_picker(
                    [[q] for q in shown.queries],
                    [query],
                    "Questions from the data (each has a labelled duplicate in the corpus): click one",
                    "search-examples",
                )
            with gr.Accordion(
                "Search your own questions instead (a CSV with a 'question' column, or a TXT "
                "with one question per line)",
                open=False,
            ):
                corpus_file = gr.File(
                    label="Your corpus (.csv / .txt)", file_types=[".csv", ".txt"], elem_id="corpus-file"
                )
            search_info = gr.Markdown(elem_id="search-info")
            headers = search_columns(thr, with_baseline)
            results = gr.Dataframe(
                headers=headers,
                datatype=["number"] + ["str"] * (len(headers) - 1),
                column_widths=["7%", "13%", "13%", "67%"] if with_baseline else ["8%", "14%", "78%"],
                wrap=True,
                interactive=False,
                elem_id="search-results",
                label="Most similar questions: the fine-tuned model's ranking, each hit's cosine under both models",
            )

            @_ui_errors
            def on_search(
                text: str, top: int, corpus: CorpusIndex | None, progress: Any = gr.Progress()
            ) -> tuple[pd.DataFrame, str]:
                if corpus is None and not engine.index.ready:
                    gr.Info(
                        f"Encoding the corpus ({engine.index.size or 0:,} questions) for the first time; "
                        "the search runs as soon as it is ready."
                    )
                table, timing = engine.search(text, top, corpus, progress_bar(progress))
                return search_rows(table, thr), render_search_info(timing)

            @_ui_errors
            def on_upload(path: str | None, progress: Any = gr.Progress()) -> tuple[CorpusIndex | None, str]:
                if not path:
                    return None, f"Corpus: **{engine.index.description}** ({size})."
                index = engine.index_upload(path, progress_bar(progress))
                return index, f"Corpus: **{index.description}** ({len(index):,} distinct questions)."

            gr.on(
                [search_btn.click, query.submit],
                on_search,
                [query, k, uploaded],
                [results, search_info],
                api_name="search_table",
                api_visibility="undocumented",
            )
            corpus_file.change(on_upload, corpus_file, [uploaded, corpus_md], api_name=False)

            @_ui_errors
            def api_search(query: str, k: int, progress: Any = gr.Progress()) -> dict[str, Any]:
                table, timing = engine.search(query, k, progress=progress_bar(progress))
                return {"query": query, "results": records(table), "thresholds": thresholds_json(thr), "timing": timing}

            search_json = gr.JSON(label="search results", visible=False)
            gr.Button(visible=False).click(
                api_search,
                [query, k],
                search_json,
                api_name="search",
                api_description="Top-k corpus questions with each model's cosine and at-threshold flags, and timings.",
            )

        with gr.Tab("Deduplicate", id="dedup"):
            gr.Markdown(
                f"Paste questions (one per line) or upload a CSV/TXT: questions whose cosine is ≥ the "
                f"threshold are linked, and linked questions form a group (up to "
                f"{engine.limits.max_questions:,} questions)."
            )
            with gr.Row():
                pasted = gr.Textbox(
                    label="Questions, one per line", lines=8, max_lines=20, scale=3, elem_id="dedup-text"
                )
                with gr.Column(scale=1):
                    dedup_file = gr.File(
                        label="…or a file (.csv / .txt)", file_types=[".csv", ".txt"], height=150, elem_id="dedup-file"
                    )
                    low = min(0.5, math.floor(thr.finetuned * 10) / 10)  # keep the default on the slider
                    threshold = gr.Slider(
                        low,
                        1.0,
                        value=round(thr.finetuned, 3),
                        step=0.005,
                        label=f"cosine threshold ({thr_label} {thr.finetuned:.3f})",
                        elem_id="dedup-threshold",
                    )
            dedup_btn = gr.Button("Find duplicate groups", variant="primary", elem_id="dedup-btn")
            if shown.lists:
                example_picker(
                    [[text] for text in shown.lists],
                    [pasted],
                    "A list from the data (two labelled duplicate pairs, two other questions): click it",
                    "dedup-examples",
                )
            dedup_info = gr.Markdown(elem_id="dedup-info")
            headers = dedup_columns(thr.finetuned, thr, with_baseline)
            groups_out = gr.Dataframe(
                headers=headers,
                datatype=["number", "number"] + ["str"] * (len(headers) - 2),
                column_widths=["7%", "7%", "50%", "14%", "14%", "8%"] if with_baseline else ["8%", "8%", "70%", "14%"],
                wrap=True,
                interactive=False,
                elem_id="dedup-groups",
                label="Groups of duplicates (fine-tuned model at the threshold), with the baseline's view of each row",
            )
            download = gr.DownloadButton("Download CSV (every question)", visible=False, elem_id="dedup-download")

            def deduplicate(text: str, path: str | None, cut: float, progress: Any) -> tuple[pd.DataFrame, str]:
                texts, origin = engine.questions_from(text, path)
                table, groups = engine.dedup(texts, cut, progress_bar(progress))
                beside = (int(table["baseline_group"].max()), thr.baseline) if "baseline_group" in table else None
                info = render_dedup_info(texts, groups, float(cut), origin, beside)
                if with_baseline and beside is None:
                    info += (
                        f" The untuned baseline's columns are left out above {engine.baseline_max_questions:,} "
                        "questions (they need a second encode)."
                    )
                return table, info

            @_ui_errors
            def on_dedup(text: str, path: str | None, cut: float, progress: Any = gr.Progress()):
                table, info = deduplicate(text, path, cut, progress)
                return info, dedup_rows(table, float(cut), thr), gr.DownloadButton(value=write_csv(table), visible=True)

            dedup_btn.click(
                on_dedup,
                [pasted, dedup_file, threshold],
                [dedup_info, groups_out, download],
                api_name="dedup_table",
                api_visibility="undocumented",
            )

            @_ui_errors
            def api_dedup(
                questions: str, file: str | None, threshold: float, progress: Any = gr.Progress()
            ) -> tuple[dict[str, Any], str]:
                table, _ = deduplicate(questions, file, threshold, progress)
                summary = {
                    "questions": len(table),
                    "groups": int(table["group"].max()) if len(table) else 0,
                    "threshold": float(threshold),
                    "baseline_threshold": thr.baseline if with_baseline else None,
                    "rows": records(table.drop(columns="representative")),
                }
                return summary, write_csv(table)

            dedup_json = gr.JSON(label="duplicate groups", visible=False)
            dedup_csv = gr.File(label="duplicate groups csv", visible=False)
            gr.Button(visible=False).click(
                api_dedup,
                [pasted, dedup_file, threshold],
                [dedup_json, dedup_csv],
                api_name="dedup",
                api_description="Groups of duplicates at the threshold, each question's row (both models) and the CSV.",
            )
    guard_inputs(demo)
    return demo

"""The Gradio app: `python -m contrastive.app` serves the best checkpoint beside the untuned baseline.

Tabs: Compare (two questions -> cosine and a duplicate verdict at the calibrated threshold), Search (top-k
similar questions of an indexed corpus) and Deduplicate (groups of duplicates in a list). Everything a tab
does is a method of `Engine`, testable without a browser or a model; `build_ui` only wires components.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from contrastive.errors import ConfigError, DataError, ModelError, UserError
from contrastive.search import (
    CorpusIndex,
    Limits,
    check_question,
    check_questions,
    corpus_fingerprint,
    duplicate_groups,
    groups_table,
    read_questions_file,
    unique_questions,
)
from contrastive.settings import AppSettings, load_app

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, d) float32, L2-normalized rows
MODEL_MARKERS = ("modules.json", "config_sentence_transformers.json", "model.safetensors")


# ---------------------------------------------------------------- which checkpoint
@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint the app serves: a model directory, or None when only the untuned baseline exists."""

    path: str | None
    source: str  # checkpoint | sweep best | latest run | none
    note: str = ""


def is_model_dir(path: str | os.PathLike) -> bool:
    """True for a saved SentenceTransformer directory."""
    directory = Path(path)
    return directory.is_dir() and any((directory / name).is_file() for name in MODEL_MARKERS)


def _model_dir_in(path: Path) -> Path | None:
    """The model directory at `path` or in its `model/` subdirectory (a promoted run dir)."""
    for candidate in (path, path / "model"):
        if is_model_dir(candidate):
            return candidate
    return None


def _newest(paths: Sequence[Path]) -> Path | None:
    return max(paths, key=lambda p: (p.stat().st_mtime, str(p)), default=None)


def find_checkpoint(model: str | None, output_root: str | os.PathLike) -> Checkpoint:
    """`checkpoint` if given; else the newest `outputs/sweeps/*/best`; else the newest `outputs/runs/**/model`;
    else no checkpoint (the app then serves the untuned baseline alone and says so)."""
    if model not in (None, ""):
        from contrastive.model import resolve_model

        try:
            resolved = resolve_model(str(model))
        except ModelError as exc:
            raise ConfigError(f"checkpoint={model!r}: {str(exc).split(': ', 1)[-1]}") from None
        directory = _model_dir_in(Path(resolved)) if Path(resolved).is_dir() else None
        if Path(resolved).is_dir() and directory is None:
            raise ConfigError(f"checkpoint={model!r}: not a SentenceTransformer directory (no modules.json)")
        return Checkpoint(str(directory or resolved), "checkpoint")
    root = Path(output_root)
    bests = [d for p in sorted(root.glob("sweeps/*/best")) if (d := _model_dir_in(p)) is not None]
    if best := _newest(bests):
        return Checkpoint(str(best), "latest promoted sweep best")
    runs = [p for p in sorted(root.glob("runs/**/model")) if is_model_dir(p)]
    if run := _newest(runs):
        return Checkpoint(str(run), "newest training run")
    return Checkpoint(None, "none", f"no checkpoint under {root}/sweeps/*/best or {root}/runs/**/model")


# ---------------------------------------------------------------- which thresholds
@dataclass(frozen=True)
class Thresholds:
    """Cosine thresholds for a duplicate verdict, per model, and where they came from."""

    finetuned: float
    baseline: float
    calibrated: bool
    source: str | None = None  # the metrics.json read, if any
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)


def find_metrics(model_dir: str | os.PathLike | None) -> Path | None:
    """metrics.json in the model directory, else in its parent (the run directory)."""
    if not model_dir:
        return None
    directory = Path(model_dir)
    for candidate in (directory / "metrics.json", directory.parent / "metrics.json"):
        if candidate.is_file():
            return candidate
    return None


def _threshold(metrics: dict[str, Any], side: str) -> float | None:
    value = (metrics.get(side) or {}).get("pair_threshold") if isinstance(metrics.get(side), dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def load_thresholds(model_dir: str | os.PathLike | None, fallback: float) -> Thresholds:
    """`finetuned.pair_threshold` and `baseline.pair_threshold` from the checkpoint's metrics.json (best-F1 on
    the eval split); the configured fallback, marked uncalibrated, where a file or a value is missing."""
    path = find_metrics(model_dir)
    if path is None:
        why = "no checkpoint" if not model_dir else f"no metrics.json in {model_dir} or its parent"
        return Thresholds(fallback, fallback, False, None, why)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return Thresholds(fallback, fallback, False, str(path), f"{path} unreadable ({exc})")
    finetuned, baseline = _threshold(metrics, "finetuned"), _threshold(metrics, "baseline")
    if finetuned is None:
        return Thresholds(
            fallback,
            baseline if baseline is not None else fallback,
            False,
            str(path),
            f"{path} has no finetuned.pair_threshold",
            metrics,
        )
    note = "" if baseline is not None else f"{path} has no baseline.pair_threshold (the baseline uses the fallback)"
    return Thresholds(finetuned, baseline if baseline is not None else fallback, True, str(path), note, metrics)


# ---------------------------------------------------------------- the default corpus, indexed in the background
class BackgroundIndex:
    """A CorpusIndex built on a thread at start-up, so the page is up while the corpus is encoded."""

    def __init__(self, build: Callable[[], CorpusIndex], description: str, size: int | None) -> None:
        self.description = description
        self.size = size
        self._build = build
        self._ready = threading.Event()
        self._index: CorpusIndex | None = None
        self._error: str | None = None
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="corpus-index", daemon=True)

    @classmethod
    def failed(cls, message: str) -> BackgroundIndex:
        """An index that reports `message` on use (e.g. the data could not be loaded)."""
        index = cls(lambda: CorpusIndex([], np.zeros((0, 1), np.float32)), "no default corpus", None)
        index._error = message
        index._ready.set()
        return index

    def start(self) -> BackgroundIndex:
        if not self._ready.is_set():
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._index = self._build()
        except Exception as exc:  # noqa: BLE001 - shown to the user, logged with its traceback
            log.exception("building the search index failed")
            self._error = f"building the search index failed: {exc}"
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def get(self, timeout: float | None = None) -> CorpusIndex:
        """The index, waiting up to `timeout` seconds for the build; a DataError if it failed or is not ready."""
        if not self._ready.wait(timeout):
            raise DataError(f"the search index ({self.size:,} questions) is still being built; try again shortly")
        if self._error:
            raise DataError(self._error)
        assert self._index is not None
        return self._index


# ---------------------------------------------------------------- what the tabs do
@dataclass
class Engine:
    """The app's logic: embeddings in, tables and verdicts out; the UI calls only these methods."""

    embed: Embed  # the served checkpoint
    embed_baseline: Embed | None  # the untuned baseline; None when the served model *is* the baseline
    thresholds: Thresholds
    limits: Limits
    index: BackgroundIndex
    top_k: int = 10
    max_top_k: int = 50
    chunk_size: int = 1024
    index_wait_s: float = 600.0
    names: dict[str, str] = field(default_factory=lambda: {"finetuned": "fine-tuned", "baseline": "baseline"})

    # -- Compare
    def compare(self, q1: str | None, q2: str | None) -> list[dict[str, Any]]:
        """Cosine of the two questions under each model, the threshold and the verdict."""
        a = check_question(q1, self.limits, "question 1")
        b = check_question(q2, self.limits, "question 2")
        rows = []
        sides = [("finetuned", self.embed, self.thresholds.finetuned)]
        if self.embed_baseline is not None:
            sides.append(("baseline", self.embed_baseline, self.thresholds.baseline))
        for side, embed, threshold in sides:
            emb = embed([a, b])
            cosine = float(emb[0] @ emb[1])
            rows.append(
                {
                    "model": side,
                    "name": self.names[side],
                    "cosine": cosine,
                    "threshold": threshold,
                    "duplicate": cosine >= threshold,
                }
            )
        return rows

    # -- Search
    def index_upload(self, path: str | os.PathLike) -> CorpusIndex:
        """An in-memory index of an uploaded CSV/TXT of questions (repeats removed)."""
        texts = unique_questions(read_questions_file(path, self.limits))
        return CorpusIndex(texts, self.embed(texts), f"upload {Path(path).name}")

    def search(
        self, query: str | None, k: int | float | None, corpus: CorpusIndex | None = None
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Top-k corpus questions for a query with cosine scores, and timings in ms."""
        text = check_question(query, self.limits, "query")
        k = int(k or self.top_k)
        if not 1 <= k <= self.max_top_k:
            raise DataError(f"k: {k} results asked for, choose 1 to {self.max_top_k}")
        index = corpus if corpus is not None else self.index.get(self.index_wait_s)
        if not len(index):
            raise DataError("the search corpus is empty")
        t0 = time.perf_counter()
        query_emb = self.embed([text])
        t1 = time.perf_counter()
        hits = index.search(query_emb, k)[0]
        t2 = time.perf_counter()
        table = pd.DataFrame(
            [
                {"rank": rank, "cosine": round(score, 4), "question": index.texts[i]}
                for rank, (i, score) in enumerate(hits, 1)
            ],
            columns=["rank", "cosine", "question"],
        )
        timing = {
            "encode_ms": (t1 - t0) * 1e3,
            "search_ms": (t2 - t1) * 1e3,
            "total_ms": (t2 - t0) * 1e3,
            "corpus": len(index),
            "description": index.description,
        }
        return table, timing

    # -- Deduplicate
    def questions_from(self, text: str | None, path: str | os.PathLike | None) -> tuple[list[str], str]:
        """The list to deduplicate: the uploaded file if any, else the pasted lines."""
        if path:
            return read_questions_file(path, self.limits), f"upload {Path(path).name}"
        return check_questions((text or "").splitlines(), self.limits, "pasted list"), "pasted list"

    def dedup(self, texts: Sequence[str], threshold: float | None = None) -> tuple[pd.DataFrame, list[list[int]]]:
        """Groups of duplicates (connected components of pairs with cosine >= threshold), one row per question."""
        threshold = self.thresholds.finetuned if threshold is None else float(threshold)
        if not -1.0 <= threshold <= 1.0:
            raise DataError(f"threshold: {threshold} is not a cosine in [-1, 1]")
        emb = self.embed(list(texts))
        groups = duplicate_groups(emb, threshold, self.chunk_size)
        return groups_table(texts, groups, emb), groups


# ---------------------------------------------------------------- rendering
def _fmt_threshold(thresholds: Thresholds) -> str:
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


def render_search_info(timing: dict[str, Any]) -> str:
    """One line under the results: latency and corpus."""
    return (
        f"**{timing['total_ms']:.1f} ms** (encode {timing['encode_ms']:.1f} ms + search "
        f"{timing['search_ms']:.1f} ms) over **{timing['corpus']:,}** questions — {timing['description']}"
    )


def render_dedup_info(texts: Sequence[str], groups: Sequence[Sequence[int]], threshold: float, origin: str) -> str:
    """A summary of a deduplication: how many questions, groups, and questions that are duplicates."""
    multi = [g for g in groups if len(g) > 1]
    covered = sum(len(g) for g in multi)
    if not multi:
        return f"{len(texts):,} questions from the {origin}: **no duplicates** at cosine ≥ {threshold:.3f}."
    return (
        f"{len(texts):,} questions from the {origin} → **{len(groups):,} distinct**; "
        f"**{len(multi):,} group(s)** hold {covered:,} questions at cosine ≥ {threshold:.3f}. "
        "The table lists the groups with more than one question; the CSV lists every question."
    )


def header_markdown(checkpoint: Checkpoint, baseline_name: str, thresholds: Thresholds, fingerprint: str | None) -> str:
    """The page header: which checkpoint is served, beside which baseline, at which thresholds."""
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
def _ui_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into a Gradio error toast with its one-line message."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc), title="Input problem", print_exception=False) from None

    return wrapper


def write_csv(table: pd.DataFrame, name: str = "duplicate_groups.csv") -> str:
    """Write a table to a fresh temporary directory (served by Gradio from the system temp dir)."""
    path = Path(tempfile.mkdtemp(prefix="contrastive-dedup-")) / name
    table.to_csv(path, index=False)
    return str(path)


def build_ui(engine: Engine, header: str, title: str = "contrastive: duplicate questions"):
    """The Gradio Blocks: header, then the Compare, Search and Deduplicate tabs."""
    import gradio as gr

    thr = engine.thresholds
    thr_label = _fmt_threshold(thr)
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

            @_ui_errors
            def on_compare(a: str, b: str) -> str:
                return render_compare(engine.compare(a, b), thr)

            gr.on([compare_btn.click, q2.submit], on_compare, [q1, q2], compare_out, api_name="compare")

        with gr.Tab("Search", id="search"):
            size = f"{engine.index.size:,} questions" if engine.index.size else "no default corpus"
            corpus_md = gr.Markdown(f"Corpus: **{engine.index.description}** ({size}).", elem_id="corpus-info")
            uploaded = gr.State(None)
            with gr.Row():
                query = gr.Textbox(
                    label="Question", scale=4, elem_id="query", placeholder="How can I lose weight fast?"
                )
                k = gr.Slider(
                    1, engine.max_top_k, value=engine.top_k, step=1, label="number of results", scale=1, elem_id="top-k"
                )
            search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
            with gr.Accordion(
                "Search your own questions instead (a CSV with a 'question' column, or a TXT "
                "with one question per line)",
                open=False,
            ):
                corpus_file = gr.File(
                    label="Your corpus (.csv / .txt)", file_types=[".csv", ".txt"], elem_id="corpus-file"
                )
            search_info = gr.Markdown(elem_id="search-info")
            results = gr.Dataframe(
                headers=["rank", "cosine", "question"],
                datatype=["number", "str", "str"],
                column_widths=["8%", "10%", "82%"],
                wrap=True,
                interactive=False,
                elem_id="search-results",
                label="Most similar questions",
            )

            @_ui_errors
            def on_search(text: str, top: float, corpus: CorpusIndex | None) -> tuple[pd.DataFrame, str]:
                if corpus is None and not engine.index.ready:
                    gr.Info(
                        f"Encoding the corpus ({engine.index.size or 0:,} questions) for the first time; "
                        "the search runs as soon as it is ready."
                    )
                table, timing = engine.search(text, top, corpus)
                return table.assign(cosine=table["cosine"].map("{:.3f}".format)), render_search_info(timing)

            @_ui_errors
            def on_upload(path: str | None) -> tuple[CorpusIndex | None, str]:
                if not path:
                    return None, f"Corpus: **{engine.index.description}** ({size})."
                index = engine.index_upload(path)
                return index, f"Corpus: **{index.description}** ({len(index):,} distinct questions)."

            gr.on(
                [search_btn.click, query.submit],
                on_search,
                [query, k, uploaded],
                [results, search_info],
                api_name="search",
            )
            corpus_file.change(on_upload, corpus_file, [uploaded, corpus_md], api_name=False)

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
            dedup_info = gr.Markdown(elem_id="dedup-info")
            groups_out = gr.Dataframe(
                headers=["group", "size", "question", "cosine_to_first"],
                datatype=["number", "number", "str", "str"],
                column_widths=["8%", "8%", "70%", "14%"],
                wrap=True,
                interactive=False,
                elem_id="dedup-groups",
                label="Groups of duplicates",
            )
            download = gr.DownloadButton("Download CSV (every question)", visible=False, elem_id="dedup-download")

            @_ui_errors
            def on_dedup(text: str, path: str | None, cut: float):
                texts, origin = engine.questions_from(text, path)
                table, groups = engine.dedup(texts, cut)
                shown = table[table["size"] > 1][["group", "size", "question", "cosine_to_first"]]
                shown = shown.assign(cosine_to_first=shown["cosine_to_first"].map("{:.3f}".format))
                info = render_dedup_info(texts, groups, float(cut), origin)
                return info, shown, gr.DownloadButton(value=write_csv(table), visible=True)

            dedup_btn.click(
                on_dedup, [pasted, dedup_file, threshold], [dedup_info, groups_out, download], api_name="dedup"
            )
    return demo


# ---------------------------------------------------------------- wiring
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def corpus_texts(settings: AppSettings) -> tuple[list[str], str]:
    """The default search corpus: app.corpus.path, else the questions of data's app.corpus.splits."""
    corpus = settings.app.corpus
    if corpus.path:
        limits = Limits(max_chars=10**6, max_questions=int(corpus.max_questions), max_upload_bytes=1 << 62)
        texts = unique_questions(read_questions_file(corpus.path, limits))
        return texts, f"app.corpus.path {corpus.path}"
    from contrastive.data import prepare

    data = prepare(settings.data)
    names = list(corpus.splits)
    unknown = [s for s in names if s not in data.splits]
    if unknown:
        raise ConfigError(f"app.corpus.splits={names}: no split {unknown[0]!r} (data has {list(data.splits)})")
    keys = sorted(set().union(*(set(data.splits[s]["key1"]) | set(data.splits[s]["key2"]) for s in names)))
    if len(keys) > corpus.max_questions:
        raise ConfigError(
            f"app.corpus.max_questions={corpus.max_questions}: the {'+'.join(names)} splits hold "
            f"{len(keys):,} questions"
        )
    return [data.questions[key] for key in keys], f"{' + '.join(names)} split questions of {data.summary['source']}"


def encoder(model: Any, batch_size: int, progress_from: int = 1000) -> Embed:
    """texts -> normalized float32 embeddings through contrastive.model.encode; a progress bar on the
    console for lists of at least `progress_from` texts (corpus indexing)."""
    from contrastive.model import encode

    def embed(texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = encode(model, texts, batch_size, show_progress=len(texts) >= progress_from)
        return np.asarray(out, dtype=np.float32)

    return embed


def build_index(
    embed: Embed, texts: list[str], description: str, cache_dir: str, model_key: dict[str, Any]
) -> CorpusIndex:
    """Encode the corpus, or read its embeddings from the on-disk cache (written atomically) keyed by the
    model (weights fingerprint, max_seq_length) and the corpus (content fingerprint)."""
    from contrastive.evaluation.cache import cache_path, cached_embeddings

    key = {"split": "app-corpus", **model_key, "corpus": corpus_fingerprint(texts), "n": len(texts)}
    path = cache_path(cache_dir, key)
    started = time.perf_counter()
    log.info("search index: %d questions (%s), cache %s", len(texts), description, path)
    embeddings, hit = cached_embeddings(path, key, len(texts), partial(embed, texts))
    log.info(
        "search index ready: %d questions %s in %.1f s",
        len(texts),
        "read from cache" if hit else "encoded",
        time.perf_counter() - started,
    )
    return CorpusIndex(texts, embeddings, description)


def create_app(cfg: DictConfig):
    """Everything but the server: find and load the models, read thresholds, start indexing, build the UI."""
    from contrastive.model import backend_args, fingerprint, load_model

    settings = load_app(cfg)  # every config check, before any model or data is loaded
    app = settings.app
    checkpoint = find_checkpoint(settings.checkpoint, settings.paths.output_root)
    thresholds = load_thresholds(checkpoint.path, float(app.fallback_threshold))
    baseline_name = str(settings.model.name_or_path)
    device = app.device or None
    print(
        f"serving: {checkpoint.path or baseline_name + ' (untuned baseline; ' + checkpoint.note + ')'}"
        f" [{checkpoint.source}]",
        flush=True,
    )
    print(
        f"thresholds: fine-tuned {thresholds.finetuned:.4f}, baseline {thresholds.baseline:.4f} "
        f"({_fmt_threshold(thresholds)}{': ' + thresholds.note if thresholds.note else ''})",
        flush=True,
    )

    backend = backend_args(settings.model)
    baseline = load_model(baseline_name, settings.model.max_seq_length, device, **backend)
    if checkpoint.path is None:
        served, served_name, embed_baseline = baseline, baseline_name, None
    else:
        served, served_name = load_model(checkpoint.path, None, device, **backend), checkpoint.path
        embed_baseline = encoder(baseline, int(app.batch_size))
    embed = encoder(served, int(app.batch_size))
    served_fp = fingerprint(served_name)
    model_key = {"model": served_fp, "max_seq_length": int(served.max_seq_length), "backend": backend["backend"]}

    limits = Limits(
        int(app.limits.max_chars), int(app.limits.max_questions), int(float(app.limits.max_upload_mb) * 1_000_000)
    )
    try:
        texts, description = corpus_texts(settings)
        index = BackgroundIndex(
            partial(build_index, embed, texts, description, str(app.cache_dir), model_key), description, len(texts)
        ).start()
    except UserError as exc:
        log.warning("no default search corpus: %s", exc)
        print(f"warning: no default search corpus: {exc}", flush=True)
        index = BackgroundIndex.failed(f"no default search corpus ({exc}); upload a CSV/TXT instead")

    names = {
        "finetuned": f"fine-tuned · {Path(checkpoint.path).parent.name + '/' + Path(checkpoint.path).name}"
        if checkpoint.path
        else f"untuned baseline · {baseline_name}",
        "baseline": f"untuned baseline · {baseline_name.rsplit('/', 1)[-1]}",
    }
    engine = Engine(
        embed,
        embed_baseline,
        thresholds,
        limits,
        index,
        int(app.top_k),
        int(app.max_top_k),
        int(app.chunk_size),
        names=names,
    )
    header = header_markdown(checkpoint, baseline_name, thresholds, served_fp if checkpoint.path else None)
    return build_ui(engine, header), engine


def serve(cfg: DictConfig) -> None:
    """Build the app and serve it (blocking) on app.host:app.port, with Gradio's public link only if app.share."""
    import gradio as gr

    demo, _ = create_app(cfg)
    app = cfg.app
    port = int(app.port) if app.port else free_port(app.host)
    print(f"app: http://{app.host}:{port}", flush=True)
    demo.launch(
        server_name=str(app.host),
        server_port=port,
        share=bool(app.share),
        inbrowser=False,
        ssr_mode=False,
        max_file_size=int(float(app.limits.max_upload_mb) * 1_000_000),
        show_error=True,
        quiet=True,
        theme=gr.themes.Soft(),
        css=CSS,
        footer_links=["gradio"],
    )


def main() -> None:
    """`python -m contrastive.app [overrides]`: Hydra composes conf/app.yaml, then the app serves."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from contrastive.cli import hydra_app, user_errors

    @hydra_app("app")
    def _main(cfg: DictConfig) -> None:
        with user_errors():
            serve(cfg)

    _main()


if __name__ == "__main__":
    main()

"""The search index of the default corpus: which questions (a file, or the data's splits), their embeddings
(encoded once, then read from the on-disk cache), built on a thread so the page is up meanwhile."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from contrastive import stop
from contrastive.errors import ConfigError, DataError, Interrupted
from contrastive.search import CorpusIndex, Limits, corpus_fingerprint, read_questions_file, unique_questions

if TYPE_CHECKING:
    from contrastive.app.engine import Embed, Progress, Report
    from contrastive.app.settings import AppCorpus
    from contrastive.settings import DataSettings

log = logging.getLogger("contrastive.app")  # one logger for the whole app package


# ---------------------------------------------------------------- the default corpus
@dataclass(frozen=True)
class Examples:
    """Clickable examples for the page, taken from the data: Compare pairs (duplicates, then not), Search
    queries and Deduplicate lists (newline-joined)."""

    pairs: list[list[str]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)


def pair_examples(pairs: pd.DataFrame, n: int = 3) -> Examples:
    """The first n duplicate and n non-duplicate pairs of labelled question pairs, a query per duplicate pair
    (its partner is in the corpus) and one list mixing two duplicate pairs with two unrelated questions."""
    dup, other = pairs[pairs["label"] == 1].head(n), pairs[pairs["label"] == 0].head(n)
    rows = [[str(a), str(b)] for part in (dup, other) for a, b in zip(part["question1"], part["question2"])]
    mixed = [q for a, b in zip(dup["question1"][:2], dup["question2"][:2]) for q in (a, b)]
    mixed += list(other["question1"][:2])
    return Examples(rows, [str(q) for q in dup["question2"]], ["\n".join(map(str, mixed))] if mixed else [])


def text_examples(texts: list[str], n: int = 3) -> Examples:
    """Examples from a plain list of questions (app.corpus.path): no labelled pairs, a few queries and a list."""
    return Examples([], texts[:n], ["\n".join(texts[: 2 * n])] if texts else [])


def corpus_and_examples(corpus: AppCorpus, data_settings: DataSettings) -> tuple[list[str], str, Examples]:
    """The default search corpus (app.corpus.path, else the questions of data's app.corpus.splits), its
    description and the page's examples drawn from it."""
    if corpus.path:
        limits = Limits(max_chars=10**6, max_questions=int(corpus.max_questions), max_upload_bytes=1 << 62)
        texts = unique_questions(read_questions_file(corpus.path, limits))
        return texts, f"app.corpus.path {corpus.path}", text_examples(texts)
    from contrastive.data import prepare

    data = prepare(data_settings)
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
    description = f"{' + '.join(names)} split questions of {data.summary['source']}"
    examples = pair_examples(pd.concat([data.splits[s] for s in names], ignore_index=True))
    return [data.questions[key] for key in keys], description, examples


def corpus_texts(corpus: AppCorpus, data_settings: DataSettings) -> tuple[list[str], str]:
    """The default search corpus: app.corpus.path, else the questions of data's app.corpus.splits."""
    texts, description, _ = corpus_and_examples(corpus, data_settings)
    return texts, description


def build_index(
    embed: Embed,
    texts: list[str],
    description: str,
    cache_dir: str,
    model_key: dict[str, Any],
    progress: Report | None = None,
) -> CorpusIndex:
    """Encode the corpus (`progress` told per batch), or read its embeddings from the on-disk cache (written
    atomically) keyed by the model (weights fingerprint, max_seq_length) and the corpus (content fingerprint)."""
    from contrastive.evaluation.cache import cache_path, cached_embeddings

    key = {"split": "app-corpus", **model_key, "corpus": corpus_fingerprint(texts), "n": len(texts)}
    path = cache_path(cache_dir, key)
    started = time.perf_counter()
    log.info("search index: %d questions (%s), cache %s", len(texts), description, path)
    embeddings, hit = cached_embeddings(path, key, len(texts), partial(embed, texts, progress))
    log.info(
        "search index ready: %d questions %s in %.1f s",
        len(texts),
        "read from cache" if hit else "encoded",
        time.perf_counter() - started,
    )
    return CorpusIndex(texts, embeddings, description)


# ---------------------------------------------------------------- indexed in the background
class BackgroundIndex:
    """A CorpusIndex built on a thread at start-up, so the page is up while the corpus is encoded; `build` is
    given a Report of its encode batches, which a request waiting for the index shows (`get`)."""

    POLL_S = 0.5  # how often a waiting request's progress is told how far the encode is

    def __init__(self, build: Callable[[Report], CorpusIndex], description: str, size: int | None) -> None:
        self.description = description
        self.size = size
        self.encoded = 0  # questions encoded so far (0 when read from the cache)
        self._build = build
        self._ready = threading.Event()
        self._index: CorpusIndex | None = None
        self._error: str | None = None
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="corpus-index", daemon=True)

    @classmethod
    def failed(cls, message: str) -> BackgroundIndex:
        """An index that reports `message` on use (e.g. the data could not be loaded)."""
        index = cls(lambda _: CorpusIndex([], np.zeros((0, 1), np.float32)), "no default corpus", None)
        index._error = message
        index._ready.set()
        return index

    def start(self) -> BackgroundIndex:
        if not self._ready.is_set():
            self._thread.start()
        return self

    def _advance(self, done: int, total: int) -> None:
        self.encoded = done

    def _run(self) -> None:
        try:
            self._index = self._build(self._advance)
        except Interrupted as exc:  # SIGTERM / Ctrl-C: the encode stopped at a batch (contrastive.stop)
            log.info("building the search index stopped: %s", exc)
            self._error = f"building the search index stopped: {exc}"
        except Exception as exc:  # noqa: BLE001 - shown to the user, logged with its traceback
            log.exception("building the search index failed")
            self._error = f"building the search index failed: {exc}"
        finally:
            self._ready.set()

    def idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the build thread to end (built, failed or stopped); whether it has."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def get(self, timeout: float | None = None, progress: Progress | None = None) -> CorpusIndex:
        """The index, waiting up to `timeout` seconds for the build (telling `progress` how many questions are
        encoded, every POLL_S); a DataError if it failed or is not ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DataError(f"the search index ({self.size:,} questions) is still being built; try again shortly")
            if progress is not None:
                progress(self.encoded, self.size or 0, "encoding the search corpus (first start)")
            self._ready.wait(self.POLL_S if left is None else min(self.POLL_S, left))
            stop.check()  # a SIGTERM ends the wait too
        if self._error:
            raise DataError(self._error)
        assert self._index is not None
        return self._index

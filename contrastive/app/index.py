"""The search index of the default corpus: which questions (a file, or the data's splits), their embeddings
(encoded once, then read from the on-disk cache), built on a thread so the page is up meanwhile."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from contrastive.errors import ConfigError, DataError
from contrastive.search import CorpusIndex, Limits, corpus_fingerprint, read_questions_file, unique_questions

if TYPE_CHECKING:
    from contrastive.app.engine import Embed
    from contrastive.settings import AppCorpus, DataSettings

log = logging.getLogger("contrastive.app")  # one logger for the whole app package


# ---------------------------------------------------------------- the default corpus
def corpus_texts(corpus: AppCorpus, data_settings: DataSettings) -> tuple[list[str], str]:
    """The default search corpus: app.corpus.path, else the questions of data's app.corpus.splits."""
    if corpus.path:
        limits = Limits(max_chars=10**6, max_questions=int(corpus.max_questions), max_upload_bytes=1 << 62)
        texts = unique_questions(read_questions_file(corpus.path, limits))
        return texts, f"app.corpus.path {corpus.path}"
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
    return [data.questions[key] for key in keys], f"{' + '.join(names)} split questions of {data.summary['source']}"


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


# ---------------------------------------------------------------- indexed in the background
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

"""The typed schema of conf/app.yaml (the Gradio app): limits, queue, corpus, the `app` block, and the loader."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, DictConfig

from contrastive.settings import (
    DataSettings,
    ModelSettings,
    PathSettings,
    is_integer,
    load,
    need,
    need_finite,
    need_int,
    register_top,
)


@dataclass
class AppLimits:
    max_chars: int = 1000
    max_questions: int = 5000
    max_upload_mb: float = 5.0
    max_request_mb: float = 6.0  # an HTTP request body over this gets 413 before it is parsed


@dataclass
class AppQueue:
    max_size: int = 64
    concurrency: int = 1


@dataclass
class AppCorpus:
    path: str | None = None
    splits: list[str] | None = field(default_factory=lambda: ["val", "test"])
    max_questions: int = 200000


@dataclass
class AppBlock:
    """conf/app.yaml's `app` block: the server and the search / dedup limits."""

    host: str = "127.0.0.1"
    port: int | None = 7860
    share: bool = False
    device: str | None = None
    batch_size: int = 128
    fallback_threshold: float = 0.8
    top_k: int = 10
    max_top_k: int = 50
    chunk_size: int = 1024
    dedup_baseline_max: int = 1000
    shutdown_grace_s: float = 10.0
    cache_dir: str = MISSING
    corpus: AppCorpus = field(default_factory=AppCorpus)
    queue: AppQueue = field(default_factory=AppQueue)
    limits: AppLimits = field(default_factory=AppLimits)

    def __post_init__(self) -> None:
        port = self.port
        need(port is None or (is_integer(port) and 0 <= port <= 65535), "app.port", port, "must be 0..65535 or null")
        need(bool(self.host), "app.host", self.host, "must be a host name or address")
        need_finite(
            self.fallback_threshold, "app.fallback_threshold", "must be a cosine in [-1, 1]", lambda v: -1 <= v <= 1
        )
        for key, value in (
            ("batch_size", self.batch_size),
            ("top_k", self.top_k),
            ("max_top_k", self.max_top_k),
            ("chunk_size", self.chunk_size),
            ("limits.max_chars", self.limits.max_chars),
            ("limits.max_questions", self.limits.max_questions),
            ("corpus.max_questions", self.corpus.max_questions),
            ("queue.max_size", self.queue.max_size),
            ("queue.concurrency", self.queue.concurrency),
        ):
            need_int(value, f"app.{key}", 1)
        need_int(self.dedup_baseline_max, "app.dedup_baseline_max", 0)
        need_finite(self.shutdown_grace_s, "app.shutdown_grace_s", "must be >= 0", lambda v: v >= 0)
        need(self.top_k <= self.max_top_k, "app.top_k", self.top_k, f"must be <= app.max_top_k ({self.max_top_k})")
        need_finite(self.limits.max_upload_mb, "app.limits.max_upload_mb", "must be > 0", lambda v: v > 0)
        need_finite(
            self.limits.max_request_mb,
            "app.limits.max_request_mb",
            f"must be >= app.limits.max_upload_mb ({self.limits.max_upload_mb})",
            lambda v: v >= self.limits.max_upload_mb,
        )
        splits = self.corpus.splits
        need(
            self.corpus.path is not None or (splits is not None and len(splits) > 0),
            "app.corpus.splits",
            splits,
            "name at least one split, or set app.corpus.path",
        )


@dataclass
class AppSettings:
    """conf/app.yaml: the Gradio app."""

    model: ModelSettings = MISSING
    data: DataSettings = MISSING
    paths: PathSettings = MISSING
    checkpoint: str | None = None  # the served checkpoint; null: the newest promoted or trained one
    app: AppBlock = MISSING


register_top("app", AppSettings)


def load_app(cfg: DictConfig) -> AppSettings:
    """The settings of the app (conf/app.yaml)."""
    return load(cfg, AppSettings)

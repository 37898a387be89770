"""The typed schema of conf/bench.yaml (`make bench`): its `bench` block, section by section, and the loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig

from contrastive.settings import (
    BACKENDS,
    BatchSettings,
    DataSettings,
    EvalSettings,
    LossSettings,
    ModelSettings,
    PathSettings,
    TeacherSettings,
    TrackingSettings,
    TrainerSettings,
    TrainSettings,
    is_integer,
    load,
    need,
    need_choice,
    need_finite,
    need_int,
    ranking_metric_names,
    register_top,
)

BENCH_SECTIONS = ("peak", "train", "encode", "eval_cost", "search", "sweep", "protocol", "teacher")


def need_threads(value: Any, key: str) -> None:
    """A thread setting: null (torch's default), auto or an integer >= 1 (see model.cpu_threads)."""
    need(
        value is None or value == "auto" or (is_integer(value) and value >= 1),
        key,
        value,
        "must be null, auto or an integer >= 1",
    )


@dataclass
class BenchPeak:
    size: int = 1536
    reps: int = 4

    def __post_init__(self) -> None:
        need_int(self.size, "bench.peak.size", 1)
        need_int(self.reps, "bench.peak.reps", 1)


@dataclass
class BenchSubset:
    val_pairs: int = 700

    def __post_init__(self) -> None:
        need_int(self.val_pairs, "bench.subset.val_pairs", 1)


@dataclass
class BenchTrain:
    pairs: int = 2000
    batch_size: int = 64
    steps: int = 5
    warmup_steps: int = 1
    reps: int = 3
    max_timed_s: float | None = 20.0
    threads: Any = None  # null | auto | an integer >= 1
    quality_steps: int = 31

    def __post_init__(self) -> None:
        need_int(self.pairs, "bench.train.pairs", 1)
        need_int(self.batch_size, "bench.train.batch_size", 2)
        need_int(self.steps, "bench.train.steps", 1)
        need_int(self.warmup_steps, "bench.train.warmup_steps", 0)
        need(
            self.steps > max(1, self.warmup_steps),
            "bench.train.steps",
            self.steps,
            f"must be > bench.train.warmup_steps ({self.warmup_steps}) and > 1: the steps after the warm-up are timed",
        )
        need_int(self.reps, "bench.train.reps", 1)
        if self.max_timed_s is not None:
            need_finite(self.max_timed_s, "bench.train.max_timed_s", "must be null or > 0", lambda v: v > 0)
        need_threads(self.threads, "bench.train.threads")
        need_int(self.quality_steps, "bench.train.quality_steps", 1)


@dataclass
class BenchEncode:
    val_pairs: int = 2500
    reps: int = 2
    plain_batch_size: int = 32
    max_mrr_drop: float = 0.002

    def __post_init__(self) -> None:
        need_int(self.val_pairs, "bench.encode.val_pairs", 1)
        need_int(self.reps, "bench.encode.reps", 1)
        need_int(self.plain_batch_size, "bench.encode.plain_batch_size", 1)
        need_finite(self.max_mrr_drop, "bench.encode.max_mrr_drop", "must be >= 0", lambda v: v >= 0)


@dataclass
class BenchEvalCost:
    sizes: list[int] = field(default_factory=lambda: [10000, 50000, 100000])
    dim: int = 384
    query_share: float = 0.34
    pairs_per_question: float = 0.6
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for i, n in enumerate(self.sizes):
            need_int(n, f"bench.eval_cost.sizes[{i}]", 2)
        need_int(self.dim, "bench.eval_cost.dim", 1)
        need_finite(self.query_share, "bench.eval_cost.query_share", "must be in (0, 1]", lambda v: 0 < v <= 1)
        need_finite(self.pairs_per_question, "bench.eval_cost.pairs_per_question", "must be > 0", lambda v: v > 0)
        need_finite(self.timeout_s, "bench.eval_cost.timeout_s", "must be > 0", lambda v: v > 0)


@dataclass
class BenchSearch:
    corpus: int = 100000
    queries: int = 300
    warmup: int = 10
    k: int = 10
    encode_queries: int = 20

    def __post_init__(self) -> None:
        need_int(self.corpus, "bench.search.corpus", 1)
        need_int(self.queries, "bench.search.queries", 1)
        need_int(self.warmup, "bench.search.warmup", 0)
        need_int(self.k, "bench.search.k", 1)
        need(self.k <= self.corpus, "bench.search.k", self.k, f"must be <= bench.search.corpus ({self.corpus})")
        need_int(self.encode_queries, "bench.search.encode_queries", 1)


@dataclass
class BenchSweep:
    trials: int = 8
    steps: int = 6
    eval_every: int = 2
    objective: str = "pair_ap"
    batch_size: int = 32
    val_pairs: int = 150
    final_pairs: int = 600
    lr_low: float = 1.0e-6
    lr_high: float = 1.0e-3
    pruners: list[str] = field(default_factory=lambda: ["median", "percentile"])
    n_startup_trials: int = 2
    threads: Any = None  # null | auto | an integer >= 1

    def __post_init__(self) -> None:
        from contrastive import CONF_DIR

        need_int(self.trials, "bench.sweep.trials", 1)
        need_int(self.steps, "bench.sweep.steps", 1)
        need_int(self.eval_every, "bench.sweep.eval_every", 1)
        need_int(self.batch_size, "bench.sweep.batch_size", 2)
        need_int(self.val_pairs, "bench.sweep.val_pairs", 1)
        need_int(self.final_pairs, "bench.sweep.final_pairs", int(self.val_pairs))
        need_finite(self.lr_low, "bench.sweep.lr_low", "must be > 0", lambda v: v > 0)
        need_finite(
            self.lr_high,
            "bench.sweep.lr_high",
            f"must be >= bench.sweep.lr_low ({self.lr_low})",
            lambda v: v >= self.lr_low,
        )
        pruner_dir = CONF_DIR / "hydra" / "sweeper" / "pruner"
        known = tuple(sorted(p.stem for p in pruner_dir.glob("*.yaml")))
        for name in self.pruners:
            need_choice(name, "bench.sweep.pruners", known)
            need(name != "none", "bench.sweep.pruners", name, "the unpruned sweep always runs; name pruners only")
        need(len(set(self.pruners)) == len(self.pruners), "bench.sweep.pruners", list(self.pruners), "names repeat")
        need_int(self.n_startup_trials, "bench.sweep.n_startup_trials", 0)
        need_threads(self.threads, "bench.sweep.threads")


@dataclass
class BenchProtocol:
    split: str = "test"
    max_distractors: int | None = None
    dedup_questions: int = 5000
    dedup_backends: list[str] = field(default_factory=lambda: ["torch", "onnx-int8"])

    def __post_init__(self) -> None:
        need_choice(self.split, "bench.protocol.split", ("val", "test"))
        need_int(self.max_distractors, "bench.protocol.max_distractors", 1, nullable=True)
        need_int(self.dedup_questions, "bench.protocol.dedup_questions", 2)
        for name in self.dedup_backends:
            need_choice(name, "bench.protocol.dedup_backends", BACKENDS)


@dataclass
class BenchTeacher:
    train_pairs: int = 640
    score_pairs: int = 2000

    def __post_init__(self) -> None:
        need_int(self.train_pairs, "bench.teacher.train_pairs", 2)
        need_int(self.score_pairs, "bench.teacher.score_pairs", 2)


@dataclass
class BenchBlock:
    """conf/bench.yaml's `bench` block: which sections run, and the sizes of each."""

    output: str = MISSING
    sections: list[str] = field(default_factory=lambda: list(BENCH_SECTIONS))
    fixture_path: str = MISSING
    seed: int = 0
    peak: BenchPeak = field(default_factory=BenchPeak)
    subset: BenchSubset = field(default_factory=BenchSubset)
    train: BenchTrain = field(default_factory=BenchTrain)
    encode: BenchEncode = field(default_factory=BenchEncode)
    eval_cost: BenchEvalCost = field(default_factory=BenchEvalCost)
    search: BenchSearch = field(default_factory=BenchSearch)
    sweep: BenchSweep = field(default_factory=BenchSweep)
    protocol: BenchProtocol = field(default_factory=BenchProtocol)
    teacher: BenchTeacher = field(default_factory=BenchTeacher)

    def __post_init__(self) -> None:
        for name in self.sections:
            need_choice(name, "bench.sections", BENCH_SECTIONS)
        need(len(set(self.sections)) == len(self.sections), "bench.sections", list(self.sections), "names repeat")
        need_int(self.seed, "bench.seed")


@dataclass
class BenchSettings:
    """conf/bench.yaml: `make bench` (the training groups it times, the eval protocol it scores with)."""

    model: ModelSettings = MISSING
    data: DataSettings = MISSING
    loss: LossSettings = MISSING
    batch: BatchSettings = MISSING
    trainer: TrainerSettings = MISSING
    eval: EvalSettings = MISSING
    tracking: TrackingSettings = MISSING
    paths: PathSettings = MISSING
    teacher: TeacherSettings = MISSING
    bench: BenchBlock = MISSING

    def __post_init__(self) -> None:
        objective = self.bench.sweep.objective
        choices = ranking_metric_names(self.eval.k, self.eval.map_k) + ("pair_ap",)
        need_choice(objective, "bench.sweep.objective", choices)

    def training(self) -> TrainSettings:
        """The training groups of the bench as the settings of one training run (nothing saved, nothing logged)."""
        return TrainSettings(
            model=self.model,
            data=self.data,
            loss=self.loss,
            batch=self.batch,
            trainer=self.trainer,
            eval=self.eval,
            tracking=self.tracking,
            paths=self.paths,
            teacher=self.teacher,
            save_model=False,
        )


register_top("bench", BenchSettings)


def load_bench(cfg: DictConfig) -> BenchSettings:
    """The settings of `make bench` (conf/bench.yaml)."""
    return load(cfg, BenchSettings)

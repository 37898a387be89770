"""The typed settings schema: one dataclass per config group, registered in Hydra's ConfigStore.

Each YAML file under conf/ names its group's schema first in its defaults list (e.g. `- /schema/loss@_here_`), so
Hydra checks types while composing (`loss.aux_weight=abc` fails there, before any work) and the YAML keeps
the defaults and their comments. `load_settings(cfg)` turns a composed config into these dataclasses; their
`__post_init__` runs every range and choice check, each a one-line `ConfigError` naming the key and the value.
Every entry point calls its loader first, before any data is read or any model loaded.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from contrastive.cli import config_error_line
from contrastive.errors import ConfigError

SPLITS = ("train", "val", "test")
SAMPLERS = ("component", "no_duplicates", "random")
AUX_LOSSES = ("cosine", "cosent", "online_contrastive", "margin_mse")
AUX_LABELS = ("gold", "teacher")
INTERLEAVE = ("proportional", "round_robin")
COMBINE = ("alternate", "joint")
BACKENDS = ("torch", "onnx", "onnx-int8")
DATA_SOURCES = ("auto", "local", "hub")
DATA_FORMATS = ("parquet", "csv", "tsv", "jsonl")
ON_EMPTY = ("drop", "error")
GROUP_BY = ("duplicates", "all_pairs")
PAIR_METRICS = ("pair_ap", "pair_best_f1", "pair_threshold", "pair_accuracy")
NEGATIVES = ("labeled", "mined", "both")
TEACHER_ORDERS = ("both", "random", "given")


# ---------------------------------------------------------------- checks
def need(ok: bool, key: str, value: Any, why: str) -> None:
    """Raise `ConfigError('<key>=<value>: <why>')` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def is_number(value: Any) -> bool:
    """A real number (bools are not), finite or not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def need_choice(value: Any, key: str, choices: tuple[str, ...]) -> None:
    need(value in choices, key, value, f"choose one of {', '.join(choices)}")


def need_int(value: Any, key: str, low: int | None = None, nullable: bool = False) -> None:
    """An integer (>= low when given), or None when `nullable`."""
    if nullable and value is None:
        return
    why = ("must be null or an integer" if nullable else "must be an integer") + (
        f" >= {low}" if low is not None else ""
    )
    need(is_integer(value) and (low is None or value >= low), key, value, why)


FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32: torch computes losses and weights in float32


def need_finite(value: Any, key: str, why: str, ok: Any = lambda v: True) -> None:
    """A number finite in float32 (1e39 is finite in Python, inf in torch) for which `ok(value)` holds."""
    need(is_number(value) and math.isfinite(value) and ok(value), key, value, why)
    need(abs(value) <= FLOAT32_MAX, key, value, f"{why}; beyond float32's range (|x| <= 3.4e38): inf in torch")


MAX_ALPHA = 2.0  # weight interpolation / task-vector scale: past 1 extrapolates along the fine-tuning direction


def need_alpha(value: Any, key: str, why: str = f"must be a number in [0, {MAX_ALPHA:g}]") -> None:
    """A weight-interpolation alpha: a finite number in [0, MAX_ALPHA] (> 1: extrapolation past the tuned model)."""
    need_finite(value, key, why, lambda v: 0 <= v <= MAX_ALPHA)


def need_bool(value: Any, key: str) -> None:
    need(isinstance(value, bool), key, value, "must be true or false")


def need_writable(path: str | None, key: str, value: Any = None) -> None:
    """`path` (a file or directory to be written later) can be created: its nearest existing directory accepts a
    file now. Found at startup, not after an hour of training."""
    if not path:
        return
    target = Path(path).expanduser().absolute()
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        existing = existing.parent if existing == target else None
    ok = existing is not None
    if ok:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError:
            ok = False
    need(
        ok,
        key,
        path if value is None else value,
        f"cannot write there (nothing under {existing or '/'} accepts a file)",
    )


def ranking_metric_names(k: int, map_k: int) -> tuple[str, ...]:
    """The ranking metric names for cut-offs k (MRR, nDCG, Recall) and map_k (MAP), in table order."""
    return tuple(dict.fromkeys((f"mrr_at_{k}", f"ndcg_at_{k}", "recall_at_1", f"recall_at_{k}", f"map_at_{map_k}")))


# ---------------------------------------------------------------- model
@dataclass
class ModelSettings:
    """conf/model/: which encoder, how long its inputs, which inference backend."""

    name_or_path: str = MISSING
    max_seq_length: int | None = 128
    backend: str = "torch"
    onnx_cache_dir: str = MISSING
    interpolate: float | None = None  # WiSE-FT: the run keeps (1-a)*untuned + a*tuned weights; null: the tuned

    def __post_init__(self) -> None:
        need(bool(self.name_or_path), "model.name_or_path", self.name_or_path, "must name a hub id or a directory")
        need_int(self.max_seq_length, "model.max_seq_length", 1, nullable=True)
        need_choice(self.backend, "model.backend", BACKENDS)
        if self.interpolate is not None:
            need_alpha(self.interpolate, "model.interpolate", f"must be null or a number in [0, {MAX_ALPHA:g}]")


# ---------------------------------------------------------------- data
@dataclass
class HubSettings:
    dataset: str = "nyu-mll/glue"
    config: str | None = "qqp"
    splits: list[str] = field(default_factory=lambda: ["train", "validation"])

    def __post_init__(self) -> None:
        need(len(self.splits) > 0, "data.hub.splits", list(self.splits), "name at least one split")


@dataclass
class ColumnSettings:
    question1: str = "question1"
    question2: str = "question2"
    label: str = "label"
    qid1: str | None = "qid1"
    qid2: str | None = "qid2"


@dataclass
class SplitSettings:
    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    seed: int = 0
    group_by: str = "all_pairs"

    def __post_init__(self) -> None:
        fractions = dict(self.fractions)
        key = "data.split.fractions"
        need(set(fractions) <= set(SPLITS), key, fractions, f"name only the splits {', '.join(SPLITS)}")
        for name, value in fractions.items():
            need_finite(value, f"{key}.{name}", "must be a number >= 0", lambda v: v >= 0)
        total = sum(fractions.values())
        need(abs(total - 1) <= 1e-6, key, fractions, f"must sum to 1 (they sum to {total:g}); nothing is renormalised")
        need_choice(self.group_by, "data.split.group_by", GROUP_BY)


@dataclass
class SilverSettings:
    """conf/data/'s `silver` node: teacher-labeled pairs among the train split's unlabeled neighbours (AugSBERT)."""

    enabled: bool = False
    neighbours: int = 2
    positive_min: float = 0.9
    negative_max: float | None = 0.1
    share: float = 1.0
    max_candidates: int | None = 60000
    sample_rows: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        need_bool(self.enabled, "data.silver.enabled")
        need_int(self.neighbours, "data.silver.neighbours", 1)
        need_finite(self.positive_min, "data.silver.positive_min", "must be in (0, 1]", lambda v: 0 < v <= 1)
        if self.negative_max is not None:
            need_finite(
                self.negative_max,
                "data.silver.negative_max",
                f"must be null or in [0, data.silver.positive_min={self.positive_min})",
                lambda v: 0 <= v < self.positive_min,
            )
        need_finite(self.share, "data.silver.share", "must be in [0, 1]", lambda v: 0 <= v <= 1)
        need_int(self.max_candidates, "data.silver.max_candidates", 1, nullable=True)
        need_int(self.sample_rows, "data.silver.sample_rows", 0)
        need_int(self.seed, "data.silver.seed")


@dataclass
class DataSettings:
    """conf/data/: where the labeled pairs come from, how they are read, split and capped."""

    source: str = "auto"
    path: str | None = None
    default_path: str | None = MISSING
    format: str | None = None
    hub: HubSettings = field(default_factory=HubSettings)
    columns: ColumnSettings = field(default_factory=ColumnSettings)
    on_empty: str = "drop"
    split: SplitSettings = field(default_factory=SplitSettings)
    max_pairs: int | None = None
    both_orders: bool = False
    silver: SilverSettings = field(default_factory=SilverSettings)

    def __post_init__(self) -> None:
        need_choice(self.source, "data.source", DATA_SOURCES)
        if self.format is not None:
            need_choice(self.format, "data.format", DATA_FORMATS)
        need_choice(self.on_empty, "data.on_empty", ON_EMPTY)
        need_int(self.max_pairs, "data.max_pairs", 1, nullable=True)
        if self.max_pairs is not None:
            need(self.max_pairs > 0, "data.max_pairs", self.max_pairs, "must be null or a positive integer")
        if self.source == "local":
            need(bool(self.path), "data.path", self.path, "no file given; pass data.path=/path/to/qqp.parquet")


# ---------------------------------------------------------------- loss
MNRL_KINDS = ("mnrl", "gist", "cached_gist")
GIST_KINDS = ("gist", "cached_gist")
DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
PARTITION_MODES = ("joint", "per_direction")
HARDNESS_MODES = ("in_batch_negatives", "hard_negatives", "all_negatives")
GIST_MARGIN_STRATEGIES = ("absolute", "relative")


def direction_names(value: Any) -> tuple[str, ...]:
    """`loss.directions` as a tuple of names: a list, or one string joined by `+` (a plain sweep choice)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split("+"))
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@dataclass
class MiningSettings:
    """conf/loss/'s `mining` node: hard negatives mined by the untuned model (contrastive/mining.py)."""

    num_negatives: int = 1
    range_min: int = 0
    range_max: int = 40
    relative_margin: float | None = 0.05
    max_score: float | None = None
    teacher_max: float | None = None
    teacher_depth: int = 4
    batch_size: int = 128
    cache_dir: str = MISSING
    sample_rows: int = 200
    seed: int = 0
    pool_pairs: int | None = None  # cap on the train-split pairs whose questions are mined over; None: all

    def __post_init__(self) -> None:
        need_int(self.num_negatives, "loss.mining.num_negatives", 1)
        need_int(self.range_min, "loss.mining.range_min", 0)
        need_int(self.range_max, "loss.mining.range_max", 1)
        need(
            self.range_max - self.range_min >= self.num_negatives,
            "loss.mining.range_max",
            self.range_max,
            f"must be >= loss.mining.range_min + num_negatives ({self.range_min} + {self.num_negatives}): "
            "the rank window must hold the negatives",
        )
        if self.relative_margin is not None:
            need_finite(
                self.relative_margin, "loss.mining.relative_margin", "must be null or in [0, 1)", lambda v: 0 <= v < 1
            )
        if self.max_score is not None:
            need_finite(self.max_score, "loss.mining.max_score", "must be null or in [-1, 1]", lambda v: -1 <= v <= 1)
        if self.teacher_max is not None:
            need_finite(self.teacher_max, "loss.mining.teacher_max", "must be null or in [0, 1]", lambda v: 0 <= v <= 1)
            if self.teacher_max >= 1:  # a filter that drops nothing is no filter: nothing scored, the same run as null
                self.teacher_max = None
        need_int(self.teacher_depth, "loss.mining.teacher_depth", self.num_negatives + 1)
        need_int(self.batch_size, "loss.mining.batch_size", 1)
        need_int(self.sample_rows, "loss.mining.sample_rows", 0)
        need_int(self.pool_pairs, "loss.mining.pool_pairs", 1, nullable=True)
        need_int(self.seed, "loss.mining.seed")


@dataclass
class LossSettings:
    """conf/loss/: MNRL or GIST (+hard negatives) + aux_weight * auxiliary pair loss."""

    scale: float = 20.0
    hard_negatives: bool = True
    cached: bool = False
    mini_batch_size: int = 32
    aux: str = "cosine"
    aux_labels: str = "gold"
    aux_weight: float = 0.3
    aux_share: float = 1.0
    aux_margin: float = 0.5
    interleave: str = "proportional"
    combine: str = "joint"
    # the in-batch-negative loss (contrastive/losses.py mnrl): its kind, GIST's guide filter, MNRL's own knobs
    mnrl: str = "mnrl"
    gist_margin_strategy: str = "absolute"
    gist_margin: float = 0.0
    gist_contrast_anchors: bool = True
    gist_contrast_positives: bool = True
    directions: Any = field(default_factory=lambda: ["query_to_doc"])  # a list, or names joined by `+`
    partition_mode: str = "joint"
    hardness_mode: str | None = None
    hardness_strength: float = 0.0
    gather_across_devices: bool | None = None  # null: true under DDP (the InfoNCE batch is global)
    negatives: str = "mined"
    mining: MiningSettings = field(default_factory=MiningSettings)

    def __post_init__(self) -> None:
        need_finite(self.aux_weight, "loss.aux_weight", "must be >= 0 and finite", lambda v: v >= 0)
        need_finite(self.aux_share, "loss.aux_share", "must be in (0, 1]", lambda v: 0 < v <= 1)
        need_finite(self.scale, "loss.scale", "must be > 0", lambda v: v > 0)
        need_finite(self.aux_margin, "loss.aux_margin", "must be > 0", lambda v: v > 0)
        need_choice(self.aux, "loss.aux", AUX_LOSSES)
        need_choice(self.aux_labels, "loss.aux_labels", AUX_LABELS)
        self.check_distillation()
        need_choice(self.interleave, "loss.interleave", INTERLEAVE)
        need_choice(self.combine, "loss.combine", COMBINE)
        need_bool(self.hard_negatives, "loss.hard_negatives")
        need_bool(self.cached, "loss.cached")
        need_int(self.mini_batch_size, "loss.mini_batch_size", 1)
        self.check_mnrl()
        self.check_negatives()

    def check_distillation(self) -> None:
        """`loss.aux=margin_mse` distils the teacher's margins on MNRL's own (anchor, positive, negatives) rows: both
        terms share one forward pass, so it needs plain MNRL, explicit negatives and both losses in every step."""
        if self.aux != "margin_mse":
            return
        why = "loss.aux=margin_mse learns the teacher's margin on each MNRL row's (anchor, positive, negatives)"
        need(self.combine == "joint", "loss.combine", self.combine, f"must be joint: {why} in the same step")
        need(self.hard_negatives, "loss.hard_negatives", self.hard_negatives, f"must be true: {why}")
        need(self.mnrl == "mnrl" and not self.cached, "loss.mnrl", self.mnrl, f"must be mnrl (not cached): {why}")

    @property
    def uses_teacher(self) -> bool:
        """Whether a loss lever needs the teacher: the mining filter, teacher labels or margin distillation (whose
        targets are always the teacher's; `aux_labels` is for the pair losses)."""
        mining = self.hard_negatives and self.negatives != "labeled" and self.mining.teacher_max is not None
        return mining or self.aux_labels == "teacher" or self.aux == "margin_mse"

    def check_negatives(self) -> None:
        """`loss.negatives` and, when mining, its cache dir; GISTEmbedLoss takes one negative column only."""
        need_choice(self.negatives, "loss.negatives", NEGATIVES)
        if self.negatives == "labeled" or not self.hard_negatives:
            return
        need_writable(self.mining.cache_dir, "loss.mining.cache_dir")
        columns = self.mining.num_negatives + (self.negatives == "both")
        need(
            self.mnrl != "gist" or columns == 1,
            "loss.mnrl",
            self.mnrl,
            f"GISTEmbedLoss takes one negative column, loss.negatives={self.negatives} with "
            f"loss.mining.num_negatives={self.mining.num_negatives} gives {columns}; use loss.mnrl=cached_gist",
        )

    @property
    def direction_names(self) -> tuple[str, ...]:
        """MNRL's interaction directions as a tuple (`loss.directions` may be a `+`-joined string)."""
        return direction_names(self.directions)

    @property
    def gist(self) -> bool:
        """Whether the in-batch-negative loss is guided (GISTEmbedLoss or its cached variant)."""
        return self.mnrl in GIST_KINDS

    def check_mnrl(self) -> None:
        """The `loss.mnrl` kind and its knobs: MNRL's knobs refused with GIST kinds and GIST's with MNRL."""
        need_choice(self.mnrl, "loss.mnrl", MNRL_KINDS)
        need_choice(self.gist_margin_strategy, "loss.gist_margin_strategy", GIST_MARGIN_STRATEGIES)
        need_finite(self.gist_margin, "loss.gist_margin", "must be >= 0 and finite", lambda v: v >= 0)
        need_bool(self.gist_contrast_anchors, "loss.gist_contrast_anchors")
        need_bool(self.gist_contrast_positives, "loss.gist_contrast_positives")
        names = self.direction_names
        shown = list(names)
        for name in names:
            need_choice(name, "loss.directions", DIRECTIONS)
        need(len(set(names)) == len(names), "loss.directions", shown, "names repeat")
        need("query_to_doc" in names, "loss.directions", shown, "must include query_to_doc (it holds the positive)")
        need_choice(self.partition_mode, "loss.partition_mode", PARTITION_MODES)
        same_type = sorted(set(names) & {"query_to_query", "doc_to_doc"})
        need(
            self.partition_mode == "joint" or not same_type,
            "loss.partition_mode",
            self.partition_mode,
            f"needs loss.directions without {' and '.join(same_type)} (their candidates never hold the positive); "
            "use joint",
        )
        if self.hardness_mode is not None:
            need_choice(self.hardness_mode, "loss.hardness_mode", HARDNESS_MODES)
        need_finite(self.hardness_strength, "loss.hardness_strength", "must be >= 0 and finite", lambda v: v >= 0)
        kind = f"loss.mnrl={self.mnrl}"
        if self.gist:
            need(
                not self.cached or self.mnrl == "cached_gist",
                "loss.cached",
                self.cached,
                f"means CachedMultipleNegativesRankingLoss, not cached GIST; with {kind} set loss.mnrl=cached_gist",
            )
            for key, value, default in (
                ("directions", shown, ["query_to_doc"]),
                ("partition_mode", self.partition_mode, "joint"),
                ("hardness_mode", self.hardness_mode, None),
                ("hardness_strength", self.hardness_strength, 0.0),
            ):
                need(
                    value == default,
                    f"loss.{key}",
                    value,
                    f"MNRL's knob, which {kind} does not take: leave it at {default!r} or set loss.mnrl=mnrl "
                    "(GIST's own are loss.gist_*)",
                )
        else:
            for key, value, default in (
                ("gist_margin_strategy", self.gist_margin_strategy, "absolute"),
                ("gist_margin", self.gist_margin, 0.0),
                ("gist_contrast_anchors", self.gist_contrast_anchors, True),
                ("gist_contrast_positives", self.gist_contrast_positives, True),
            ):
                need(
                    value == default,
                    f"loss.{key}",
                    value,
                    f"GIST's knob, which {kind} does not take: leave it at {default!r} or set loss.mnrl=gist "
                    "or cached_gist",
                )


# ---------------------------------------------------------------- batch
@dataclass
class BatchSettings:
    """conf/batch/: batch size and the in-batch-negative sampler."""

    size: int = 64
    sampler: str = "component"
    length_grouping: int = 8
    num_threads: Any = None  # null | auto | an integer >= 1

    def __post_init__(self) -> None:
        need(
            is_integer(self.size) and self.size >= 2,
            "batch.size",
            self.size,
            "MNRL needs at least 2 examples per batch (in-batch negatives)",
        )
        need_choice(self.sampler, "batch.sampler", SAMPLERS)
        need_int(self.length_grouping, "batch.length_grouping", 0)
        threads = self.num_threads
        need(
            threads is None or threads == "auto" or (is_integer(threads) and threads >= 1),
            "batch.num_threads",
            threads,
            "must be null, auto or an integer >= 1",
        )


# ---------------------------------------------------------------- trainer
@dataclass
class TrainerSettings:
    """conf/trainer/: optimiser, schedule, steps, seed, intermediate evaluations."""

    lr: float = 2.0e-5
    epochs: float = 1.0
    max_steps: int = -1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_steps: int = 0
    eval_every_examples: int = 0
    eval_at_fractions: list[float] = field(default_factory=list)
    logging_steps: int = 10
    dataloader_workers: int = 0
    device: str | None = None
    save_every: int = 200  # optimiser steps between resumable checkpoints (run dir's trainer/); 0: none
    save_keep: int = 2  # checkpoints kept (the newest)
    resume: str | None = None  # null | auto (this run dir's newest checkpoint) | a run dir, trainer/ or checkpoint-N

    def __post_init__(self) -> None:
        need_int(self.save_every, "trainer.save_every", 0)
        need_int(self.save_keep, "trainer.save_keep", 1)
        if self.resume not in (None, "auto"):
            need(Path(self.resume).expanduser().is_dir(), "trainer.resume", self.resume, "no such directory (or auto)")
        need_finite(self.lr, "trainer.lr", "must be > 0", lambda v: v > 0)
        need_finite(self.max_grad_norm, "trainer.max_grad_norm", "must be > 0", lambda v: v > 0)
        need_finite(self.epochs, "trainer.epochs", "must be > 0", lambda v: v > 0)
        need_int(self.max_steps, "trainer.max_steps")
        need_finite(self.warmup_ratio, "trainer.warmup_ratio", "must be in [0, 1)", lambda v: 0 <= v < 1)
        need_finite(self.weight_decay, "trainer.weight_decay", "must be >= 0", lambda v: v >= 0)
        need_int(self.seed, "trainer.seed")
        need_int(self.eval_steps, "trainer.eval_steps", 0)
        need_int(self.eval_every_examples, "trainer.eval_every_examples", 0)
        fractions = list(self.eval_at_fractions)
        need(
            all(is_number(f) and 0 < f < 1 for f in fractions) and fractions == sorted(set(fractions)),
            "trainer.eval_at_fractions",
            fractions,
            "must be increasing fractions of the epoch in (0, 1)",
        )
        need_int(self.logging_steps, "trainer.logging_steps", 1)
        need_int(self.dataloader_workers, "trainer.dataloader_workers", 0)


# ---------------------------------------------------------------- eval
@dataclass
class UmapSettings:
    enabled: bool = True
    n_pairs: int = 300
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        need_int(self.n_pairs, "eval.umap.n_pairs", 1)
        need_int(self.n_neighbors, "eval.umap.n_neighbors", 2)
        need_finite(self.min_dist, "eval.umap.min_dist", "must be >= 0", lambda v: v >= 0)


@dataclass
class EvalSettings:
    """conf/eval/: the retrieval and pair protocol, the bootstrap, the baseline cache, the pictures."""

    split: str = "val"
    objective: Any = "mrr_at_10"  # a metric name, or a list of them (multi-objective sweeps)
    k: int = 10
    map_k: int = 100
    distractors: str = "none"
    max_distractors: int | None = None
    max_pairs: int | None = None  # cap on the eval split's pairs (whole linked groups); None: the whole split
    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    batch_size: int = 128
    chunk_size: int = 4096
    query_chunk_size: int = 1024
    cache_dir: str = MISSING
    intermediate_max_pairs: int | None = 1000
    baseline: bool = True
    umap: UmapSettings = field(default_factory=UmapSettings)
    interpolate: list[float] = field(default_factory=list)  # WiSE-FT alphas scored beside the model ([]: none)
    collapse_drop: float = 0.1  # a run whose objective falls this far below the baseline's is flagged `collapsed`

    def __post_init__(self) -> None:
        need_finite(self.collapse_drop, "eval.collapse_drop", "must be >= 0 and finite", lambda v: v >= 0)
        for key in ("k", "map_k", "chunk_size", "query_chunk_size", "batch_size"):
            need_int(getattr(self, key), f"eval.{key}", 1)
        need_choice(self.split, "eval.split", SPLITS)
        need_int(self.n_boot, "eval.n_boot", 0)
        need_finite(self.ci, "eval.ci", "must be in (0, 1)", lambda v: 0 < v < 1)
        need_int(self.max_distractors, "eval.max_distractors", 0, nullable=True)
        need_int(self.max_pairs, "eval.max_pairs", 1, nullable=True)
        need_int(self.intermediate_max_pairs, "eval.intermediate_max_pairs", 1, nullable=True)
        spec = self.distractors
        need(bool(spec), "eval.distractors", spec, "choose none, train or a file path")
        if spec not in ("none", "train"):
            need(Path(spec).expanduser().is_file(), "eval.distractors", spec, "file not found (or none, train)")
        known = self.metric_names
        for name in self.objective_names:
            need(name in known, "eval.objective", name, f"choose one of {', '.join(known)}")
        alphas = list(self.interpolate)
        for i, alpha in enumerate(alphas):
            need_alpha(alpha, f"eval.interpolate[{i}]")
        need(len(set(alphas)) == len(alphas), "eval.interpolate", alphas, "values repeat")

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric that gets a delta: ranking metrics then pair metrics."""
        return ranking_metric_names(self.k, self.map_k) + PAIR_METRICS

    @property
    def objective_names(self) -> list[str]:
        """`objective` as a list of metric names (one per sweep objective)."""
        return [self.objective] if isinstance(self.objective, str) else list(self.objective)


# ---------------------------------------------------------------- tracking, paths
@dataclass
class TrackingSettings:
    """conf/tracking/: the MLflow store, experiment and registry."""

    enabled: bool = True
    tracking_uri: str = MISSING
    experiment: str = "contrastive"
    log_model: bool = True
    registered_model: str | None = "contrastive-qqp"
    system_metrics: bool = True  # MLflow system metrics (CPU, memory, disk, GPU) on training runs
    parent_run_id: str | None = None  # set by the sweeper for trial jobs (child runs)
    probe_timeout_s: float = (
        5.0  # an http(s) server must answer its /health probe within this (contrastive/tracking.py)
    )

    def __post_init__(self) -> None:
        need(bool(self.tracking_uri), "tracking.tracking_uri", self.tracking_uri, "must be a URI (sqlite:///...)")
        need_finite(self.probe_timeout_s, "tracking.probe_timeout_s", "must be > 0", lambda v: v > 0)
        need(bool(self.experiment), "tracking.experiment", self.experiment, "must be a name")
        if self.enabled and self.tracking_uri.startswith("sqlite:///"):
            store = self.tracking_uri.removeprefix("sqlite:///")
            need_writable(str(Path(store).parent), "tracking.tracking_uri", self.tracking_uri)


@dataclass
class PathSettings:
    """conf/paths/: the project root, output and cache directories."""

    root_dir: str = MISSING
    output_root: str = MISSING
    cache_dir: str = MISSING
    output_dir: str | None = None

    def __post_init__(self) -> None:
        need_writable(self.output_root, "paths.output_root")
        need_writable(self.cache_dir, "paths.cache_dir")
        need_writable(self.output_dir, "paths.output_dir")


# ---------------------------------------------------------------- teacher (conf/teacher/)
@dataclass
class TeacherSettings:
    """conf/teacher/: the cross-encoder trained on the train split's labels (contrastive/teacher.py)."""

    name_or_path: str = MISSING
    max_length: int = 128
    orders: str = "random"
    max_pairs: int | None = None
    epochs: float = 1.0
    lr: float = 3.0e-5
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    symmetric: bool = True
    score_batch_size: int = 32
    cache_dir: str = MISSING
    device: str | None = None

    def __post_init__(self) -> None:
        need(bool(self.name_or_path), "teacher.name_or_path", self.name_or_path, "must name a hub id or a directory")
        need_int(self.max_length, "teacher.max_length", 8)
        need_choice(self.orders, "teacher.orders", TEACHER_ORDERS)
        need_int(self.max_pairs, "teacher.max_pairs", 1, nullable=True)
        need_finite(
            self.epochs, "teacher.epochs", "must be a number > 0 (fractions train part of an epoch)", lambda v: v > 0
        )
        need_finite(self.lr, "teacher.lr", "must be a number in (0, 1)", lambda v: 0 < v < 1)
        need_int(self.batch_size, "teacher.batch_size", 1)
        need_finite(self.warmup_ratio, "teacher.warmup_ratio", "must be a number in [0, 1)", lambda v: 0 <= v < 1)
        need_finite(self.weight_decay, "teacher.weight_decay", "must be a number >= 0", lambda v: v >= 0)
        need_int(self.seed, "teacher.seed")
        need_int(self.score_batch_size, "teacher.score_batch_size", 1)


# ---------------------------------------------------------------- entry points
def need_split_share(data: DataSettings, split: str, why: str) -> None:
    """A split the entry point reads must get a share of the questions (else it finds it empty after loading)."""
    share = dict(data.split.fractions).get(split, 0)
    need(
        share > 0,
        f"data.split.fractions.{split}",
        share,
        f"must be > 0: eval.split={split} {why}" if split != "train" else f"must be > 0: {why}",
    )


@dataclass
class TrainSettings:
    """conf/train.yaml: one training run."""

    model: ModelSettings = MISSING
    data: DataSettings = MISSING
    loss: LossSettings = MISSING
    batch: BatchSettings = MISSING
    trainer: TrainerSettings = MISSING
    eval: EvalSettings = MISSING
    tracking: TrackingSettings = MISSING
    paths: PathSettings = MISSING
    teacher: TeacherSettings = MISSING
    run_name: str | None = None
    save_model: bool = True
    optuna: Any | None = None  # set by the sweeper for trial jobs: which trial of which study

    def __post_init__(self) -> None:
        need_split_share(self.data, self.eval.split, "scores every run on it")
        need_split_share(self.data, "train", "training needs pairs")

    @property
    def uses_teacher(self) -> bool:
        """Whether this run needs the teacher (a loss lever or silver pairs)."""
        return self.loss.uses_teacher or self.data.silver.enabled


@dataclass
class EvaluateSettings:
    """conf/evaluate.yaml: score a checkpoint beside the untuned baseline."""

    model: ModelSettings = MISSING
    data: DataSettings = MISSING
    eval: EvalSettings = MISSING
    paths: PathSettings = MISSING
    checkpoint: str = MISSING
    json: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        need(bool(self.checkpoint), "checkpoint", self.checkpoint, "pass checkpoint=<checkpoint dir or hub id>")
        need_split_share(self.data, self.eval.split, "is the split scored")
        need(
            not self.eval.interpolate or self.model.backend == "torch",
            "model.backend",
            self.model.backend,
            "eval.interpolate mixes torch weights; use model.backend=torch",
        )
        if self.json:
            need(not Path(self.json).expanduser().is_dir(), "json", self.json, "is a directory; name a file to write")
            need_writable(str(Path(self.json).expanduser().parent), "json", self.json)


EXPORT_FORMATS = ("onnx", "onnx-int8")


@dataclass
class ExportSettings:
    """conf/export.yaml: write a checkpoint's ONNX files into its own onnx/ folder."""

    model: ModelSettings = MISSING
    paths: PathSettings = MISSING
    checkpoint: str = MISSING
    format: str = "onnx-int8"
    check: bool = True

    def __post_init__(self) -> None:
        need_choice(self.format, "format", EXPORT_FORMATS)
        need_bool(self.check, "check")
        path = Path(self.checkpoint).expanduser()
        need(
            path.is_dir(),
            "checkpoint",
            self.checkpoint,
            "not a directory (a saved SentenceTransformer: a run's model/)",
        )
        need(
            (path / "modules.json").is_file(),
            "checkpoint",
            self.checkpoint,
            "no modules.json: not a SentenceTransformer",
        )
        need_writable(str(path / "onnx"), "checkpoint", self.checkpoint)


@dataclass
class TeacherAppSettings:
    """conf/teacher.yaml: train (or fetch from its cache) the teacher and score it beside the untuned bi-encoder."""

    model: ModelSettings = MISSING
    data: DataSettings = MISSING
    teacher: TeacherSettings = MISSING
    eval: EvalSettings = MISSING
    tracking: TrackingSettings = MISSING
    paths: PathSettings = MISSING
    run_name: str | None = None
    json: str | None = None

    def __post_init__(self) -> None:
        need_split_share(self.data, self.eval.split, "is the split the teacher is scored on")
        need_split_share(self.data, "train", "the teacher trains on the train split's pairs")


MERGE_METHODS = ("uniform", "greedy", "task_arithmetic", "ties")


@dataclass
class MergeSettings:
    """conf/merge.yaml's `merge` node: how finished checkpoints of one base become one (contrastive/merge.py)."""

    method: str = "uniform"
    lam: float = 1.0
    weights: list[float] | None = None
    ties_density: float = 0.2
    metric: str = "mrr_at_10"
    base: str = MISSING
    max_distance: float = 0.25

    def __post_init__(self) -> None:
        need_choice(self.method, "merge.method", MERGE_METHODS)
        need_alpha(self.lam, "merge.lam", f"must be a number in [0, {MAX_ALPHA:g}] (> 1 extrapolates)")
        need_finite(self.ties_density, "merge.ties_density", "must be in (0, 1]", lambda v: 0 < v <= 1)
        need(bool(self.base), "merge.base", self.base, "must name the untuned model (θ0)")
        need_finite(self.max_distance, "merge.max_distance", "must be a number > 0", lambda v: v > 0)
        if self.weights is not None:
            weights = list(self.weights)
            for i, w in enumerate(weights):
                need_finite(w, f"merge.weights[{i}]", "must be a number >= 0", lambda v: v >= 0)
            need(sum(weights) > 0, "merge.weights", weights, "must not all be 0")
            need(self.method == "uniform", "merge.weights", weights, "only merge.method=uniform takes weights")


@dataclass
class MergeAppSettings:
    """conf/merge.yaml: merge checkpoints, score the result beside the untuned model, save a normal checkpoint."""

    model: ModelSettings = MISSING
    data: DataSettings = MISSING
    eval: EvalSettings = MISSING
    tracking: TrackingSettings = MISSING
    paths: PathSettings = MISSING
    merge: MergeSettings = field(default_factory=MergeSettings)
    checkpoints: list[str] = MISSING
    output: str | None = None
    run_name: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        names = list(self.checkpoints)
        need(len(names) >= 1, "checkpoints", names, "name at least one checkpoint: checkpoints=[A,B,...]")
        need(len(set(names)) == len(names), "checkpoints", names, "names repeat")
        need(
            self.merge.method != "uniform" or len(names) >= 2 or self.merge.weights is not None,
            "checkpoints",
            names,
            "a uniform soup needs two checkpoints or more",
        )
        if self.merge.weights is not None:
            need(
                len(self.merge.weights) == len(names),
                "merge.weights",
                list(self.merge.weights),
                f"must give one weight per checkpoint ({len(names)})",
            )
        known = ranking_metric_names(self.eval.k, self.eval.map_k) + PAIR_METRICS
        need_choice(self.merge.metric, "merge.metric", known)
        need_split_share(self.data, self.eval.split, "is the split that scores the merge")
        if self.output:
            need_writable(self.output, "output")


# ---------------------------------------------------------------- registration and loading
GROUP_SCHEMAS: dict[str, type] = {
    "model": ModelSettings,
    "data": DataSettings,
    "loss": LossSettings,
    "batch": BatchSettings,
    "trainer": TrainerSettings,
    "eval": EvalSettings,
    "tracking": TrackingSettings,
    "paths": PathSettings,
    "teacher": TeacherSettings,
}
TOP_SCHEMAS: dict[str, type] = {
    "train": TrainSettings,
    "evaluate": EvaluateSettings,
    "teacher": TeacherAppSettings,
    "merge": MergeAppSettings,
    "export": ExportSettings,
}


def register_top(name: str, schema: type) -> None:
    """An entry point's schema whose module sits beside its code (app, bench, reproduce): stored like the others."""
    TOP_SCHEMAS[name] = schema
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)


def register() -> None:
    """Store each schema in Hydra's ConfigStore: `schema/<group>` (kept out of the groups users pick options
    from) and `<config>_schema` at the top."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group="schema", name=group, node=schema)
    for name, schema in TOP_SCHEMAS.items():
        store.store(name=f"{name}_schema", node=schema)


def load(cfg: DictConfig, schema: type) -> Any:
    """The composed `cfg` as an instance of `schema`, every check run (ConfigError on the first bad value)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), _without_hydra(cfg))
        refuse_unknown_keys(merged, schema)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(config_error_line(exc)) from exc


def refuse_unknown_keys(node: DictConfig, schema: type, prefix: str = "") -> None:
    """A key the schema does not know (added with `+group.key=...`) is a mistake, not something to drop."""
    known = {f.name: f for f in fields(schema)}
    for key in node:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: not a setting of {prefix.rstrip('.') or 'the config'} (a typo?)")
        child = node._get_node(key)
        kind = OmegaConf.get_type(child) if isinstance(child, DictConfig) and not child._is_missing() else None
        if kind is not None and is_dataclass(kind):
            refuse_unknown_keys(child, kind, f"{prefix}{key}.")


def _without_hydra(cfg: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg


def load_train(cfg: DictConfig) -> TrainSettings:
    """The settings of a training run (conf/train.yaml)."""
    return load(cfg, TrainSettings)


def load_requiring(cfg: DictConfig, schema: type, key: str, hint: str) -> Any:
    """`load`, after a one-line ConfigError when the entry point's required top-level `key` was not given."""
    if OmegaConf.is_missing(cfg, key):
        raise ConfigError(f"{key}: missing; pass {hint}")
    return load(cfg, schema)


def load_evaluate(cfg: DictConfig) -> EvaluateSettings:
    """The settings of the evaluate entry point (conf/evaluate.yaml)."""
    return load_requiring(cfg, EvaluateSettings, "checkpoint", "checkpoint=<checkpoint dir or hub id> (see --help)")


def load_teacher(cfg: DictConfig) -> TeacherAppSettings:
    """The settings of the teacher entry point (conf/teacher.yaml)."""
    return load(cfg, TeacherAppSettings)


def load_merge(cfg: DictConfig) -> MergeAppSettings:
    """The settings of the merge entry point (conf/merge.yaml)."""
    return load_requiring(cfg, MergeAppSettings, "checkpoints", "checkpoints=[DIR_A,DIR_B,...] (see conf/merge.yaml)")


def load_export(cfg: DictConfig) -> ExportSettings:
    """The settings of the export entry point (conf/export.yaml)."""
    hint = "checkpoint=<a saved model dir, e.g. a run's model/> (see --help)"
    return load_requiring(cfg, ExportSettings, "checkpoint", hint)


def as_dict(settings: Any) -> dict[str, Any]:
    """A settings dataclass as nested plain dicts (for logging and JSON)."""
    if is_dataclass(settings):
        return {f.name: as_dict(getattr(settings, f.name)) for f in fields(settings)}
    if isinstance(settings, (list, tuple)):
        return [as_dict(v) for v in settings]
    if isinstance(settings, dict):
        return {k: as_dict(v) for k, v in settings.items()}
    return settings

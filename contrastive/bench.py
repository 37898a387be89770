"""`make bench` / `python -m contrastive.bench [overrides]`: how fast our paths run, as ratios, beside their quality.

Rows (conf/bench.yaml, `bench.sections`):
  peak       this machine's fp32 matmul GFLOP/s (2 and 1 threads, at the start and the end); every throughput
             is also shown as a share of the best of those
  train      pairs/s of our training path (component sampler, length grouping, thread setting) vs a plain
             SentenceTransformerTrainer script (MNRL, NO_DUPLICATES), same pairs and batch size, interleaved
             short runs, decomposed (grouping alone, sampler alone, threads alone); then one epoch each of
             ungrouped vs grouped, scored on a val subset with bootstrap CIs
  encode     questions/s of plain SentenceTransformer.encode vs our encode on torch, ONNX fp32, ONNX int8,
             interleaved, with the val subset's MRR@10 of each
  eval_cost  wall time and peak memory of scoring 10k / 50k / 100k questions (synthetic embeddings, one
             subprocess per size), and the cached baseline's second evaluation as a share of its first
  search     p50 / p95 latency of a top-10 search over a 100k-question CorpusIndex (the app's index)
  sweep      the same small seeded sweep without pruning and with each configured pruner: wall time, best value
Every figure comes from this one run on this machine; a shared machine is noisy, so variants alternate.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from contrastive import CONF_DIR
from contrastive.cli import hydra_app, user_errors
from contrastive.utils import fmt_cell, numpy_default, write_json

log = logging.getLogger("contrastive.bench")

Row = dict[str, Any]


# ---------------------------------------------------------------- pure helpers (unit-tested)
@dataclass(frozen=True)
class EncoderShape:
    """What the FLOP count of a BERT-style encoder needs: weights of its matmuls, layers, hidden size."""

    linear_params: int  # weights of the encoder's Linear layers (embedding lookups are not FLOPs)
    layers: int
    hidden: int


def forward_flops_per_token(shape: EncoderShape, seq_len: int) -> float:
    """Forward FLOPs per token of a sequence of `seq_len` tokens: 2 per matmul weight, plus attention scores and
    the weighted sum of values (2 x seq_len x hidden each, per layer)."""
    return 2.0 * shape.linear_params + 4.0 * shape.layers * shape.hidden * seq_len


def batch_flops(shape: EncoderShape, rows: int, seq_len: int, training: bool = False) -> float:
    """FLOPs of one padded batch of `rows` sequences of `seq_len` tokens; training = forward + backward (3x)."""
    return (3.0 if training else 1.0) * rows * seq_len * forward_flops_per_token(shape, seq_len)


def encode_batches(char_lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices of each encode batch of plain SentenceTransformer.encode: longest text (by characters)
    first, `batch_size` texts each."""
    order = np.argsort([-int(n) for n in char_lengths], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padded_work(
    token_lengths: Sequence[int], batches: Iterable[Sequence[int]], shape: EncoderShape, training: bool = False
) -> dict[str, float]:
    """Tokens processed (padded to each batch's longest), useful tokens, and FLOPs of both, over `batches`."""
    lengths = np.asarray(token_lengths)
    out = {"padded_tokens": 0.0, "useful_tokens": 0.0, "flops": 0.0, "useful_flops": 0.0}
    factor = 3.0 if training else 1.0
    for batch in batches:
        rows = lengths[np.asarray(batch, dtype=np.int64)]
        if rows.size == 0:
            continue
        longest = int(rows.max())
        out["padded_tokens"] += rows.size * longest
        out["useful_tokens"] += float(rows.sum())
        out["flops"] += batch_flops(shape, rows.size, longest, training)
        out["useful_flops"] += factor * sum(float(n) * forward_flops_per_token(shape, int(n)) for n in rows)
    return out


def interleaved(names: Sequence[str], reps: int) -> list[tuple[int, str]]:
    """(rep, name) in the order A B C A B C ...: every variant sees the machine's slow and fast moments alike."""
    return [(rep, name) for rep in range(reps) for name in names]


def safe_ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95)) -> dict[str, float]:
    """{"p50": .., "p95": ..} of `values` (linear interpolation)."""
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}


def mean_ci(values: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (the evaluation bootstrap's resampling and interval)."""
    from contrastive.evaluation.bootstrap import percentile_interval, resample_counts

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or n_boot == 0:
        return float("nan"), float("nan")
    means = resample_counts(np.random.default_rng(seed), values.size, n_boot) @ values / values.size
    return _nan_for_none(percentile_interval(means, ci))


def pair_ap_ci(scores: np.ndarray, labels: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI (over labeled pairs) of the average precision of `scores`."""
    from contrastive.evaluation.bootstrap import percentile_interval, resample_counts
    from contrastive.evaluation.metrics import pair_metrics_weighted

    if len(scores) == 0 or n_boot == 0:
        return float("nan"), float("nan")
    counts = resample_counts(np.random.default_rng(seed), len(scores), n_boot)
    ap = pair_metrics_weighted(np.asarray(scores), np.asarray(labels), counts)["pair_ap"]
    return _nan_for_none(percentile_interval(ap, ci))


def _nan_for_none(interval: tuple[float | None, float | None]) -> tuple[float, float]:
    lo, hi = interval
    return (float("nan") if lo is None else lo), (float("nan") if hi is None else hi)


TABLE_COLUMNS = (
    ("row", "row"),
    ("what", "compares (A vs B)"),
    ("a", "A"),
    ("b", "B"),
    ("ratio", "ratio A/B"),
    ("target", "target"),
    ("met", "met"),
    ("quality", "quality beside it"),
    ("peak", "% of fp32 peak"),
)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One markdown table of the bench rows (missing cells as a dash; pipes in cells escaped)."""

    def cell(row: Mapping[str, Any], key: str) -> str:
        value = row.get(key)
        text = fmt_cell(value, 2) + "x" if key == "ratio" and isinstance(value, float) else fmt_cell(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell(row, key) for key, _ in TABLE_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def share(flops_per_s: float | None, peak_flops_per_s: float | None) -> str:
    """`flops_per_s` as a percentage of the machine's measured fp32 matmul rate."""
    ratio = safe_ratio(flops_per_s, peak_flops_per_s)
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def render_shares(parts: Any, peak_flops_per_s: float | None) -> Any:
    """A row's peak cell from its parts: text as is, numbers (FLOP/s) as shares of the final peak, which is only
    known once the run has measured it again at the end."""
    if not isinstance(parts, list):
        return parts
    return "".join(p if isinstance(p, str) else share(p, peak_flops_per_s) for p in parts)


def synthetic_eval_set(n: int, query_share: float, pairs_per_question: float, seed: int):
    """An EvalSet of `n` questions: a `query_share` of them in duplicate components of 2-3, the rest singletons,
    and about `pairs_per_question * n` labeled pairs (duplicates and random non-duplicates). Texts are empty."""
    from contrastive.evaluation.eval_sets import EvalSet

    rng = np.random.default_rng(seed)
    in_groups = int(round(n * query_share))
    sizes: list[int] = []
    while sum(sizes) < in_groups:
        sizes.append(int(rng.integers(2, 4)))
    if sizes and sum(sizes) > in_groups:
        sizes[-1] -= sum(sizes) - in_groups
        if sizes[-1] < 2:
            sizes.pop()
    grouped = sum(sizes)
    comp = np.concatenate(
        [np.repeat(np.arange(len(sizes)), sizes), np.arange(len(sizes), len(sizes) + n - grouped)]
    ).astype(np.int64)
    comp = comp[rng.permutation(n)]
    counts = np.bincount(comp)
    queries = np.flatnonzero(counts[comp] >= 2)
    n_pairs = int(round(n * pairs_per_question))
    first_of: dict[int, int] = {}
    for row in queries:
        first_of.setdefault(int(comp[row]), int(row))
    dup = np.array([(first_of[int(comp[r])], r) for r in queries if first_of[int(comp[r])] != r], dtype=np.int64)
    dup = dup.reshape(-1, 2)[: n_pairs // 2]
    neg = rng.integers(0, n, size=(n_pairs - len(dup), 2))
    neg = neg[comp[neg[:, 0]] != comp[neg[:, 1]]]
    pair_rows = np.concatenate([dup, neg]).astype(np.int64)
    labels = np.concatenate([np.ones(len(dup)), np.zeros(len(neg))]).astype(np.int64)
    keys = [f"q{i}" for i in range(n)]
    return EvalSet(
        split="synthetic",
        keys=keys,
        texts=[""] * n,
        comp=comp,
        n_split=n,
        queries=queries,
        n_relevant=counts[comp[queries]] - 1,
        pair_rows=pair_rows,
        pair_labels=labels,
    )


def unit_vectors(n: int, dim: int, seed: int, chunk: int = 8192) -> np.ndarray:
    """`n` random float32 unit vectors, made in chunks (no float64 copy of the whole array)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


# ---------------------------------------------------------------- machine
def encoder_shape(model) -> EncoderShape:
    """The FLOP-relevant shape of a SentenceTransformer's BERT-style encoder (its encoder's Linear layers)."""
    import torch

    inner = model[0].model
    config = inner.config
    encoder = getattr(inner, "encoder", inner)
    linear = sum(m.weight.numel() for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    return EncoderShape(int(linear), int(config.num_hidden_layers), int(config.hidden_size))


def matmul_gflops(size: int, reps: int, threads: int | None = None) -> float:
    """Best fp32 GFLOP/s of `reps` torch products of two size x size matrices (at `threads` intra-op threads)."""
    import torch

    with torch_threads(threads):
        a = torch.randn(size, size)
        b = torch.randn(size, size)
        a @ b  # first touch
        best = 0.0
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            best = max(best, 2.0 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


@contextlib.contextmanager
def torch_threads(threads: int | str | None):
    """Run the block at `threads` torch intra-op threads (None: unchanged; auto: model.cpu_threads), then restore."""
    import torch

    from contrastive.model import cpu_threads

    before = torch.get_num_threads()
    threads = cpu_threads(threads)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def note(message: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- shared inputs
@dataclass
class Inputs:
    """What the sections share: config, data, the training pairs, the val subset, the untuned model."""

    cfg: DictConfig
    data: Any
    source_note: str
    train_pairs: pd.DataFrame
    lookup: dict[str, int]
    eval_set: Any
    model: Any
    shape: EncoderShape
    count_tokens: Callable[[list[str]], list[int]]
    peak_gflops: list[float] = field(default_factory=list)

    @property
    def peak_flops(self) -> float | None:
        return max(self.peak_gflops) * 1e9 if self.peak_gflops else None


def data_config(cfg: DictConfig) -> tuple[DictConfig, str]:
    """cfg.data, or the fixture when no local data file exists (offline: the hub is out of reach); and a note."""
    data = cfg.data
    path = data.get("path") or (data.get("default_path") if data.get("source") in ("auto", "local") else None)
    if path and Path(str(path)).expanduser().is_file():
        return data, f"data: {path}"
    fallback = OmegaConf.merge(
        data,
        {
            "source": "local",
            "path": cfg.bench.fixture_path,
            "split": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
        },
    )
    return fallback, f"data: FIXTURE {cfg.bench.fixture_path} (no file at {path}); figures are not QQP's"


def load_inputs(cfg: DictConfig) -> Inputs:
    """Prepare the data, the train pairs (positives, whole linked groups), the val subset and the model."""
    from contrastive.data import prepare
    from contrastive.evaluation.eval_sets import build_eval_set
    from contrastive.model import load_model
    from contrastive.pairs import cap_pairs, component_lookup, positives
    from contrastive.samplers import SamplerFactory

    data_cfg, source_note = data_config(cfg)
    data = prepare(data_cfg)
    b = cfg.bench
    train = data.splits["train"]
    dup = cap_pairs(train[train["label"] == 1].reset_index(drop=True), int(b.train.pairs), int(b.seed))
    pairs = positives(dup).drop(columns="comp").reset_index(drop=True)
    val = cap_pairs(data.splits["val"], int(b.subset.val_pairs), int(b.seed))
    eval_set = build_eval_set(val, "val")
    model = load_model(cfg.model.name_or_path, cfg.model.max_seq_length, "cpu")
    counter = SamplerFactory.token_counter(cfg.model.name_or_path, cfg.model.max_seq_length)
    note(
        f"{source_note}; {len(pairs):,} train pairs; val subset {eval_set.n_split:,} questions, "
        f"{len(eval_set.queries):,} queries, {len(eval_set.pair_labels):,} pairs"
    )
    return Inputs(
        cfg, data, source_note, pairs, component_lookup([train]), eval_set, model, encoder_shape(model), counter
    )


# ---------------------------------------------------------------- 0. peak
def section_peak(inp: Inputs) -> list[Row]:
    """The machine's fp32 matmul rate (best of a few products at torch's default threads)."""
    b = inp.cfg.bench.peak
    for threads in (None, 1):
        gflops = matmul_gflops(int(b.size), int(b.reps), threads)
        inp.peak_gflops.append(gflops)
        note(f"fp32 matmul ({threads or 'default'} threads): {gflops:.1f} GFLOP/s")
    return []


def peak_row(inp: Inputs, record: dict[str, Any]) -> Row:
    """The row naming the peak every share is taken of (measured at the start and the end of the run)."""
    import torch

    record["peak_gflops"] = inp.peak_gflops
    return {
        "row": "0",
        "what": f"fp32 matmul GFLOP/s of this machine, n={inp.cfg.bench.peak.size} "
        f"({torch.get_num_threads()} threads, 1 thread; at the start, at the end)",
        "a": ", ".join(f"{g:.1f}" for g in inp.peak_gflops),
        "quality": "the max is the 100% below",
        "peak": "100%",
    }


# ---------------------------------------------------------------- 1. training throughput
class CountingCollator:
    """Wraps the Trainer's collator: records each batch's examples, padded and useful tokens and FLOPs."""

    def __init__(self, inner: Any, shape: EncoderShape) -> None:
        self.inner = inner
        self.shape = shape
        self.batches: list[dict[str, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        out = self.inner(features)
        record = {
            "rows": float(len(features)),
            "padded_tokens": 0.0,
            "useful_tokens": 0.0,
            "flops": 0.0,
            "useful_flops": 0.0,
            "collate_s": time.perf_counter() - start,
        }
        for key, mask in out.items():
            if not key.endswith("attention_mask"):
                continue
            lengths = mask.sum(dim=1).tolist()
            work = padded_work(lengths, [range(len(lengths))], self.shape, training=True)
            for name, value in work.items():
                record[name] += value
        self.batches.append(record)
        return out


@contextlib.contextmanager
def quiet_stdout():
    """Send what the block prints (the Trainer's log dicts) to stderr: stdout carries the table only."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def step_clock(warmup: int = 1, max_timed_s: float | None = None):
    """A TrainerCallback recording perf_counter() at the end of every optimiser step; it stops training once the
    steps after `warmup` have run `max_timed_s` seconds (a slow variant then yields fewer, still timed, steps)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            if max_timed_s and len(self.ends) > warmup and self.ends[-1] - self.ends[warmup - 1] >= max_timed_s:
                control.should_training_stop = True

    return StepClock()


def plain_trainer(model: Any, dataset: Any, batch_size: int, steps: int, seed: int, out: str):
    """The plain script: SentenceTransformerTrainer + MNRL + NO_DUPLICATES batches, library defaults otherwise."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    args = SentenceTransformerTrainingArguments(
        output_dir=out,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        seed=seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=10**6,
    )
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model)
    )


def our_config(
    cfg: DictConfig, batch_size: int, steps: int, seed: int, grouping: int, threads: int | None
) -> DictConfig:
    """The training config of one of our variants: MNRL only on the given pairs, this grouping and threads."""
    return OmegaConf.merge(
        cfg,
        {
            "batch": {"size": batch_size, "sampler": "component", "length_grouping": grouping, "num_threads": threads},
            "trainer": {
                "max_steps": steps,
                "seed": seed,
                "eval_steps": 0,
                "eval_every_examples": 0,
                "logging_steps": 10**6,
                "dataloader_workers": 0,
            },
            "loss": {"hard_negatives": False, "aux_weight": 0.0},
            "tracking": {"enabled": False},
        },
    )


def our_trainer(
    model: Any, dataset: Any, cfg: DictConfig, lookup: dict[str, int], out: str, callbacks: Sequence[Any] = ()
):
    """Our training path on `dataset`: contrastive.training's sampler factory, threads, arguments and losses."""
    from sentence_transformers import SentenceTransformerTrainer

    from contrastive.losses import build_losses
    from contrastive.training import apply_threads, sampler_factory, training_args

    factory = sampler_factory(cfg, lookup)
    apply_threads(cfg.batch)
    args = training_args(cfg, Path(out), factory)
    args.disable_tqdm = True
    loss = build_losses(model, cfg.loss, ["mnrl_pairs"])["mnrl_pairs"]
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=list(callbacks)
    )


def timed_run(
    make: Callable[[Any, str], Any],
    base_model: Any,
    shape: EncoderShape,
    warmup: int,
    threads: int | None = None,
    max_timed_s: float | None = None,
) -> dict[str, float]:
    """Train a fresh copy of `base_model` with the Trainer `make(model, out_dir)` builds; time steps after warm-up."""
    model = copy.deepcopy(base_model)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out, torch_threads(threads):
        trainer = make(model, out)
        clock = step_clock(warmup, max_timed_s)
        trainer.add_callback(clock)
        counter = CountingCollator(trainer.data_collator, shape)
        trainer.data_collator = counter
        with quiet_stdout():
            trainer.train()
    steps = len(clock.ends)
    timed = counter.batches[warmup:steps]
    seconds = clock.ends[-1] - clock.ends[warmup - 1] if warmup >= 1 else float("nan")
    totals = {
        k: sum(b[k] for b in timed)
        for k in ("rows", "padded_tokens", "useful_tokens", "flops", "useful_flops", "collate_s")
    }
    return {
        "steps": steps,
        "timed_steps": len(timed),
        "seconds": seconds,
        **totals,
        "pairs_per_s": totals["rows"] / seconds,
        "flops_per_s": totals["flops"] / seconds,
        "useful_flops_per_s": totals["useful_flops"] / seconds,
        "padding_ratio": safe_ratio(totals["padded_tokens"], totals["useful_tokens"]),
    }


def pooled(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Throughput over all reps of a variant: total pairs / total timed seconds (and the same for FLOPs)."""
    seconds = sum(r["seconds"] for r in runs)
    return {
        "pairs_per_s": sum(r["rows"] for r in runs) / seconds,
        "flops_per_s": sum(r["flops"] for r in runs) / seconds,
        "useful_flops_per_s": sum(r["useful_flops"] for r in runs) / seconds,
        "padding_ratio": safe_ratio(sum(r["padded_tokens"] for r in runs), sum(r["useful_tokens"] for r in runs)),
        "padded_tokens_per_s": sum(r["padded_tokens"] for r in runs) / seconds,
        "collate_share": sum(r["collate_s"] for r in runs) / seconds,
        "seconds": seconds,
        "per_rep_pairs_per_s": [r["pairs_per_s"] for r in runs],
    }


def epoch_padding(batches: Iterable[Sequence[int]], column_lengths: Sequence[Sequence[int]]) -> dict[str, float]:
    """Padded and useful tokens of an epoch's batches when each text column is padded to its batch's longest."""
    columns = [np.asarray(c) for c in column_lengths]
    padded = useful = examples = 0.0
    for batch in batches:
        idx = np.asarray(list(batch), dtype=np.int64)
        examples += idx.size
        for lengths in columns:
            rows = lengths[idx]
            padded += rows.size * (int(rows.max()) if rows.size else 0)
            useful += float(rows.sum())
    return {"examples": examples, "padded_tokens": padded, "useful_tokens": useful, "ratio": safe_ratio(padded, useful)}


def sampler_padding(inp: Inputs, dataset: Any, batch_size: int, seed: int, grouping: int) -> dict[str, Any]:
    """One full epoch's padding of each sampler (the timed runs only see a few of its batches)."""
    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    from contrastive.samplers import SamplerFactory

    lengths = [inp.count_tokens(dataset[c]) for c in dataset.column_names]
    plans = {
        "plain": NoDuplicatesBatchSampler(
            dataset, batch_size=batch_size, drop_last=False, generator=torch.Generator().manual_seed(seed), seed=seed
        )
    }
    for name, windows in (("ours_ungrouped", 0), ("ours_grouped", grouping)):
        factory = SamplerFactory("component", inp.lookup, windows, inp.count_tokens)
        plans[name] = factory(dataset, batch_size=batch_size, drop_last=False, seed=seed)
    return {name: epoch_padding(list(plan), lengths) for name, plan in plans.items()}


def resolve_threads(setting: int | str | None, field: str) -> int:
    """A thread setting (auto | N | null) as the count a run would use now (null: torch's current default)."""
    import torch

    from contrastive.model import cpu_threads

    return cpu_threads(setting, field=field) or torch.get_num_threads()


def rep_ratios(runs: Mapping[str, Sequence[Mapping[str, float]]], a: str, b: str) -> list[float]:
    """Per rep, variant a's pairs/s over variant b's (the two ran minutes apart at most)."""
    return [ra["pairs_per_s"] / rb["pairs_per_s"] for ra, rb in zip(runs[a], runs[b])]


def section_train(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """Interleaved short runs of the plain Trainer and our variants, then the grouped-vs-ungrouped quality check.

    Variants: the plain script at torch's default threads (what it gets) and with our thread setting, our path
    ungrouped and length-grouped with our thread setting (`bench.train.threads` = batch.num_threads; auto is
    resolved at each run's start, as a training run resolves it). Each ratio is the median over reps of the
    per-rep ratio, so a rep in which the machine's load changed does not decide it. Rows decompose the
    speed-up: ours vs plain as each would run, grouping alone, our sampler alone, threads alone.
    """
    import torch
    from datasets import Dataset

    cfg, b = inp.cfg, inp.cfg.bench.train
    dataset = Dataset.from_pandas(inp.train_pairs, preserve_index=False)
    bs, steps, seed, warm = int(b.batch_size), int(b.steps), int(cfg.trainer.seed), max(1, int(b.warmup_steps))
    grouping = int(cfg.batch.length_grouping) or 8
    default_threads = torch.get_num_threads()
    setting = b.get("threads")
    cap = float(b.max_timed_s) if b.get("max_timed_s") else None

    def plain(m: Any, o: str, s: int, t: int) -> Any:
        return plain_trainer(m, dataset, bs, steps, s, o)

    def ours(windows: int) -> Callable[[Any, str, int, int], Any]:
        return lambda m, o, s, t: our_trainer(m, dataset, our_config(cfg, bs, steps, s, windows, t), inp.lookup, o)

    # in each rep the compared runs sit next to each other: plain | grouped | plain_T | ungrouped. With our thread
    # setting null (torch's default, as the plain script) plain_T would be plain again: it is not run.
    same_threads = setting is None
    variants = {
        "plain": (plain, False),
        "ours_grouped": (ours(grouping), True),
        "plain_T": (plain, True),
        "ours_ungrouped": (ours(0), True),
    }
    if same_threads:
        del variants["plain_T"]
    ref = "plain" if same_threads else "plain_T"
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for rep, name in interleaved(list(variants), int(b.reps)):
        make, ours_threads = variants[name]
        t = resolve_threads(setting, "bench.train.threads") if ours_threads else default_threads
        result = timed_run(
            lambda m, o, make=make, rep=rep, t=t: make(m, o, seed + rep, t), inp.model, inp.shape, warm, t, cap
        )
        result["threads"] = t
        runs[name].append(result)
        note(
            f"train rep {rep} {name} ({t} threads): {result['pairs_per_s']:.1f} pairs/s over "
            f"{result['timed_steps']} steps, padding x{result['padding_ratio']:.2f}"
        )
    summary = {name: pooled(r) for name, r in runs.items()}
    epoch = sampler_padding(inp, dataset, bs, seed, grouping)
    for name, stats in summary.items():  # the measured token rate over a whole epoch's batches, not the few timed
        e = epoch[name.replace("_T", "")]
        stats["epoch_pairs_per_s"] = [
            r["padded_tokens"] / r["seconds"] * e["examples"] / e["padded_tokens"] for r in runs[name]
        ]
    quality = train_quality(inp, dataset, grouping, setting, record)
    pad = {name: epoch[name.replace("_T", "")]["ratio"] for name in summary}
    threads_of = {name: "/".join(str(r["threads"]) for r in rs) for name, rs in runs.items()}
    shown = {None: "default"}.get(setting, setting)  # batch.num_threads as the labels show it
    comparisons = [
        (
            "ours_grouped",
            "plain",
            f"ours (component sampler, length-grouped x{grouping}, threads {shown}: "
            f"{threads_of['ours_grouped']}) vs the plain Trainer script (NO_DUPLICATES, "
            f"{default_threads} threads)",
            True,
        ),
        (
            "ours_grouped",
            ref,
            f"grouping alone: ours length-grouped vs plain, both threads {shown} "
            f"({threads_of['ours_grouped']} vs {threads_of[ref]})",
            True,
        ),
        (
            "ours_ungrouped",
            ref,
            f"our sampler alone: ours ungrouped vs plain, both threads {shown} "
            f"({threads_of['ours_ungrouped']} vs {threads_of[ref]})",
            False,
        ),
        (
            "plain_T",
            "plain",
            f"threads alone: plain at threads {shown} ({threads_of.get('plain_T')}) vs {default_threads}",
            False,
        ),
    ]
    if same_threads:  # 1a already is "grouping alone", and there is no thread difference to isolate
        comparisons = [comparisons[0], comparisons[2]]
    ratios = {}
    rows = []
    for i, (a, bname, label, target) in enumerate(comparisons):
        per_rep = rep_ratios(runs, a, bname)
        ratio = float(np.median(per_rep))
        epoch_ratio = float(
            np.median([x / y for x, y in zip(summary[a]["epoch_pairs_per_s"], summary[bname]["epoch_pairs_per_s"])])
        )
        ratios[f"{a}/{bname}"] = {"median": ratio, "per_rep": per_rep, "epoch_weighted_median": epoch_ratio}
        quality_text = quality["summary"] if a == "ours_grouped" else "same examples, same loss and maths"
        if a == "ours_grouped" and bname == "plain":
            quality_text += (
                f"; tokenizing (in the collator) is {100 * summary[a]['collate_share']:.1f}% of our "
                "step time, so tokenizing once up front would save at most that"
            )
        rows.append(
            {
                "row": f"1{'abcd'[i]}",
                "what": f"train pairs/s, MNRL bs {bs}, {len(inp.train_pairs):,} QQP pairs: {label}",
                "a": summary[a]["pairs_per_s"],
                "b": summary[bname]["pairs_per_s"],
                "ratio": ratio,
                "target": ">= 1.5x" if target else None,
                "met": (ratio >= 1.5) if target else None,
                "quality": f"{quality_text}; per-rep ratios {', '.join(f'{x:.2f}' for x in per_rep)} (median shown); "
                f"epoch padding x{pad[a]:.2f} vs x{pad[bname]:.2f}; at the timed token rates over a "
                f"whole epoch's batches: {epoch_ratio:.2f}x",
                "peak": [
                    summary[a]["flops_per_s"],
                    " (useful ",
                    summary[a]["useful_flops_per_s"],
                    ") vs ",
                    summary[bname]["flops_per_s"],
                ],
            }
        )
    record["train"] = {
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
        "epoch_padding": epoch,
        "batch_size": bs,
        "steps_per_run": steps,
        "warmup_steps": warm,
        "pairs": len(inp.train_pairs),
        "length_grouping": grouping,
        "threads_setting": setting,
        "default_threads": default_threads,
    }
    return rows


def score_model(model: Any, es: Any, cfg: DictConfig) -> Any:
    """model.encode + score_embeddings of `model` on the eval set `es`."""
    from contrastive.evaluation.metrics import score_embeddings, scoring_args
    from contrastive.model import encode

    return score_embeddings(encode(model, es.texts, int(cfg.eval.batch_size), False), es, **scoring_args(cfg.eval))


def train_quality(
    inp: Inputs, dataset: Any, grouping: int, threads_setting: int | str | None, record: dict[str, Any]
) -> dict[str, Any]:
    """Train ungrouped and grouped for the same steps, score both on the val subset; CIs and the paired delta."""
    from contrastive.evaluation.bootstrap import delta_table

    cfg, b = inp.cfg, inp.cfg.bench.train
    ev, es = cfg.eval, inp.eval_set
    k = f"mrr_at_{int(ev.k)}"
    scored, seconds = {}, {}
    for name, windows in (("ungrouped", 0), ("grouped", grouping)):
        model = copy.deepcopy(inp.model)
        threads = resolve_threads(threads_setting, "bench.train.threads")  # as a training run does at its start
        run_cfg = our_config(cfg, int(b.batch_size), int(b.quality_steps), int(cfg.trainer.seed), windows, threads)
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as out, torch_threads(threads):
            start = time.perf_counter()
            with quiet_stdout():
                our_trainer(model, dataset, run_cfg, inp.lookup, out).train()
            seconds[name] = time.perf_counter() - start
            scored[name] = score_model(model, es, cfg)
        note(
            f"quality {name}: {k} {scored[name].metrics[k]:.4f}, pair_ap {scored[name].metrics['pair_ap']:.4f} "
            f"({seconds[name]:.0f} s training at {threads} threads)"
        )
    n_boot, ci, seed = int(ev.n_boot), float(ev.ci), int(ev.seed)
    out: dict[str, Any] = {
        "steps": int(b.quality_steps),
        "train_seconds": seconds,
        "n_queries": len(es.queries),
        "n_pairs": len(es.pair_labels),
    }
    for name, s in scored.items():
        out[name] = {
            k: s.metrics[k],
            f"{k}_ci": mean_ci(s.per_query[k], n_boot, ci, seed),
            "pair_ap": s.metrics["pair_ap"],
            "pair_ap_ci": pair_ap_ci(s.pair_scores, es.pair_labels, n_boot, ci, seed),
        }
    delta = delta_table(scored["grouped"], scored["ungrouped"], es.pair_labels, n_boot, ci, seed)
    out["delta_grouped_minus_ungrouped"] = {m: delta[m] for m in (k, "pair_ap")}
    inside = all(
        out["ungrouped"][f"{m}_ci"][0] <= out["grouped"][m] <= out["ungrouped"][f"{m}_ci"][1] for m in (k, "pair_ap")
    )
    out["within_ci"] = inside
    g, u = out["grouped"], out["ungrouped"]
    out["summary"] = (
        f"{b.quality_steps} steps each, val subset ({len(es.queries)} q): {k} {g[k]:.4f} vs "
        f"{u[k]:.4f} [{u[f'{k}_ci'][0]:.4f}, {u[f'{k}_ci'][1]:.4f}], pair AP {g['pair_ap']:.4f} vs "
        f"{u['pair_ap']:.4f} [{u['pair_ap_ci'][0]:.4f}, {u['pair_ap_ci'][1]:.4f}]: "
        f"{'within' if inside else 'OUTSIDE'} the ungrouped CIs"
    )
    record["train_quality"] = out
    return out


# ---------------------------------------------------------------- 2. encode throughput
class RecordingModel:
    """Passes everything to `inner`, recording the texts of each `encode` call (one padded batch each, as
    model.encode calls it), so the bench counts the tokens our encode really processes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(list(texts))
        return self.inner.encode(texts, *args, **kwargs)


def section_encode(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """Plain SentenceTransformer.encode vs our encode on torch / ONNX fp32 / ONNX int8, interleaved."""
    from contrastive.evaluation.eval_sets import build_eval_set
    from contrastive.evaluation.metrics import score_embeddings, scoring_args
    from contrastive.model import encode, load_model
    from contrastive.pairs import cap_pairs

    cfg, b = inp.cfg, inp.cfg.bench.encode
    es = build_eval_set(cap_pairs(inp.data.splits["val"], int(b.val_pairs), int(cfg.bench.seed)), "val")
    texts = es.texts
    bs, plain_bs = int(cfg.eval.batch_size), int(b.plain_batch_size)
    start = time.perf_counter()
    onnx = {
        name: load_model(
            cfg.model.name_or_path, cfg.model.max_seq_length, "cpu", backend=name, cache_dir=cfg.model.onnx_cache_dir
        )
        for name in ("onnx", "onnx-int8")
    }
    note(f"ONNX models ready in {time.perf_counter() - start:.1f} s (cache {cfg.model.onnx_cache_dir})")

    def plain(m: Any) -> np.ndarray:
        return np.asarray(m.encode(texts, batch_size=plain_bs, normalize_embeddings=True, show_progress_bar=False))

    variants: dict[str, Callable[[], np.ndarray]] = {
        "plain": lambda: plain(inp.model),
        "ours_torch": lambda: encode(inp.model, texts, bs, False),
        "ours_onnx": lambda: encode(onnx["onnx"], texts, bs, False),
        "ours_onnx_int8": lambda: encode(onnx["onnx-int8"], texts, bs, False),
    }
    encode(inp.model, texts[:bs], bs, False)  # first-call costs out of the timings
    for m in onnx.values():
        encode(m, texts[:bs], bs, False)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    embeddings: dict[str, np.ndarray] = {}
    for rep, name in interleaved(list(variants), int(b.reps)):
        start = time.perf_counter()
        emb = variants[name]()
        seconds[name].append(time.perf_counter() - start)
        embeddings.setdefault(name, emb)
        note(f"encode rep {rep} {name}: {len(texts) / seconds[name][-1]:.0f} q/s")
    k = f"mrr_at_{int(cfg.eval.k)}"
    metrics = {name: score_embeddings(emb, es, **scoring_args(cfg.eval)).metrics for name, emb in embeddings.items()}
    tokens = inp.count_tokens(texts)
    recorder = RecordingModel(inp.model)
    encode(recorder, texts, bs, False)  # the batches our encode forms (untimed)
    ours_batches = [inp.count_tokens(call) for call in recorder.calls]
    work = {
        "plain": padded_work(tokens, encode_batches([len(t) for t in texts], plain_bs), inp.shape),
        "ours": padded_work(
            [n for call in ours_batches for n in call],
            np.split(np.arange(len(texts)), np.cumsum([len(c) for c in ours_batches])[:-1]),
            inp.shape,
        ),
    }
    rate = {name: len(texts) * len(s) / sum(s) for name, s in seconds.items()}
    record["encode"] = {
        "questions": len(texts),
        "seconds": seconds,
        "q_per_s": rate,
        "metrics": metrics,
        "work": work,
        "batch_size": bs,
        "plain_batch_size": plain_bs,
        "ours_batches": len(ours_batches),
        "padding": {name: w["padded_tokens"] / w["useful_tokens"] for name, w in work.items()},
    }
    ref = metrics["ours_torch"][k]
    rows = []
    labels = {
        "ours_torch": "ours (model.encode, torch fp32)",
        "ours_onnx": "ours on ONNX Runtime fp32",
        "ours_onnx_int8": "ours on ONNX Runtime dynamic int8 (per-channel MatMul)",
    }
    for i, (name, label) in enumerate(labels.items()):
        per_rep = [p / q for p, q in zip(seconds["plain"], seconds[name])]  # same texts: time ratio = rate ratio
        ratio = float(np.median(per_rep))
        drop = ref - metrics[name][k]
        onnx_row = name != "ours_torch"
        w = work["ours"]
        per_q = w["flops"] / len(texts)
        rows.append(
            {
                "row": f"2{'abc'[i]}",
                "what": f"encode questions/s: {label} vs plain SentenceTransformer.encode "
                f"(bs {plain_bs}), {len(texts):,} val questions "
                f"({len(es.queries):,} queries)",
                "a": rate[name],
                "b": rate["plain"],
                "ratio": ratio,
                "target": f">= 2x, {k} within {b.max_mrr_drop}" if onnx_row else None,
                "met": (ratio is not None and ratio >= 2 and abs(drop) <= float(b.max_mrr_drop)) if onnx_row else None,
                "quality": f"{k} {metrics[name][k]:.4f} (torch {ref:.4f}, diff {-drop:+.4f}); pair AP "
                f"{metrics[name]['pair_ap']:.4f}; per-rep ratios {', '.join(f'{x:.2f}' for x in per_rep)}; "
                f"padding x{record['encode']['padding']['ours']:.2f} vs "
                f"x{record['encode']['padding']['plain']:.2f}",
                "peak": [
                    rate[name] * per_q,
                    " fp32-equivalent" if name == "ours_onnx_int8" else "",
                    " vs ",
                    rate["plain"] * work["plain"]["flops"] / len(texts),
                ],
            }
        )
    return rows


# ---------------------------------------------------------------- 4. evaluation cost
def _status_bytes(field_name: str) -> int | None:
    """A `Vm*` field of /proc/self/status in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:  # pragma: no cover - non-Linux or restricted
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size: VmHWM (since the last reset), else ru_maxrss (which a child inherits from its
    parent across fork + exec, hence the reset above and a fresh process per size)."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def eval_cost_child(
    n: int,
    dim: int,
    query_share: float,
    pairs_per_question: float,
    seed: int,
    k: int,
    map_k: int,
    chunk_size: int,
    query_chunk: int,
) -> dict[str, Any]:
    """In a fresh process: score synthetic embeddings of `n` questions; wall time and peak memory above the inputs."""
    from contrastive.evaluation.metrics import score_embeddings

    es = synthetic_eval_set(n, query_share, pairs_per_question, seed)
    emb = unit_vectors(n, dim, seed)
    reset = reset_peak_rss()
    before = _status_bytes("VmRSS") or peak_rss_bytes()
    start = time.perf_counter()
    scored = score_embeddings(emb, es, k=k, map_k=map_k, chunk_size=chunk_size, query_chunk=query_chunk)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    return {
        "n": n,
        "queries": len(es.queries),
        "pairs": len(es.pair_labels),
        "seconds": seconds,
        "inputs_mb": emb.nbytes / 1e6,
        "rss_before_mb": before / 1e6,
        "peak_delta_mb": (peak - before) / 1e6,
        "peak_rss_mb": peak / 1e6,
        "peak_reset": reset,
        "mrr": scored.metrics[f"mrr_at_{k}"],
    }


def run_child(call: str, timeout_s: float) -> dict[str, Any]:
    """Run `contrastive.bench.<call>` in a fresh interpreter; its JSON result (or an error record)."""
    code = f"import json, contrastive.bench as b; print('@@' + json.dumps(b.{call}))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@")]
    if done.returncode or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1][2:])


def cached_baseline_share(inp: Inputs, cache_dir: Path) -> dict[str, float]:
    """The baseline's evaluation (embeddings + scoring) on the val subset with an empty cache, then again."""
    from contrastive.evaluation import Evaluator, score_embeddings, scoring_args

    shutil.rmtree(cache_dir, ignore_errors=True)
    cfg = OmegaConf.merge(inp.cfg, {"eval": {"cache_dir": str(cache_dir)}})
    evaluator = Evaluator(cfg.eval, cfg.model, inp.data, show_progress=False)
    times, hits = [], []
    for _ in range(2):
        start = time.perf_counter()
        emb, hit, _ = evaluator.baseline_embeddings(inp.eval_set, untuned=inp.model)
        score_embeddings(emb, inp.eval_set, **scoring_args(cfg.eval))
        times.append(time.perf_counter() - start)
        hits.append(hit)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        "first_s": times[0],
        "second_s": times[1],
        "share": times[1] / times[0],
        "hits": hits,
        "questions": len(inp.eval_set.texts),
    }


def section_eval_cost(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """Scoring cost at growing corpus sizes (one subprocess each), and the cached baseline's second evaluation."""
    cfg, b = inp.cfg, inp.cfg.bench.eval_cost
    ev = cfg.eval
    results = []
    for n in b.sizes:
        args = (
            int(n),
            int(b.dim),
            float(b.query_share),
            float(b.pairs_per_question),
            int(cfg.bench.seed),
            int(ev.k),
            int(ev.map_k),
            int(ev.chunk_size),
            int(ev.query_chunk_size),
        )
        call = f"eval_cost_child{args!r}"
        result = {"n": int(n), **run_child(call, float(b.timeout_s))}
        results.append(result)
        note(f"eval cost {int(n):,}: {result.get('seconds', result.get('error'))}")
    cache = cached_baseline_share(inp, Path(cfg.paths.cache_dir) / "bench-eval-cache")
    record["eval_cost"] = {"sizes": results, "cached_baseline": cache}
    rows = []
    for i, r in enumerate(results):
        if "error" in r:
            rows.append({"row": f"4{chr(97 + i)}", "what": f"scoring {r['n']:,} questions", "a": r["error"]})
            continue
        rows.append(
            {
                "row": f"4{chr(97 + i)}",
                "what": f"retrieval + pair scoring of {r['n']:,} questions ({r['queries']:,} queries, top-{ev.map_k}; "
                f"synthetic unit embeddings, d={b.dim}): wall s, peak MB above inputs",
                "a": f"{r['seconds']:.1f} s, +{r['peak_delta_mb']:.0f} MB",
                "b": None,
                "ratio": None,
                "quality": f"inputs {r['inputs_mb']:.0f} MB; peak RSS {r['peak_rss_mb']:.0f} MB",
                "peak": [2.0 * r["queries"] * r["n"] * b.dim / r["seconds"], " (the score matmuls)"],
            }
        )
    rows.append(
        {
            "row": f"4{chr(97 + len(results))}",
            "what": f"baseline evaluation, 2nd (cached) vs 1st (encode) on {cache['questions']:,} real val questions",
            "a": f"{cache['second_s']:.2f} s",
            "b": f"{cache['first_s']:.1f} s",
            "ratio": f"{100 * cache['share']:.2f}%",
            "target": "<= 5%",
            "met": cache["share"] <= 0.05,
            "quality": f"cache hit on 2nd: {cache['hits'][1]}",
        }
    )
    return rows


# ---------------------------------------------------------------- 5. search latency
def section_search(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """p50 / p95 of single-question top-k searches over the app's CorpusIndex; and encode + search end to end."""
    from contrastive.model import encode
    from contrastive.search import CorpusIndex

    cfg, b = inp.cfg, inp.cfg.bench.search
    n, k = int(b.corpus), int(b.k)
    index = CorpusIndex([f"q{i}" for i in range(n)], unit_vectors(n, 384, int(cfg.bench.seed)))
    queries = unit_vectors(int(b.queries) + int(b.warmup), 384, int(cfg.bench.seed) + 1)
    latencies = []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        index.search(q, k)
        if i >= int(b.warmup):
            latencies.append((time.perf_counter() - start) * 1e3)
    search_ms = percentiles(latencies)
    texts = inp.eval_set.texts[: int(b.encode_queries)]
    end_to_end = {}
    from contrastive.model import load_model

    for backend in ("torch", "onnx-int8"):
        model = (
            inp.model
            if backend == "torch"
            else load_model(
                cfg.model.name_or_path,
                cfg.model.max_seq_length,
                "cpu",
                backend=backend,
                cache_dir=cfg.model.onnx_cache_dir,
            )
        )
        encode(model, texts[:1], 1, False)
        times = []
        for text in texts:
            start = time.perf_counter()
            index.search(encode(model, [text], 1, False), k)
            times.append((time.perf_counter() - start) * 1e3)
        end_to_end[backend] = percentiles(times)
    record["search"] = {
        "corpus": n,
        "k": k,
        "search_ms": search_ms,
        "search_ms_all": latencies,
        "encode_plus_search_ms": end_to_end,
    }
    flops = 2.0 * n * 384 / (search_ms["p50"] / 1e3)
    return [
        {
            "row": "5",
            "what": f"app search: top-{k} over a {n:,}-question CorpusIndex (synthetic unit embeddings), "
            f"{len(latencies)} single queries: p50 / p95 ms",
            "a": f"{search_ms['p50']:.1f} / {search_ms['p95']:.1f} ms",
            "target": "p95 <= 30 ms",
            "met": search_ms["p95"] <= 30,
            "quality": "with the query's encode: torch {:.0f} / {:.0f} ms, onnx-int8 {:.0f} / {:.0f} ms".format(
                end_to_end["torch"]["p50"],
                end_to_end["torch"]["p95"],
                end_to_end["onnx-int8"]["p50"],
                end_to_end["onnx-int8"]["p95"],
            ),
            "peak": [flops, " (the p50 search's matmul)"],
        }
    ]


# ---------------------------------------------------------------- 6. sweep efficiency
def sweep_metric(emb: np.ndarray, es: Any, name: str, cfg: DictConfig) -> tuple[float, tuple[float, float]]:
    """The sweep objective `name` (a ranking metric or pair_ap) of embeddings `emb` on `es`, with its bootstrap CI."""
    from contrastive.evaluation.metrics import pair_metrics, pair_scores, retrieval_per_query, scoring_args

    ev = cfg.eval
    if name == "pair_ap":
        scores = pair_scores(emb, es)
        return pair_metrics(scores, es.pair_labels)["pair_ap"], pair_ap_ci(
            scores, es.pair_labels, int(ev.n_boot), float(ev.ci), int(ev.seed)
        )
    per_query = retrieval_per_query(emb, es, **scoring_args(ev))[name]
    return float(per_query.mean()), mean_ci(per_query, int(ev.n_boot), float(ev.ci), int(ev.seed))


def sweep_objective(
    inp: Inputs, dataset: Any, es: Any, threads_now: Callable[[], int | None], embeddings: dict[int, np.ndarray]
) -> Callable[[Any], float]:
    """An Optuna objective: a fresh copy of the model trained through our Trainer path at a sampled learning rate;
    train.objective_callback reports the objective on the val subset every `eval_every` steps to the trial, and
    pruning.Reporter raises TrialPruned when the study's pruner says so."""
    from contrastive.model import encode
    from contrastive.pruning import Reporter
    from contrastive.training import objective_callback

    cfg, b = inp.cfg, inp.cfg.bench.sweep

    def score(model: Any) -> float:
        emb = encode(model, es.texts, int(cfg.eval.batch_size), False)
        embeddings[-1] = emb
        return sweep_metric(emb, es, str(b.objective), OmegaConf.merge(cfg, {"eval": {"n_boot": 0}}))[0]

    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", float(b.lr_low), float(b.lr_high), log=True)
        threads = threads_now()
        trial.set_user_attr("threads", threads)
        model = copy.deepcopy(inp.model)
        run_cfg = OmegaConf.merge(
            our_config(
                cfg, int(b.batch_size), int(b.steps), int(cfg.trainer.seed), int(cfg.batch.length_grouping), threads
            ),
            {"trainer": {"lr": lr, "eval_steps": int(b.eval_every), "eval_every_examples": 0}},
        )
        callback = objective_callback(lambda: score(model), run_cfg, Reporter(trial))
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as out, torch_threads(threads), quiet_stdout():
            our_trainer(model, dataset, run_cfg, inp.lookup, out, [callback]).train()
            value = score(model)
        embeddings[trial.number] = embeddings.pop(-1)
        return value

    return objective


def sweep_summary(
    study: Any,
    seconds: float,
    embeddings: Mapping[int, np.ndarray],
    es: Any,
    cfg: DictConfig,
    steps: int,
    batch_size: int,
) -> dict[str, Any]:
    """Wall time, best value with its bootstrap CI, and each trial's state, value and steps trained."""
    best = study.best_trial
    states = [t.state.name for t in study.trials]
    _, best_ci = sweep_metric(embeddings[best.number], es, str(cfg.bench.sweep.objective), cfg)
    return {
        "seconds": seconds,
        "best_value": best.value,
        "best_params": best.params,
        "best_number": best.number,
        "best_ci": best_ci,
        "states": states,
        "values": [t.value for t in study.trials],
        "params": [t.params for t in study.trials],
        "steps_trained": [
            max(t.intermediate_values, default=0) // batch_size if t.state.name == "PRUNED" else steps
            for t in study.trials
        ],
    }


def section_sweep(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """The same seeded random search over the learning rate without pruning and with each configured pruner,
    trials interleaved (trial i of every sweep back to back, at the same thread count); wall time of each sweep
    and its best value with a CI.

    In-process Optuna over our job's pieces (train.objective_callback, pruning.Reporter and the sweeper's pruner
    specs in conf/hydra/sweeper/pruner/) rather than Hydra multirun: a full `contrastive.train` trial
    re-encodes the whole val split, minutes per trial on 2 cores."""
    import optuna
    from datasets import Dataset

    from contrastive.evaluation.eval_sets import build_eval_set
    from contrastive.pairs import cap_pairs
    from contrastive.pruning import build_pruner

    cfg, b = inp.cfg, inp.cfg.bench.sweep
    dataset = Dataset.from_pandas(inp.train_pairs, preserve_index=False)
    es = build_eval_set(cap_pairs(inp.data.splits["val"], int(b.val_pairs), int(cfg.bench.seed)), "val")
    specs: dict[str, Any] = {"none": None}
    for pruner_name in b.pruners:
        spec = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "hydra" / "sweeper" / "pruner" / f"{pruner_name}.yaml"))
        if spec.get("_target_", "").endswith(("MedianPruner", "PercentilePruner")):
            spec["n_startup_trials"] = int(b.n_startup_trials)
        specs[str(pruner_name)] = spec
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threads = {"now": None}  # resolved once per trial index, shared by that trial of every sweep
    studies, seconds, embeddings, objectives = {}, {}, {}, {}
    for name, spec in specs.items():
        studies[name] = optuna.create_study(
            direction="maximize",
            pruner=build_pruner(spec),
            sampler=optuna.samplers.RandomSampler(seed=int(cfg.bench.seed)),
        )
        seconds[name], embeddings[name] = 0.0, {}
        objectives[name] = sweep_objective(inp, dataset, es, lambda: threads["now"], embeddings[name])
    for trial, name in interleaved(list(studies), int(b.trials)):
        if name == "none":
            threads["now"] = resolve_threads(b.get("threads"), "bench.sweep.threads")
        start = time.perf_counter()
        studies[name].optimize(objectives[name], n_trials=1, catch=())
        seconds[name] += time.perf_counter() - start
        last = studies[name].trials[-1]
        note(
            f"sweep {name} trial {trial}: lr {last.params['lr']:.2e} {last.state.name} {last.value or ''} "
            f"at {threads['now']} threads ({seconds[name]:.0f} s so far)"
        )
    runs = {
        name: sweep_summary(studies[name], seconds[name], embeddings[name], es, cfg, int(b.steps), int(b.batch_size))
        for name in studies
    }
    record["sweep"] = {
        **runs,
        "eval_questions": len(es.texts),
        "queries": len(es.queries),
        "threads_setting": b.get("threads"),
        "pruners": specs,
        "how": "in-process optuna, trials interleaved, over contrastive.train.objective_callback + pruning.Reporter",
    }
    u, k = runs["none"], str(b.objective)
    rows = []
    for i, name in enumerate(n for n in studies if n != "none"):
        p = runs[name]
        ratio = safe_ratio(p["seconds"], u["seconds"])
        same = u["best_ci"][0] <= p["best_value"] <= u["best_ci"][1]
        rows.append(
            {
                "row": f"6{'abcd'[i]}",
                "what": f"sweep wall time: {b.trials} seeded random trials (lr log-uniform), "
                f"{b.steps} steps, objective every {b.eval_every}: {name} pruner vs none",
                "a": f"{p['seconds']:.0f} s",
                "b": f"{u['seconds']:.0f} s",
                "ratio": ratio,
                "target": "<= 0.5x at the same best",
                "met": bool(ratio is not None and ratio <= 0.5 and same),
                "quality": f"best {k} {p['best_value']:.4f} vs {u['best_value']:.4f} "
                f"[{u['best_ci'][0]:.4f}, {u['best_ci'][1]:.4f}] on {len(es.texts)} val questions, "
                f"{len(es.pair_labels)} pairs: {'same' if same else 'NOT the same'} within the CI; "
                f"pruned {p['states'].count('PRUNED')}/{len(p['states'])} trials, "
                f"{sum(p['steps_trained'])} vs {sum(u['steps_trained'])} steps trained",
            }
        )
    return rows


# ---------------------------------------------------------------- the run
SECTIONS: dict[str, Callable[[Inputs, dict[str, Any]], list[Row]]] = {
    "train": section_train,
    "encode": section_encode,
    "eval_cost": section_eval_cost,
    "search": section_search,
    "sweep": section_sweep,
}


def settings(cfg: DictConfig) -> dict[str, Any]:
    """Machine and library facts printed under the table."""
    import platform

    import sentence_transformers
    import torch

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:  # pragma: no cover - optional extra
        ort = None
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "onnxruntime": ort,
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every configured section; prints the markdown table and writes the JSON record."""
    from contrastive.errors import ConfigError

    unknown = [s for s in cfg.bench.sections if s not in SECTIONS and s != "peak"]
    if unknown:
        raise ConfigError(f"bench.sections: unknown {unknown[0]!r}; choose from peak, {', '.join(SECTIONS)}")
    started = time.perf_counter()
    record: dict[str, Any] = {"settings": settings(cfg), "config": OmegaConf.to_container(cfg.bench, resolve=True)}
    inp = load_inputs(cfg)
    record["source"] = inp.source_note
    record["shape"] = asdict(inp.shape)
    if "peak" in cfg.bench.sections:
        section_peak(inp)
    rows: list[Row] = []
    for name in cfg.bench.sections:
        if name == "peak":
            continue
        clock = time.perf_counter()
        note(f"section {name} ...")
        rows += SECTIONS[name](inp, record)
        record.setdefault("section_seconds", {})[name] = time.perf_counter() - clock
    if "peak" in cfg.bench.sections:
        section_peak(inp)
        rows.insert(0, peak_row(inp, record))
    for row in rows:
        row["peak"] = render_shares(row.get("peak"), inp.peak_flops)
    record["rows"] = rows
    record["wall_s"] = time.perf_counter() - started
    record["settings"]["load_avg_end"] = os.getloadavg()
    table = markdown_table(rows)
    print(table)
    print(
        f"\n{inp.source_note}; {record['settings']['cpus']} CPUs, torch {record['settings']['torch']} "
        f"({record['settings']['torch_threads']} threads), onnxruntime {record['settings']['onnxruntime']}; "
        f"load average {record['settings']['load_avg_start'][0]:.1f} -> {record['settings']['load_avg_end'][0]:.1f}; "
        f"bench wall time {record['wall_s'] / 60:.1f} min",
        flush=True,
    )
    out = Path(cfg.bench.output).expanduser()
    write_json(record, out, default=numpy_default)
    print(f"wrote {out}", flush=True)
    return record


@hydra_app("bench")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()

"""What the bench sections share: the inputs (data, train pairs, val subset, model), FLOP counting, timing
helpers and the bootstrap CIs beside each speed figure."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contrastive.bench.settings import BenchSettings

# The evaluation API the bench scores with (one place to repoint when it moves).
from contrastive.evaluation import (
    build_eval_set,
    pair_metrics_weighted,
    percentile_interval,
    resample_counts,
    score_embeddings,
    scoring_args,
)
from contrastive.model import encode
from contrastive.settings import DataSettings, EvalSettings, ModelSettings

Row = dict[str, Any]


# ---------------------------------------------------------------- FLOP counting
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


def encoder_shape(model) -> EncoderShape:
    """The FLOP-relevant shape of a SentenceTransformer's BERT-style encoder (its encoder's Linear layers)."""
    import torch

    inner = model[0].model
    config = inner.config
    encoder = getattr(inner, "encoder", inner)
    linear = sum(m.weight.numel() for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    return EncoderShape(int(linear), int(config.num_hidden_layers), int(config.hidden_size))


# ---------------------------------------------------------------- small helpers
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


def unit_vectors(n: int, dim: int, seed: int, chunk: int = 8192) -> np.ndarray:
    """`n` random float32 unit vectors, made in chunks (no float64 copy of the whole array)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def note(message: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_stdout():
    """Send what the block prints (the Trainer's log dicts) to stderr: stdout carries the table only."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


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


def resolve_threads(setting: int | str | None, field: str) -> int:
    """A thread setting (auto | N | null) as the count a run would use now (null: torch's current default)."""
    import torch

    from contrastive.model import cpu_threads

    return cpu_threads(setting, field=field) or torch.get_num_threads()


def run_child(module: str, call: str, timeout_s: float) -> dict[str, Any]:
    """Run `<module>.<call>` in a fresh interpreter; its JSON result (or an error record)."""
    code = f"import json, {module} as b; print('@@' + json.dumps(b.{call}))"
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


# ---------------------------------------------------------------- quality beside the speed
def mean_ci(values: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (evaluate's resampling and interval)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or n_boot == 0:
        return float("nan"), float("nan")
    means = resample_counts(np.random.default_rng(seed), values.size, n_boot) @ values / values.size
    return _nan_for_none(percentile_interval(means, ci))


def pair_ap_ci(scores: np.ndarray, labels: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI (over labeled pairs) of the average precision of `scores`."""
    if len(scores) == 0 or n_boot == 0:
        return float("nan"), float("nan")
    counts = resample_counts(np.random.default_rng(seed), len(scores), n_boot)
    ap = pair_metrics_weighted(np.asarray(scores), np.asarray(labels), counts)["pair_ap"]
    return _nan_for_none(percentile_interval(ap, ci))


def _nan_for_none(interval: tuple[float | None, float | None]) -> tuple[float, float]:
    lo, hi = interval
    return (float("nan") if lo is None else lo), (float("nan") if hi is None else hi)


def score_model(model: Any, es: Any, ev: EvalSettings) -> Any:
    """model.encode + score_embeddings of `model` on the eval set `es`, at eval settings `ev`."""
    return score_embeddings(encode(model, es.texts, int(ev.batch_size), False), es, **scoring_args(ev))


def val_subset(data: Any, pairs: int, seed: int) -> Any:
    """The eval set of `pairs` val pairs (whole linked groups, seeded)."""
    from contrastive.pairs import cap_pairs

    return build_eval_set(cap_pairs(data.splits["val"], pairs, seed), "val")


# ---------------------------------------------------------------- shared inputs
@dataclass
class Inputs:
    """What the sections share: settings, data, the training pairs, the val subset, the untuned model."""

    settings: BenchSettings
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


def data_settings(data: DataSettings, fixture_path: str) -> tuple[DataSettings, str]:
    """`data`, or the fixture when no local data file exists (offline: the hub is out of reach); and a note."""
    path = data.path or (data.default_path if data.source in ("auto", "local") else None)
    if path and Path(str(path)).expanduser().is_file():
        return data, f"data: {path}"
    split = dataclasses.replace(data.split, fractions={"train": 0.6, "val": 0.2, "test": 0.2})
    fallback = dataclasses.replace(data, source="local", path=fixture_path, split=split)
    return fallback, f"data: FIXTURE {fixture_path} (no file at {path}); figures are not QQP's"


def load_inputs(settings: BenchSettings) -> Inputs:
    """Prepare the data, the train pairs (positives, whole linked groups), the val subset and the model."""
    from contrastive.data import prepare
    from contrastive.model import load_model
    from contrastive.pairs import cap_pairs, component_lookup, positives
    from contrastive.samplers import SamplerFactory

    b, model_settings = settings.bench, settings.model
    data_cfg, source_note = data_settings(settings.data, b.fixture_path)
    data = prepare(data_cfg)
    train = data.splits["train"]
    dup = cap_pairs(train[train["label"] == 1].reset_index(drop=True), int(b.train.pairs), int(b.seed))
    pairs = positives(dup).drop(columns="comp").reset_index(drop=True)
    eval_set = val_subset(data, int(b.subset.val_pairs), int(b.seed))
    model = load_model(model_settings.name_or_path, model_settings.max_seq_length, "cpu")
    counter = SamplerFactory.token_counter(model_settings.name_or_path, model_settings.max_seq_length)
    note(
        f"{source_note}; {len(pairs):,} train pairs; val subset {eval_set.n_split:,} questions, "
        f"{len(eval_set.queries):,} queries, {len(eval_set.pair_labels):,} pairs"
    )
    return Inputs(
        settings, data, source_note, pairs, component_lookup([train]), eval_set, model, encoder_shape(model), counter
    )


def backend_model(model: ModelSettings, backend: str) -> Any:
    """The configured encoder on CPU on inference backend `backend` (ONNX files exported into its cache dir)."""
    from contrastive.model import load_model

    return load_model(model.name_or_path, model.max_seq_length, "cpu", backend=backend, cache_dir=model.onnx_cache_dir)

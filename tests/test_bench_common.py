"""contrastive/bench/common.py: FLOP counting, small helpers, bootstrap CIs, the data fallback. No timings are
asserted here."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from conftest import train_settings

from contrastive.bench.common import (
    EncoderShape,
    batch_flops,
    data_settings,
    encoder_shape,
    forward_flops_per_token,
    interleaved,
    mean_ci,
    padded_work,
    pair_ap_ci,
    percentiles,
    safe_ratio,
)
from contrastive.evaluation import pair_metrics

MINILM = EncoderShape(linear_params=6 * (4 * 384 * 384 + 2 * 384 * 1536), layers=6, hidden=384)


def test_data_settings_fall_back_to_the_fixture_and_say_so(tmp_path):
    data = train_settings(f"data.default_path={tmp_path / 'missing.pq'}").data
    assert data.source == "auto" and data.path is None
    fallback, note = data_settings(data, "fixture.csv")
    assert fallback.path == "fixture.csv" and fallback.source == "local" and "FIXTURE" in note
    assert dict(fallback.split.fractions) == {"train": 0.6, "val": 0.2, "test": 0.2}
    (tmp_path / "missing.pq").write_text("x")
    same, note = data_settings(data, "fixture.csv")
    assert same is data and "FIXTURE" not in note


def test_forward_flops_per_token_counts_matmuls_and_attention():
    shape = EncoderShape(linear_params=1000, layers=2, hidden=8)
    assert forward_flops_per_token(shape, 5) == 2 * 1000 + 4 * 2 * 8 * 5
    assert batch_flops(shape, rows=3, seq_len=5) == 3 * 5 * forward_flops_per_token(shape, 5)
    assert batch_flops(shape, 3, 5, training=True) == 3 * batch_flops(shape, 3, 5)


def test_minilm_forward_flops_are_about_twice_its_matmul_weights():
    """~10.6M matmul weights (the 11.7M embedding weights are lookups, not FLOPs): ~21M FLOPs per token."""
    per_token = forward_flops_per_token(MINILM, 16)
    assert 2 * 10.6e6 < per_token < 2 * 10.7e6 + 4 * 6 * 384 * 16


def test_encoder_shape_reads_linear_layers_of_the_encoder_only():
    class Inner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = torch.nn.Embedding(100, 4)
            self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4))
            self.config = SimpleNamespace(num_hidden_layers=1, hidden_size=4)

    shape = encoder_shape([SimpleNamespace(model=Inner())])
    assert shape == EncoderShape(linear_params=4 * 8 + 8 * 4, layers=1, hidden=4)


def test_padded_work_pads_each_batch_to_its_longest():
    shape = EncoderShape(10, 1, 2)
    work = padded_work([3, 5, 2, 2], [[0, 1], [2, 3]], shape)
    assert work["padded_tokens"] == 2 * 5 + 2 * 2
    assert work["useful_tokens"] == 12
    assert work["flops"] == batch_flops(shape, 2, 5) + batch_flops(shape, 2, 2)
    assert work["useful_flops"] == sum(n * forward_flops_per_token(shape, n) for n in (3, 5, 2, 2))
    assert padded_work([3], [[0]], shape, training=True)["flops"] == 3 * padded_work([3], [[0]], shape)["flops"]


def test_interleaved_alternates_variants_within_each_rep():
    assert interleaved(["a", "b"], 2) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]


def test_safe_ratio_and_percentiles():
    assert safe_ratio(3.0, 2.0) == 1.5
    assert safe_ratio(1.0, 0.0) is None and safe_ratio(None, 1.0) is None and safe_ratio(float("nan"), 1) is None
    assert percentiles(list(range(101))) == {"p50": 50.0, "p95": 95.0}


def test_mean_ci_brackets_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(5000)
    lo, hi = mean_ci(small, 500, 0.95, 0)
    assert lo < small.mean() < hi
    lo2, hi2 = mean_ci(large, 500, 0.95, 0)
    assert lo2 < large.mean() < hi2 and hi2 - lo2 < hi - lo


def test_pair_ap_ci_brackets_the_ap():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = labels * 0.5 + rng.random(300)
    lo, hi = pair_ap_ci(scores, labels, 300, 0.95, 0)
    assert lo < pair_metrics(scores, labels)["pair_ap"] < hi

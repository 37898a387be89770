"""contrastive/bench/train.py: epoch padding, the counting collator, per-rep ratios, our variants' settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config

from contrastive.bench.common import EncoderShape, batch_flops
from contrastive.bench.settings import load_bench
from contrastive.bench.train import CountingCollator, epoch_padding, our_settings, rep_ratios

MINILM = EncoderShape(linear_params=6 * (4 * 384 * 384 + 2 * 384 * 1536), layers=6, hidden=384)


def test_our_settings_train_mnrl_only_with_the_variant_s_batches_and_nothing_logged():
    base = load_bench(compose_config("bench", "data=fixture")).training()
    ours = our_settings(base, batch_size=16, steps=3, seed=7, grouping=4, threads=1)
    assert (ours.batch.size, ours.batch.sampler, ours.batch.length_grouping, ours.batch.num_threads) == (
        16,
        "component",
        4,
        1,
    )
    assert (ours.trainer.max_steps, ours.trainer.seed, ours.trainer.eval_steps) == (3, 7, 0)
    assert not ours.loss.hard_negatives and ours.loss.aux_weight == 0.0 and not ours.tracking.enabled
    assert ours.trainer.lr == base.trainer.lr and ours.model == base.model
    assert base.batch.size != 16 or base.trainer.max_steps != 3  # the base settings are left as they were


def test_epoch_padding_pads_each_column_separately():
    out = epoch_padding([[0, 1]], [[2, 4], [6, 3]])
    assert out["padded_tokens"] == 2 * 4 + 2 * 6
    assert out["useful_tokens"] == 15
    assert out["ratio"] == pytest.approx(20 / 15)


def test_counting_collator_records_rows_and_tokens_and_delegates():
    inner = SimpleNamespace(valid_label_columns=["label"])
    masks = {
        "anchor_attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]),
        "positive_attention_mask": torch.tensor([[1, 1], [1, 1]]),
        "anchor_input_ids": torch.zeros(2, 3),
    }

    class Collate:
        valid_label_columns = ["label"]

        def __call__(self, features):
            return masks

    counter = CountingCollator(Collate(), MINILM)
    assert counter([{}, {}]) is masks
    assert counter.valid_label_columns == inner.valid_label_columns
    record = counter.batches[0]
    assert record["rows"] == 2
    assert record["padded_tokens"] == 2 * 3 + 2 * 2
    assert record["useful_tokens"] == 4 + 4
    assert record["flops"] == batch_flops(MINILM, 2, 3, True) + batch_flops(MINILM, 2, 2, True)


def test_rep_ratios_pair_the_runs_of_each_rep():
    runs = {"a": [{"pairs_per_s": 30.0}, {"pairs_per_s": 10.0}], "b": [{"pairs_per_s": 15.0}, {"pairs_per_s": 10.0}]}
    assert rep_ratios(runs, "a", "b") == [2.0, 1.0]

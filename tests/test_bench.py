"""bench.py's pure helpers (FLOP counting, padding, table, bootstrap, synthetic data), the length-grouped
component sampler, thread settings and the ONNX backend's config errors. No timings are asserted here."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose_config
from datasets import Dataset

from contrastive import CONF_DIR, bench
from contrastive.bench import (
    CountingCollator,
    EncoderShape,
    batch_flops,
    encode_batches,
    epoch_padding,
    forward_flops_per_token,
    interleaved,
    markdown_table,
    mean_ci,
    padded_work,
    pair_ap_ci,
    percentiles,
    safe_ratio,
    synthetic_eval_set,
)
from contrastive.errors import ConfigError, ModelError
from contrastive.evaluation import pair_metrics, score_embeddings
from contrastive.model import cpu_threads, load_model
from contrastive.samplers import ComponentBatchSampler, SamplerFactory, length_grouped

MINILM = EncoderShape(linear_params=6 * (4 * 384 * 384 + 2 * 384 * 1536), layers=6, hidden=384)


# ---------------------------------------------------------------- the config
def test_bench_config_composes_and_resolves():
    from omegaconf import OmegaConf

    cfg = compose_config("bench", "bench.train.reps=1")
    bench_cfg = OmegaConf.to_container(cfg.bench, resolve=True)
    assert bench_cfg["train"]["reps"] == 1
    assert set(bench_cfg["sections"]) <= {"peak", *bench.SECTIONS}
    assert bench_cfg["train"]["threads"] == cfg.batch.num_threads
    assert str(cfg.model.onnx_cache_dir).startswith(str(cfg.paths.cache_dir))
    for name in bench_cfg["sweep"]["pruners"]:
        assert (CONF_DIR / "hydra" / "sweeper" / "pruner" / f"{name}.yaml").is_file()


def test_data_config_falls_back_to_the_fixture_and_says_so(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "data": {
                "source": "auto",
                "path": None,
                "default_path": str(tmp_path / "missing.pq"),
                "split": {"fractions": {"train": 0.8, "val": 0.1, "test": 0.1}},
            },
            "bench": {"fixture_path": "fixture.csv"},
        }
    )
    data, note = bench.data_config(cfg)
    assert data.path == "fixture.csv" and data.source == "local" and "FIXTURE" in note
    (tmp_path / "missing.pq").write_text("x")
    data, note = bench.data_config(cfg)
    assert data.path is None and "FIXTURE" not in note


# ---------------------------------------------------------------- FLOP counting
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

    shape = bench.encoder_shape([SimpleNamespace(model=Inner())])
    assert shape == EncoderShape(linear_params=4 * 8 + 8 * 4, layers=1, hidden=4)


def test_padded_work_pads_each_batch_to_its_longest():
    shape = EncoderShape(10, 1, 2)
    work = padded_work([3, 5, 2, 2], [[0, 1], [2, 3]], shape)
    assert work["padded_tokens"] == 2 * 5 + 2 * 2
    assert work["useful_tokens"] == 12
    assert work["flops"] == batch_flops(shape, 2, 5) + batch_flops(shape, 2, 2)
    assert work["useful_flops"] == sum(n * forward_flops_per_token(shape, n) for n in (3, 5, 2, 2))
    assert padded_work([3], [[0]], shape, training=True)["flops"] == 3 * padded_work([3], [[0]], shape)["flops"]


def test_encode_batches_go_longest_first_and_cover_every_row_once():
    batches = encode_batches([3, 10, 1, 7, 7], batch_size=2)
    assert [list(b) for b in batches] == [[1, 3], [4, 0], [2]]


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


def test_recording_model_sees_each_batch_of_our_encode():
    class Fake:
        tokenizer = None

        def get_embedding_dimension(self) -> int:
            return 4

        def encode(self, texts, **kwargs):
            return np.ones((len(texts), 4), dtype=np.float32)

    from contrastive.model import encode

    recorder = bench.RecordingModel(Fake())
    out = encode(recorder, ["a", "bbb", "cc", "dddd", "e"], 2, show_progress=False)
    assert out.shape == (5, 4)
    assert [len(c) for c in recorder.calls] == [2, 2, 1]
    assert sorted(t for c in recorder.calls for t in c) == ["a", "bbb", "cc", "dddd", "e"]
    assert recorder.get_embedding_dimension() == 4


# ---------------------------------------------------------------- small helpers
def test_interleaved_alternates_variants_within_each_rep():
    assert interleaved(["a", "b"], 2) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]


def test_rep_ratios_pair_the_runs_of_each_rep():
    runs = {"a": [{"pairs_per_s": 30.0}, {"pairs_per_s": 10.0}], "b": [{"pairs_per_s": 15.0}, {"pairs_per_s": 10.0}]}
    assert bench.rep_ratios(runs, "a", "b") == [2.0, 1.0]


def test_safe_ratio_and_percentiles():
    assert safe_ratio(3.0, 2.0) == 1.5
    assert safe_ratio(1.0, 0.0) is None and safe_ratio(None, 1.0) is None and safe_ratio(float("nan"), 1) is None
    assert percentiles(list(range(101))) == {"p50": 50.0, "p95": 95.0}


def test_markdown_table_has_one_line_per_row_and_escapes_pipes():
    rows = [
        {"row": "1a", "what": "a | b", "a": 30.0, "b": 20.0, "ratio": 1.5, "target": ">= 1.5x", "met": True},
        {"row": "4", "what": "no ratio", "a": "2.0 s"},
    ]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| row | compares (A vs B) | A | B | ratio A/B |")
    assert set(lines[1].replace("|", "")) == {"-"}
    cells = [c.strip() for c in lines[2].strip("|").split(" | ")]
    assert cells[:7] == ["1a", "a \\| b", "30.0", "20.0", "1.50x", ">= 1.5x", "yes"]
    assert lines[3].count("| - |") >= 2  # missing cells are dashes
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])


def test_render_shares_uses_the_final_peak():
    assert bench.render_shares([50e9, " vs ", 25e9], 100e9) == "50.0% vs 25.0%"
    assert bench.render_shares([1e9], None) == "-"
    assert bench.render_shares("100%", 1.0) == "100%" and bench.render_shares(None, 1.0) is None


# ---------------------------------------------------------------- bootstrap CIs
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


# ---------------------------------------------------------------- synthetic evaluation data
def test_synthetic_eval_set_follows_the_protocol():
    es = synthetic_eval_set(1000, query_share=0.34, pairs_per_question=0.6, seed=0)
    sizes = np.bincount(es.comp)
    assert len(es.keys) == len(es.texts) == es.n_split == 1000
    assert abs(len(es.queries) / 1000 - 0.34) < 0.01
    assert (sizes[es.comp[es.queries]] >= 2).all()
    assert np.array_equal(es.n_relevant, sizes[es.comp[es.queries]] - 1)
    same = es.comp[es.pair_rows[:, 0]] == es.comp[es.pair_rows[:, 1]]
    assert np.array_equal(same, es.pair_labels == 1)
    assert (es.pair_rows[:, 0] != es.pair_rows[:, 1]).all()
    emb = bench.unit_vectors(1000, 16, 0)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    scored = score_embeddings(emb, es, k=10, map_k=100, chunk_size=256, query_chunk=128)
    assert scored.metrics["n_queries"] == len(es.queries)


# ---------------------------------------------------------------- the length-grouped component sampler
def _grouped_dataset(n: int = 600, seed: int = 0) -> tuple[Dataset, dict[str, int]]:
    """(anchor, positive) pairs of varied lengths (a duplicate's length near its anchor's, as in QQP); about three
    examples per duplicate component."""
    rng = random.Random(seed)
    anchors, positives, lookup = [], [], {}
    for i in range(n):
        comp = i // 3
        words = rng.randint(4, 60)
        a = f"c{comp} anchor {i} " + "word " * words
        p = f"c{comp} positive {i} " + "word " * (words + rng.randint(-3, 3))
        anchors.append(a.strip())
        positives.append(p.strip())
        for text in (anchors[-1], positives[-1]):
            lookup[" ".join(text.lower().split())] = comp
    return Dataset.from_dict({"anchor": anchors, "positive": positives}), lookup


def _words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def _clashes(batches: list[list[int]], dataset: Dataset, lookup: dict[str, int]) -> int:
    bad = 0
    for batch in batches:
        comps = [lookup[" ".join(dataset[i]["anchor"].lower().split())] for i in batch]
        bad += len(comps) - len(set(comps))
    return bad


def test_length_grouped_sorts_each_window_and_keeps_every_index():
    order = [5, 3, 0, 4, 1, 2]
    lengths = [10, 40, 20, 30, 50, 0]
    out = length_grouped(order, lengths, window=3)
    assert sorted(out) == sorted(order)
    assert out == [5, 0, 3, 2, 1, 4]
    assert length_grouped(order, lengths, window=1) == order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_sampler_keeps_the_examples_clean_and_pads_less(seed):
    dataset, lookup = _grouped_dataset()
    columns = [_words(dataset[c]) for c in dataset.column_names]
    lengths = [a + b for a, b in zip(*columns)]
    plain = ComponentBatchSampler(dataset, batch_size=32, drop_last=False, lookup=lookup, seed=seed)
    grouped = ComponentBatchSampler(
        dataset, batch_size=32, drop_last=False, lookup=lookup, seed=seed, lengths=lengths, mega_batches=4
    )
    batches, base = list(grouped), list(plain)
    used = list(itertools.chain.from_iterable(batches))
    assert len(used) == len(set(used))  # each example at most once per epoch
    assert len(used) + grouped.stats["dropped"] == len(dataset)  # the rest reported as dropped
    assert grouped.stats["dropped"] <= len(dataset) // 10
    assert _clashes(batches, dataset, lookup) == 0 and _clashes(base, dataset, lookup) == 0
    assert all(len(b) == 32 for b in batches[:-1]) and len(grouped) == len(batches)
    assert epoch_padding(batches, columns)["ratio"] < 0.8 * epoch_padding(base, columns)["ratio"]
    assert [len(b) for b in batches] != sorted(len(b) for b in batches) or len(batches) < 3
    assert (
        list(
            ComponentBatchSampler(
                dataset, batch_size=32, drop_last=False, lookup=lookup, seed=seed, lengths=lengths, mega_batches=4
            )
        )
        == batches
    )  # deterministic


def test_grouped_batches_are_shuffled_not_short_to_long():
    dataset, lookup = _grouped_dataset()
    lengths = [a + b for a, b in zip(_words(dataset["anchor"]), _words(dataset["positive"]))]
    sampler = ComponentBatchSampler(
        dataset, batch_size=32, drop_last=True, lookup=lookup, seed=0, lengths=lengths, mega_batches=8
    )
    longest = [max(lengths[i] for i in b) for b in sampler]
    assert longest != sorted(longest)
    sampler.set_epoch(1)
    assert [max(lengths[i] for i in b) for b in sampler] != longest


def test_grouping_off_leaves_the_batches_as_before():
    dataset, lookup = _grouped_dataset(200)
    lengths = list(range(200))
    base = list(ComponentBatchSampler(dataset, batch_size=16, drop_last=False, lookup=lookup, seed=3))
    for windows in (0, 1):
        same = ComponentBatchSampler(
            dataset, batch_size=16, drop_last=False, lookup=lookup, seed=3, lengths=lengths, mega_batches=windows
        )
        assert list(same) == base
    with pytest.raises(ValueError, match="lengths"):
        ComponentBatchSampler(dataset, batch_size=16, drop_last=False, lookup=lookup, lengths=[1, 2], mega_batches=4)


def test_grouped_plain_batches_for_labeled_pairs_keep_every_example():
    dataset = Dataset.from_dict(
        {
            "sentence1": [f"s {'w ' * i}" for i in range(100)],
            "sentence2": [f"t {'w ' * (99 - i)}" for i in range(100)],
            "label": [float(i % 2) for i in range(100)],
        }
    )
    sampler = ComponentBatchSampler(dataset, batch_size=16, drop_last=False, lengths=list(range(100)), mega_batches=2)
    batches = list(sampler)
    assert sampler.plain
    assert sorted(itertools.chain.from_iterable(batches)) == list(range(100))
    assert len(batches[-1]) == 100 % 16  # the short batch stays last


def test_sampler_factory_wires_length_grouping_through_a_token_counter():
    dataset, lookup = _grouped_dataset(300)
    factory = SamplerFactory("component", lookup, 4, _words)
    sampler = factory(dataset, batch_size=32, drop_last=False, seed=0)
    assert sampler.mega_batches == 4
    assert sampler.lengths == [a + b for a, b in zip(_words(dataset["anchor"]), _words(dataset["positive"]))]
    assert SamplerFactory("component", lookup)(dataset, batch_size=32, drop_last=False).mega_batches == 0
    with pytest.raises(ValueError, match="component sampler"):
        SamplerFactory("no_duplicates", lookup, 4, _words)


# ---------------------------------------------------------------- thread settings and the ONNX backend
def test_cpu_threads_settings():
    assert cpu_threads(None) is None
    assert cpu_threads(3) == 3
    assert cpu_threads("auto", cores=2, idle=2.0) == 2
    assert cpu_threads("auto", cores=2, idle=1.8) == 2
    assert cpu_threads("auto", cores=2, idle=1.5) == 1  # another process holds half a core: one thread
    assert cpu_threads("auto", cores=2, idle=0.9) == 1
    assert cpu_threads("auto", cores=2, idle=0.0) == 1  # never zero
    assert cpu_threads("auto", cores=4, idle=9.0) == 4  # never more than the cores
    assert 1 <= cpu_threads("auto") <= (os.cpu_count() or 1)
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ConfigError, match="batch.num_threads"):
            cpu_threads(bad, field="batch.num_threads")


def test_load_model_rejects_unknown_backends_and_onnx_without_a_cache_dir():
    with pytest.raises(ModelError, match="model.backend"):
        load_model("all-MiniLM-L6-v2", backend="tensorrt")
    with pytest.raises(ModelError, match="onnx_cache_dir"):
        load_model("all-MiniLM-L6-v2", backend="onnx")


@pytest.mark.slow
def test_onnx_backends_match_torch_and_export_into_the_cache_dir(tmp_path):
    """fp32 ONNX reproduces the torch embeddings; dynamic int8 stays close; files land in the cache dir only."""
    pytest.importorskip("onnxruntime")
    from contrastive.model import encode, fingerprint, resolve_model

    texts = [
        "How do I learn Python?",
        "What is the best way to learn Python quickly?",
        "Why is the sky blue?",
        "a " * 300,
    ]
    packaged = sorted(p.name for p in Path(resolve_model("all-MiniLM-L6-v2")).rglob("*"))
    reference = encode(load_model("all-MiniLM-L6-v2", 128), texts, 2, show_progress=False)
    for backend, floor in (("onnx", 0.9999), ("onnx-int8", 0.97)):
        model = load_model("all-MiniLM-L6-v2", 128, backend=backend, cache_dir=tmp_path)
        emb = encode(model, texts, 2, show_progress=False)
        assert emb.shape == reference.shape
        assert (emb * reference).sum(axis=1).min() > floor
    exported = sorted(p.name for p in (tmp_path / fingerprint("all-MiniLM-L6-v2")).iterdir())
    assert exported == ["model.onnx", "model_int8_per_channel.onnx"]
    assert sorted(p.name for p in Path(resolve_model("all-MiniLM-L6-v2")).rglob("*")) == packaged

"""contrastive/samplers.py: the component sampler with length grouping, and the sampler factory."""

from __future__ import annotations

import itertools
import random

import pytest
from datasets import Dataset

from contrastive.bench.train import epoch_padding
from contrastive.samplers import ComponentBatchSampler, SamplerFactory, length_grouped


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


def test_the_token_counter_tokenizes_each_text_once_per_process(monkeypatch):
    """A sweep's later trials in one worker count tokens from memory; counts match the tokenizer's own."""
    import contrastive.samplers as samplers
    from contrastive.model import resolve_model

    count = SamplerFactory.token_counter("sentence-transformers/all-MiniLM-L6-v2", 8)
    tokenizer, known = samplers._tokenizer_counts(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), 8)
    texts = ["How do I learn Python?", "a much longer question that the limit of eight tokens truncates", "x"]
    expected = [len(row) for row in tokenizer(texts, truncation=True, max_length=8)["input_ids"]]
    assert count(texts) == expected and expected[1] == 8
    assert set(texts) <= set(known)
    monkeypatch.setattr(samplers, "_tokenizer_counts", lambda *a: (None, known))  # no tokenizer: memory only
    assert count(list(reversed(texts))) == list(reversed(expected))

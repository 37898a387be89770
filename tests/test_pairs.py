"""pairs.py: positives, hard-negative triplets, labeled pairs, the deterministic cap and the component sampler."""

from __future__ import annotations

import itertools
import random

import pandas as pd
import pytest
import torch
from conftest import fixture_data_settings
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler, ProportionalBatchSampler
from torch.utils.data import ConcatDataset

from contrastive.data import COLUMNS, components, question_key, split_pairs, validate
from contrastive.pairs import (
    aux_sample,
    build_examples,
    cap_pairs,
    component_lookup,
    labeled_pairs,
    negatives_by_component,
    positives,
    triplets,
)
from contrastive.samplers import ComponentBatchSampler


def _pairs(rows) -> pd.DataFrame:
    """Validated pairs with keys and component ids, all in one split."""
    frame = validate(pd.DataFrame(list(rows), columns=list(COLUMNS)), fixture_data_settings())[0]
    return split_pairs(frame, {"train": 1.0}, seed=0)[0]["train"]


def _topics(n: int, negatives_per_topic: int = 1) -> list[tuple[str, str, int]]:
    """Per topic a chain q0~q1~q2 and non-duplicates of q0 / q1, shuffled."""
    rows = []
    for t in range(n):
        q = [f"topic {t} question {v}?" for v in range(3)]
        rows += [(q[0], q[1], 1), (q[1], q[2], 1)]
        rows += [(q[v % 2], f"topic {t} other {v}?", 0) for v in range(negatives_per_topic)]
    random.Random(0).shuffle(rows)
    return rows


def _comps_of(texts, lookup) -> set:
    return {lookup[question_key(t)] for t in texts}


# ---------------------------------------------------------------- cap
def test_cap_pairs_noop_when_not_needed():
    frame = _pairs(_topics(5))
    assert cap_pairs(frame, None) is frame
    assert cap_pairs(frame, 0) is frame
    assert cap_pairs(frame, len(frame)) is frame


def test_cap_pairs_deterministic_and_order_independent():
    frame = _pairs(_topics(60, 2))
    capped = cap_pairs(frame, 50, seed=3)
    rows = lambda df: set(zip(df["key1"], df["key2"], df["label"]))  # noqa: E731
    assert len(capped) == 50
    assert rows(cap_pairs(frame, 50, seed=3)) == rows(capped)
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert rows(cap_pairs(shuffled, 50, seed=3)) == rows(capped)
    assert rows(cap_pairs(frame, 50, seed=4)) != rows(capped)
    assert rows(capped) <= rows(frame)


def test_cap_pairs_order_independent_with_conflicting_labels():
    rows = []
    for i in range(40):  # the same pair labeled both ways: kept twice by validation
        rows += [(f"q{i} a?", f"q{i} b?", 1), (f"q{i} a?", f"q{i} b?", 0)]
    frame = _pairs(rows)
    assert len(frame) == 80
    picked = {
        frozenset(zip(df["key1"], df["label"]))
        for df in (
            cap_pairs(frame.sample(frac=1.0, random_state=s).reset_index(drop=True), 41, seed=0) for s in range(6)
        )
    }
    assert len(picked) == 1


# ---------------------------------------------------------------- positives, triplets, labeled pairs
def test_positives_from_duplicates_only_and_both_orders():
    frame = _pairs(_topics(4))
    pos = positives(frame)
    assert list(pos.columns) == ["anchor", "positive", "comp"]
    assert len(pos) == int((frame["label"] == 1).sum())
    assert set(zip(pos["anchor"], pos["positive"])) == set(
        zip(frame.loc[frame["label"] == 1, "question1"], frame.loc[frame["label"] == 1, "question2"])
    )
    both = positives(frame, both_orders=True)
    assert len(both) == 2 * len(pos)
    assert set(zip(both["anchor"], both["positive"])) == set(zip(pos["anchor"], pos["positive"])) | set(
        zip(pos["positive"], pos["anchor"])
    )


def test_negatives_by_component():
    frame = _pairs([("A?", "B?", 1), ("B?", "C?", 1), ("A?", "X?", 0), ("C?", "Y?", 0), ("A?", "C?", 0)])
    comp = component_lookup([frame])
    pool = negatives_by_component(frame)
    assert pool[comp["a?"]] == ["X?", "Y?"]  # A~C is in-component: never a negative
    assert pool[comp["x?"]] == ["A?"]


def test_triplets_negative_outside_anchor_component_and_labeled():
    frame = _pairs(_topics(30, 3))
    lookup = component_lookup([frame])
    trip, rest = triplets(frame, seed=0)
    assert list(trip.columns) == ["anchor", "positive", "negative", "comp"]
    assert len(trip) + len(rest) == int((frame["label"] == 1).sum())
    non_dup = set(map(frozenset, zip(frame.loc[frame["label"] == 0, "key1"], frame.loc[frame["label"] == 0, "key2"])))
    members = {}
    for key, comp in lookup.items():
        members.setdefault(comp, set()).add(key)
    for anchor, negative, comp in zip(trip["anchor"], trip["negative"], trip["comp"]):
        neg = question_key(negative)
        assert lookup[neg] != lookup[question_key(anchor)] == comp
        assert any(frozenset((neg, m)) in non_dup for m in members[comp])


def test_triplets_deterministic_order_independent_and_seeded():
    frame = _pairs(_topics(30, 3))
    first, _ = triplets(frame, seed=0)
    as_set = lambda df: set(zip(df["anchor"], df["positive"], df["negative"]))  # noqa: E731
    pd.testing.assert_frame_equal(triplets(frame, seed=0)[0], first)
    shuffled = frame.sample(frac=1.0, random_state=2).reset_index(drop=True)
    assert as_set(triplets(shuffled, seed=0)[0]) == as_set(first)
    assert as_set(triplets(frame, seed=1)[0]) != as_set(first)  # 3 candidate negatives per component


def test_triplets_pairs_without_negatives_are_returned_apart():
    frame = _pairs([("A?", "B?", 1), ("C?", "D?", 1), ("C?", "E?", 0)])
    trip, rest = triplets(frame)
    assert list(zip(trip["anchor"], trip["positive"], trip["negative"])) == [("C?", "D?", "E?")]
    assert list(zip(rest["anchor"], rest["positive"])) == [("A?", "B?")]


def test_labeled_pairs_have_float_labels():
    frame = _pairs(_topics(3))
    out = labeled_pairs(frame)
    assert list(out.columns) == ["sentence1", "sentence2", "label"]
    assert out["label"].dtype == float
    assert out["label"].tolist() == frame["label"].astype(float).tolist()
    assert out["sentence1"].tolist() == frame["question1"].tolist()


@pytest.mark.parametrize(("hard_negatives", "with_aux"), list(itertools.product([True, False], repeat=2)))
def test_build_examples_sizes(hard_negatives, with_aux):
    frame = _pairs([("A?", "B?", 1), ("B?", "C?", 1), ("D?", "E?", 1), ("A?", "X?", 0)])
    examples, sizes = build_examples(frame, hard_negatives=hard_negatives, with_aux=with_aux)
    expected = {"mnrl_triplets": 2, "mnrl_pairs": 1} if hard_negatives else {"mnrl_pairs": 3}
    if with_aux:
        expected["aux_pairs"] = 4
    assert {name: len(df) for name, df in examples.items()} == expected
    assert sizes == {f"examples_{name}": n for name, n in expected.items()}
    assert all("comp" not in df.columns for df in examples.values())
    doubled, _ = build_examples(frame, hard_negatives=hard_negatives, with_aux=False, both_orders=True)
    assert sum(map(len, doubled.values())) == 2 * 3


# ---------------------------------------------------------------- mined negatives (contrastive.mining)
MINED_FRAME = [("A?", "B?", 1), ("B?", "C?", 1), ("D?", "E?", 1), ("A?", "X?", 0), ("F?", "G?", 1)]


def test_build_examples_with_mined_negatives():
    frame = _pairs(MINED_FRAME)
    mined = {("A?", "B?"): ["X?", "M?", "N?"], ("B?", "C?"): ["M?"], ("D?", "E?"): ["P?", "Q?", "R?"]}
    examples, sizes = build_examples(frame, True, False, negatives="mined", mined=mined, num_negatives=2)
    assert list(examples) == ["mnrl_mined", "mnrl_pairs"]
    got = examples["mnrl_mined"]
    assert list(got.columns) == ["anchor", "positive", "negative_1", "negative_2"]
    assert got.values.tolist() == [["A?", "B?", "X?", "M?"], ["D?", "E?", "P?", "Q?"]]  # best two, spare unused
    assert sorted(examples["mnrl_pairs"]["anchor"]) == ["B?", "F?"]  # one mined negative, none: no mined ones
    assert sizes == {"examples_mnrl_mined": 2, "examples_mnrl_pairs": 2}
    off, _ = build_examples(frame, False, False, negatives="mined", mined=mined, num_negatives=2)
    assert list(off) == ["mnrl_pairs"] and len(off["mnrl_pairs"]) == 4  # hard_negatives=false: no negatives


def test_build_examples_with_labeled_and_mined_negatives():
    frame = _pairs(MINED_FRAME)  # A~B~C has the labeled negative X; D~E and F~G have none
    mined = {("A?", "B?"): ["x?", "M?", "N?"], ("B?", "C?"): ["M?"], ("D?", "E?"): ["P?", "Q?"]}
    examples, sizes = build_examples(frame, True, False, negatives="both", mined=mined, num_negatives=2)
    assert list(examples) == ["mnrl_both", "mnrl_mined", "mnrl_triplets", "mnrl_pairs"]
    both = examples["mnrl_both"]
    assert list(both.columns) == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert both.values.tolist() == [["A?", "B?", "X?", "M?", "N?"]]  # the mined copy of X skipped: the spare used
    assert examples["mnrl_mined"].values.tolist() == [["D?", "E?", "P?", "Q?"]]
    assert examples["mnrl_triplets"].values.tolist() == [["B?", "C?", "X?"]]  # labeled, too few mined
    assert examples["mnrl_pairs"].values.tolist() == [["F?", "G?"]]
    assert sum(sizes.values()) == 4


def test_joint_rows_keep_every_mined_negative_column_before_the_auxiliary_pair():
    from contrastive.pairs import AUX_COLUMNS, joint_examples

    frame = _pairs(MINED_FRAME)
    mined = {("A?", "B?"): ["M?", "N?", "O?"], ("D?", "E?"): ["P?", "Q?"]}
    examples, _ = build_examples(frame, True, True, negatives="both", mined=mined, num_negatives=2)
    joint, stats = joint_examples(examples, seed=0)
    assert list(joint["mnrl_both"].columns) == [
        "anchor",
        "positive",
        "negative_1",
        "negative_2",
        "negative_3",
        *AUX_COLUMNS,
        "label",
    ]  # JointLoss: MNRL on every column but the last two texts
    assert list(joint["mnrl_mined"].columns)[:4] == ["anchor", "positive", "negative_1", "negative_2"]
    assert stats["joint_rows"] == sum(len(df) for name, df in examples.items() if name.startswith("mnrl"))


def test_component_sampler_keys_every_mined_negative_column():
    """An example whose second mined negative is a duplicate of another example's anchor never shares its batch."""
    rows = [("A?", "B?", 1), ("B?", "C?", 1), ("D?", "E?", 1), ("F?", "G?", 1), ("H?", "I?", 1)]
    frame = _pairs(rows + [("X?", "Y?", 0), ("Z?", "W?", 0)])
    lookup = component_lookup([frame])
    dataset = Dataset.from_dict(
        {
            "anchor": ["A?", "D?", "F?", "H?"],
            "positive": ["B?", "E?", "G?", "I?"],
            "negative_1": ["F?", "H?", "D?", "X?"],
            "negative_2": ["Y?", "C?", "Z?", "W?"],  # C is in A's component
        }
    )
    for seed in range(10):
        sampler = ComponentBatchSampler(dataset, batch_size=2, drop_last=False, lookup=lookup, seed=seed)
        for batch in sampler:
            assert set(batch) != {0, 1}
        assert _clashes(dataset, list(sampler), lookup) == 0


def test_aux_share_samples_each_label_by_seed():
    rows = [(f"q{i}?", f"p{i}?", int(i % 4 == 0)) for i in range(200)]
    frame = _pairs(rows)
    part = aux_sample(frame, 0.25, seed=3)
    assert len(part) == 50 and part["label"].sum() == round(frame["label"].sum() * 0.25)
    assert part.index.is_monotonic_increasing and part.index.isin(frame.index).all()
    assert part.equals(aux_sample(frame, 0.25, seed=3)) and not part.equals(aux_sample(frame, 0.25, seed=4))
    assert aux_sample(frame, 1.0) is frame
    assert aux_sample(frame.iloc[:2], 0.01)["label"].tolist() == [1, 0]  # at least one pair of each label
    examples, sizes = build_examples(frame, hard_negatives=False, with_aux=True, aux_share=0.25, seed=3)
    assert sizes["examples_aux_pairs"] == 50 and sizes["examples_mnrl_pairs"] == 50  # MNRL keeps every positive


def test_build_examples_drops_empty_datasets():
    frame = _pairs([("A?", "B?", 1), ("C?", "D?", 1)])
    examples, sizes = build_examples(frame, hard_negatives=True, with_aux=False)
    assert list(examples) == ["mnrl_pairs"]
    assert sizes == {"examples_mnrl_pairs": 2}


def test_component_lookup_covers_every_split(fixture_data):
    lookup = component_lookup(list(fixture_data.splits.values()))
    for df in fixture_data.splits.values():
        assert all(lookup[k] == c for k, c in zip(df["key1"], df["comp1"]))
        assert all(lookup[k] == c for k, c in zip(df["key2"], df["comp2"]))


# ---------------------------------------------------------------- the component sampler
@pytest.fixture(scope="module")
def fixture_examples(fixture_data):
    """The fixture's train split as triplet and pair datasets, with the component lookup."""
    train = fixture_data.splits["train"]
    examples, _ = build_examples(train, hard_negatives=True, with_aux=True)
    pairs, _ = build_examples(train, hard_negatives=False, with_aux=False)
    data = {name: Dataset.from_pandas(df, preserve_index=False) for name, df in examples.items()}
    data["mnrl_pairs"] = Dataset.from_pandas(pairs["mnrl_pairs"], preserve_index=False)
    return data, component_lookup([train])


def _clashes(dataset: Dataset, batches, lookup) -> int:
    """How many batches hold two examples that share a duplicate component."""
    columns = [c for c in dataset.column_names if c != "label"]
    rows = list(zip(*(dataset[c] for c in columns)))
    bad = 0
    for batch in batches:
        seen: set = set()
        for idx in batch:
            comps = _comps_of(rows[idx], lookup)
            if comps & seen:
                bad += 1
                break
            seen |= comps
    return bad


@pytest.mark.parametrize("name", ["mnrl_triplets", "mnrl_pairs"])
def test_component_sampler_keeps_components_apart(fixture_examples, name):
    data, lookup = fixture_examples
    dataset = data[name]
    sampler = ComponentBatchSampler(dataset, batch_size=16, drop_last=False, lookup=lookup)
    batches = list(sampler)
    assert _clashes(dataset, batches, lookup) == 0
    seen = list(itertools.chain.from_iterable(batches))
    assert len(seen) == len(set(seen))  # at most once per epoch
    assert len(seen) + sampler.stats["dropped"] == len(dataset)  # the rest is reported as dropped
    assert sampler.stats["dropped"] < len(dataset) // 4
    assert len(sampler) == len(batches)
    assert all(len(b) == 16 for b in batches[:-1])  # only the last batch may be short
    assert sampler.stats["examples"] == len(dataset)
    assert sampler.stats["deferred"] > 0  # three examples per chained component: clashes happen


def test_component_sampler_epochs_differ_and_repeat(fixture_examples):
    data, lookup = fixture_examples
    sampler = ComponentBatchSampler(data["mnrl_triplets"], batch_size=16, drop_last=False, lookup=lookup, seed=5)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    assert len(set(itertools.chain.from_iterable(epoch1))) + sampler.stats["dropped"] == len(data["mnrl_triplets"])
    again = ComponentBatchSampler(data["mnrl_triplets"], batch_size=16, drop_last=False, lookup=lookup, seed=5)
    assert list(again) == epoch0
    again.set_epoch(1)
    assert list(again) == epoch1


def test_component_sampler_drop_last_counts_dropped_per_epoch(fixture_examples):
    data, lookup = fixture_examples
    dataset = data["mnrl_triplets"]
    sampler = ComponentBatchSampler(dataset, batch_size=16, drop_last=True, lookup=lookup)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert all(len(b) == 16 for b in batches)
        assert len(sampler) == len(batches)
        seen = len(set(itertools.chain.from_iterable(batches)))
        assert seen + sampler.stats["dropped"] == len(dataset)  # stats describe this epoch, not a running sum
        assert _clashes(dataset, batches, lookup) == 0


def test_component_sampler_batches_labeled_pairs_plainly(fixture_examples):
    data, lookup = fixture_examples
    dataset = data["aux_pairs"]
    sampler = ComponentBatchSampler(dataset, batch_size=16, drop_last=False, lookup=lookup)
    batches = list(sampler)
    assert sampler.plain
    assert [len(b) for b in batches[:-1]] == [16] * (len(batches) - 1)
    assert sorted(itertools.chain.from_iterable(batches)) == list(range(len(dataset)))
    assert sampler.stats["deferred"] == 0
    dropping = ComponentBatchSampler(dataset, batch_size=16, drop_last=True, lookup=lookup)
    assert len(list(dropping)) == len(dataset) // 16 == len(dropping)
    assert dropping.stats["dropped"] == len(dataset) % 16


def test_component_sampler_every_batch_used_under_proportional_interleave(fixture_examples):
    """Multi-dataset training draws len(sampler) batches from each sampler: len must be exact."""
    data, lookup = fixture_examples
    parts = [data["mnrl_triplets"], data["aux_pairs"]]
    samplers = [ComponentBatchSampler(d, batch_size=16, drop_last=False, lookup=lookup) for d in parts]
    combined = ProportionalBatchSampler(ConcatDataset(parts), samplers, generator=torch.Generator(), seed=0)
    indices = sorted(itertools.chain.from_iterable(combined))
    expected = sorted(
        itertools.chain(itertools.chain.from_iterable(samplers[0]), (len(parts[0]) + i for b in samplers[1] for i in b))
    )
    assert indices == expected
    assert len(indices) == sum(len(d) for d in parts) - samplers[0].stats["dropped"]


def test_no_duplicates_sampler_puts_chained_duplicates_together():
    """sentence-transformers' sampler compares exact strings; A~B, B~C, D~C make (A, B) and (D, C) clash-free."""
    frame = _pairs(
        [
            ("How do I learn Python?", "How can I learn Python?", 1),
            ("How can I learn Python?", "What is the best way to learn Python?", 1),
            ("What are some tips to learn Python?", "What is the best way to learn Python?", 1),
        ]
    )
    lookup = component_lookup([frame])
    dataset = Dataset.from_dict(
        {
            "anchor": ["How do I learn Python?", "What are some tips to learn Python?"],
            "positive": ["How can I learn Python?", "What is the best way to learn Python?"],
        }
    )
    theirs = list(NoDuplicatesBatchSampler(dataset, batch_size=2, drop_last=False))
    assert [sorted(b) for b in theirs] == [[0, 1]]  # one batch: a duplicate serves as an in-batch negative
    assert _clashes(dataset, theirs, lookup) == 1
    sampler = ComponentBatchSampler(dataset, batch_size=2, drop_last=False, lookup=lookup)
    ours = list(sampler)
    assert len(ours) == 1 and len(ours[0]) == 1 and sampler.stats["dropped"] == 1  # kept apart, never together
    assert _clashes(dataset, ours, lookup) == 0


def test_no_duplicates_sampler_clashes_on_the_fixture(fixture_examples):
    data, lookup = fixture_examples
    dataset = data["mnrl_pairs"]
    theirs = list(NoDuplicatesBatchSampler(dataset, batch_size=16, drop_last=False, generator=torch.Generator()))
    ours = list(ComponentBatchSampler(dataset, batch_size=16, drop_last=False, lookup=lookup))
    assert _clashes(dataset, theirs, lookup) > 0
    assert _clashes(dataset, ours, lookup) == 0


def test_cap_pairs_keeps_linked_groups_whole(fixture_data):
    """Whole groups of linked pairs are kept, so hard-negative triplets survive a budget cap."""
    train = fixture_data.splits["train"]
    capped = cap_pairs(train, 60, seed=0)
    full_trip, _ = triplets(train)
    cap_trip, _ = triplets(capped)
    assert len(cap_trip) / max(1, (capped["label"] == 1).sum()) >= 0.5 * len(full_trip) / (train["label"] == 1).sum()
    group_of = components(train, labels=(0, 1))
    rows = lambda df: set(zip(df["key1"], df["key2"], df["label"]))  # noqa: E731
    kept = rows(capped)
    by_group: dict[int, set[bool]] = {}
    for row in rows(train):
        by_group.setdefault(group_of[row[0]], set()).add(row in kept)
    partial = [g for g, seen in by_group.items() if seen == {True, False}]
    assert len(partial) <= 1  # at most the group cut by the budget


def test_a_split_without_duplicates_is_refused_in_one_line():
    from contrastive.errors import DataError
    from contrastive.pairs import require_positives

    frame = _pairs([("How do I learn Python?", "Is the earth flat?", 0), ("What is love?", "How tall is Everest?", 0)])
    with pytest.raises(DataError, match=r"the train split has no duplicate pair \(label=1\) among its 2 pairs"):
        build_examples(frame, hard_negatives=True, with_aux=True)
    require_positives(_pairs([("How do I learn Python?", "How can I learn Python?", 1)]))  # one is enough

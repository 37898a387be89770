"""`data.max_pairs` shrinks the whole run: the eval split, the distractors and the mining pool follow it."""

from __future__ import annotations

from conftest import train_settings
from evaluation_helpers import eval_config

from contrastive.evaluation import eval_set_for
from contrastive.evaluation.eval_sets import intermediate_subset
from contrastive.examples import mining_pool
from contrastive.pairs import cap_pairs


def _pair_ids(frame) -> set[tuple[str, str, int]]:
    return set(zip(frame["key1"], frame["key2"], frame["label"]))


def test_the_budget_caps_eval_pairs_distractors_and_the_mining_pool_unless_set_apart():
    capped = train_settings("data.max_pairs=1000")
    assert (capped.eval.max_pairs, capped.eval.max_distractors, capped.loss.mining.pool_pairs) == (1000, 1000, 1000)
    full = train_settings()
    assert (full.eval.max_pairs, full.eval.max_distractors, full.loss.mining.pool_pairs) == (None, None, None)
    apart = train_settings("data.max_pairs=1000", "eval.max_pairs=null", "loss.mining.pool_pairs=5000")
    assert (apart.eval.max_pairs, apart.eval.max_distractors, apart.loss.mining.pool_pairs) == (None, 1000, 5000)


def test_a_capped_eval_set_keeps_whole_groups_and_names_the_cap_in_its_protocol(tmp_path, fixture_data):
    val = fixture_data.splits["val"]
    full = eval_set_for(eval_config(tmp_path).eval, fixture_data)
    ev = eval_config(tmp_path, "eval.max_pairs=20").eval
    es = eval_set_for(ev, fixture_data)
    assert 0 < len(es.pair_labels) <= 20 < len(val)
    assert es.protocol["max_pairs"] == 20 and "max_pairs" not in full.protocol  # different cache keys
    assert len(es.keys) < len(full.keys) and set(es.keys) <= set(full.keys)
    # the same seeded groups as data.max_pairs picks: whole duplicate components, so every query keeps its relevant
    assert _pair_ids(cap_pairs(val, 20, int(ev.seed))) == {
        (es.keys[a], es.keys[b], int(y)) for (a, b), y in zip(es.pair_rows.tolist(), es.pair_labels.tolist())
    }
    sub = intermediate_subset(
        eval_config(tmp_path, "eval.max_pairs=20", "eval.intermediate_max_pairs=10").eval, fixture_data
    )
    assert set(sub.keys) <= set(es.keys) and len(sub.pair_labels) <= 10


def test_the_mining_pool_holds_the_training_pairs_and_no_more_than_its_cap(fixture_data):
    train = fixture_data.splits["train"]
    settings = train_settings("data=fixture", "data.max_pairs=30", "loss.mining.pool_pairs=60")
    pool = mining_pool(fixture_data, settings)
    used = cap_pairs(train, 30, settings.data.split.seed)
    assert 30 < len(pool) <= 60 < len(train)
    assert _pair_ids(used) <= _pair_ids(pool)
    smaller = train_settings("data=fixture", "data.max_pairs=30", "loss.mining.pool_pairs=10")
    assert _pair_ids(mining_pool(fixture_data, smaller)) == _pair_ids(used)  # never below the training pairs
    for overrides in (["data.max_pairs=30", "loss.mining.pool_pairs=null"], ["loss.mining.pool_pairs=60"]):
        assert mining_pool(fixture_data, train_settings("data=fixture", *overrides)) is train  # uncapped: all

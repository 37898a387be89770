"""contrastive/mining.py: component-aware filters and their counts, the disk caches, the sample, the real model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from conftest import fixture_data_settings, train_settings

from contrastive.data import COLUMNS, question_key, split_pairs, validate
from contrastive.mining import FILTERS, Corpus, labeled_duplicate_codes, mine, select_negatives
from contrastive.pairs import positives
from contrastive.settings import MiningSettings
from contrastive.utils import seeded_hash


def _cfg(tmp_path, **changes) -> MiningSettings:
    base = {"range_max": 40, "relative_margin": 0.05, "max_score": None, "cache_dir": str(tmp_path / "mining")}
    return MiningSettings(**{**base, **changes})


def _unit_rows(cosines: list[float]) -> np.ndarray:
    """Row 0 is e0; row i has cosine `cosines[i]` with it and is otherwise orthogonal to every other row's rest."""
    n = len(cosines)
    emb = np.zeros((n, n + 1), dtype=np.float32)
    for i, c in enumerate(cosines):
        emb[i, 0] = c
        emb[i, i + 1] = np.sqrt(max(0.0, 1.0 - c * c))
    return emb


# One anchor (row 0) and its positive (row 1); ranks by cosine to the anchor in the comments.
COSINES = [1.0, 0.90, 0.95, 0.93, 0.88, 0.86, 0.70, 0.60, 0.50, 0.40]
COMPONENTS = [0, 0, 0, 5, 1, 2, 3, 4, 6, 7]  # rows 0-2 one duplicate component; row 3 labeled a duplicate of row 2


def _select(tmp_path, **changes):
    emb = _unit_rows(COSINES)
    comp = np.array(COMPONENTS, dtype=np.int64)
    n = len(comp)
    labeled = np.array([comp[2] * n + 3, comp[3] * n + 2])  # the pair (row 2, row 3) is labeled duplicate
    cfg = _cfg(tmp_path, **{"range_max": 9, "max_score": 0.87, "num_negatives": 2, **changes})
    return select_negatives(emb, comp, np.array([0]), np.array([1]), labeled, cfg)


def test_each_filter_removes_what_it_names_and_the_counts_add_up(tmp_path):
    sel = _select(tmp_path)
    # by cosine: 2 (member, 0.95), 3 (labeled dup, 0.93), 1 (positive, 0.90), then the non-duplicates ranked 0..5:
    # 4 (0.88 > max_score 0.87), 5 (0.86 > 0.95 x 0.90 = 0.855: margin), 6, 7, 8, 9 eligible
    assert sel.rows.tolist() == [[6, 7, 8]]  # num_negatives=2 and one spare, best first
    assert sel.ranks.tolist() == [[2, 3, 4]]
    np.testing.assert_allclose(sel.scores[0], [0.70, 0.60, 0.50], atol=1e-6)
    np.testing.assert_allclose(sel.positive_scores, [0.90], atol=1e-6)
    s = sel.stats
    removed = {f: s[f"mining_removed_{f}"] for f in FILTERS}
    assert removed == {
        "self_positive": 1,
        "same_component": 1,
        "labeled_duplicate": 1,
        "range": 0,
        "max_score": 1,
        "margin": 1,
    }
    assert s["mining_candidates"] == 9 == sum(removed.values()) + s["mining_eligible"]
    assert (s["mining_eligible"], s["mining_negatives"], s["mining_full"], s["mining_fewer"]) == (4, 2, 1, 0)


def test_range_window_and_switched_off_filters(tmp_path):
    sel = _select(tmp_path, range_min=3)  # non-duplicates ranked 0-2 fall before the window: range counts them first
    assert sel.rows.tolist() == [[7, 8, 9]] and sel.stats["mining_removed_range"] == 3
    assert sel.stats["mining_removed_max_score"] == sel.stats["mining_removed_margin"] == 0
    short = _select(tmp_path, range_max=3)  # non-duplicates ranked 0-2: one eligible candidate for two negatives
    assert short.rows.tolist() == [[6, -1, -1]] and np.isnan(short.scores[0, 1:]).all()
    assert (short.stats["mining_full"], short.stats["mining_fewer"], short.stats["mining_none"]) == (0, 1, 0)
    assert short.stats["mining_negatives"] == 1 and short.stats["mining_candidates"] == 3 + 3  # known ones first
    none = _select(tmp_path, range_max=2)
    assert none.rows.tolist() == [[-1, -1, -1]] and none.stats["mining_none"] == 1
    loose = _select(tmp_path, max_score=None, relative_margin=None)  # rows 4 and 5 come back, hardest first
    assert loose.rows.tolist() == [[4, 5, 6]]
    assert loose.stats["mining_removed_max_score"] == loose.stats["mining_removed_margin"] == 0


def test_a_large_component_never_fills_the_rank_window(tmp_path):
    emb = _unit_rows([1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.80, 0.70, 0.60, 0.50])
    comp = np.array([0] * 7 + [1, 2, 3, 4])  # the anchor's six duplicates are its nearest questions
    cfg = _cfg(tmp_path, range_max=3, num_negatives=2, relative_margin=None)
    sel = select_negatives(emb, comp, np.array([0]), np.array([1]), np.array([], dtype=np.int64), cfg)
    assert sel.rows.tolist() == [[7, 8, 9]] and sel.ranks.tolist() == [[0, 1, 2]]
    s = sel.stats
    assert (s["mining_removed_self_positive"], s["mining_removed_same_component"], s["mining_eligible"]) == (1, 5, 3)
    assert s["mining_candidates"] == 9  # the 6 duplicates and the 3 non-duplicates of the window, not row 10


def test_margin_is_relative_to_each_positives_score(tmp_path):
    emb = _unit_rows([1.0, 0.90, 0.60, 0.86, 0.70])
    comp = np.array([0, 0, 0, 1, 2])
    cfg = _cfg(tmp_path, range_max=4, relative_margin=0.05)
    # anchor 0 with positive 1 (0.90: bar 0.855) and with positive 2 (0.60: bar 0.57)
    sel = select_negatives(emb, comp, np.array([0, 0]), np.array([1, 2]), np.array([], dtype=np.int64), cfg)
    assert sel.rows[:, 0].tolist() == [4, -1]  # row 3 (0.86) is over the first bar; both over the second
    assert sel.stats["mining_removed_margin"] == 1 + 2
    assert sel.stats["mining_anchors"] == 1 and sel.stats["mining_positives"] == 2


# ---------------------------------------------------------------- mine(): real pairs, a stub encoder, the caches
def _pool(n_topics: int = 6) -> pd.DataFrame:
    """Validated pairs in one split: per topic a chain q0~q1~q2 and labeled non-duplicates of q0 and q1."""
    rows = []
    for t in range(n_topics):
        q = [f"topic {t} question {v}?" for v in range(3)]
        rows += [
            (q[0], q[1], 1),
            (q[1], q[2], 1),
            (q[0], f"topic {t} other 0?", 0),
            (q[1], f"topic {(t + 1) % n_topics} other 1?", 0),
        ]
    frame = validate(pd.DataFrame(rows, columns=list(COLUMNS)), fixture_data_settings())[0]
    return split_pairs(frame, {"train": 1.0}, seed=0)[0]["train"]


class StubEncoder:
    """Texts of a topic point the same way (members closest), others apart; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        rng = np.random.default_rng(0)
        topics = rng.normal(size=(32, 16))
        out = []
        for text in texts:
            topic = int(text.split()[1])
            noise = np.random.default_rng(seeded_hash(text, 0)).normal(size=16)
            out.append(topics[topic] + (0.2 if "question" in text else 0.5) * noise)
        emb = np.asarray(out, dtype=np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)


MODEL_KEY = {"weights": "stub", "max_seq_length": 128}


def test_mined_negatives_are_never_members_nor_labeled_duplicates(tmp_path):
    pool = _pool()
    pos = positives(pool, both_orders=True)
    mined = mine(pool, pos, _cfg(tmp_path, num_negatives=3, relative_margin=None), StubEncoder(), MODEL_KEY)
    comp_of = dict(zip(pool["key1"], pool["comp1"])) | dict(zip(pool["key2"], pool["comp2"]))
    dup = pool[pool["label"] == 1]
    duplicates = {(a, b) for a, b in zip(dup["key1"], dup["key2"])} | {(b, a) for a, b in zip(dup["key1"], dup["key2"])}
    negatives = mined.negatives()
    assert len(negatives) == len(pos) == 24
    for (anchor, _), found in negatives.items():
        members = {k for k, c in comp_of.items() if c == comp_of[question_key(anchor)]}
        assert len(found) == 4  # 3 + the spare, of the 27 questions outside each 3-member component
        for text in found:
            key = question_key(text)
            assert key not in members and not any((m, key) in duplicates for m in members)
    s = mined.stats
    assert s["mining_removed_self_positive"] == 24 and s["mining_removed_same_component"] == 24  # the third member
    assert s["mining_candidates"] == sum(s[f"mining_removed_{f}"] for f in FILTERS) + s["mining_eligible"]
    assert s["mining_full"] + s["mining_fewer"] == s["mining_positives"] and s["mining_cache_hit"] == 0
    assert s["mining_corpus_questions"] == 6 * 5 and s["mining_candidates"] == 24 * 29  # fewer than range_max


def test_labeled_duplicates_are_removed_even_when_component_ids_disagree(tmp_path):
    pool = _pool()
    stray = question_key("topic 0 question 2?")  # its comp id no longer matches its labeled duplicate's
    for side in ("1", "2"):
        pool.loc[pool[f"key{side}"] == stray, f"comp{side}"] = 999
    corpus = Corpus.of(pool)
    codes = labeled_duplicate_codes(pool, corpus)
    q1 = corpus.row_of[question_key("topic 0 question 1?")]
    assert corpus.comp[q1] * len(corpus.keys) + corpus.row_of[stray] in codes
    pos = positives(pool[pool["key1"] == question_key("topic 0 question 0?")])
    mined = mine(pool, pos, _cfg(tmp_path, num_negatives=3, relative_margin=None), StubEncoder(), MODEL_KEY)
    assert all(question_key(t) != stray for found in mined.negatives().values() for t in found)
    assert mined.stats["mining_removed_labeled_duplicate"] == 1  # q0's component holds q1, labeled duplicate of q2


def test_second_call_is_a_cache_hit_and_a_setting_changes_the_key(tmp_path):
    pool = _pool()
    pos = positives(pool)
    encoder = StubEncoder()
    first = mine(pool, pos, _cfg(tmp_path), encoder, MODEL_KEY)
    again = mine(pool, pos, _cfg(tmp_path, batch_size=7, sample_rows=3, seed=9), encoder, MODEL_KEY)
    assert (first.cache_hit, again.cache_hit) == (False, True) and again.path == first.path
    assert again.negatives() == first.negatives() and again.selection.stats == first.selection.stats
    assert first.path.is_file() and first.path.with_suffix(".json").is_file()
    assert encoder.calls == 1
    other = mine(pool, pos, _cfg(tmp_path, relative_margin=0.2), encoder, MODEL_KEY)
    assert not other.cache_hit and other.path != first.path
    assert encoder.calls == 1  # the question embeddings are cached apart, keyed without the mining settings
    retrained = mine(pool, pos, _cfg(tmp_path), encoder, {**MODEL_KEY, "weights": "other"})
    assert not retrained.cache_hit and encoder.calls == 2  # another model: new embeddings, new negatives
    fewer = mine(pool, pos.iloc[:3], _cfg(tmp_path), encoder, MODEL_KEY)
    assert not fewer.cache_hit and fewer.path != first.path  # other positives, other data key


def test_a_damaged_cache_file_is_mined_again(tmp_path):
    pool = _pool()
    first = mine(pool, positives(pool), _cfg(tmp_path), StubEncoder(), MODEL_KEY)
    first.path.write_bytes(b"not an npz")
    again = mine(pool, positives(pool), _cfg(tmp_path), StubEncoder(), MODEL_KEY)
    assert not again.cache_hit and again.negatives() == first.negatives()


def test_sample_is_seeded_and_shows_the_scores(tmp_path):
    pool = _pool()
    mined = mine(pool, positives(pool, both_orders=True), _cfg(tmp_path, num_negatives=2), StubEncoder(), MODEL_KEY)
    sample = mined.sample(10, seed=1)
    assert list(sample.columns) == [
        "anchor",
        "positive",
        "negative",
        "positive_score",
        "negative_score",
        "negative_rank",
    ]
    assert len(sample) == 10 and sample.equals(mined.sample(10, seed=1)) and not sample.equals(mined.sample(10, 2))
    negatives = mined.negatives()
    for row in sample.itertuples():
        assert row.negative in negatives[row.anchor, row.positive][:2]  # the spare is never shown
        assert row.negative_score <= 0.95 * row.positive_score + 1e-4
    assert len(mined.sample(10_000, seed=1)) == mined.stats["mining_negatives"]


def test_hard_negatives_off_means_no_mining():
    from contrastive.mining import uses_mining

    assert not uses_mining(SimpleNamespace(hard_negatives=False, negatives="mined"))
    assert uses_mining(train_settings("loss.negatives=both").loss) and uses_mining(train_settings().loss)
    assert not uses_mining(train_settings("loss.negatives=labeled").loss)


# ---------------------------------------------------------------- the real model on the fixture
def test_training_datasets_mine_with_the_real_model(fixture_data, minilm, tmp_path):
    from contrastive.mining import SAMPLE_FILE
    from contrastive.training import training_datasets

    settings = train_settings(
        "data=fixture", "loss.negatives=mined", f"paths.cache_dir={tmp_path}", "batch.size=8", "loss.aux_weight=0"
    )
    datasets, sizes, _ = training_datasets(fixture_data, settings, minilm, tmp_path)
    assert list(datasets) == ["mnrl_mined"] and datasets["mnrl_mined"].column_names[2:] == ["negative_1"]
    assert sizes["examples_mnrl_mined"] == sizes["mining_full"] and sizes["mining_cache_hit"] == 0
    assert sizes["mining_positives"] == sizes["examples_mnrl_mined"] + sizes.get("examples_mnrl_pairs", 0)
    train = fixture_data.splits["train"]
    comp_of = dict(zip(train["key1"], train["comp1"])) | dict(zip(train["key2"], train["comp2"]))
    rows = datasets["mnrl_mined"]
    assert all(comp_of[question_key(a)] != comp_of[question_key(n)] for a, n in zip(rows["anchor"], rows["negative_1"]))
    sample = pd.read_csv(tmp_path / SAMPLE_FILE)
    assert 0 < len(sample) <= 200 and (sample["negative_score"] < sample["positive_score"]).all()
    _, again, _ = training_datasets(fixture_data, settings, minilm, tmp_path)
    assert again["mining_cache_hit"] == 1 and {k: v for k, v in again.items() if k != "mining_cache_hit"} == {
        k: v for k, v in sizes.items() if k != "mining_cache_hit"
    }


def test_positives_are_found_by_their_key_in_the_pairs_when_qids_merge_texts(tmp_path):
    from contrastive.data import merge_by_qid

    raw = pd.DataFrame(
        [
            ("How to learn Python?", "How do I learn Python?", 1, "1", "2"),
            ("How to learn python ?", "What is the best Python book?", 0, "1", "3"),  # qid 1 again: one question
            ("topic 3 question 0?", "topic 3 question 1?", 1, "4", "5"),
            ("topic 3 question 0?", "topic 4 other 0?", 0, "4", "6"),
        ],
        columns=[*COLUMNS, "qid1", "qid2"],
    )
    frame = merge_by_qid(validate(raw, fixture_data_settings())[0])
    pool = split_pairs(frame, {"train": 1.0}, seed=0)[0]["train"]
    assert question_key("How to learn Python?") not in set(pool["key1"])  # merged into the other spelling's key
    encoder = lambda texts: StubEncoder()([t if t.startswith("topic") else "topic 1 " + t for t in texts])  # noqa: E731
    mined = mine(pool, positives(pool, both_orders=True), _cfg(tmp_path, relative_margin=None), encoder, MODEL_KEY)
    assert mined.stats["mining_positives"] == 4 and mined.stats["mining_full"] == 4
    assert mined.stats["mining_corpus_questions"] == 6


# ---------------------------------------------------------------- the teacher filter (RocketQA's denoised negatives)
def test_the_teacher_filter_drops_likely_duplicates_after_the_other_filters_and_counts_them(tmp_path):
    from contrastive.mining import TEACHER_FILTER, denoise, kept_columns

    cfg = _cfg(tmp_path, range_max=9, max_score=0.87, num_negatives=2, teacher_max=0.5, teacher_depth=4)
    assert kept_columns(cfg) == 4  # the teacher looks at 4 survivors, not num_negatives + 1
    sel = _select(tmp_path, teacher_max=0.5, teacher_depth=4)
    assert sel.rows.tolist() == [[6, 7, 8, 9]]
    teacher = np.array([[0.9, 0.2, np.nan, 0.1]], dtype=np.float32)  # row 6 a likely duplicate; row 8 unscored
    teacher[0, 2] = 0.7
    out = denoise(sel, teacher, 0.5, num_negatives=2)
    assert out.rows.tolist() == [[7, 9, -1]]  # 6 and 8 removed; two left of num_negatives + 1 = 3 columns
    np.testing.assert_allclose(out.teacher[0, :2], [0.2, 0.1], atol=1e-6)
    assert np.isnan(out.teacher[0, 2]) and out.ranks.tolist() == [[3, 5, -1]]
    assert out.stats[f"mining_removed_{TEACHER_FILTER}"] == 2 and out.stats["mining_teacher_scored"] == 4
    assert out.stats["mining_negatives"] == 2 and out.stats["mining_full"] == 1
    assert {
        k: v for k, v in out.stats.items() if k.startswith("mining_removed_") and k != "mining_removed_teacher"
    } == {k: v for k, v in sel.stats.items() if k.startswith("mining_removed_")}


def test_denoised_mined_negatives_carry_the_teacher_score_into_the_sample(tmp_path):
    pool = _pool()
    pos = positives(pool)
    cfg = _cfg(tmp_path, num_negatives=1, relative_margin=None, teacher_max=0.5, teacher_depth=3)
    mined = mine(pool, pos, cfg, StubEncoder(), MODEL_KEY)
    calls = []

    def score(first, second):
        calls.append(len(first))
        return np.array([0.9 if i % 2 == 0 else 0.1 for i in range(len(first))], dtype=np.float32)

    denoised = mined.denoised(score, 0.5)
    assert calls == [int((mined.selection.rows >= 0).sum())]  # one call, every kept candidate scored
    assert denoised.stats["mining_removed_teacher"] > 0
    assert (denoised.selection.teacher[denoised.selection.rows >= 0] <= 0.5).all()
    sample = denoised.sample(50, 0)
    assert "teacher_score" in sample.columns and (sample["teacher_score"] <= 0.5).all()
    assert "teacher_score" not in mined.sample(50, 0).columns

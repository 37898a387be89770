"""data.py on synthetic files written here: loading, validation, identity, components, the leak-free split."""

from __future__ import annotations

import gzip
import random

import datasets
import pandas as pd
import pytest
from conftest import fixture_data_settings, train_settings

from contrastive.data import (
    COLUMNS,
    UnionFind,
    assign_splits,
    components,
    file_format,
    fingerprint_frame,
    format_summary,
    load_hub,
    load_local,
    load_raw,
    merge_by_qid,
    prepare,
    prepare_uncached,
    question_key,
    resolve_source,
    split_pairs,
    summarize,
    validate,
)
from contrastive.errors import ConfigError, DataError

ROWS = [
    ("How do I learn Python?", "How can I learn Python?", 1),
    ("How can I learn Python?", "What is the best way to learn Python?", 1),
    ("How do I learn Python?", "How do I learn Java?", 0),
    ("Is 42 the answer?", "What is the meaning of life?", 0),
]


def _split_keys(splits: dict[str, pd.DataFrame]) -> dict[str, set[str]]:
    return {name: set(df["key1"]) | set(df["key2"]) for name, df in splits.items()}


def _membership(splits: dict[str, pd.DataFrame]) -> dict[str, set[tuple[str, str, int]]]:
    return {name: set(zip(df["key1"], df["key2"], df["label"])) for name, df in splits.items()}


DATA = fixture_data_settings()  # conf/data/fixture.yaml: default columns, on_empty=drop


def _frame(rows, cfg=None) -> pd.DataFrame:
    """Validated pairs (with keys) from literal rows."""
    raw = pd.DataFrame(list(rows), columns=list(COLUMNS))
    return validate(raw, cfg or DATA)[0]


def _synthetic(n_topics: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """Per topic: a duplicate chain q0~q1~q2 and a non-duplicate q0/other, shuffled."""
    rng = random.Random(seed)
    rows = []
    for t in range(n_topics):
        q = [f"question {t} variant {v}?" for v in range(3)]
        rows += [(q[0], q[1], 1), (q[1], q[2], 1), (q[0], f"unrelated question {t}?", 0)]
    rng.shuffle(rows)
    return rows


# ---------------------------------------------------------------- loading
@pytest.mark.parametrize("name", ["pairs.parquet", "pairs.csv", "pairs.tsv", "pairs.jsonl"])
def test_load_local_reads_every_format(write_pairs, name):
    path = write_pairs(ROWS, name)
    raw = load_local(path)
    frame, stats = validate(raw, DATA)
    assert stats["rows_read"] == stats["rows_kept"] == len(ROWS)
    assert list(zip(frame["question1"], frame["question2"], frame["label"])) == ROWS


def test_load_local_gzipped_csv(tmp_path):
    path = tmp_path / "pairs.csv.gz"
    with gzip.open(path, "wt") as handle:
        pd.DataFrame(ROWS, columns=list(COLUMNS)).to_csv(handle, index=False)
    assert file_format(path) == "csv"
    assert len(load_local(path)) == len(ROWS)


def test_format_override_and_unknown_extension(write_pairs):
    written = write_pairs(ROWS, "pairs.csv")
    path = written.rename(written.with_suffix(".txt"))
    with pytest.raises(DataError, match=r"data\.path: cannot tell the format of .*pairs\.txt"):
        load_local(path)
    assert len(load_local(path, "csv")) == len(ROWS)
    with pytest.raises(DataError, match=r"data\.format: unknown format 'xlsx'"):
        file_format(path, "xlsx")


def test_configurable_column_names(write_pairs):
    path = write_pairs(
        [(q1, q2, lab, i, i + 100) for i, (q1, q2, lab) in enumerate(ROWS)],
        "custom.jsonl",
        columns=("text_a", "text_b", "is_dup", "id_a", "id_b"),
    )
    cfg = fixture_data_settings(
        *(f"data.columns.{k}={v}" for k, v in (("question1", "text_a"), ("question2", "text_b"), ("label", "is_dup"))),
        "data.columns.qid1=id_a",
        "data.columns.qid2=id_b",
    )
    frame, _ = validate(load_local(path), cfg)
    assert list(frame["question1"]) == [r[0] for r in ROWS]
    assert list(frame["label"]) == [r[2] for r in ROWS]
    assert list(frame["qid2"]) == [str(i + 100) for i in range(len(ROWS))]


def test_missing_file_names_field_and_path(tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(DataError) as err:
        load_local(missing)
    assert str(err.value) == f"data.path: file not found: {missing}"


def test_empty_file_and_header_only_file(tmp_path, write_pairs):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"data\.path: .*empty\.csv is empty"):
        load_local(empty)
    header_only = write_pairs([], "header.csv")
    with pytest.raises(DataError, match=r"data\.path: .*header\.csv holds no rows"):
        load_local(header_only)


def test_directory_and_malformed_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        load_local(tmp_path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"data\.path: cannot read .*bad\.parquet as parquet") as err:
        load_local(bad)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- validation
def test_missing_column_names_config_key_value_and_available_columns(write_pairs):
    raw = load_local(write_pairs(ROWS))
    with pytest.raises(DataError) as err:
        validate(raw, fixture_data_settings("data.columns.label=is_duplicate"))
    message = str(err.value)
    assert "data.columns.label='is_duplicate'" in message
    assert "['question1', 'question2', 'label']" in message


def test_labels_outside_01_name_rows_and_values():
    raw = pd.DataFrame({"question1": list("abcde"), "question2": list("vwxyz"), "label": [1, 0, 2, 1, -1]})
    with pytest.raises(DataError) as err:
        validate(raw, DATA)
    message = str(err.value)
    assert message.startswith("data.columns.label: column 'label' has 2 value(s) outside {0,1}")
    assert "rows [2, 4]" in message
    assert "[2, -1]" in message
    assert "np." not in message


def test_missing_label_is_rejected(write_pairs):
    raw = load_local(write_pairs([("a?", "b?", 1), ("c?", "d?", None)]))
    with pytest.raises(DataError, match=r"rows \[1\]"):
        validate(raw, DATA)


@pytest.mark.parametrize("labels", [[True, False, True], ["1", "0", "1"], [1.0, 0.0, 1.0], ["true", "false", "1"]])
def test_labels_accepted_as_bool_strings_and_floats(labels):
    raw = pd.DataFrame({"question1": ["a?", "b?", "c?"], "question2": ["x?", "y?", "z?"], "label": labels})
    frame, _ = validate(raw, DATA)
    assert frame["label"].tolist() == [1, 0, 1]
    assert pd.api.types.is_integer_dtype(frame["label"])


def test_bool_labels_from_parquet(write_pairs):
    frame = pd.DataFrame({"question1": ["a?", "b?"], "question2": ["x?", "y?"], "label": [True, False]})
    out, _ = validate(load_local(write_pairs(frame, "bool.parquet")), DATA)
    assert out["label"].tolist() == [1, 0]


def test_empty_and_blank_questions_dropped_and_counted(write_pairs):
    rows = ROWS + [("", "Is this empty?", 1), ("   ", "Is this blank?", 0), ("Tabs?", "\t\n", 0)]
    frame, stats = validate(load_local(write_pairs(rows)), fixture_data_settings("data.on_empty=drop"))
    assert stats["dropped_empty_question"] == 3
    assert stats["rows_kept"] == len(ROWS)
    assert not frame["question1"].str.strip().eq("").any()


def test_on_empty_error_is_fatal_and_names_rows(write_pairs):
    rows = ROWS + [("", "Is this empty?", 1)]
    with pytest.raises(DataError) as err:
        validate(load_local(write_pairs(rows)), fixture_data_settings("data.on_empty=error"))
    message = str(err.value)
    assert message.startswith("data.on_empty=error: 1 empty or blank question(s)")
    assert f"rows [{len(ROWS)}]" in message


def test_on_empty_unknown_value_is_refused_by_the_settings():
    with pytest.raises(ConfigError, match=r"data\.on_empty='skip': choose one of drop, error"):
        fixture_data_settings("data.on_empty=skip")


def test_repeated_pairs_self_pairs_and_conflicts_counted():
    rows = ROWS + [
        ROWS[0],  # exact repeat
        (ROWS[1][1], ROWS[1][0], 1),  # same pair, other order
        ("how do I   LEARN python?", "How can I learn Python?", 1),  # same identity, other case/space
        ("Why?", "  why? ", 1),  # self-pair after normalization
        ("Is 42 the answer?", "What is the meaning of life?", 1),  # conflicting label: kept, counted
    ]
    frame, stats = validate(pd.DataFrame(rows, columns=list(COLUMNS)), DATA)
    assert stats["dropped_repeated_pair"] == 3
    assert stats["dropped_self_pair"] == 1
    assert stats["conflicting_label_pairs"] == 2
    assert stats["rows_kept"] == len(ROWS) + 1
    assert (frame["key1"] != frame["key2"]).all()


def test_nothing_left_after_validation_says_which_rule_removed_the_rows():
    with pytest.raises(DataError) as err:
        validate(pd.DataFrame([("Same?", "same?", 1), ("", "x", 0)], columns=list(COLUMNS)), DATA)
    assert str(err.value) == (
        "data: no valid rows left after validation (2 read, removed: empty_question=1, self_pair=1)"
    )


def test_question2_mapped_to_question1s_column_is_named_as_the_cause():
    """Seen: `data.columns.question2=question1` left no rows and the message did not say why."""
    import dataclasses

    same = dataclasses.replace(DATA, columns=dataclasses.replace(DATA.columns, question2="question1"))
    rows = pd.DataFrame([("A?", "B?", 1), ("C?", "D?", 0)], columns=list(COLUMNS))
    with pytest.raises(DataError) as err:
        validate(rows, same)
    assert "self_pair=2" in str(err.value)
    assert "data.columns.question1 and data.columns.question2 both name column 'question1'" in str(err.value)


# ---------------------------------------------------------------- source resolution
def test_resolve_source_local_and_hub(tmp_path):
    assert resolve_source(fixture_data_settings("data.path=/x/pairs.csv")) == ("local", "/x/pairs.csv")
    with pytest.raises(ConfigError, match=r"data\.path=None: no file given"):
        fixture_data_settings("data.path=null")
    assert resolve_source(fixture_data_settings("data.source=hub", "data.path=/x/pairs.csv")) == ("hub", None)
    with pytest.raises(ConfigError, match=r"data\.source='ftp': choose one of auto, local, hub"):
        fixture_data_settings("data.source=ftp")


def test_resolve_source_auto_prefers_path_then_default_then_hub(tmp_path):
    default = tmp_path / "default.parquet"
    auto = ("data.source=auto", "data.path=null", f"data.default_path={default}")
    cfg = fixture_data_settings(*auto)
    assert resolve_source(cfg) == ("hub", None)  # default missing
    default.write_bytes(b"x")
    assert resolve_source(cfg) == ("local", str(default))
    assert resolve_source(fixture_data_settings(*auto, "data.path=/given.csv")) == ("local", "/given.csv")
    assert resolve_source(fixture_data_settings(*auto, "data.default_path=null")) == ("hub", None)


def test_hub_failure_offline_is_one_line_saying_what_to_pass(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load_raw(
            fixture_data_settings(
                "data.source=auto", "data.path=null", "data.default_path=null", "data.hub.splits=[train]"
            )
        )
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("data.source=hub: cannot load nyu-mll/glue/qqp")
    assert "Couldn't reach" in message
    assert "data=qqp_local data.path=" in message


def test_load_hub_concatenates_splits(monkeypatch):
    calls = []

    def fake(name, config, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"question1": [f"{split} a?"], "question2": [f"{split} b?"], "label": [1]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    frame = load_hub("nyu-mll/glue", "qqp", ["train", "validation"])
    assert calls == [("nyu-mll/glue", "qqp", "train"), ("nyu-mll/glue", "qqp", "validation")]
    assert frame["question1"].tolist() == ["train a?", "validation a?"]


def test_load_raw_local_reports_resolved_origin(write_pairs):
    path = write_pairs(ROWS)
    frame, origin = load_raw(fixture_data_settings(f"data.path={path}"))
    assert origin == str(path.resolve())
    assert len(frame) == len(ROWS)


# ---------------------------------------------------------------- identity and components
def test_question_key_normalizes_case_and_white_space():
    assert question_key("  How do I\tlearn\n PYTHON?  ") == "how do i learn python?"
    assert question_key("Straße") == question_key("STRASSE")  # casefold, not lower
    assert question_key("learn python?") != question_key("learn python")  # punctuation is kept


def test_union_find_root_is_smallest_whatever_the_order():
    for pairs in ([("c", "b"), ("b", "a")], [("a", "b"), ("b", "c")], [("b", "c"), ("c", "a")]):
        sets = UnionFind()
        for a, b in pairs:
            sets.union(a, b)
        assert {sets.find(x) for x in "abc"} == {"a"}
    sets = UnionFind()
    sets.union("x", "y")
    assert sets.find("z") == "z"


def test_components_join_chained_duplicates_only():
    frame = _frame([("A?", "B?", 1), ("B?", "C?", 1), ("C?", "D?", 0), ("E?", "F?", 1)])
    comp = components(frame)
    assert comp["a?"] == comp["b?"] == comp["c?"]  # A~B, B~C: one component although A, C never paired
    assert comp["d?"] != comp["a?"]  # a non-duplicate does not join
    assert comp["e?"] == comp["f?"] != comp["a?"]
    everything = components(frame, (0, 1))
    assert everything["a?"] == everything["d?"]


def test_component_ids_do_not_depend_on_row_order():
    rows = _synthetic(30)
    first = components(_frame(rows))
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    assert components(_frame(shuffled)) == first


def test_merge_by_qid_joins_texts_sharing_an_id():
    raw = pd.DataFrame(
        {
            "question1": ["How do I learn Python?", "What is the best way to learn Python?", "Is tea healthy?"],
            "question2": ["How do I learn Java?", "Is coffee healthy?", "Is coffee good for you?"],
            "label": [0, 0, 1],
            "qid1": [1, 1, 5],  # rows 0 and 1: two texts of one question id
            "qid2": [2, 3, 4],
        }
    )
    frame = merge_by_qid(validate(raw, DATA)[0])
    assert frame.loc[0, "key1"] == frame.loc[1, "key1"] == "how do i learn python?"  # the smallest text key
    assert frame.loc[2, "key1"] == "is tea healthy?"


def test_merge_by_qid_without_ids_changes_nothing():
    frame = _frame(ROWS)
    assert merge_by_qid(frame) is frame


def test_prepare_uses_qids_from_the_file(write_pairs, data_cfg):
    rows = [
        ("How do I learn Python?", "How can I learn Python?", 1, 1, 2),
        ("Python: how to learn it?", "How do I learn Java?", 0, 1, 3),
    ]  # qid 1 has two texts
    data_cfg.path = str(write_pairs(rows, "ids.csv", columns=("question1", "question2", "label", "qid1", "qid2")))
    data_cfg.split.fractions = {"train": 1.0}
    prepared = prepare(data_cfg)
    train = prepared.splits["train"]
    assert prepared.summary["questions"] == 3
    assert train.loc[1, "key1"] == "how do i learn python?"
    assert train.loc[1, "comp1"] == train.loc[0, "comp1"]


# ---------------------------------------------------------------- the split
def test_split_by_duplicates_is_leak_free_and_counts_crossings(fixture_data_by_duplicates):
    prepared = fixture_data_by_duplicates
    keys = _split_keys(prepared.splits)
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not keys[a] & keys[b], f"{a} and {b} share questions"
    summary = prepared.summary
    assert summary["leaked_keys"] == 0
    assert summary["cross_split_pairs_dropped"] > 0  # the fixture's non-duplicates cross components
    assert (
        sum(len(df) for df in prepared.splits.values()) + summary["cross_split_pairs_dropped"] == summary["rows_kept"]
    )
    for df in prepared.splits.values():  # a duplicate component lives in one split
        dup = df[df["label"] == 1]
        assert (dup["comp1"] == dup["comp2"]).all()
    comps = {name: set(df["comp1"]) | set(df["comp2"]) for name, df in prepared.splits.items()}
    assert not (comps["train"] & comps["val"]) and not (comps["train"] & comps["test"])


def test_split_by_all_pairs_drops_nothing(fixture_data):
    summary = fixture_data.summary
    assert summary["cross_split_pairs_dropped"] == 0
    assert summary["leaked_keys"] == 0
    assert sum(len(df) for df in fixture_data.splits.values()) == summary["rows_kept"]
    assert all(len(df) for df in fixture_data.splits.values())


@pytest.mark.parametrize("group_by", ["duplicates", "all_pairs"])
def test_split_is_deterministic_and_unchanged_by_row_order(write_pairs, data_cfg, group_by):
    rows = _synthetic(80)
    data_cfg.split.group_by = group_by
    data_cfg.path = str(write_pairs(rows, "a.csv"))
    first = prepare(data_cfg)
    again = prepare_uncached(data_cfg)  # a second real run (prepare itself would hand back its kept copy)
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    data_cfg.path = str(write_pairs(shuffled, "b.parquet"))
    other_order = prepare(data_cfg)
    assert _membership(again.splits) == _membership(first.splits)
    assert _membership(other_order.splits) == _membership(first.splits)
    assert other_order.fingerprint == first.fingerprint
    data_cfg.split.seed = 1
    assert _membership(prepare(data_cfg).splits) != _membership(first.splits)


def test_split_fractions_are_respected_roughly():
    rows = [(f"question {i} a?", f"question {i} b?", i % 2) for i in range(1500)]
    frame = _frame(rows)
    fractions = {"train": 0.7, "val": 0.2, "test": 0.1}
    splits, stats = split_pairs(frame, fractions, seed=3, group_by="all_pairs")
    keys = _split_keys(splits)
    for name, share in fractions.items():
        assert abs(len(keys[name]) / stats["questions"] - share) < 0.02, name


def test_assign_splits_zero_fraction_and_bad_fractions():
    comp_of = {f"q{i}": i for i in range(50)}
    result = assign_splits(comp_of, {"train": 0.5, "val": 0.0, "test": 0.5}, seed=0)
    assert set(result.values()) == {"train", "test"}
    assert set(result) == set(range(50))
    with pytest.raises(DataError, match=r"data\.split: fractions must be >= 0"):
        assign_splits(comp_of, {"train": 1.0, "val": -0.1}, seed=0)
    with pytest.raises(DataError, match=r"data\.split"):
        assign_splits(comp_of, {"train": 0.0}, seed=0)


def test_split_pairs_unknown_group_by():
    with pytest.raises(DataError, match=r"data\.split\.group_by: unknown value 'pairs'"):
        split_pairs(_frame(ROWS), {"train": 1.0}, seed=0, group_by="pairs")


def test_fingerprint_ignores_row_order_but_not_content():
    frame = _frame(_synthetic(10))
    assert fingerprint_frame(frame.sample(frac=1.0, random_state=0)) == fingerprint_frame(frame)
    flipped = frame.copy()
    flipped.loc[0, "label"] = 1 - flipped.loc[0, "label"]
    assert fingerprint_frame(flipped) != fingerprint_frame(frame)


def test_summarize_and_format_summary():
    splits = {"train": _frame(ROWS), "val": _frame(ROWS[:0] + [("x?", "y?", 1)])}
    summary = summarize({"rows_read": 12345}, splits)
    assert summary["train_pairs"] == len(ROWS)
    assert summary["train_duplicate_rate"] == 0.5
    assert summary["train_questions"] == 6
    assert summary["val_questions"] == 2
    text = format_summary(summary)
    assert text.splitlines()[0] == "data summary"
    assert "12,345" in text
    assert all(key in text for key in summary)


def test_prepare_result_shape(fixture_data):
    for df in fixture_data.splits.values():
        assert list(df.columns[:3]) == ["question1", "question2", "label"]
        assert {"key1", "key2", "comp1", "comp2"} <= set(df.columns)
        assert set(df["label"]) <= {0, 1}
    all_keys = set().union(*_split_keys(fixture_data.splits).values())
    assert all_keys <= set(fixture_data.questions)
    assert all(question_key(text) == key for key, text in fixture_data.questions.items())
    assert fixture_data.summary["source"].endswith("qqp_fixture.csv")


# ---------------------------------------------------------------- the shared QQP file
def test_shared_qqp_matches_its_readme_and_splits_leak_free(shared_qqp):
    raw = pd.read_parquet(shared_qqp)
    assert list(raw.columns) == ["qid1", "qid2", "question1", "question2", "label"]
    assert len(raw) == 72_769
    assert int(raw["label"].sum()) == 27_184
    assert raw["qid1"].isna().all() and raw["qid2"].isna().all()
    prepared = prepare(train_settings("data=qqp_local", f"data.path={shared_qqp}").data)
    assert prepared.summary["rows_read"] == 72_769
    assert prepared.summary["dropped_empty_question"] == 0  # README: no empty or missing questions
    assert prepared.summary["leaked_keys"] == 0
    keys = _split_keys(prepared.splits)
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    assert all(len(prepared.splits[name]) > 0 for name in ("train", "val", "test"))


def test_prepare_is_kept_for_the_process_until_the_file_or_settings_change(write_pairs, monkeypatch):
    """A sweep's later trials in one worker get a copy of the prepared data; an edited file is read again."""
    import contrastive.data as data_module

    rows = [(f"q{i} a?", f"q{i} b?", i % 2) for i in range(40)]
    path = write_pairs(rows)
    cfg = fixture_data_settings(f"data.path={path}")
    reads = []
    real = data_module.load_raw
    monkeypatch.setattr(data_module, "load_raw", lambda c: reads.append(1) or real(c))
    first = prepare(cfg)
    first.splits["train"].loc[:, "label"] = 9  # a caller changing its copy
    second = prepare(cfg)
    assert len(reads) == 1 and second.fingerprint == first.fingerprint
    assert set(second.splits["train"]["label"]) <= {0, 1}
    write_pairs(rows[:30])  # the same file, new content
    assert prepare(cfg).summary != second.summary and len(reads) == 2
    prepare(fixture_data_settings(f"data.path={path}", "data.split.seed=7"))
    assert len(reads) == 3

"""The committed fixture is the project's own (written by make_fixture.py) and has the structure tests rely on."""

from __future__ import annotations

import csv
import importlib.util
from collections import defaultdict

import pandas as pd
import pytest
from conftest import fixture_data_settings

from contrastive.data import components, question_key, validate


@pytest.fixture(scope="module")
def make_fixture(fixture_csv):
    spec = importlib.util.spec_from_file_location("make_fixture", fixture_csv.with_name("make_fixture.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fixture_pairs(fixture_csv) -> pd.DataFrame:
    return validate(pd.read_csv(fixture_csv, dtype=str, keep_default_na=False), fixture_data_settings())[0]


def test_committed_csv_equals_the_generator(make_fixture, fixture_csv, tmp_path):
    with open(fixture_csv, newline="") as handle:
        committed = list(csv.reader(handle))
    assert committed[0] == ["question1", "question2", "label"]
    assert committed[1:] == [[q1, q2, str(label)] for q1, q2, label in make_fixture.rows()]
    written = make_fixture.write(tmp_path / "again.csv")
    assert written.read_bytes() == fixture_csv.read_bytes()


def test_fixture_is_clean_and_balanced(fixture_pairs, make_fixture):
    assert len(fixture_pairs) == 5 * len(make_fixture.TOPICS)
    assert set(fixture_pairs["label"]) == {0, 1}
    assert fixture_pairs["label"].sum() == 3 * len(make_fixture.TOPICS)


def test_fixture_has_chained_duplicates(fixture_pairs):
    comp = components(fixture_pairs)
    positive = fixture_pairs[fixture_pairs["label"] == 1]
    direct = set(map(frozenset, zip(positive["key1"], positive["key2"])))
    members = defaultdict(set)
    for key in set(positive["key1"]) | set(positive["key2"]):
        members[comp[key]].add(key)
    chained = [
        keys for keys in members.values() if any(frozenset((a, b)) not in direct for a in keys for b in keys if a < b)
    ]
    assert len(members) > 1
    assert len(chained) == len(members)  # every duplicate component links questions never paired directly
    assert all(len(keys) >= 3 for keys in members.values())


def test_fixture_has_non_duplicates_sharing_an_anchor_with_a_positive(fixture_pairs):
    positive_keys = set(fixture_pairs.loc[fixture_pairs["label"] == 1, ["key1", "key2"]].to_numpy().ravel())
    negative = fixture_pairs[fixture_pairs["label"] == 0]
    shared = negative["key1"].isin(positive_keys) | negative["key2"].isin(positive_keys)
    assert shared.all()
    comp = components(fixture_pairs)
    assert all(comp[a] != comp[b] for a, b in zip(negative["key1"], negative["key2"]))
    assert question_key(negative["question1"].iloc[0]) == negative["key1"].iloc[0]

"""Eval sets: queries need a component of two, distractors from files are deduplicated, capped and seeded."""

from __future__ import annotations

import pandas as pd
import pytest
from evaluation_helpers import eval_config, frame_from_components

from contrastive.data import read_questions
from contrastive.errors import ConfigError, DataError
from contrastive.evaluation import build_eval_set, eval_set_for
from contrastive.evaluation.eval_sets import intermediate_subset


def test_queries_need_a_component_of_two_in_the_split():
    es = build_eval_set(frame_from_components([3, 1, 2], [(0, 1)]), "test")
    assert es.n_relevant.tolist() == [2, 2, 2, 1, 1]
    assert len(es.queries) == 5 and len(es.keys) == 6 and es.n_distractors == 0


def test_distractors_from_files_are_deduplicated_capped_and_seeded(tmp_path, fixture_data):
    val_text = fixture_data.splits["val"]["question1"].iloc[0]
    lines = [f"Distractor question number {i}?" for i in range(30)]
    lines += [val_text.upper(), "", "Distractor question number 3?"]  # in the split, blank, repeated
    (tmp_path / "d.txt").write_text("\n".join(lines))
    pd.DataFrame({"question": lines}).to_csv(tmp_path / "d.csv", index=False)
    ev = eval_config(tmp_path).eval
    for name in ("d.txt", "d.csv"):
        ev.distractors = str(tmp_path / name)
        es = eval_set_for(ev, fixture_data)
        assert es.n_distractors == 30  # blank, repeated and in-split questions dropped
        assert es.protocol["distractors_sha256"]
    ev.max_distractors = 10
    picks = [eval_set_for(ev, fixture_data).keys[-10:] for _ in range(2)]
    ev.seed = 1
    other = eval_set_for(ev, fixture_data).keys[-10:]
    assert picks[0] == picks[1] and other != picks[0]
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="eval.distractors"):
        read_questions(str(tmp_path / "t.csv"), "eval.distractors")


def test_unknown_split_and_intermediate_subset(tmp_path, fixture_data):
    ev = eval_config(tmp_path, "eval.intermediate_max_pairs=20").eval
    with pytest.raises(ConfigError, match="eval.split='dev'"):
        eval_set_for(ev, fixture_data, "dev")
    sub = intermediate_subset(ev, fixture_data)
    assert sub.split == "val" and len(sub.pair_labels) <= 20 and sub.protocol["subset_pairs"] == 20
    assert len(sub.pair_labels) < len(fixture_data.splits["val"])

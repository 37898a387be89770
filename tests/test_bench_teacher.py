"""contrastive/bench/teacher.py on the fixture: the teacher's training and scoring rows (no timing is asserted: the
rows' shape, the work they count and project)."""

from __future__ import annotations

from conftest import compose_config

from contrastive.bench.common import load_inputs
from contrastive.bench.settings import load_bench
from contrastive.bench.teacher import section
from contrastive.evaluation import split_questions


def test_the_teacher_rows_on_the_fixture(tmp_path):
    settings = load_bench(
        compose_config(
            "bench",
            "data=fixture",
            f"paths.cache_dir={tmp_path}",
            "bench.subset.val_pairs=40",
            "bench.teacher.train_pairs=24",
            "bench.teacher.score_pairs=30",
            "teacher.batch_size=8",
        )
    )
    inp = load_inputs(settings)
    record: dict = {}
    rows = section(inp, record)
    assert [r["row"] for r in rows] == ["8a", "8b"] and rows[0]["target"] == "<= 30 min"
    t = record["teacher"]
    train = inp.data.splits["train"]
    assert t["train"]["pairs"] == 24 and t["train"]["steps"] == 3
    assert t["train"]["full_pairs"] == len(train)  # teacher.orders=random: each pair once
    assert t["score"]["pairs"] == 30 and t["score"]["rate"] > 0
    assert t["silver_candidates_max"] == 2 * len(split_questions(train))
    assert isinstance(rows[1]["met"], bool) and "pairs/s" in rows[1]["quality"]

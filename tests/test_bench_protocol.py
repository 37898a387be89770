"""contrastive/bench/protocol.py on the fixture: the all-distractor evaluation, mining and dedup rows (no timing is
asserted: the rows' shape, the work they count, and that mining reused the evaluation's embeddings)."""

from __future__ import annotations

from conftest import compose_config

from contrastive.bench.common import load_inputs
from contrastive.bench.protocol import section
from contrastive.bench.settings import load_bench


def test_the_protocol_rows_on_the_fixture(tmp_path):
    settings = load_bench(
        compose_config(
            "bench",
            "data=fixture",
            f"paths.cache_dir={tmp_path}",
            "bench.subset.val_pairs=40",
            "bench.protocol.dedup_questions=60",
            "bench.protocol.dedup_backends=[torch]",
        )
    )
    inp = load_inputs(settings)
    record: dict = {}
    rows = section(inp, record)
    assert [r["row"] for r in rows] == ["7a", "7b", "7c"]
    ev, mining, dedup = record["protocol"]["eval"], record["protocol"]["mining"], record["protocol"]["dedup"]
    train_questions = len(set(inp.data.splits["train"]["key1"]) | set(inp.data.splits["train"]["key2"]))
    assert ev["distractors"] == train_questions and ev["questions"] > train_questions
    assert mining["questions"] == train_questions and mining["encoded_again"] == 0
    assert mining["stats"]["mining_negatives"] > 0 and mining["flops"] > 0
    assert dedup["questions"] == 60 and dedup["runs"][0]["backend"] == "torch"
    assert dedup["runs"][0]["encode_s"] > 0 and rows[2]["target"] == "< 10 s"
    assert not (tmp_path / "bench-protocol").exists()  # its caches are removed

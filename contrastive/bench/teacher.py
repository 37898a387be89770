"""Section `teacher`: the cross-encoder teacher's costs on the real data, measured on a sample and projected.

8a  training (contrastive.teacher.train, BinaryCrossEntropyLoss) on `bench.teacher.train_pairs` of the train split's
    pairs: pairs/s, projected onto the full run the teacher group asks for (its orders, epochs, max_pairs); budget
    <= 30 min
8b  scoring (contrastive.teacher.predict, both orders when teacher.symmetric) of `bench.teacher.score_pairs`
    labeled train pairs: pairs/s, projected onto the silver candidates (at most data.silver.neighbours per train
    question) and the mining filter (loss.mining.teacher_depth per positive); budget <= 20 min for silver scoring
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from contrastive.bench.common import Inputs, Row, note

# The APIs the section times (one place to repoint when they move).
from contrastive.evaluation import split_questions
from contrastive.pairs import positives
from contrastive.teacher import build, predict, teacher_pairs, train

TRAIN_BUDGET_S, SILVER_BUDGET_S = 30 * 60, 20 * 60  # issue 26's budgets on 2 CPU cores


def section(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """Rows 8a-8b."""
    settings = inp.settings
    cfg, b = settings.teacher, settings.bench.teacher
    train_split = inp.data.splits["train"]
    full = teacher_pairs(train_split, cfg)
    sample = full.sample(n=min(int(b.train_pairs), len(full)), random_state=int(settings.bench.seed))
    model = build(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        timed = train(model, sample.reset_index(drop=True), dataclasses.replace(cfg, epochs=1.0), Path(tmp))
    train_rate = len(sample) / timed["seconds"]
    full_pairs = len(full) * float(cfg.epochs)
    train_s = full_pairs / train_rate
    note(f"teacher: {len(sample)} pairs trained in {timed['seconds']:.0f} s")
    scored = train_split.sample(n=min(int(b.score_pairs), len(train_split)), random_state=int(settings.bench.seed))
    start = time.perf_counter()
    predict(model, scored["question1"].tolist(), scored["question2"].tolist(), int(cfg.score_batch_size), cfg.symmetric)
    score_s = time.perf_counter() - start
    score_rate = len(scored) / score_s
    questions = len(split_questions(train_split))
    silver = questions * int(settings.data.silver.neighbours)  # an upper bound: an unordered pair counts once
    mining = len(positives(train_split, settings.data.both_orders)) * int(settings.loss.mining.teacher_depth)
    record["teacher"] = {
        "train": {**timed, "rate": train_rate, "full_pairs": full_pairs, "projected_s": train_s},
        "score": {"pairs": len(scored), "seconds": score_s, "rate": score_rate, "symmetric": cfg.symmetric},
        "silver_candidates_max": silver,
        "mining_filter_pairs": mining,
    }
    orders = f"orders={cfg.orders}, epochs={cfg.epochs:g}"
    return [
        {
            "row": "8a",
            "what": f"teacher training (CrossEncoder + BCE, batch {cfg.batch_size}) on {len(sample):,} train pairs, "
            f"projected onto the full run ({full_pairs:,.0f} pairs: {orders}): min",
            "a": f"{train_s / 60:.0f} min",
            "target": "<= 30 min",
            "met": train_s <= TRAIN_BUDGET_S,
            "quality": f"{train_rate:.1f} pairs/s; {timed['steps']} steps in {timed['seconds']:.0f} s",
        },
        {
            "row": "8b",
            "what": f"teacher scoring of {len(scored):,} pairs ({'both orders' if cfg.symmetric else 'one order'}), "
            f"projected onto silver candidates (<= {silver:,}: {questions:,} questions x "
            f"{settings.data.silver.neighbours}) : min",
            "a": f"{silver / score_rate / 60:.0f} min",
            "target": "<= 20 min",
            "met": silver / score_rate <= SILVER_BUDGET_S,
            "quality": f"{score_rate:.0f} pairs/s; the mining filter's {mining:,} pairs: "
            f"{mining / score_rate / 60:.0f} min (both cached: paid once)",
        },
    ]

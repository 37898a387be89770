"""Section `protocol`: the costly steps of the proof and the app on real data, each with its share of the peak.

7a  one model's test evaluation with EVERY train question as a distractor (make reproduce's protocol): encode,
    scoring (the exact top-k kernel), the baseline's scores from its cache, the bootstrap
7b  hard-negative mining over the train split (contrastive.mining.mine), from 7a's embeddings of the same
    questions (no second encode: the row times the neighbour search and the filters)
7c+ the app's dedup of a `dedup_questions` list (Engine.dedup: encode, blocked cosines, union-find, the table),
    once per inference backend
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from contrastive.bench.common import Inputs, Row, backend_model, forward_flops_per_token, note

# The APIs the section times (one place to repoint when they move).
from contrastive.evaluation import EvalResult, Evaluator


def useful_flops(inp: Inputs, texts: list[str]) -> float:
    """Forward FLOPs of encoding `texts` at their own token lengths (padding not counted)."""
    return float(sum(n * forward_flops_per_token(inp.shape, n) for n in inp.count_tokens(texts)))


def all_distractor_eval(inp: Inputs, cache: Path) -> tuple[EvalResult, float]:
    """The untuned model's evaluation on the protocol's split with every train question as a distractor (its
    own embeddings become the cached baseline); and the wall time."""
    settings, b = inp.settings, inp.settings.bench.protocol
    base = settings.training()
    ev = dataclasses.replace(
        base.eval, split=b.split, distractors="train", max_distractors=b.max_distractors, cache_dir=str(cache)
    )
    evaluator = Evaluator(ev, base.model, inp.data, show_progress=False)
    evaluator.eval_set()  # building the eval set (reading splits) is not the evaluation's cost
    start = time.perf_counter()
    result = evaluator.run(inp.model, untuned=True)
    return result, time.perf_counter() - start


def mining_run(inp: Inputs, result: EvalResult, cache: Path) -> dict[str, Any]:
    """mine() over the train split with the bench's loss.mining settings, fed 7a's embeddings of its questions."""
    from contrastive.mining import mine
    from contrastive.pairs import positives

    settings = inp.settings
    pool = inp.data.splits["train"]
    row_of = {text: i for i, text in enumerate(result.eval_set.texts)}
    emb = result.embeddings["finetuned"]
    missing: list[int] = []

    def lookup(texts: list[str]) -> np.ndarray:
        missing.extend(i for i, t in enumerate(texts) if t not in row_of)
        out = np.stack([emb[row_of[t]] if t in row_of else np.zeros(emb.shape[1], np.float32) for t in texts])
        if missing:
            from contrastive.model import encode

            out[missing] = encode(inp.model, [texts[i] for i in missing], int(settings.eval.batch_size), False)
        return out

    cfg = dataclasses.replace(settings.loss.mining, cache_dir=str(cache))
    pos = positives(pool, settings.data.both_orders)
    key = {"weights": "bench", "max_seq_length": settings.model.max_seq_length}
    mined = mine(pool, pos, cfg, lookup, key)
    stats = dict(mined.selection.stats)
    anchors = int(stats["mining_anchors"])
    return {
        "seconds": mined.seconds,
        "positives": len(mined.anchors),
        "anchors": anchors,
        "questions": len(mined.texts),
        "encoded_again": len(missing),
        "stats": stats,
        "flops": 2.0 * anchors * len(mined.texts) * emb.shape[1],
    }


def dedup_run(inp: Inputs, texts: list[str], threshold: float, backend: str) -> dict[str, Any]:
    """Engine.dedup of `texts` on one backend (the app's code path, no baseline columns): wall, encode, groups."""
    from contrastive.app.checkpoints import Thresholds
    from contrastive.app.engine import Engine, Report, encoder
    from contrastive.app.index import BackgroundIndex
    from contrastive.search import Limits

    settings = inp.settings
    model = inp.model if backend == "torch" else backend_model(settings.model, backend)
    embed = encoder(model, int(settings.eval.batch_size), progress_from=len(texts) + 1)
    embed(texts[:8])  # warm-up: first-call allocations
    timed: dict[str, float] = {}

    def timed_embed(batch: list[str], progress: Report | None = None) -> np.ndarray:
        start = time.perf_counter()
        out = embed(batch, progress)
        timed["encode_s"] = time.perf_counter() - start
        return out

    limits = Limits(10_000, len(texts), 50_000_000)
    engine = Engine(timed_embed, None, Thresholds(threshold, threshold, False), limits, BackgroundIndex.failed("-"))
    start = time.perf_counter()
    _, groups = engine.dedup(texts, threshold)
    wall = time.perf_counter() - start
    return {
        "backend": backend,
        "seconds": wall,
        **timed,
        "group_s": wall - timed["encode_s"],
        "groups": sum(len(g) > 1 for g in groups),
        "in_groups": sum(len(g) for g in groups if len(g) > 1),
    }


def section(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """Rows 7a-7c: the all-distractor evaluation, mining, and the app's dedup per backend."""
    settings, b = inp.settings, inp.settings.bench.protocol
    cache = Path(settings.paths.cache_dir) / "bench-protocol"
    shutil.rmtree(cache, ignore_errors=True)
    result, eval_s = all_distractor_eval(inp, cache / "eval")
    es, sec = result.eval_set, result.seconds
    note(f"protocol: {len(es.texts):,}-question evaluation {eval_s:.0f} s")
    encode_flops = useful_flops(inp, es.texts)
    score_flops = 2.0 * len(es.queries) * len(es.texts) * result.embeddings["finetuned"].shape[1]
    mining = mining_run(inp, result, cache / "mining")
    note(f"protocol: mining {mining['seconds']:.1f} s")
    rng = np.random.default_rng(int(settings.bench.seed))
    distractors = es.texts[es.n_split :]
    picks = rng.choice(len(distractors), size=min(int(b.dedup_questions), len(distractors)), replace=False)
    dedup_texts = [distractors[i] for i in sorted(picks)]
    threshold = float(result.baseline["pair_threshold"])
    dedups = [dedup_run(inp, dedup_texts, threshold, backend) for backend in b.dedup_backends]
    dedup_flops = useful_flops(inp, dedup_texts)
    shutil.rmtree(cache, ignore_errors=True)
    record["protocol"] = {
        "eval": {
            "wall_s": eval_s,
            "seconds": sec,
            "questions": len(es.texts),
            "distractors": es.n_distractors,
            "queries": len(es.queries),
            "pairs": len(es.pair_labels),
            "encode_flops": encode_flops,
            "score_flops": score_flops,
            "mrr_at_10": result.finetuned.get("mrr_at_10"),
        },
        "mining": mining,
        "dedup": {"questions": len(dedup_texts), "threshold": threshold, "flops": dedup_flops, "runs": dedups},
    }
    score_s = sec["score_finetuned"]
    rows: list[Row] = [
        {
            "row": "7a",
            "what": f"all-distractor evaluation of one model on {es.split}: {len(es.texts):,} questions "
            f"({es.n_distractors:,} train distractors), {len(es.queries):,} queries, {len(es.pair_labels):,} pairs; "
            "encode + scoring + cached baseline + bootstrap: wall s",
            "a": f"{eval_s:.0f} s",
            "quality": f"encode {sec['encode_finetuned']:.0f} s ({len(es.texts) / sec['encode_finetuned']:,.0f} q/s), "
            f"scoring {score_s:.1f} s, baseline (cache write + scores) {sec.get('baseline_embeddings', 0):.1f} s, "
            f"bootstrap {sec.get('bootstrap', 0):.1f} s; MRR@10 {result.finetuned['mrr_at_10']:.4f}",
            "peak": [
                encode_flops / sec["encode_finetuned"],
                " (encode, real tokens); ",
                score_flops / score_s,
                " (scoring: the score matmuls)",
            ],
        },
        {
            "row": "7b",
            "what": f"hard-negative mining over the train split: {mining['positives']:,} positives, "
            f"{mining['anchors']:,} anchors x {mining['questions']:,} questions (embeddings from 7a): wall s",
            "a": f"{mining['seconds']:.1f} s",
            "quality": f"{mining['stats']['mining_negatives']:,} negatives kept of "
            f"{mining['stats']['mining_candidates']:,} candidates looked at; "
            f"{mining['encoded_again']} question(s) not in 7a encoded again",
            "peak": [mining["flops"] / mining["seconds"], " (the neighbour matmuls)"],
        },
    ]
    for i, run in enumerate(dedups):
        rows.append(
            {
                "row": f"7{chr(99 + i)}",
                "what": f"app dedup of {len(dedup_texts):,} train questions on {run['backend']} (Engine.dedup: encode, "
                f"blocked cosines, union-find, table; threshold {threshold:.3f}): wall s",
                "a": f"{run['seconds']:.1f} s",
                "target": "< 10 s",
                "met": run["seconds"] < 10,
                "quality": f"encode {run['encode_s']:.1f} s, grouping {run['group_s']:.2f} s; "
                f"{run['in_groups']:,} questions in {run['groups']:,} groups",
                "peak": [dedup_flops / run["encode_s"], " (encode, fp32-equivalent)"],
            }
        )
    return rows

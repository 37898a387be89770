"""A run's training examples, built in ONE stage: the teacher, silver pairs, mined (and denoised) negatives, the pair
builders and the distillation targets, each called once, in this order:

    teacher    (only when a lever asks for it) the cross-encoder of contrastive.teacher, from its cache
    silver     (data.silver.enabled) teacher-labeled pairs among unlabeled train neighbours, components merged
    cap        the train split's labeled pairs capped by data.max_pairs (whole linked groups), silver rows added
    mining     (loss.negatives mined | both) the untuned model's nearest non-duplicates of each positive, then
               without those the teacher scores as likely duplicates (loss.mining.teacher_max)
    pairs      the MNRL datasets (positives, labeled / mined negatives) and the auxiliary pairs
    targets    loss.aux_labels=teacher: the auxiliary pairs' labels become the teacher's P(duplicate);
               loss.aux=margin_mse: each MNRL row with negatives gets [t(a, p), t(a, n_1), ...]
    joint      loss.combine=joint: one auxiliary pair zipped onto every MNRL row

It returns plain DataFrames, their counts (each stage's own, logged as `data/*` params), the question -> component
lookup the batch sampler keeps apart (merged by silver positives) and the seeded samples a run writes as artifacts.
Only the train split is read: val and test questions never reach the teacher, the miner or a silver pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from contrastive import mining, silver
from contrastive.data import PreparedData
from contrastive.pairs import build_examples, cap_pairs, component_lookup, joint_examples, positives

TEACHER_LABEL = "label"  # the column the Trainer hands to the losses as labels


@dataclass
class Examples:
    """What the stage built: datasets by name, their counts, the sampler's component lookup, samples to write."""

    frames: dict[str, pd.DataFrame]
    sizes: dict[str, int]
    lookup: dict[str, int]
    samples: dict[str, pd.DataFrame] = field(default_factory=dict)  # artifact dir -> seeded sample
    teacher: Any = None


def mining_pool(data: PreparedData, settings: Any) -> pd.DataFrame:
    """The train-split pairs mined over: with data.max_pairs set, capped at `loss.mining.pool_pairs` (at least
    data.max_pairs): a seeded set of whole linked groups that holds the training pairs (cap_pairs keeps a prefix of
    one order); else the whole split (an uncapped run trains on all of it, so it mines over all of it)."""
    cap, budget = settings.loss.mining.pool_pairs, settings.data.max_pairs
    if not cap or not budget:
        return data.splits["train"]
    return cap_pairs(data.splits["train"], max(int(cap), int(budget)), settings.data.split.seed)


def teacher_for(settings: Any, pool: pd.DataFrame) -> Any:
    """The run's teacher (trained once, cached; rank 0 first under several processes), or None when no lever
    asks for it."""
    if not settings.uses_teacher:
        return None
    from contrastive.distributed import main_first
    from contrastive.teacher import load_or_train

    with main_first():
        return load_or_train(settings.teacher, pool)


def teacher_sizes(teacher: Any) -> dict[str, Any]:
    """The teacher's id and its recorded val pair AP, for the run's params."""
    if teacher is None:
        return {}
    val = (teacher.info.get("metrics") or {}).get("val") or {}
    ap = (val.get("teacher") or {}).get("pair_ap")
    return {"teacher": teacher.digest, "teacher_cache_hit": int(teacher.cache_hit)} | (
        {"teacher_val_pair_ap": round(float(ap), 4)} if ap is not None else {}
    )


def with_silver(pool: pd.DataFrame, settings: Any, teacher: Any, embeddings: Callable) -> tuple[pd.DataFrame, dict]:
    """The silver rows of the train split `pool` (none unless data.silver.enabled) and their counts."""
    cfg = settings.data.silver
    if not cfg.enabled:
        return pool.iloc[:0], {}
    return silver.build_silver(pool, cfg, teacher.score, embeddings)


def silver_for_budget(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded `fraction` of the silver rows: a run whose data.max_pairs keeps that fraction of the labeled pairs
    keeps the same silver-to-gold ratio (a 6,000-pair sweep trial is not swamped by the whole split's silver)."""
    if fraction >= 1 or not len(frame):
        return frame
    return frame.iloc[silver.seeded_subset(len(frame), int(round(len(frame) * fraction)), seed + 2)]


def mined_negatives(pool: pd.DataFrame, frame: pd.DataFrame, settings: Any, encoder: tuple, teacher: Any):
    """The mined negatives of `frame`'s positives over `pool` (None unless asked), denoised by the teacher when
    loss.mining.teacher_max is set."""
    if not mining.uses_mining(settings.loss):
        return None
    from contrastive.distributed import main_first

    cfg = settings.loss.mining
    with main_first():  # multi-process: rank 0 mines and fills the cache, the other ranks read it
        mined = mining.mine(pool, positives(frame, settings.data.both_orders), cfg, *encoder)
    if cfg.teacher_max is not None:
        mined = mined.denoised(teacher.score, float(cfg.teacher_max))
    return mined


def negative_names(frame: pd.DataFrame) -> list[str]:
    """The negative columns of an MNRL dataset, in order (`negative` or negative_1..n)."""
    return [c for c in frame.columns if c == "negative" or c.startswith("negative_")]


def with_targets(frames: dict[str, pd.DataFrame], settings: Any, teacher: Any) -> dict[str, pd.DataFrame]:
    """The teacher's targets: relabelled auxiliary pairs (aux_labels=teacher), margin rows (aux=margin_mse)."""
    loss = settings.loss
    out = dict(frames)
    if loss.aux == "margin_mse":
        for name, df in frames.items():
            negs = negative_names(df)
            if not negs:
                continue
            columns = [teacher.score(df["anchor"].tolist(), df[c].tolist()) for c in ("positive", *negs)]
            out[name] = df.assign(**{TEACHER_LABEL: np.stack(columns, axis=1).astype(float).tolist()})
    elif loss.aux_labels == "teacher" and "aux_pairs" in frames:
        aux = frames["aux_pairs"]
        scores = teacher.score(aux["sentence1"].tolist(), aux["sentence2"].tolist())
        out["aux_pairs"] = aux.assign(label=scores.astype(float))
    return out


def build(data: PreparedData, settings: Any, model: Any = None) -> Examples:
    """The run's training examples (module docstring); `model`, still untuned, encodes for mining and silver
    candidates on a cache miss (None: the model group's, loaded then)."""
    teacher = teacher_for(settings, data.splits["train"])  # the whole split's labels (teacher.max_pairs caps it)
    pool = mining_pool(data, settings)  # mined over, silver candidates drawn from
    encoder = mining.untuned_encoder(settings, model)

    def embeddings(corpus: mining.Corpus) -> np.ndarray:
        return mining.corpus_embeddings(corpus, settings.loss.mining.cache_dir, encoder[1], encoder[0])

    silver_frame, silver_stats = with_silver(pool, settings, teacher, embeddings)
    samples = {}
    if silver_stats:
        cfg = settings.data.silver
        samples["silver"] = silver.sample(silver_frame, int(cfg.sample_rows), int(cfg.seed))
    n_labeled = len(pool)
    if len(silver_frame):  # silver rows are labeled train pairs; their positives merge components
        extra = silver_frame.drop(columns=["silver", "teacher_score"])
        pool = silver.merge_components(pd.concat([pool, extra], ignore_index=True))
    labeled, silver_frame = pool.iloc[:n_labeled], pool.iloc[n_labeled:]
    capped = cap_pairs(labeled, settings.data.max_pairs, settings.data.split.seed)
    silver_frame = silver_for_budget(silver_frame, len(capped) / max(n_labeled, 1), int(settings.data.silver.seed))
    if silver_stats:
        silver_stats["silver_used"] = len(silver_frame)
        silver_stats["silver_used_positive"] = int((silver_frame["label"] == 1).sum())
    train = pd.concat([capped, silver_frame])
    train = train.reset_index(drop=True)
    mined = mined_negatives(pool, train, settings, encoder, teacher)
    frames, sizes = build_examples(
        train,
        hard_negatives=settings.loss.hard_negatives,
        with_aux=settings.loss.aux_weight > 0 and settings.loss.aux != "margin_mse",
        both_orders=settings.data.both_orders,
        seed=settings.trainer.seed,
        aux_share=float(settings.loss.aux_share),
        negatives=settings.loss.negatives,
        mined=mined.negatives() if mined is not None else None,
        num_negatives=int(settings.loss.mining.num_negatives),
    )
    if teacher is not None:
        frames = with_targets(frames, settings, teacher)
    if settings.loss.combine == "joint" and "aux_pairs" in frames:
        frames, zipped = joint_examples(frames, settings.trainer.seed)
        sizes.update(zipped)
    sizes = {
        "train_pairs_used": len(train) - len(silver_frame),
        **sizes,
        **silver_stats,
        **(mined.stats if mined is not None else {}),
        **teacher_sizes(teacher),
    }
    if mined is not None:
        samples["mining"] = mined.sample(int(settings.loss.mining.sample_rows), int(settings.loss.mining.seed))
    return Examples(frames, sizes, component_lookup([pool]), samples, teacher)

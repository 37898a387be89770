r"""The teacher: a cross-encoder trained on the train split's labeled pairs, cached on disk by fingerprint.

A bi-encoder scores a pair by the cosine of two embeddings computed apart; a cross-encoder reads both questions in
one input and outputs a logit :math:`z`, trained with binary cross-entropy on the gold label :math:`y`:

.. math::

    t(q_1, q_2) = \sigma(z(q_1, q_2)), \qquad
    \mathcal{L}_{\text{BCE}} = -\big(y \log t + (1 - y) \log(1 - t)\big)

(sentence-transformers' ``CrossEncoder`` with ``num_labels=1`` and ``BinaryCrossEntropyLoss``). With
``teacher.symmetric`` a pair's score is :math:`\tfrac12\,(t(q_1, q_2) + t(q_2, q_1))`. The teacher hands the
bi-encoder what its labels cannot: it drops likely false negatives among the mined ones (RocketQA's denoised hard
negatives, ``loss.mining.teacher_max``), labels new pairs among the unlabeled train questions (AugSBERT's silver
pairs, ``data.silver``) and gives soft targets (``loss.aux=margin_mse``, ``loss.aux_labels=teacher``).

It sees the TRAIN split only (val and test questions never reach it), so it never leaks labels into evaluation.
Cached under ``teacher.cache_dir`` as ``teacher-<digest>/``: the model, ``teacher.json`` (its cache key, training
record and, once scored, its metrics), keyed by the base weights' fingerprint, the train pairs' fingerprint and
every setting that changes the model; a sweep trains it once. Every pair it scores is kept beside it
(``pairs-<digest>-<orders>.npz``: a 64-bit hash of the ordered pair -> its score), so a pair is scored once whatever
list it comes in: the mining filter of runs whose positives differ (silver shares, budgets) scores only new pairs.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contrastive.cli import hydra_app, user_errors
from contrastive.data import fingerprint_frame
from contrastive.pairs import cap_pairs, labeled_pairs
from contrastive.utils import file_lock, json_digest, seeded_hash, write_atomic, write_dir_atomic, write_json

log = logging.getLogger(__name__)

FORMAT = 1  # part of the cache key: bump when training or the saved files change
INFO_FILE = "teacher.json"  # in the teacher's cache folder: key, training record, metrics
TRAINING_KEYS = ("max_length", "orders", "max_pairs", "epochs", "lr", "batch_size", "warmup_ratio", "weight_decay")


def teacher_pairs(train: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """(sentence1, sentence2, label) of the train split's labeled pairs the teacher trains on: a seeded cap of whole
    linked groups (`max_pairs`), then the orders of `cfg.orders` (both, random, given)."""
    pairs = labeled_pairs(cap_pairs(train, cfg.max_pairs, int(cfg.seed)))
    swapped = pairs.rename(columns={"sentence1": "sentence2", "sentence2": "sentence1"})[list(pairs.columns)]
    if cfg.orders == "both":
        return pd.concat([pairs, swapped], ignore_index=True)
    if cfg.orders == "random":
        flip = np.random.default_rng(int(cfg.seed)).random(len(pairs)) < 0.5
        out = pairs.copy()
        out.loc[flip, ["sentence1", "sentence2"]] = pairs.loc[flip, ["sentence2", "sentence1"]].to_numpy()
        return out
    return pairs


def cache_key(cfg: Any, train: pd.DataFrame) -> dict[str, Any]:
    """What the trained teacher depends on: its base weights, the train split's pairs and the training settings."""
    from contrastive.model import fingerprint

    settings = {name: getattr(cfg, name) for name in TRAINING_KEYS}
    return {
        "format": FORMAT,
        "base": fingerprint(cfg.name_or_path),
        "pairs": fingerprint_frame(train),
        **settings,
        "seed": int(cfg.seed),
    }


def build(cfg: Any, path: str | None = None):
    """A CrossEncoder with one logit: from `path` (a trained teacher) or a new head on `cfg.name_or_path`'s
    transformer (a sentence-transformers directory is converted: its pooling is dropped)."""
    from sentence_transformers.cross_encoder import CrossEncoder

    from contrastive.model import refuse_pickles, resolve_model

    source = path or resolve_model(cfg.name_or_path)
    local = Path(source).is_dir()
    if local:
        refuse_pickles(source, source)
    return CrossEncoder(
        source,
        num_labels=1,
        max_length=int(cfg.max_length),
        device=cfg.device,
        local_files_only=local,
        model_kwargs={"use_safetensors": True},
    )


def train(model: Any, pairs: pd.DataFrame, cfg: Any, out: Path) -> dict[str, Any]:
    """Train `model` in place on `pairs` (BinaryCrossEntropyLoss); returns steps, seconds and the loss history."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=float(cfg.epochs),
        per_device_train_batch_size=int(cfg.batch_size),
        learning_rate=float(cfg.lr),
        warmup_steps=float(cfg.warmup_ratio),
        weight_decay=float(cfg.weight_decay),
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        logging_steps=50,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=False,
    )
    started = time.perf_counter()
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_pandas(pairs, preserve_index=False),
        loss=BinaryCrossEntropyLoss(model),
    )
    trainer.train()
    history = [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
    return {
        "pairs": len(pairs),
        "steps": trainer.state.global_step,
        "seconds": round(time.perf_counter() - started, 1),
        "history": history,
    }


def predict(model: Any, first: Sequence[str], second: Sequence[str], batch_size: int, symmetric: bool) -> np.ndarray:
    """P(duplicate) of each (first[i], second[i]) as float32; with `symmetric` the mean over both orders."""
    if len(first) == 0:
        return np.zeros(0, dtype=np.float32)
    show = len(first) > 10 * batch_size

    def run(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        pairs = list(zip(map(str, a), map(str, b)))
        return np.asarray(model.predict(pairs, batch_size=batch_size, show_progress_bar=show), dtype=np.float32)

    scores = run(first, second)
    return (scores + run(second, first)) / 2 if symmetric else scores


def pair_hashes(first: Sequence[str], second: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each ordered pair (first[i], second[i])."""
    return np.fromiter(
        (seeded_hash(f"{a}\x1f{b}", 0) for a, b in zip(first, second)), dtype=np.uint64, count=len(first)
    )


def read_store(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A pair store's sorted hashes and their scores (empty when it does not exist yet)."""
    if not path.is_file():
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.float32)
    with np.load(path, allow_pickle=False) as npz:
        return npz["hashes"], npz["scores"]


def lookup(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """The position of each hash in `sorted_hashes`, -1 where it is absent."""
    at = np.searchsorted(sorted_hashes, hashes)
    hit = at < len(sorted_hashes)
    hit[hit] = sorted_hashes[at[hit]] == hashes[hit]
    return np.where(hit, at, -1)


@dataclass
class Teacher:
    """A trained teacher: the CrossEncoder, its settings and cache folder, and what `teacher.json` records."""

    model: Any
    cfg: Any
    path: Path
    info: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False

    @property
    def digest(self) -> str:
        """The teacher's id: its cache folder's digest."""
        return self.path.name.removeprefix("teacher-")

    @property
    def store(self) -> Path:
        """The file of every pair this teacher has scored in this mode (one order, or both orders' mean)."""
        return self.path.parent / f"pairs-{self.digest}-{'both' if self.cfg.symmetric else 'one'}.npz"

    def score(self, first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        """P(duplicate) of each pair: pairs in the store are read, the others scored once and added to it."""
        hashes = pair_hashes(first, second)
        known_h, known_s = read_store(self.store)
        found = lookup(known_h, hashes)
        new_h, first_at = np.unique(hashes[found < 0], return_index=True)
        if len(new_h):
            rows = np.nonzero(found < 0)[0][first_at]
            scored = predict(
                self.model,
                [first[i] for i in rows],
                [second[i] for i in rows],
                int(self.cfg.score_batch_size),
                bool(self.cfg.symmetric),
            )
            with file_lock(self.store.with_suffix(".lock")):  # others may have added pairs meanwhile: merge
                known_h, known_s = read_store(self.store)
                keep = lookup(known_h, new_h) < 0
                known_h = np.concatenate([known_h, new_h[keep]])
                known_s = np.concatenate([known_s, scored[keep]])
                order = np.argsort(known_h)
                known_h, known_s = known_h[order], known_s[order]
                write_atomic(self.store, lambda h: np.savez(h, hashes=known_h, scores=known_s))
        log.info("teacher: %d pair scores (%d new)", len(hashes), len(new_h))
        return known_s[lookup(known_h, hashes)].astype(np.float32)

    def record(self, **entries: Any) -> None:
        """Add entries (e.g. its metrics) to `teacher.json`."""
        self.info.update(entries)
        write_json(self.info, self.path / INFO_FILE)


def folder(cfg: Any, train_split: pd.DataFrame) -> tuple[Path, dict[str, Any]]:
    """The teacher's cache folder and key for these settings and this train split."""
    key = cache_key(cfg, train_split)
    return Path(cfg.cache_dir).expanduser() / f"teacher-{json_digest(key)}", key


def load_or_train(cfg: Any, train_split: pd.DataFrame) -> Teacher:
    """The teacher of these settings on this train split: from its cache folder, else trained and saved there
    (atomically; processes on this machine that need it at once take turns, the later ones read it)."""
    from contrastive.utils import read_json

    path, key = folder(cfg, train_split)
    with file_lock(path.with_suffix(".lock")):
        info = read_json(path / INFO_FILE) if (path / INFO_FILE).is_file() else None
        if info is not None and info.get("key") == key:
            log.info("teacher: cache hit %s", path)
            return Teacher(build(cfg, str(path)), cfg, path, info, cache_hit=True)
        pairs = teacher_pairs(train_split, cfg)
        print(f"teacher: training a cross-encoder on {len(pairs):,} train pairs -> {path}", flush=True)
        model = build(cfg)

        def fill(tmp: Path) -> None:
            training = train(model, pairs, cfg, tmp)
            shutil.rmtree(tmp / "trainer", ignore_errors=True)  # the Trainer's output dir (save_strategy=no)
            model.save_pretrained(str(tmp))
            write_json({"key": key, "training": training}, tmp / INFO_FILE)

        write_dir_atomic(path, fill)
        info = read_json(path / INFO_FILE)
        return Teacher(model, cfg, path, info, cache_hit=False)


# ---------------------------------------------------------------- scored beside the untuned bi-encoder
def evaluate(teacher: Teacher, evaluator: Any, split: str | None = None) -> dict[str, Any]:
    """The teacher's pair metrics on a split's labeled pairs beside the untuned bi-encoder's cosine (its cached
    embeddings), with the paired bootstrap CI of each delta (teacher - bi-encoder)."""
    from contrastive.evaluation import bootstrap_pairs, pair_metrics, pair_scores

    ev = evaluator.ev
    es = evaluator.eval_set(split)
    rows = es.pair_rows
    first, second = [es.texts[i] for i in rows[:, 0]], [es.texts[i] for i in rows[:, 1]]
    scores = teacher.score(first, second).astype(np.float64)
    base = pair_scores(evaluator.baseline_embeddings(es)[0], es)
    ours, theirs = pair_metrics(scores, es.pair_labels), pair_metrics(base, es.pair_labels)
    intervals = bootstrap_pairs(scores, base, es.pair_labels, int(ev.n_boot), float(ev.ci), int(ev.seed))
    delta = {
        name: {"delta": ours[name] - theirs[name], "ci_low": lo, "ci_high": hi} for name, (lo, hi) in intervals.items()
    }
    return {"split": es.split, "n_pairs": len(scores), "teacher": ours, "baseline": theirs, "delta": delta}


def format_metrics(entry: dict[str, Any]) -> str:
    """The printed table: each pair metric of the teacher, the untuned bi-encoder and the delta with its CI."""
    from contrastive.utils import fmt_delta, fmt_metric

    lines = [
        f"teacher vs untuned bi-encoder, {entry['split']} split, {entry['n_pairs']:,} labeled pairs",
        f"{'metric':<16}{'teacher':>10}{'untuned':>10}  delta [95% CI]",
    ]
    for name in ("pair_ap", "pair_best_f1", "pair_accuracy"):
        t, b = entry["teacher"][name], entry["baseline"][name]
        lines.append(f"{name:<16}{fmt_metric(t):>10}{fmt_metric(b):>10}  {fmt_delta(entry['delta'][name])}")
    return "\n".join(lines)


def flat_metrics(entry: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of an evaluation: teacher/<m>, baseline/<m>, delta/<m> (+ ci_low, ci_high)."""
    out: dict[str, float] = {}
    for name, value in entry["teacher"].items():
        out[f"teacher/{name}"] = value
        out[f"baseline/{name}"] = entry["baseline"][name]
        for part, v in entry["delta"][name].items():
            if v is not None:
                out[f"delta/{name}" + ("" if part == "delta" else f"_{part}")] = v
    return out


# ---------------------------------------------------------------- the entry point
def write_card(teacher: Teacher, entry: dict[str, Any] | None) -> Path:
    """The teacher's model card (sentence-transformers' CrossEncoder card), with its metrics when scored."""
    data = teacher.model.model_card_data
    data.language, data.license = ["en"], "apache-2.0"
    data.model_name = "QQP duplicate-question cross-encoder (contrastive teacher)"
    teacher.model._create_model_card(str(teacher.path))  # README.md from the card data (the library's writer)
    card = teacher.path / "README.md"
    if entry is not None:
        card.write_text(card.read_text() + "\n## Scored by contrastive\n\n```\n" + format_metrics(entry) + "\n```\n")
    return card


def run(cfg: Any) -> dict[str, Any]:
    """Train (or fetch) the teacher, score it beside the untuned bi-encoder, record, print and log it."""
    from contrastive import tracking
    from contrastive.data import prepare
    from contrastive.evaluation import Evaluator
    from contrastive.settings import load_teacher

    settings = load_teacher(cfg)  # every config check, before any work
    data = prepare(settings.data)
    teacher = load_or_train(settings.teacher, data.splits["train"])
    evaluator = Evaluator(settings.eval, settings.model, data, settings.teacher.device)
    entry = evaluate(teacher, evaluator)
    teacher.record(metrics={**teacher.info.get("metrics", {}), entry["split"]: entry})
    card = write_card(teacher, entry)
    tags = {
        "kind": "teacher",
        "teacher": teacher.digest,
        "data_fingerprint": data.fingerprint,
        "cache_hit": teacher.cache_hit,
        "git_commit": tracking.git_commit(),
    }
    with tracking.run(settings.tracking, settings.run_name or f"teacher {teacher.digest[:8]}", tags) as run_id:
        if run_id:
            from contrastive.settings import as_dict

            tracking.log_params(tracking.flatten(as_dict(settings.teacher), "teacher."))
            tracking.log_metrics(flat_metrics(entry))
            tracking.log_metrics(
                {k: v for k, v in teacher.info["training"].items() if k in ("steps", "seconds")},
                prefix="teacher_train/",
            )
            tracking.log_artifact(teacher.path / INFO_FILE)
            tracking.log_artifact(card)
    print(format_metrics(entry), flush=True)
    print(f"teacher: {teacher.path} ({'cache hit' if teacher.cache_hit else 'trained'})", flush=True)
    if settings.json:
        record = {"digest": teacher.digest, "path": str(teacher.path), "training": teacher.info.get("training")}
        write_json(entry | record, Path(settings.json).expanduser().resolve())
    return entry


@hydra_app("teacher")
def main(cfg: Any) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()

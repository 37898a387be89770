"""Section `train`: pairs/s of our training path (component sampler, length grouping, thread setting) vs a plain
SentenceTransformerTrainer script (MNRL, NO_DUPLICATES), same pairs and batch size, interleaved short runs,
decomposed (grouping alone, sampler alone, threads alone); then one epoch each of ungrouped vs grouped, scored on
a val subset with bootstrap CIs.

Our variants are built from contrastive.training's stated API (sampler_factory, apply_threads, training_args)
and contrastive.losses.build_losses, on the bench's own pairs (positives of whole linked groups).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from contrastive.bench.common import (
    EncoderShape,
    Inputs,
    Row,
    interleaved,
    mean_ci,
    note,
    padded_work,
    pair_ap_ci,
    quiet_stdout,
    resolve_threads,
    safe_ratio,
    score_model,
    torch_threads,
)
from contrastive.evaluation import delta_table  # the paired bootstrap of the grouped-vs-ungrouped quality check
from contrastive.settings import TrainSettings


class CountingCollator:
    """Wraps the Trainer's collator: records each batch's examples, padded and useful tokens and FLOPs."""

    def __init__(self, inner: Any, shape: EncoderShape) -> None:
        self.inner = inner
        self.shape = shape
        self.batches: list[dict[str, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        out = self.inner(features)
        record = {
            "rows": float(len(features)),
            "padded_tokens": 0.0,
            "useful_tokens": 0.0,
            "flops": 0.0,
            "useful_flops": 0.0,
            "collate_s": time.perf_counter() - start,
        }
        for key, mask in out.items():
            if not key.endswith("attention_mask"):
                continue
            lengths = mask.sum(dim=1).tolist()
            work = padded_work(lengths, [range(len(lengths))], self.shape, training=True)
            for name, value in work.items():
                record[name] += value
        self.batches.append(record)
        return out


def step_clock(warmup: int = 1, max_timed_s: float | None = None):
    """A TrainerCallback recording perf_counter() at the end of every optimiser step; it stops training once the
    steps after `warmup` have run `max_timed_s` seconds (a slow variant then yields fewer, still timed, steps)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            if max_timed_s and len(self.ends) > warmup and self.ends[-1] - self.ends[warmup - 1] >= max_timed_s:
                control.should_training_stop = True

    return StepClock()


def plain_trainer(model: Any, dataset: Any, batch_size: int, steps: int, seed: int, out: str):
    """The plain script: SentenceTransformerTrainer + MNRL + NO_DUPLICATES batches, library defaults otherwise."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    args = SentenceTransformerTrainingArguments(
        output_dir=out,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        seed=seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=10**6,
    )
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model)
    )


def our_settings(
    base: TrainSettings, batch_size: int, steps: int, seed: int, grouping: int, threads: int | None
) -> TrainSettings:
    """The training settings of one of our variants: MNRL only on the given pairs, this grouping and threads."""
    return replace(
        base,
        batch=replace(base.batch, size=batch_size, sampler="component", length_grouping=grouping, num_threads=threads),
        trainer=replace(
            base.trainer,
            max_steps=steps,
            seed=seed,
            eval_steps=0,
            eval_every_examples=0,
            logging_steps=10**6,
            dataloader_workers=0,
        ),
        loss=replace(base.loss, hard_negatives=False, aux_weight=0.0),
        tracking=replace(base.tracking, enabled=False),
    )


def our_trainer(
    model: Any, dataset: Any, settings: TrainSettings, lookup: dict[str, int], out: str, callbacks: Sequence[Any] = ()
):
    """Our training path on `dataset`: contrastive.training's sampler factory, threads, arguments and losses."""
    from sentence_transformers import SentenceTransformerTrainer

    from contrastive.losses import build_losses, frozen_copy
    from contrastive.training import apply_threads, sampler_factory, training_args

    factory = sampler_factory(settings, lookup)
    apply_threads(settings.batch)
    args = training_args(settings, Path(out), factory)
    args.disable_tqdm = True
    guide = frozen_copy(model) if settings.loss.gist else None  # as build_trainer: the model before training
    loss = build_losses(model, settings.loss, ["mnrl_pairs"], guide)["mnrl_pairs"]
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=list(callbacks)
    )


def timed_run(
    make: Callable[[Any, str], Any],
    base_model: Any,
    shape: EncoderShape,
    warmup: int,
    threads: int | None = None,
    max_timed_s: float | None = None,
) -> dict[str, float]:
    """Train a fresh copy of `base_model` with the Trainer `make(model, out_dir)` builds; time steps after warm-up."""
    model = copy.deepcopy(base_model)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out, torch_threads(threads):
        trainer = make(model, out)
        clock = step_clock(warmup, max_timed_s)
        trainer.add_callback(clock)
        counter = CountingCollator(trainer.data_collator, shape)
        trainer.data_collator = counter
        with quiet_stdout():
            trainer.train()
    steps = len(clock.ends)
    timed = counter.batches[warmup:steps]
    seconds = clock.ends[-1] - clock.ends[warmup - 1] if warmup >= 1 else float("nan")
    totals = {
        k: sum(b[k] for b in timed)
        for k in ("rows", "padded_tokens", "useful_tokens", "flops", "useful_flops", "collate_s")
    }
    return {
        "steps": steps,
        "timed_steps": len(timed),
        "seconds": seconds,
        **totals,
        "pairs_per_s": totals["rows"] / seconds,
        "flops_per_s": totals["flops"] / seconds,
        "useful_flops_per_s": totals["useful_flops"] / seconds,
        "padding_ratio": safe_ratio(totals["padded_tokens"], totals["useful_tokens"]),
    }


def pooled(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Throughput over all reps of a variant: total pairs / total timed seconds (and the same for FLOPs)."""
    seconds = sum(r["seconds"] for r in runs)
    return {
        "pairs_per_s": sum(r["rows"] for r in runs) / seconds,
        "flops_per_s": sum(r["flops"] for r in runs) / seconds,
        "useful_flops_per_s": sum(r["useful_flops"] for r in runs) / seconds,
        "padding_ratio": safe_ratio(sum(r["padded_tokens"] for r in runs), sum(r["useful_tokens"] for r in runs)),
        "padded_tokens_per_s": sum(r["padded_tokens"] for r in runs) / seconds,
        "collate_share": sum(r["collate_s"] for r in runs) / seconds,
        "seconds": seconds,
        "per_rep_pairs_per_s": [r["pairs_per_s"] for r in runs],
    }


def epoch_padding(batches: Iterable[Sequence[int]], column_lengths: Sequence[Sequence[int]]) -> dict[str, float]:
    """Padded and useful tokens of an epoch's batches when each text column is padded to its batch's longest."""
    columns = [np.asarray(c) for c in column_lengths]
    padded = useful = examples = 0.0
    for batch in batches:
        idx = np.asarray(list(batch), dtype=np.int64)
        examples += idx.size
        for lengths in columns:
            rows = lengths[idx]
            padded += rows.size * (int(rows.max()) if rows.size else 0)
            useful += float(rows.sum())
    return {"examples": examples, "padded_tokens": padded, "useful_tokens": useful, "ratio": safe_ratio(padded, useful)}


def sampler_padding(inp: Inputs, dataset: Any, batch_size: int, seed: int, grouping: int) -> dict[str, Any]:
    """One full epoch's padding of each sampler (the timed runs only see a few of its batches)."""
    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    from contrastive.samplers import SamplerFactory

    lengths = [inp.count_tokens(dataset[c]) for c in dataset.column_names]
    plans = {
        "plain": NoDuplicatesBatchSampler(
            dataset, batch_size=batch_size, drop_last=False, generator=torch.Generator().manual_seed(seed), seed=seed
        )
    }
    for name, windows in (("ours_ungrouped", 0), ("ours_grouped", grouping)):
        factory = SamplerFactory("component", inp.lookup, windows, inp.count_tokens)
        plans[name] = factory(dataset, batch_size=batch_size, drop_last=False, seed=seed)
    return {name: epoch_padding(list(plan), lengths) for name, plan in plans.items()}


def rep_ratios(runs: Mapping[str, Sequence[Mapping[str, float]]], a: str, b: str) -> list[float]:
    """Per rep, variant a's pairs/s over variant b's (the two ran minutes apart at most)."""
    return [ra["pairs_per_s"] / rb["pairs_per_s"] for ra, rb in zip(runs[a], runs[b])]


def section(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """Interleaved short runs of the plain Trainer and our variants, then the grouped-vs-ungrouped quality check.

    Variants: the plain script at torch's default threads (what it gets) and with our thread setting, our path
    ungrouped and length-grouped with our thread setting (`bench.train.threads` = batch.num_threads; auto is
    resolved at each run's start, as a training run resolves it). Each ratio is the median over reps of the
    per-rep ratio, so a rep in which the machine's load changed does not decide it. Rows decompose the
    speed-up: ours vs plain as each would run, grouping alone, our sampler alone, threads alone.
    """
    import torch
    from datasets import Dataset

    settings, b = inp.settings, inp.settings.bench.train
    base = settings.training()
    dataset = Dataset.from_pandas(inp.train_pairs, preserve_index=False)
    bs, steps, seed, warm = int(b.batch_size), int(b.steps), int(settings.trainer.seed), max(1, int(b.warmup_steps))
    grouping = int(settings.batch.length_grouping) or 8
    default_threads = torch.get_num_threads()
    setting = b.threads
    cap = float(b.max_timed_s) if b.max_timed_s else None

    def plain(m: Any, o: str, s: int, t: int) -> Any:
        return plain_trainer(m, dataset, bs, steps, s, o)

    def ours(windows: int) -> Callable[[Any, str, int, int], Any]:
        return lambda m, o, s, t: our_trainer(m, dataset, our_settings(base, bs, steps, s, windows, t), inp.lookup, o)

    # in each rep the compared runs sit next to each other: plain | grouped | plain_T | ungrouped. With our thread
    # setting null (torch's default, as the plain script) plain_T would be plain again: it is not run.
    same_threads = setting is None
    variants = {
        "plain": (plain, False),
        "ours_grouped": (ours(grouping), True),
        "plain_T": (plain, True),
        "ours_ungrouped": (ours(0), True),
    }
    if same_threads:
        del variants["plain_T"]
    ref = "plain" if same_threads else "plain_T"
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for rep, name in interleaved(list(variants), int(b.reps)):
        make, ours_threads = variants[name]
        t = resolve_threads(setting, "bench.train.threads") if ours_threads else default_threads
        result = timed_run(
            lambda m, o, make=make, rep=rep, t=t: make(m, o, seed + rep, t), inp.model, inp.shape, warm, t, cap
        )
        result["threads"] = t
        runs[name].append(result)
        note(
            f"train rep {rep} {name} ({t} threads): {result['pairs_per_s']:.1f} pairs/s over "
            f"{result['timed_steps']} steps, padding x{result['padding_ratio']:.2f}"
        )
    summary = {name: pooled(r) for name, r in runs.items()}
    epoch = sampler_padding(inp, dataset, bs, seed, grouping)
    for name, stats in summary.items():  # the measured token rate over a whole epoch's batches, not the few timed
        e = epoch[name.replace("_T", "")]
        stats["epoch_pairs_per_s"] = [
            r["padded_tokens"] / r["seconds"] * e["examples"] / e["padded_tokens"] for r in runs[name]
        ]
    quality = train_quality(inp, dataset, grouping, setting, record)
    pad = {name: epoch[name.replace("_T", "")]["ratio"] for name in summary}
    threads_of = {name: "/".join(str(r["threads"]) for r in rs) for name, rs in runs.items()}
    shown = {None: "default"}.get(setting, setting)  # batch.num_threads as the labels show it
    comparisons = [
        (
            "ours_grouped",
            "plain",
            f"ours (component sampler, length-grouped x{grouping}, threads {shown}: "
            f"{threads_of['ours_grouped']}) vs the plain Trainer script (NO_DUPLICATES, "
            f"{default_threads} threads)",
            True,
        ),
        (
            "ours_grouped",
            ref,
            f"grouping alone: ours length-grouped vs plain, both threads {shown} "
            f"({threads_of['ours_grouped']} vs {threads_of[ref]})",
            True,
        ),
        (
            "ours_ungrouped",
            ref,
            f"our sampler alone: ours ungrouped vs plain, both threads {shown} "
            f"({threads_of['ours_ungrouped']} vs {threads_of[ref]})",
            False,
        ),
        (
            "plain_T",
            "plain",
            f"threads alone: plain at threads {shown} ({threads_of.get('plain_T')}) vs {default_threads}",
            False,
        ),
    ]
    if same_threads:  # 1a already is "grouping alone", and there is no thread difference to isolate
        comparisons = [comparisons[0], comparisons[2]]
    ratios = {}
    rows = []
    for i, (a, bname, label, target) in enumerate(comparisons):
        per_rep = rep_ratios(runs, a, bname)
        ratio = float(np.median(per_rep))
        epoch_ratio = float(
            np.median([x / y for x, y in zip(summary[a]["epoch_pairs_per_s"], summary[bname]["epoch_pairs_per_s"])])
        )
        ratios[f"{a}/{bname}"] = {"median": ratio, "per_rep": per_rep, "epoch_weighted_median": epoch_ratio}
        quality_text = quality["summary"] if a == "ours_grouped" else "same examples, same loss and maths"
        if a == "ours_grouped" and bname == "plain":
            quality_text += (
                f"; tokenizing (in the collator) is {100 * summary[a]['collate_share']:.1f}% of our "
                "step time, so tokenizing once up front would save at most that"
            )
        rows.append(
            {
                "row": f"1{'abcd'[i]}",
                "what": f"train pairs/s, MNRL bs {bs}, {len(inp.train_pairs):,} QQP pairs: {label}",
                "a": summary[a]["pairs_per_s"],
                "b": summary[bname]["pairs_per_s"],
                "ratio": ratio,
                "target": ">= 1.5x" if target else None,
                "met": (ratio >= 1.5) if target else None,
                "quality": f"{quality_text}; per-rep ratios {', '.join(f'{x:.2f}' for x in per_rep)} (median shown); "
                f"epoch padding x{pad[a]:.2f} vs x{pad[bname]:.2f}; at the timed token rates over a "
                f"whole epoch's batches: {epoch_ratio:.2f}x",
                "peak": [
                    summary[a]["flops_per_s"],
                    " (useful ",
                    summary[a]["useful_flops_per_s"],
                    ") vs ",
                    summary[bname]["flops_per_s"],
                ],
            }
        )
    record["train"] = {
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
        "epoch_padding": epoch,
        "batch_size": bs,
        "steps_per_run": steps,
        "warmup_steps": warm,
        "pairs": len(inp.train_pairs),
        "length_grouping": grouping,
        "threads_setting": setting,
        "default_threads": default_threads,
    }
    return rows


def train_quality(
    inp: Inputs, dataset: Any, grouping: int, threads_setting: int | str | None, record: dict[str, Any]
) -> dict[str, Any]:
    """Train ungrouped and grouped for the same steps, score both on the val subset; CIs and the paired delta."""
    settings, b = inp.settings, inp.settings.bench.train
    base = settings.training()
    ev, es = settings.eval, inp.eval_set
    k = f"mrr_at_{int(ev.k)}"
    scored, seconds = {}, {}
    for name, windows in (("ungrouped", 0), ("grouped", grouping)):
        model = copy.deepcopy(inp.model)
        threads = resolve_threads(threads_setting, "bench.train.threads")  # as a training run does at its start
        run_settings = our_settings(
            base, int(b.batch_size), int(b.quality_steps), int(settings.trainer.seed), windows, threads
        )
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as out, torch_threads(threads):
            start = time.perf_counter()
            with quiet_stdout():
                our_trainer(model, dataset, run_settings, inp.lookup, out).train()
            seconds[name] = time.perf_counter() - start
            scored[name] = score_model(model, es, ev)
        note(
            f"quality {name}: {k} {scored[name].metrics[k]:.4f}, pair_ap {scored[name].metrics['pair_ap']:.4f} "
            f"({seconds[name]:.0f} s training at {threads} threads)"
        )
    n_boot, ci, seed = int(ev.n_boot), float(ev.ci), int(ev.seed)
    out: dict[str, Any] = {
        "steps": int(b.quality_steps),
        "train_seconds": seconds,
        "n_queries": len(es.queries),
        "n_pairs": len(es.pair_labels),
    }
    for name, s in scored.items():
        out[name] = {
            k: s.metrics[k],
            f"{k}_ci": mean_ci(s.per_query[k], n_boot, ci, seed),
            "pair_ap": s.metrics["pair_ap"],
            "pair_ap_ci": pair_ap_ci(s.pair_scores, es.pair_labels, n_boot, ci, seed),
        }
    delta = delta_table(scored["grouped"], scored["ungrouped"], es.pair_labels, n_boot, ci, seed)
    out["delta_grouped_minus_ungrouped"] = {m: delta[m] for m in (k, "pair_ap")}
    inside = all(
        out["ungrouped"][f"{m}_ci"][0] <= out["grouped"][m] <= out["ungrouped"][f"{m}_ci"][1] for m in (k, "pair_ap")
    )
    out["within_ci"] = inside
    g, u = out["grouped"], out["ungrouped"]
    out["summary"] = (
        f"{b.quality_steps} steps each, val subset ({len(es.queries)} q): {k} {g[k]:.4f} vs "
        f"{u[k]:.4f} [{u[f'{k}_ci'][0]:.4f}, {u[f'{k}_ci'][1]:.4f}], pair AP {g['pair_ap']:.4f} vs "
        f"{u['pair_ap']:.4f} [{u['pair_ap_ci'][0]:.4f}, {u['pair_ap_ci'][1]:.4f}]: "
        f"{'within' if inside else 'OUTSIDE'} the ungrouped CIs"
    )
    record["train_quality"] = out
    return out

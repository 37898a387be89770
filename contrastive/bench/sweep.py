"""Section `sweep`: the same small seeded sweep without pruning and with each configured pruner: wall time and best
value with its CI.

In-process Optuna over our job's pieces (training.objective_callback, the sweeper's job-side Reporter and pruner
specs in conf/hydra/sweeper/pruner/) rather than a Hydra multirun: a full `contrastive.train` trial re-encodes the
whole val split, minutes per trial on 2 cores.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import optuna
from omegaconf import OmegaConf

from contrastive import CONF_DIR
from contrastive.bench.common import (
    Inputs,
    Row,
    interleaved,
    mean_ci,
    note,
    pair_ap_ci,
    quiet_stdout,
    resolve_threads,
    run_child,
    safe_ratio,
    torch_threads,
    val_subset,
)
from contrastive.bench.settings import BenchSweep
from contrastive.bench.train import our_settings, our_trainer

# The evaluation API the objective is scored with, and the sweeper's job side (one place to repoint each).
from contrastive.evaluation import pair_metrics, pair_scores, retrieval_per_query, scoring_args
from contrastive.model import encode
from contrastive.settings import EvalSettings
from contrastive.utils import freeze_heap_once
from hydra_plugins.contrastive_sweeper.trial import Reporter, build_pruner


def pruner_specs(b: BenchSweep) -> dict[str, Any]:
    """{"none": None, <pruner>: its spec from conf/hydra/sweeper/pruner/ (median / percentile: with the bench's
    `n_startup_trials`; hyperband / successive halving: their resources in examples seen, the first rung at the
    first report and hyperband's last at the end of the trial)} for each of `b.pruners`."""
    specs: dict[str, Any] = {"none": None}
    first, last = int(b.eval_every) * int(b.batch_size), int(b.steps) * int(b.batch_size)  # examples seen
    for pruner_name in b.pruners:
        spec = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "hydra" / "sweeper" / "pruner" / f"{pruner_name}.yaml"))
        target = spec.get("_target_", "")
        if target.endswith(("MedianPruner", "PercentilePruner")):
            spec["n_startup_trials"] = int(b.n_startup_trials)
        if target.endswith(("HyperbandPruner", "SuccessiveHalvingPruner")):
            spec["min_resource"] = first
        if target.endswith("HyperbandPruner"):
            spec["max_resource"] = max(first, last)
        specs[str(pruner_name)] = spec
    return specs


def sweep_metric(
    emb: np.ndarray, es: Any, name: str, ev: EvalSettings, n_boot: int
) -> tuple[float, tuple[float, float]]:
    """The sweep objective `name` (a ranking metric or pair_ap) of embeddings `emb` on `es`, with its bootstrap CI
    (`n_boot` resamples, eval's interval and seed; 0: no CI)."""
    if name == "pair_ap":
        scores = pair_scores(emb, es)
        return pair_metrics(scores, es.pair_labels)["pair_ap"], pair_ap_ci(
            scores, es.pair_labels, n_boot, float(ev.ci), int(ev.seed)
        )
    per_query = retrieval_per_query(emb, es, **scoring_args(ev))[name]
    return float(per_query.mean()), mean_ci(per_query, n_boot, float(ev.ci), int(ev.seed))


def sweep_objective(
    inp: Inputs,
    dataset: Any,
    sets: tuple[Any, Any],
    threads_now: Callable[[], int | None],
    embeddings: dict[int, np.ndarray],
) -> Callable[[Any], float]:
    """An Optuna objective: a fresh copy of the model trained through our Trainer path at a sampled learning rate;
    train.objective_callback reports the objective on the intermediate val subset (`sets[0]`) every `eval_every`
    steps to the trial, and trial.Reporter raises TrialPruned when the study's pruner says so; a completed trial
    returns the objective on the final set (`sets[1]`), as a train job's final evaluation."""
    from contrastive.training import objective_callback

    settings, b = inp.settings, inp.settings.bench.sweep
    base, ev = settings.training(), settings.eval
    intermediate, final = sets

    def score(model: Any, es: Any = intermediate) -> float:
        emb = encode(model, es.texts, int(ev.batch_size), False)
        embeddings[-1] = emb
        return sweep_metric(emb, es, str(b.objective), ev, 0)[0]

    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", float(b.lr_low), float(b.lr_high), log=True)
        threads = threads_now()
        trial.set_user_attr("threads", threads)
        model = copy.deepcopy(inp.model)
        ours = our_settings(
            base,
            int(b.batch_size),
            int(b.steps),
            int(settings.trainer.seed),
            int(settings.batch.length_grouping),
            threads,
        )
        run_settings = replace(
            ours, trainer=replace(ours.trainer, lr=lr, eval_steps=int(b.eval_every), eval_every_examples=0)
        )
        callback = objective_callback(lambda: score(model), run_settings, Reporter(trial))
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as out, torch_threads(threads), quiet_stdout():
            our_trainer(model, dataset, run_settings, inp.lookup, out, [callback]).train()
            value = score(model, final)
        embeddings[trial.number] = embeddings.pop(-1)
        return value

    return objective


def trial_setup_child(overrides: list[str]) -> dict[str, Any]:
    """In a fresh process (a sweep's worker): a train job's set-up (contrastive.train.job_inputs: settings checked,
    data prepared, model loaded, Evaluator with its eval sets) for a first trial, then for a second one."""
    started = time.perf_counter()
    from hydra import compose, initialize_config_dir

    from contrastive.settings import load_train
    from contrastive.train import job_inputs

    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides)
    imports = time.perf_counter() - started
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        with quiet_stdout():
            _, _, evaluator = job_inputs(load_train(cfg))
        evaluator.intermediate_set()
        evaluator.eval_set()
        seconds.append(time.perf_counter() - start)
    return {"imports_s": imports, "first_s": seconds[0], "later_s": seconds[1]}


def setup_overrides(inp: Inputs) -> list[str]:
    """The train config overrides that give the bench's data (the real file, or the fixture it fell back to)."""
    data = inp.settings.data
    if "FIXTURE" in inp.source_note:
        return ["data=fixture"]
    return [f"data.path={data.path or data.default_path}", "data.source=local"]


def sweep_summary(
    study: Any,
    seconds: float,
    embeddings: Mapping[int, np.ndarray],
    es: Any,
    ev: EvalSettings,
    objective: str,
    steps: int,
    batch_size: int,
) -> dict[str, Any]:
    """Wall time, best value with its bootstrap CI, and each trial's state, value and steps trained."""
    best = study.best_trial
    states = [t.state.name for t in study.trials]
    _, best_ci = sweep_metric(embeddings[best.number], es, objective, ev, int(ev.n_boot))
    return {
        "seconds": seconds,
        "best_value": best.value,
        "best_params": best.params,
        "best_number": best.number,
        "best_ci": best_ci,
        "states": states,
        "values": [t.value for t in study.trials],
        "params": [t.params for t in study.trials],
        "steps_trained": [
            max(t.intermediate_values, default=0) // batch_size if t.state.name == "PRUNED" else steps
            for t in study.trials
        ],
    }


def section(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """The same seeded random search over the learning rate without pruning and with each configured pruner,
    trials interleaved (trial i of every sweep back to back, at the same thread count); wall time of each sweep
    and its best value (on the final set) with a CI. The process's set-up (data, model) is frozen out of the
    garbage collector first, as a train job's first set-up does (utils.freeze_heap_once).

    In-process Optuna over our job's pieces (train.objective_callback, trial.Reporter and the sweeper's pruner
    specs in conf/hydra/sweeper/pruner/) rather than Hydra multirun: a full `contrastive.train` trial
    re-encodes the whole val split, minutes per trial on 2 cores."""
    from datasets import Dataset

    settings, b = inp.settings, inp.settings.bench.sweep
    dataset = Dataset.from_pandas(inp.train_pairs, preserve_index=False)
    es = val_subset(inp.data, int(b.val_pairs), int(settings.bench.seed))
    es_final = val_subset(inp.data, int(b.final_pairs), int(settings.bench.seed))
    freeze_heap_once()
    specs = pruner_specs(b)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threads = {"now": None}  # resolved once per trial index, shared by that trial of every sweep
    studies, seconds, embeddings, objectives = {}, {}, {}, {}
    for name, spec in specs.items():
        studies[name] = optuna.create_study(
            direction="maximize",
            pruner=build_pruner(spec),
            sampler=optuna.samplers.RandomSampler(seed=int(settings.bench.seed)),
        )
        seconds[name], embeddings[name] = 0.0, {}
        objectives[name] = sweep_objective(inp, dataset, (es, es_final), lambda: threads["now"], embeddings[name])
    for trial, name in interleaved(list(studies), int(b.trials)):
        if name == "none":
            threads["now"] = resolve_threads(b.threads, "bench.sweep.threads")
        start = time.perf_counter()
        studies[name].optimize(objectives[name], n_trials=1, catch=())
        seconds[name] += time.perf_counter() - start
        last = studies[name].trials[-1]
        note(
            f"sweep {name} trial {trial}: lr {last.params['lr']:.2e} {last.state.name} {last.value or ''} "
            f"at {threads['now']} threads ({seconds[name]:.0f} s so far)"
        )
    runs = {
        name: sweep_summary(
            studies[name],
            seconds[name],
            embeddings[name],
            es_final,
            settings.eval,
            str(b.objective),
            b.steps,
            b.batch_size,
        )
        for name in studies
    }
    record["sweep"] = {
        **runs,
        "eval_questions": len(es.texts),
        "queries": len(es.queries),
        "final_questions": len(es_final.texts),
        "final_pairs": len(es_final.pair_labels),
        "threads_setting": b.threads,
        "pruners": specs,
        "how": "in-process optuna, trials interleaved, over contrastive.train.objective_callback + trial.Reporter",
    }
    setup = run_child("contrastive.bench.sweep", f"trial_setup_child({setup_overrides(inp)!r})", 600.0)
    record["sweep"]["trial_setup"] = setup
    u, k = runs["none"], str(b.objective)
    rows = []
    for i, name in enumerate(n for n in studies if n != "none"):
        p = runs[name]
        ratio = safe_ratio(p["seconds"], u["seconds"])
        same = u["best_ci"][0] <= p["best_value"] <= u["best_ci"][1]
        rows.append(
            {
                "row": f"6{'abcd'[i]}",
                "what": f"sweep wall time: {b.trials} seeded random trials (lr log-uniform), "
                f"{b.steps} steps, objective every {b.eval_every} on {len(es.texts)} val questions, a completed "
                f"trial's on {len(es_final.texts)}: {name} pruner vs none",
                "a": f"{p['seconds']:.0f} s",
                "b": f"{u['seconds']:.0f} s",
                "ratio": ratio,
                "target": "<= 0.5x at the same best",
                "met": bool(ratio is not None and ratio <= 0.5 and same),
                "quality": f"best {k} {p['best_value']:.4f} vs {u['best_value']:.4f} "
                f"[{u['best_ci'][0]:.4f}, {u['best_ci'][1]:.4f}] on {len(es_final.texts)} val questions, "
                f"{len(es_final.pair_labels)} pairs: {'same' if same else 'NOT the same'} within the CI; "
                f"pruned {p['states'].count('PRUNED')}/{len(p['states'])} trials, "
                f"{sum(p['steps_trained'])} vs {sum(u['steps_trained'])} steps trained",
            }
        )
    if "error" in setup:
        rows.append({"row": f"6{'abcd'[len(rows)]}", "what": "a sweep trial's set-up", "a": setup["error"]})
        return rows
    rows.append(
        {
            "row": f"6{'abcd'[len(rows)]}",
            "what": "a sweep trial's set-up in one worker process (contrastive.train.job_inputs: settings, data "
            "prepared, model loaded, eval sets): a later trial vs the first",
            "a": f"{setup['later_s']:.2f} s",
            "b": f"{setup['first_s']:.2f} s",
            "ratio": safe_ratio(setup["later_s"], setup["first_s"]),
            "quality": f"plus {setup['imports_s']:.1f} s of imports and config composition, once per process; "
            "the prepared data is kept per process, the model's files stay in the OS cache",
        }
    )
    return rows

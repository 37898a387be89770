"""The Hydra entry point: `python -m contrastive.train [overrides]` runs one training job.

settings -> data -> model -> training (contrastive.training) -> evaluate beside the baseline -> viz -> MLflow -> save.
With weight interpolation asked for (`eval.interpolate`, `model.interpolate`; contrastive/interpolate.py) a CPU copy
of the untuned weights is kept from before training: the listed mixes are scored after training, and with
`model.interpolate` the model becomes that mix (its intermediate objectives score the mix too) before the main
evaluation, so the mix is what is evaluated, saved, logged and served.
Returns the objective (`eval.objective`; a list of values when it is a list) for a sweeper.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from contrastive.cli import hydra_app, user_errors
from contrastive.data import format_summary, prepare
from contrastive.errors import ConfigError
from contrastive.health import flag_names, run_flags
from contrastive.pairs import require_positives
from contrastive.settings import TrainSettings, load_train
from contrastive.utils import freeze_heap_once, remove_stale_staging, write_json
from hydra_plugins.contrastive_sweeper.trial import hide_passwords, hide_passwords_in_files

# torch, sentence-transformers and mlflow are imported inside the functions that need them, so that
# `--help`, `--cfg job` and config errors answer in a second instead of after ~8 s of imports.

log = logging.getLogger(__name__)


def output_dir(settings: TrainSettings) -> Path:
    """This job's directory: `paths.output_dir` when set, else Hydra's job dir."""
    if settings.paths.output_dir:
        return Path(settings.paths.output_dir)
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ConfigError("paths.output_dir=None: outside a Hydra run, name the job's directory")


NAME_SKIPS = ("paths.", "tracking.", "hydra.", "run_name", "optuna.", "sweeps")  # bookkeeping, not what changed
EXAMPLES = ["How do I learn Python?", "What is the best way to learn Python?"]  # the logged model's input example


def _short(value: str) -> str:
    """A number in 3 significant digits (sampled learning rates), anything else as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "e" not in value.lower() else f"{number:.3g}"


def run_name(overrides: list[str], fallback: str, limit: int = 80) -> str:
    """A run name that says what changed: the job's overrides (bookkeeping ones left out, numbers shortened),
    after `trial N:` in a sweep, else `fallback` (the output dir's name)."""
    kept, trial = [], ""
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+~")
        if key == "optuna.trial_number":
            trial = f"trial {value}: "
        elif sep and not key.startswith(NAME_SKIPS):
            kept.append(f"{key}={_short(value)}")
    name = trial + ",".join(kept)
    return (name if len(name) <= limit else name[: limit - 1] + "…") or fallback


def job_overrides() -> list[str]:
    """This job's command-line (and sweep-chosen) overrides, [] outside a Hydra run."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def eval_protocol(ev) -> str:
    """What makes two runs' metrics comparable: the split, cut-offs and distractors of the evaluation."""
    capped = f",max_pairs={ev.max_pairs}" if ev.max_pairs else ""  # uncapped runs keep their old protocol string
    return f"split={ev.split},k={ev.k},map_k={ev.map_k},distractors={ev.distractors},max={ev.max_distractors}{capped}"


def interpolation_extra(entries: dict, alpha: float | None) -> dict:
    """metrics.json's interpolation keys, only when asked for: `interpolate` ({alpha: {finetuned, delta}}) and
    `model_interpolate` (the alpha the run's model is)."""
    extra = {"interpolate": entries} if entries else {}
    return extra | ({"model_interpolate": alpha} if alpha is not None else {})


def clear_stale_staging(out: Path) -> None:
    """Remove half-saved models / promotions that killed processes left beside this run (its sibling runs or
    trials, and the sweep's `best/`), e.g. `.model.tmp-<pid>-<host>` of a trial killed while saving."""
    parents = [out.parent, *(p for p in out.parent.iterdir() if p.is_dir())]
    for path in remove_stale_staging(parents):
        log.warning("removed %s: left by a process that died while writing it", path)


def trial_reporter(cfg: DictConfig):
    """This job's handle on its Optuna trial (report, prune, record results) when it is one, else None."""
    try:
        from hydra_plugins.contrastive_sweeper.trial import reporter_from_cfg
    except ImportError:
        return None
    return reporter_from_cfg(cfg)


def check_processes(settings: TrainSettings, cfg: DictConfig) -> None:
    """Under a multi-process launcher (torchrun): not inside a sweep trial, and both losses in every step."""
    from contrastive.distributed import world_size
    from contrastive.training import is_joint

    n = world_size()
    if n <= 1:
        return
    if (cfg.get("optuna") or {}).get("trial_number") is not None:
        raise ConfigError(
            f"WORLD_SIZE={n}: a sweep trial runs in one process; start one sweep worker per GPU or machine instead "
            "(README, Scaling past one machine)"
        )
    if settings.loss.aux_weight > 0 and not is_joint(settings):
        raise ConfigError(
            f"loss.combine={settings.loss.combine}: under {n} processes every rank must train the same loss at each "
            "step; use loss.combine=joint (both losses in every step)"
        )


def job_inputs(settings: TrainSettings, evaluator: bool = True) -> tuple[Any, Any, Any]:
    """A job's set-up: the prepared data (kept per process: a sweep's next trial in this worker reuses it), its
    summary printed, the model loaded (sentence-transformers keeps its imports), and the Evaluator (None when
    `evaluator` is false: ranks > 0 of a multi-process job)."""
    from contrastive import distributed
    from contrastive.evaluation import Evaluator
    from contrastive.model import load_model

    with distributed.main_first():  # rank 0 writes any data cache first; the other ranks read it
        data = prepare(settings.data)
    if distributed.is_main():
        print(format_summary(data.summary), flush=True)
    require_positives(data.splits["train"])  # before the model loads
    freeze_heap_once()  # imports and the kept data: the Trainer's gc.collect() at each train start skips them
    model = load_model(settings.model.name_or_path, settings.model.max_seq_length, settings.trainer.device)
    ev = Evaluator(settings.eval, settings.model, data, settings.trainer.device) if evaluator else None
    return data, model, ev


def run_replica(settings: TrainSettings, out: Path) -> None:
    """A rank > 0 of a multi-process job: the same data and model, its share of every step's batches; rank 0
    evaluates, logs, reports and saves, so this rank writes nothing."""
    import dataclasses

    from contrastive.training import fit

    data, model, _ = job_inputs(settings, evaluator=False)
    quiet = dataclasses.replace(settings, tracking=dataclasses.replace(settings.tracking, enabled=False))
    fit(model, quiet, data, out)


def run(cfg: DictConfig) -> float | list[float]:
    """One job end to end; returns the objective (None on ranks > 0 of a multi-process job)."""
    settings = load_train(cfg)  # every config check, before any work
    from contrastive import distributed
    from contrastive.model import use_cache_dir

    use_cache_dir(settings.paths.cache_dir)  # a models:/ name_or_path downloads there, not into the project
    if settings.tracking.enabled:  # and resolves in this run's store (unless $MLFLOW_TRACKING_URI names one)
        os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking.tracking_uri)

    distributed.init(settings.trainer.device)
    check_processes(settings, cfg)
    if not distributed.is_main():
        run_replica(settings, output_dir(settings))
        return None
    from contrastive import interpolate, tracking, viz
    from contrastive.model import fingerprint
    from contrastive.model_card import fill_model_card
    from contrastive.training import fit, save_checkpoint

    if settings.tracking.enabled:  # an unreachable server: one line now, not minutes of retries after the model loads
        tracking.require_server(settings.tracking.tracking_uri, settings.tracking.probe_timeout_s)

    started = time.time()
    out = output_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(out)
    hide_passwords_in_files(out / ".hydra")  # Hydra's copies of the command line (a storage or tracking URL)
    (out / "config.yaml").write_text(hide_passwords(OmegaConf.to_yaml(cfg, resolve=True)))  # also uploaded
    data, model, evaluator = job_inputs(settings)
    tags = {
        tracking.GIT_COMMIT_TAG: tracking.git_commit(),  # MLflow's own tag (it sets none for `python -m`)
        "data_fingerprint": data.fingerprint,
        "model_fingerprint": fingerprint(settings.model.name_or_path),
        "output_dir": str(out),
        "eval_protocol": eval_protocol(settings.eval),
    }
    reporter = trial_reporter(cfg)
    name = settings.run_name or run_name(job_overrides(), out.name)
    with tracking.run(settings.tracking, name, tags) as run_id:
        if reporter is not None:
            reporter.record(mlflow_run_id=run_id)
        if run_id:
            tracking.log_params(tracking.config_params(cfg) | {"world_size": distributed.world_size()})
            tracking.log_data(data.summary, data.fingerprint)
            tracking.log_dict(data.summary, "data_summary.json")
            tracking.log_artifact(out / "config.yaml")
        evaluator.warm_baseline(model)  # the model is still untuned: no second load later
        alpha, alphas = settings.model.interpolate, list(settings.eval.interpolate)
        untuned = interpolate.untuned_state(model) if alphas or alpha is not None else None
        score = functools.partial(evaluator.objective, model)
        if alpha is not None:  # the run's model is the mix: its intermediate objectives (pruning) score the mix
            score = functools.partial(interpolate.objective_at, evaluator, model, untuned, alpha)
        trained = fit(model, settings, data, out, score, reporter)
        mixes = interpolate.score_interpolations(evaluator, model, untuned, alphas) if alphas else {}
        if alpha is not None:
            interpolate.apply_interpolation(model, untuned, alpha)
        result = evaluator.run(model)
        wall_time_s = round(time.time() - started, 1)
        flags = run_flags(trained["history"], result, settings.eval.objective_names, settings.eval.collapse_drop)
        doc = result.to_json(
            training={k: trained[k] for k in ("sizes", "sampler", "steps", "intermediate")},
            wall_time_s=wall_time_s,
            mlflow_run_id=run_id,
            **interpolation_extra(mixes, alpha),
            **({"flags": flags} if flags else {}),
        )
        write_json(doc, out / "metrics.json")
        if reporter is not None:  # what the sweep report reads: metrics, deltas, pair threshold
            from contrastive.sweep_report import result_attrs

            reporter.record(**result_attrs(doc))
        umap = settings.eval.umap
        figures = viz.write_figures(out / "figures", result, data, umap) if umap.enabled else []
        fill_model_card(  # its README.md
            model,
            settings.model,
            settings.loss,
            data,
            result,
            trained["datasets"],
            trained["losses"],
            str(out / "model"),
        )
        checkpoint = save_checkpoint(model, out) if settings.save_model else None
        if run_id:
            tracking.log_loss_history(trained["history"])
            tracking.log_metrics(trained["sampler"], prefix="train/")
            tracking.log_metrics(tracking.eval_metrics(result.finetuned, result.baseline, result.delta))
            tracking.log_metrics(tracking.interpolation_metrics(doc.get("interpolate") or {}))
            tracking.log_params(tracking.eval_sizes(result.finetuned))
            value = result.objective["value"]
            tracking.log_metrics({"objective": value} if isinstance(value, float) else {})
            tracking.log_metrics({"wall_time_s": wall_time_s}, prefix="train/")
            tracking.set_tags({"health": flag_names(flags)})
            tracking.log_artifact(out / "metrics.json")
            for fig in figures:
                tracking.log_artifact(fig, "figures")
            if checkpoint and settings.tracking.log_model:
                tracking.log_model(model, EXAMPLES)
    print(result.table(), flush=True)
    for flag in flags:
        print(f"WARNING: {flag}", flush=True)
        log.warning("run flagged %s", flag)
    if mixes:
        print(interpolate.format_table(mixes, interpolate.table_metrics(settings.eval), alpha), flush=True)
    print(f"output dir: {out}\nmlflow run: {run_id}  ({settings.tracking.tracking_uri})", flush=True)
    return result.objective["value"]


@hydra_app("train")
def main(cfg: DictConfig) -> float | list[float]:
    with user_errors():
        return run(cfg)


if __name__ == "__main__":
    main()

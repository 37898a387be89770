"""The Hydra entry point: `python -m contrastive.train [overrides]` runs one training job.

data -> pairs -> model -> SentenceTransformerTrainer -> evaluate beside the baseline -> viz -> MLflow -> save.
Returns the objective (`eval.objective`; a list of values when it is a list) for a sweeper.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from contrastive import CONF_DIR
from contrastive.cli import user_errors
from contrastive.config import check_train_config
from contrastive.data import PreparedData, format_summary, prepare
from contrastive.pairs import ComponentBatchSampler, build_examples, cap_pairs, component_lookup
from contrastive.utils import write_dir_atomic, write_json

# torch, sentence-transformers and mlflow are imported inside the functions that need them, so that
# `--help`, `--cfg job` and config errors answer in a second instead of after ~8 s of imports.

log = logging.getLogger(__name__)


def output_dir(cfg: DictConfig) -> Path:
    """This job's directory: Hydra's output dir, or `paths.output_dir` outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def training_datasets(data: PreparedData, cfg: DictConfig) -> tuple[dict[str, Any], dict[str, int]]:
    """The train split, capped by `data.max_pairs`, as named datasets for the Trainer."""
    from datasets import Dataset

    train = cap_pairs(data.splits["train"], cfg.data.max_pairs, cfg.data.split.seed)
    frames, sizes = build_examples(
        train,
        hard_negatives=cfg.loss.hard_negatives,
        with_aux=cfg.loss.aux_weight > 0,
        both_orders=cfg.data.both_orders,
        seed=cfg.trainer.seed,
        aux_share=float(cfg.loss.aux_share),
    )
    sizes = {"train_pairs_used": len(train), **sizes}
    return {name: Dataset.from_pandas(df, preserve_index=False) for name, df in frames.items()}, sizes


class SamplerFactory:
    """Builds the configured batch sampler for each dataset and keeps them, to report what they deferred.

    With `length_grouping` > 1 (component sampler only) each example's length is the summed token count of its
    texts (`count_tokens`), and batches are cut from length-sorted windows of that many batches.
    """

    def __init__(
        self,
        kind: str,
        lookup: dict[str, int],
        length_grouping: int = 0,
        count_tokens: Callable[[list[str]], list[int]] | None = None,
    ) -> None:
        self.kind = kind
        self.lookup = lookup
        self.samplers: list[Any] = []
        self.group_by_length(length_grouping, count_tokens)

    def group_by_length(self, windows: int, count_tokens: Callable[[list[str]], list[int]] | None) -> None:
        """Turn length grouping on (windows > 1, with a token counter) or off."""
        from contrastive.errors import ConfigError

        if not isinstance(windows, int) or isinstance(windows, bool) or windows < 0:
            raise ConfigError(f"batch.length_grouping: {windows!r} must be an integer >= 0 (0: off)")
        if windows > 1 and self.kind != "component":
            raise ConfigError(
                f"batch.length_grouping={windows}: needs batch.sampler=component (got {self.kind!r}); "
                "set 0 for the other samplers"
            )
        self.length_grouping = windows if count_tokens is not None else 0
        self.count_tokens = count_tokens

    @staticmethod
    def token_counter(name_or_path: str, max_seq_length: int | None) -> Callable[[list[str]], list[int]]:
        """texts -> token counts by the model's tokenizer (special tokens included, truncated as the model is)."""
        from transformers import AutoTokenizer

        from contrastive.model import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
        limit = int(max_seq_length) if max_seq_length else None

        def count(texts: list[str]) -> list[int]:
            ids = tokenizer([str(t) for t in texts], truncation=limit is not None, max_length=limit)["input_ids"]
            return [len(row) for row in ids]

        return count

    def lengths(self, dataset: Any, label_columns: list[str] | None = None) -> list[int]:
        """Per example, the summed token count of its text columns."""
        labels = set(label_columns or ["label", "score"])
        columns = [c for c in dataset.column_names if c not in labels]
        totals = [0] * len(dataset)
        for column in columns:
            totals = [a + b for a, b in zip(totals, self.count_tokens(dataset[column]))]
        return totals

    def __call__(self, dataset: Any, **kwargs: Any):
        from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler

        if self.kind == "component":
            grouped = self.length_grouping > 1
            lengths = self.lengths(dataset, kwargs.get("valid_label_columns")) if grouped else None
            sampler = ComponentBatchSampler(
                dataset, lookup=self.lookup, lengths=lengths, mega_batches=self.length_grouping, **kwargs
            )
        elif self.kind == "no_duplicates":
            sampler = NoDuplicatesBatchSampler(dataset, **kwargs)
        else:
            sampler = DefaultBatchSampler(dataset, **kwargs)
        self.samplers.append(sampler)
        return sampler

    def report(self) -> dict[str, int]:
        """Examples deferred to a later batch and dropped, summed over our component samplers."""
        stats = [s.stats for s in self.samplers if isinstance(s, ComponentBatchSampler) and not s.plain]
        return (
            {
                "sampler_deferred": sum(s["deferred"] for s in stats),
                "sampler_dropped": sum(s["dropped"] for s in stats),
            }
            if stats
            else {}
        )


def training_args(cfg: DictConfig, out: Path, sampler: Callable):
    """SentenceTransformerTrainingArguments from the trainer / batch / loss groups; no Trainer-side reporting.

    Also applies the batch group's speed settings: length grouping on our sampler factory (`batch.length_grouping`)
    and torch's intra-op threads (`batch.num_threads`: null, auto or N; see model.cpu_threads).
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers

    from contrastive.model import cpu_threads

    batch = cfg.batch
    windows = batch.get("length_grouping") or 0
    if isinstance(sampler, SamplerFactory) and windows and sampler.kind == "component":
        sampler.group_by_length(windows, SamplerFactory.token_counter(cfg.model.name_or_path, cfg.model.max_seq_length))
    threads = cpu_threads(batch.get("num_threads"), field="batch.num_threads")
    if threads:
        torch.set_num_threads(threads)
    tr = cfg.trainer
    device = tr.device or ("cuda" if torch.cuda.is_available() else "cpu")
    interleave = {
        "proportional": MultiDatasetBatchSamplers.PROPORTIONAL,
        "round_robin": MultiDatasetBatchSamplers.ROUND_ROBIN,
    }[cfg.loss.interleave]
    return SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=float(tr.epochs),
        max_steps=int(tr.max_steps),
        per_device_train_batch_size=int(cfg.batch.size),
        learning_rate=float(tr.lr),
        warmup_steps=float(tr.warmup_ratio),
        weight_decay=float(tr.weight_decay),
        max_grad_norm=float(tr.max_grad_norm),
        seed=int(tr.seed),
        data_seed=int(tr.seed),
        logging_steps=int(tr.logging_steps),
        logging_first_step=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        dataloader_num_workers=int(tr.dataloader_workers),
        batch_sampler=sampler,
        multi_dataset_batch_sampler=interleave,
        disable_tqdm=False,
    )


def eval_due(step: int, batch_size: int, every_steps: int, every_examples: int) -> bool:
    """Whether an intermediate evaluation falls on this optimiser step (by steps, or by examples seen)."""
    if every_steps and step % every_steps == 0:
        return True
    if every_examples:
        return (step * batch_size) // every_examples > ((step - 1) * batch_size) // every_examples
    return False


def objective_callback(score: Callable[[], float], cfg: DictConfig, reporter: Any):
    """A TrainerCallback that scores the objective when an evaluation is due, logs it and reports it to the
    sweeper. The pruning step is the number of training examples seen, so trials with different batch
    sizes are compared at the same amount of training."""
    from transformers import TrainerCallback

    from contrastive import tracking

    every_steps, every_examples = int(cfg.trainer.eval_steps), int(cfg.trainer.eval_every_examples)
    batch_size, log_to_mlflow = int(cfg.batch.size), bool(cfg.tracking.enabled)

    class ObjectiveCallback(TrainerCallback):
        history: list[tuple[int, float]] = []

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step >= state.max_steps or not eval_due(step, batch_size, every_steps, every_examples):
                return
            value = score()
            seen = step * batch_size
            self.history.append((seen, value))
            if log_to_mlflow:
                tracking.log_metrics({"objective": value, "examples_seen": seen}, step=step, prefix="intermediate/")
            log.info("step %d (%d examples): objective %.4f", step, seen, value)
            if reporter is not None:
                reporter.report(value, seen)  # raises optuna.TrialPruned when told

    callback = ObjectiveCallback()
    callback.history = []
    return callback


def save_checkpoint(model, out: Path) -> Path:
    """Save to a temporary directory, then rename: a crash never leaves a half model under `model/`."""
    return write_dir_atomic(out / "model", lambda tmp: model.save(str(tmp)))


def trial_reporter(cfg: DictConfig):
    """The sweeper's pruning reporter when this job is an Optuna trial, else None."""
    try:
        from contrastive.pruning import reporter_from_cfg
    except ImportError:
        return None
    return reporter_from_cfg(cfg)


def fit(model, cfg: DictConfig, data: PreparedData, out: Path, objective: Callable[[], float]) -> dict[str, Any]:
    """Train the model in place, scoring `objective` when an intermediate evaluation is due; returns the loss
    history, sizes and sampler report."""
    from sentence_transformers import SentenceTransformerTrainer

    from contrastive import tracking
    from contrastive.losses import build_losses

    datasets, sizes = training_datasets(data, cfg)
    if cfg.tracking.enabled:
        tracking.log_metrics(sizes, prefix="data/")
    print("training examples: " + ", ".join(f"{k}={v:,}" for k, v in sizes.items()), flush=True)
    sampler = SamplerFactory(cfg.batch.sampler, component_lookup([data.splits["train"]]))
    callback = objective_callback(objective, cfg, trial_reporter(cfg))
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args(cfg, out, sampler),
        train_dataset=datasets if len(datasets) > 1 else next(iter(datasets.values())),
        loss=build_losses(model, cfg.loss, datasets)
        if len(datasets) > 1
        else next(iter(build_losses(model, cfg.loss, datasets).values())),
        callbacks=[tracking.MlflowLossCallback(), callback] if cfg.tracking.enabled else [callback],
    )
    trainer.train()
    history = [e for e in trainer.state.log_history if "loss" in e]
    return {
        "history": history,
        "sizes": sizes,
        "sampler": sampler.report(),
        "steps": trainer.state.global_step,
        "intermediate": callback.history,
    }


def run(cfg: DictConfig) -> float | list[float]:
    """One job end to end; returns the objective."""
    check_train_config(cfg)
    from contrastive import tracking, viz
    from contrastive.evaluation import Evaluator, check_eval_config
    from contrastive.model import fingerprint, load_model

    check_eval_config(cfg.eval)

    started = time.time()
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    data = prepare(cfg.data)
    print(format_summary(data.summary), flush=True)
    model = load_model(cfg.model.name_or_path, cfg.model.max_seq_length, cfg.trainer.device)
    evaluator = Evaluator(cfg.eval, cfg.model, data, cfg.trainer.device)
    tags = {
        "git_commit": tracking.git_commit(),
        "data_fingerprint": data.fingerprint,
        "model_fingerprint": fingerprint(cfg.model.name_or_path),
        "output_dir": str(out),
    }
    with tracking.run(cfg, cfg.run_name or out.name, tags) as run_id:
        if run_id:
            tracking.log_params(tracking.config_params(cfg))
            tracking.log_metrics({k: v for k, v in data.summary.items() if k != "source"}, prefix="data/")
            tracking.log_dict(data.summary, "data_summary.json")
            tracking.log_artifact(out / "config.yaml")
        evaluator.warm_baseline(model)  # the model is still untuned: no second load later
        trained = fit(model, cfg, data, out, functools.partial(evaluator.objective, model))
        result = evaluator.run(model)
        wall_time_s = round(time.time() - started, 1)
        doc = result.to_json(
            training={k: trained[k] for k in ("sizes", "sampler", "steps", "intermediate")},
            wall_time_s=wall_time_s,
            mlflow_run_id=run_id,
        )
        write_json(doc, out / "metrics.json")
        figures = viz.write_figures(out / "figures", result, data, cfg.eval.umap) if cfg.eval.umap.enabled else []
        checkpoint = save_checkpoint(model, out) if cfg.save_model else None
        if run_id:
            tracking.log_loss_curve(trained["history"])
            tracking.log_metrics(trained["sampler"], prefix="train/")
            tracking.log_metrics({"finetuned": result.finetuned, "baseline": result.baseline, "delta": result.delta})
            value = result.objective["value"]
            tracking.log_metrics({"objective": value} if isinstance(value, float) else {})
            tracking.log_metrics({"wall_time_s": wall_time_s})
            tracking.log_artifact(out / "metrics.json")
            for fig in figures:
                tracking.log_artifact(fig, "figures")
            if checkpoint and cfg.tracking.log_model:
                tracking.log_model_dir(checkpoint)
    print(result.table(), flush=True)
    print(f"output dir: {out}\nmlflow run: {run_id}  ({cfg.tracking.tracking_uri})", flush=True)
    return result.objective["value"]


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | list[float]:
    with user_errors():
        return run(cfg)


if __name__ == "__main__":
    main()

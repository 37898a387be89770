"""Training, as a small stated API: the datasets, the sampler factory, the Trainer's arguments, the objective
callback, `build_trainer` / `fit`, and saving the checkpoint. The train entry point and the bench use it.

Only this module touches the sentence-transformers Trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from contrastive import examples, mining, silver
from contrastive.data import PreparedData
from contrastive.errors import ConfigError
from contrastive.samplers import SamplerFactory
from contrastive.settings import BatchSettings, TrainSettings
from contrastive.utils import write_dir_atomic, write_text_atomic

SAMPLE_FILES = {"mining": mining.SAMPLE_FILE, "silver": silver.SAMPLE_FILE}  # artifact dir -> the run's file

log = logging.getLogger(__name__)


def training_datasets(
    data: PreparedData, settings: TrainSettings, model: Any = None, out: Path | None = None
) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """The run's training examples (contrastive.examples: one stage) as named datasets for the Trainer, their
    counts, and the question -> component lookup the batch sampler keeps apart.

    `model`, still untuned, encodes for mining / silver candidates on a cache miss (None: the model group's,
    loaded then); `out`, when given, gets the stage's seeded samples (mining_sample.csv, silver_sample.csv)."""
    from datasets import Dataset

    from contrastive.distributed import is_main

    built = examples.build(data, settings, model)
    if out is not None and is_main():
        for name, frame in built.samples.items():
            write_text_atomic(Path(out) / SAMPLE_FILES[name], frame.to_csv(index=False))
    largest = max((len(df) for name, df in built.frames.items() if name.startswith("mnrl")), default=0)
    size = settings.batch.size
    if size > largest:
        raise ConfigError(
            f"batch.size={size}: larger than the {largest:,} examples of the largest MNRL dataset (a batch would be "
            "cut short or dropped); lower it, or raise data.max_pairs"
        )
    datasets = {name: Dataset.from_pandas(df, preserve_index=False) for name, df in built.frames.items()}
    return datasets, built.sizes, built.lookup


def is_joint(settings: TrainSettings) -> bool:
    """Whether every step sums MNRL and the weighted auxiliary loss (`loss.combine=joint` with a weight > 0)."""
    return settings.loss.combine == "joint" and settings.loss.aux_weight > 0


def training_args(settings: TrainSettings, out: Path, sampler: Callable):
    """SentenceTransformerTrainingArguments from the trainer / batch / loss groups; no Trainer-side reporting."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers

    tr = settings.trainer
    device = tr.device or ("cuda" if torch.cuda.is_available() else "cpu")
    interleave = {
        "proportional": MultiDatasetBatchSamplers.PROPORTIONAL,
        "round_robin": MultiDatasetBatchSamplers.ROUND_ROBIN,
    }[settings.loss.interleave]
    return SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=float(tr.epochs),
        max_steps=int(tr.max_steps),
        per_device_train_batch_size=int(settings.batch.size),
        learning_rate=float(tr.lr),
        warmup_steps=float(tr.warmup_ratio),
        weight_decay=float(tr.weight_decay),
        max_grad_norm=float(tr.max_grad_norm),
        seed=int(tr.seed),
        data_seed=int(tr.seed),
        logging_steps=int(tr.logging_steps),
        logging_first_step=True,
        save_strategy="steps" if tr.save_every else "no",  # resumable checkpoints (trainer.resume)
        save_steps=int(tr.save_every) or 500,
        save_total_limit=int(tr.save_keep),
        eval_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        dataloader_num_workers=int(tr.dataloader_workers),
        batch_sampler=sampler,
        multi_dataset_batch_sampler=interleave,
        disable_tqdm=False,
    )


def sampler_factory(settings: TrainSettings, lookup: dict[str, int]) -> SamplerFactory:
    """The configured batch sampler factory over `lookup` (question key -> duplicate component), length-grouped
    by the model's tokenizer when `batch.length_grouping` > 1 (component sampler only)."""
    batch = settings.batch
    factory = SamplerFactory(batch.sampler, lookup)
    if batch.length_grouping and batch.sampler == "component":
        counter = SamplerFactory.token_counter(settings.model.name_or_path, settings.model.max_seq_length)
        factory.group_by_length(batch.length_grouping, counter)
    return factory


def apply_threads(batch: BatchSettings) -> None:
    """torch's intra-op threads from `batch.num_threads` (null: torch's default; auto or N: see model.cpu_threads)."""
    import torch

    from contrastive.model import cpu_threads

    threads = cpu_threads(batch.num_threads, field="batch.num_threads")
    if threads:
        torch.set_num_threads(threads)


def fraction_steps(fractions: Sequence[float], steps_per_epoch: float) -> set[int]:
    """The optimiser steps at which the given fractions of an epoch are done (at least step 1)."""
    return {max(1, round(float(f) * steps_per_epoch)) for f in fractions}


def eval_due(step: int, batch_size: int, every_steps: int, every_examples: int) -> bool:
    """Whether an intermediate evaluation falls on this optimiser step (by steps, or by examples seen)."""
    if every_steps and step % every_steps == 0:
        return True
    if every_examples:
        return (step * batch_size) // every_examples > ((step - 1) * batch_size) // every_examples
    return False


def objective_callback(
    score: Callable[[], float], settings: TrainSettings, reporter: Any, log_to_mlflow: bool | None = None
):
    """A TrainerCallback that scores the objective when an evaluation is due, logs it and reports it to the
    sweeper. The pruning step is the number of training examples seen (by every process together), so trials
    with different batch sizes are compared at the same amount of training."""
    from transformers import TrainerCallback

    from contrastive import tracking
    from contrastive.distributed import is_main, world_size

    every_steps, every_examples = int(settings.trainer.eval_steps), int(settings.trainer.eval_every_examples)
    fractions = list(settings.trainer.eval_at_fractions)
    batch_size = int(settings.batch.size) * world_size()  # examples per optimiser step, every process together
    main = is_main()
    log_to_mlflow = bool(settings.tracking.enabled) if log_to_mlflow is None else log_to_mlflow

    class ObjectiveCallback(TrainerCallback):
        history: list[tuple[int, float]] = []

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            at_fraction = step in fraction_steps(fractions, state.max_steps / max(1, state.num_train_epochs))
            due = at_fraction or eval_due(step, batch_size, every_steps, every_examples)
            if not main or step >= state.max_steps or not due:
                return  # rank 0 alone evaluates (the others wait for it at the next step's gradient exchange)
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


def stop_callback():
    """A TrainerCallback that raises a pending SIGTERM / SIGINT at every step (contrastive.stop), in case the signal
    handler's own exception was swallowed (e.g. raised inside a garbage-collection callback)."""
    from transformers import TrainerCallback

    from contrastive import stop

    class StopCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            stop.check()

        def on_step_end(self, args, state, control, **kwargs):
            stop.check()

    return StopCallback()


def checkpoint_callback():
    """A TrainerCallback that skips the Trainer's save at the last step: the run saves its model itself, then drops
    the resumable checkpoints (`trainer.save_every` ones stay while training runs)."""
    from transformers import TrainerCallback

    class LastStepNoSave(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False

    return LastStepNoSave()


def newest_checkpoint(folder: Path) -> str | None:
    """The newest complete `checkpoint-N` under `folder` (its trainer_state.json, written last, is there): a
    process killed while saving leaves a partial one, which is skipped."""
    steps = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        tail = path.name.removeprefix("checkpoint-")
        if tail.isdigit() and (path / "trainer_state.json").is_file():
            steps.append((int(tail), path))
    return str(max(steps)[1]) if steps else None


def run_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint a run dir holds (in its trainer/, where `training_args` saves them)."""
    return newest_checkpoint(Path(out) / "trainer")


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimiser step a `checkpoint-N` directory was saved at (N)."""
    return int(Path(checkpoint).name.removeprefix("checkpoint-"))


def resume_checkpoint(resume: str | None, out: Path) -> str | None:
    """The Trainer checkpoint `trainer.resume` names: None (start fresh), `auto` (this run dir's newest, None when
    it has none), or a directory: a checkpoint-N itself, a run dir (its trainer/) or a trainer/ dir (its newest)."""
    if resume is None:
        return None
    if resume == "auto":
        found = run_checkpoint(out)
        log.info("trainer.resume=auto: %s", f"resuming from {found}" if found else "no checkpoint, starting fresh")
        return found
    path = Path(resume).expanduser()
    if (path / "trainer_state.json").is_file():
        return str(path)
    found = run_checkpoint(path) or newest_checkpoint(path)
    if not found:
        raise ConfigError(f"trainer.resume={resume!r}: no complete checkpoint-N there (nor under its trainer/)")
    return found


def drop_checkpoints(out: Path) -> None:
    """The run completed: its resumable checkpoints (trainer/) are no longer needed (the model is saved apart)."""
    import shutil

    shutil.rmtree(out / "trainer", ignore_errors=True)


def save_checkpoint(model, out: Path) -> Path:
    """Save to a temporary directory, then rename: a crash never leaves a half model under `model/`."""
    return write_dir_atomic(out / "model", lambda tmp: model.save(str(tmp)))


def build_trainer(
    model,
    settings: TrainSettings,
    data: PreparedData,
    out: Path,
    score: Callable[[], float] | None = None,
    reporter: Any = None,
):
    """The Trainer of one run and what it reports: (trainer, sizes, sampler factory, objective callback).

    `score` (no arguments -> the objective) runs when an intermediate evaluation is due (`trainer.eval_steps`,
    `trainer.eval_every_examples`) and its value goes to `reporter` (a sweep trial's pruning reporter) if any.
    """
    from sentence_transformers import SentenceTransformerTrainer

    from contrastive import tracking
    from contrastive.losses import build_losses, frozen_copy

    datasets, sizes, lookup = training_datasets(data, settings, model, out)  # before any step
    sampler = sampler_factory(settings, lookup)
    callback = objective_callback(score or (lambda: float("nan")), settings, reporter)
    apply_threads(settings.batch)
    guide = frozen_copy(model) if settings.loss.gist else None  # GIST's guide: the model before training
    losses = build_losses(model, settings.loss, datasets, guide, joint=is_joint(settings))
    single = len(datasets) == 1
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args(settings, out, sampler),
        train_dataset=next(iter(datasets.values())) if single else datasets,
        loss=next(iter(losses.values())) if single else losses,
        callbacks=[tracking.MlflowLossCallback(), callback, stop_callback(), checkpoint_callback()]
        if settings.tracking.enabled
        else [callback, stop_callback(), checkpoint_callback()],
    )
    trainer.dataset_names = list(datasets)  # the model card names a lone dataset by it (the Trainer does not)
    return trainer, sizes, sampler, callback


def fit(
    model,
    settings: TrainSettings,
    data: PreparedData,
    out: Path,
    score: Callable[[], float] | None = None,
    reporter: Any = None,
) -> dict[str, Any]:
    """Train the model in place; returns the loss history, sizes, sampler report, steps and intermediate values."""
    from contrastive import tracking

    trainer, sizes, sampler, callback = build_trainer(model, settings, data, out, score, reporter)
    if settings.tracking.enabled:
        tracking.log_params({f"data.{k}": v for k, v in sizes.items()})  # constants: params, not charts
        for name, file in SAMPLE_FILES.items():  # what the mined negatives and silver pairs teach, readable
            if (sample := out / file).is_file():
                tracking.log_artifact(sample, name)
    shown = (f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in sizes.items())  # the teacher's id: a str
    print("training examples: " + ", ".join(shown), flush=True)
    checkpoint = resume_checkpoint(settings.trainer.resume, out)
    if checkpoint:
        print(f"resuming from {checkpoint}", flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    drop_checkpoints(out)
    history = [e for e in trainer.state.log_history if "loss" in e]
    return {
        "history": history,
        "sizes": sizes,
        "sampler": sampler.report(),
        "steps": trainer.state.global_step,
        "intermediate": callback.history,
        "datasets": list(trainer.dataset_names),
        "losses": list(trainer.loss.values()) if isinstance(trainer.loss, dict) else [trainer.loss],
    }

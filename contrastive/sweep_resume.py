"""A sweep trial retried after a kill resumes its own checkpoint instead of starting over.

`ResumeRetries` is a callback of the generic sweeper (hydra_plugins/contrastive_sweeper/callbacks.py), set in
conf/hydra/sweeper/optuna.yaml under `hydra.sweeper.callbacks.resume`. A trial killed mid-training (a lost
worker, SIGTERM, a cancelled SLURM job) is re-queued by the sweeper with the same params as a new trial, whose
system attrs carry Optuna's `retry_history` (the killed attempts, oldest first). Before that retry's job starts,
the callback looks for the newest attempt whose job dir (user attr `output_dir`, recorded as each job starts)
holds a complete Trainer checkpoint (`contrastive.training.run_checkpoint`) and gives the job
`trainer.resume=<that dir>`; it records `resumed_from` {trial, step, job_dir, checkpoint} on the retry (None when
it starts over) and logs why either way. Nothing is copied: the retry reads the killed trial's checkpoint and
writes its own into its own dir. Once a retry ends COMPLETE or PRUNED, the checkpoints its killed attempts left
are removed (`contrastive.training.drop_checkpoints`), as a completed run removes its own.

Pruning: the resumed job reports its intermediate values from the resumed step on, under its own trial; the
killed attempts keep theirs (FAIL trials, which the pruners do not compare against).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hydra_plugins.contrastive_sweeper import SweepCallback
from hydra_plugins.contrastive_sweeper.search_space import quote
from hydra_plugins.contrastive_sweeper.trial import OUTPUT_DIR_ATTR, retry_history

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

RESUMED_ATTR = "resumed_from"  # trial user attr: the killed attempt whose checkpoint the retry resumed (None: fresh)


@dataclass(frozen=True)
class ResumePoint:
    """Where a retry resumes: the killed attempt, its job dir, its newest complete checkpoint and that one's step."""

    trial: int
    job_dir: str
    checkpoint: str
    step: int


def resume_point(history: Sequence[int], job_dirs: Mapping[int, str | None]) -> tuple[ResumePoint | None, str]:
    """The newest attempt of `history` (oldest first) whose job dir holds a complete checkpoint (or None), and why."""
    from contrastive.training import checkpoint_step, run_checkpoint

    why = []
    for number in reversed(list(history)):
        job_dir = job_dirs.get(number)
        if not job_dir:
            why.append(f"trial {number} recorded no job dir")
            continue
        checkpoint = run_checkpoint(Path(job_dir))
        if checkpoint is None:
            why.append(f"trial {number}'s job dir {job_dir} holds no complete checkpoint")
            continue
        point = ResumePoint(int(number), str(job_dir), checkpoint, checkpoint_step(checkpoint))
        return point, f"trial {number}'s checkpoint at step {point.step} ({checkpoint})"
    return None, "; ".join(why) or "not a retry"


class ResumeRetries(SweepCallback):
    """Resume a retried trial from its killed attempt's checkpoint (`hydra.sweeper.callbacks.resume`)."""

    def __init__(self, key: str = "trainer.resume") -> None:
        self.key = key

    def on_trial_start(self, study: optuna.Study, trial: optuna.Trial) -> list[str]:
        """`<key>=<job dir>` for a retry whose killed attempt left a complete checkpoint; none otherwise."""
        history = retry_history(trial)
        if not history:
            return []
        attempts = [t for t in study.get_trials(deepcopy=False) if t.number in set(history)]
        dirs = {t.number: t.user_attrs.get(OUTPUT_DIR_ATTR) for t in attempts}
        point, why = resume_point(history, dirs)
        trial.set_user_attr(RESUMED_ATTR, asdict(point) if point else None)  # a retry of a retry inherits the attr
        if point is None:
            log.info("trial %d retries trial %d from the start: %s", trial.number, history[-1], why)
            return []
        log.info("trial %d resumes trial %d from step %d (%s)", trial.number, point.trial, point.step, point.checkpoint)
        return [f"{self.key}={quote(point.job_dir)}"]

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial, reason: str | None) -> None:
        """A retry that ended COMPLETE or PRUNED no longer needs its killed attempts' checkpoints: removed."""
        from optuna.trial import TrialState

        from contrastive.training import drop_checkpoints

        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return
        history = set(retry_history(trial))
        for attempt in study.get_trials(deepcopy=False):
            job_dir = attempt.user_attrs.get(OUTPUT_DIR_ATTR)
            if attempt.number in history and attempt.state == TrialState.FAIL and job_dir:
                drop_checkpoints(Path(job_dir))

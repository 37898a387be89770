"""Hooks a project plugs into a sweep (`hydra.sweeper.callbacks`), and what the sweeper tells them.

Each entry of `hydra.sweeper.callbacks` is a `_target_` mapping; the sweeper instantiates it once per sweep
and calls the hooks it has (a subclass of `SweepCallback` gets no-ops for the others). The hooks receive the
live Optuna study: what jobs recorded on their trials (`trial.Reporter.record`) is there, in any process
that reaches the storage. Hydra's own `on_multirun_*` callbacks could not do this job: they run before the
study exists, cannot add overrides to the jobs, and are skipped when the sweep raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class SweepInfo:
    """The sweep as configured: study, storage (password masked), budget, sampler, pruner, search space."""

    study_name: str
    storage: str
    directions: list[str]
    n_trials: int
    n_jobs: int
    sampler: str | None
    sampler_seed: Any
    pruner: str
    sweep_dir: Path
    space: dict[str, str] = field(default_factory=dict)  # param -> its distribution in one line
    fixed: dict[str, str] = field(default_factory=dict)  # param -> the fixed override of every trial

    def settings(self) -> dict[str, Any]:
        """Flat key -> value settings (e.g. a tracking run's params)."""
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "directions": ",".join(self.directions),
            "n_trials": self.n_trials,
            "n_jobs": self.n_jobs,
            "sampler": self.sampler,
            "sampler_seed": self.sampler_seed,
            "pruner": self.pruner,
            "sweep_dir": str(self.sweep_dir),
            **{f"space.{k}": v for k, v in self.space.items()},
            **{f"fixed.{k}": v for k, v in self.fixed.items()},
        }


class SweepCallback:
    """Hooks around a sweep; every one is optional.

    - `on_sweep_start`: after the study is opened, before the first ask; returns extra overrides for every job.
      An error stops the sweep.
    - `on_trial_start`: a trial's params are sampled and its job is about to launch; gets the live trial (a retry of
      a killed one carries Optuna's `retry_history` in its system attrs) and returns extra overrides for its job
      alone (e.g. resume the killed trial's checkpoint). An error is logged and the job runs without them.
    - `on_trial_end`: after a trial's final state was told (COMPLETE, PRUNED or FAIL, with `reason` for the
      last two); an error is logged and the sweep goes on.
    - `on_sweep_end`: when the budget is spent and no trial of this process runs.
    - `on_sweep_error`: when the sweep stops on an exception (interrupted, a bad setting); then it propagates.
    """

    def on_sweep_start(self, study: optuna.Study, info: SweepInfo) -> list[str]:
        return []

    def on_trial_start(self, study: optuna.Study, trial: optuna.Trial) -> list[str]:
        return []

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial, reason: str | None) -> None:
        return None

    def on_sweep_end(self, study: optuna.Study, info: SweepInfo) -> None:
        return None

    def on_sweep_error(self, study: optuna.Study, info: SweepInfo, exc: BaseException) -> None:
        return None

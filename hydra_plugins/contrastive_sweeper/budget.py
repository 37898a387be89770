"""The trial budget across processes: which trials of a study count toward `n_trials`.

`n_trials` is the study's total: finished trials of earlier runs count. A trial left RUNNING by a killed
process is failed as stale and re-queued with the same params; the re-queued trial takes its place in the
budget. A trial asked after another process filled the budget is marked `over_budget` and not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hydra_plugins.contrastive_sweeper.trial import OVER_BUDGET_ATTR, WARM_ATTR, retry_history

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of stale trials that were re-queued (their retry takes their place in the budget)."""
    return {n for t in trials for n in retry_history(t)}


def budget_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count toward `n_trials`: all but re-queued stale ones, over-budget ones and warm-start ones."""
    retried = retried_numbers(trials)
    skip = (OVER_BUDGET_ATTR, WARM_ATTR)
    return [t for t in trials if t.number not in retried and not any(t.user_attrs.get(a) for a in skip)]


def asks_left(trials: Sequence[FrozenTrial], n_trials: int) -> int:
    """How many more asks fit the budget (asks take waiting trials first, which are already counted)."""
    from optuna.trial import TrialState

    counted = budget_trials(trials)
    waiting = sum(t.state == TrialState.WAITING for t in counted)
    return max(0, n_trials - len(counted)) + waiting


def over_budget(trials: Sequence[FrozenTrial], number: int, n_trials: int) -> bool:
    """Whether trial `number` came after the budget was full (another process asked at the same time)."""
    return sum(t.number < number for t in budget_trials(trials)) >= n_trials

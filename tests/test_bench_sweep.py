"""contrastive/bench/sweep.py: the trial set-up child (the job's own set-up, twice in one process)."""

from __future__ import annotations

from contrastive.bench.sweep import trial_setup_child


def test_trial_setup_child_runs_the_jobs_setup_twice_on_the_fixture():
    out = trial_setup_child(["data=fixture"])
    assert set(out) == {"imports_s", "first_s", "later_s"}
    assert all(v > 0 for v in out.values())

"""README's SLURM recipe against the real engines: trials as SLURM jobs (`hydra/launcher=slurm`, the project's
preset of hydra-submitit-launcher) on a one-node SLURM 22.05, the study on PostgreSQL, the runs in an MLflow
server. `.ci/slurm up DIR` starts the SLURM (CI does; by hand: `bash .ci/slurm up /tmp/sl && source /tmp/sl/env`,
`bash .ci/slurm down /tmp/sl`) and `.ci/cluster up DIR` the two servers. Nothing is mocked: jobs go through
`sbatch`, their states come from `sacct`, a job is cancelled with `scancel`.

The trials run the toy task (tests/sweep_toy/app.py: seconds per trial, with an MLflow run and a model dir), so
the file stays well under a few minutes on 2 cores; the sweep machinery is the same as for the train job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from contrastive import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "tests"))
from sweep_toy.runner import TOY_TIMEOUT_S, toy_command, toy_objective  # noqa: E402

pytestmark = pytest.mark.slow

CPUS_PER_TRIAL = 1  # the CI node has 2 CPUs: two trial jobs at a time


@pytest.fixture(scope="module")
def engines() -> SimpleNamespace:
    slurm, pg, uri = (
        os.environ.get(k) for k in ("SLURM_CONF", "CONTRASTIVE_TEST_PG_URL", "CONTRASTIVE_TEST_MLFLOW_URI")
    )
    if not (slurm and os.environ.get("CONTRASTIVE_TEST_SLURM") and pg and uri):
        if os.environ.get("CI"):
            pytest.fail("CI runs the SLURM tests: .ci/run must start .ci/slurm and .ci/cluster and export their env")
        pytest.skip("no SLURM / PostgreSQL / MLflow server: bash .ci/slurm up DIR && source DIR/env (and .ci/cluster)")
    return SimpleNamespace(pg=pg, mlflow=uri)


def slurm_sweep(
    engines: SimpleNamespace, out: Path, name: str, *overrides: str, mlflow: str | None = None
) -> list[str]:
    """The toy sweep with its trials as SLURM jobs, its study on PostgreSQL and its runs in the MLflow server
    (or the `mlflow` store given)."""
    return toy_command(
        out,
        "hydra/launcher=slurm",
        "hydra.launcher.partition=ci",
        f"hydra.launcher.cpus_per_task={CPUS_PER_TRIAL}",
        "hydra.launcher.mem_gb=null",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweeper.storage={engines.pg}",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_jobs=2",
        "tracking.enabled=true",
        f"tracking.tracking_uri={mlflow or engines.mlflow}",
        f"tracking.experiment={name}",
        f"tracking.registered_model={name}",
        "make_model=true",
        *overrides,
    )


def job_ids(out: Path, name: str) -> list[str]:
    """The SLURM job ids of a sweep: submitit's folder per job (`.submitit/<job id>`)."""
    return sorted((p.name for p in (out / "sweeps" / name / ".submitit").iterdir() if p.name.isdigit()), key=int)


def sacct_states(ids: list[str]) -> dict[str, str]:
    """Each job's final state, as SLURM's accounting records it."""
    args = ["sacct", "-n", "-X", "-P", "-o", "JobID,State", *(a for i in ids for a in ("-j", i))]
    lines = subprocess.run(args, check=True, capture_output=True, text=True).stdout.splitlines()
    return dict(line.split("|", 1) for line in lines)


def mlflow_runs(uri: str, name: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=100)


def test_four_trials_run_as_four_slurm_jobs_with_one_parent_run_and_one_promotion(engines, tmp_path):
    """4 trials, 2 at a time, each its own SLURM job: 4 job ids COMPLETED in sacct, exactly 4 finished trials
    (the pruner ran inside the jobs: a trial is PRUNED exactly when its first report is below the floor), one
    parent run holding the 4 child runs, `@best` = the study's best, and no run left RUNNING.

    Its runs go to a SQLite store: the toy's model dir is plain artifacts, which an MLflow server does not register
    from a local path (the train job logs a real model: tests/test_cluster.py registers it through the server)."""
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    floor = -2.2  # the toy's first report is objective - 2: pruned iff (x - 2)^2 > 0.2
    command = slurm_sweep(
        engines,
        tmp_path,
        name,
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/pruner=threshold",
        f"++hydra.sweeper.pruner.lower={floor}",
        mlflow=store,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=TOY_TIMEOUT_S * 3)
    (tmp_path / "sweep.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ids = job_ids(tmp_path, name)
    states = sacct_states(ids)
    print(f"SLURM jobs {ids}: {states}")
    assert len(ids) == 4 and set(states.values()) == {"COMPLETED"}
    study = optuna.load_study(study_name=name, storage=engines.pg)
    trials = study.get_trials()
    print(f"trials: {[(t.number, t.state.name, round(t.params['x'], 3)) for t in trials]}")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    for t in trials:
        pruned = toy_objective(t.params["x"]) - 2 < floor
        assert t.state == (TrialState.PRUNED if pruned else TrialState.COMPLETE), t
    assert study.best_trial.state == TrialState.COMPLETE

    runs = mlflow_runs(store, name)
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2, 3]
    assert "RUNNING" not in {r.info.status for r in runs}
    from mlflow.tracking import MlflowClient

    best = study.best_trial
    champion = MlflowClient(tracking_uri=store).get_model_version_by_alias(name, "best")
    assert champion.run_id == best.user_attrs["mlflow_run_id"] == study.user_attrs["promoted"]["run_id"]


def test_a_cancelled_slurm_job_is_retried_and_the_study_ends_exact(engines, tmp_path):
    """`scancel` the job of a trial mid-trial: the sweep fails that trial (JobLost, with the job id and SLURM's
    state), queues its params again as a new trial in its place, and ends with exactly n_trials COMPLETE; the
    cancelled trial's MLflow run ends KILLED with the reason, and no run stays RUNNING."""
    name = f"slurm-cancel-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "hanging"
    command = slurm_sweep(
        engines,
        tmp_path,
        name,
        "hydra.sweeper.n_trials=3",
        f"hang_marker={marker}",
        "hang_at_trial=1",
        "hydra/sweeper/pruner=none",
    )
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + TOY_TIMEOUT_S
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the hanging trial never started"
        pidinfo = subprocess.run(["scontrol", "pidinfo", marker.read_text()], capture_output=True, text=True).stdout
        cancelled = pidinfo.split("JobId=")[1].split()[0]  # the SLURM job running the hanging trial
        subprocess.run(["scancel", cancelled], check=True)
        log, _ = proc.communicate(timeout=TOY_TIMEOUT_S * 3)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-3000:]

    ids = job_ids(tmp_path, name)
    states = sacct_states(ids)
    print(f"SLURM jobs {ids}: {states}; cancelled {cancelled}")
    assert len(ids) == 4 and states.pop(cancelled).startswith("CANCELLED") and set(states.values()) == {"COMPLETED"}
    study = optuna.load_study(study_name=name, storage=engines.pg)
    trials = study.get_trials()
    print(f"trials: {[(t.number, t.state.name, round(t.params['x'], 3)) for t in trials]}")
    lost = trials[1]
    assert lost.state == TrialState.FAIL and lost.user_attrs["fail_reason"].startswith(f"JobLost: Job {cancelled} ")
    retry = [t for t in trials if 1 in t.system_attrs.get("retry_history", [])]
    assert len(retry) == 1 and retry[0].params == lost.params and retry[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3 and len(trials) == 4

    runs = mlflow_runs(engines.mlflow, name)
    assert "RUNNING" not in {r.info.status for r in runs}
    killed = next(r for r in runs if r.info.run_id == lost.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED" and killed.data.tags["trial_reason"].startswith("JobLost")

"""Resumable training: `trainer.save_every` checkpoints, `trainer.resume=auto|PATH` continues a killed run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contrastive import PROJECT_ROOT
from contrastive.errors import ConfigError
from contrastive.training import newest_checkpoint, resume_checkpoint

RUN = [
    "data=fixture",
    "trainer.max_steps=10",
    "trainer.save_every=2",
    "trainer.save_keep=2",
    "batch.size=8",
    "trainer.logging_steps=1",
    "eval.n_boot=50",
    "eval.umap.enabled=false",
    "tracking.log_model=false",
    "save_model=false",
]


def _args(tmp_path: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "contrastive.train",
        *RUN,
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        *overrides,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def _checkpoint(step: int, folder: Path, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_resume_finds_the_newest_complete_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert resume_checkpoint(None, run) is None and resume_checkpoint("auto", run) is None  # nothing yet: fresh
    folder = run / "trainer"
    _checkpoint(2, folder), _checkpoint(10, folder)
    _checkpoint(12, folder, complete=False)  # killed while saving: skipped
    newest = str(folder / "checkpoint-10")
    assert newest_checkpoint(folder) == newest and resume_checkpoint("auto", run) == newest
    assert resume_checkpoint(str(run), tmp_path) == newest == resume_checkpoint(str(folder), tmp_path)
    assert resume_checkpoint(str(folder / "checkpoint-2"), tmp_path) == str(folder / "checkpoint-2")
    with pytest.raises(ConfigError, match="trainer.resume="):
        resume_checkpoint(str(tmp_path / "run" / "trainer" / "checkpoint-12"), tmp_path)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_final_metrics_as_an_unkilled_one(tmp_path):
    full = subprocess.run(
        _args(tmp_path, tmp_path / "full"), cwd=PROJECT_ROOT, capture_output=True, text=True, env=_env(), timeout=900
    )
    assert full.returncode == 0, full.stderr[-3000:]
    assert not (tmp_path / "full" / "trainer").exists()  # a completed run drops its checkpoints

    killed = tmp_path / "killed"
    args = _args(tmp_path, killed)
    proc = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + 900
    while newest_checkpoint(killed / "trainer") is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no handler, no clean-up: as a lost machine or the OOM killer
    proc.wait(timeout=60)
    saved = newest_checkpoint(killed / "trainer")
    assert saved is not None and not (killed / "metrics.json").exists(), "the kill must land mid-training"
    step = int(Path(saved).name.removeprefix("checkpoint-"))
    assert 0 < step < 10

    resumed = subprocess.run(
        [*args, "trainer.resume=auto"], cwd=PROJECT_ROOT, capture_output=True, text=True, env=_env(), timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {killed / 'trainer'}" in resumed.stdout
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "full", killed))
    assert b["training"]["steps"] == a["training"]["steps"] == 10
    assert b["finetuned"] == pytest.approx(a["finetuned"], abs=1e-6)
    assert a["finetuned"] != a["baseline"]  # the ten steps changed the model: equal metrics say something


# ---------------------------------------------------------------- a sweep trial retried after a kill


def _killed_attempt(study, job_dir: Path | None, retry_of=None):
    """A FAIL trial (a killed attempt, with its job dir recorded) re-queued as Optuna re-queues a killed trial;
    returns the retry, asked (RUNNING, as the sweeper launches it)."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    attrs = {"output_dir": str(job_dir)} if job_dir else {}
    if retry_of is None:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs
            )
        )
    else:  # the retry itself was killed: it fails, with its own job dir
        study._storage.set_trial_user_attr(retry_of._trial_id, "output_dir", attrs.get("output_dir"))
        study.tell(retry_of, state=TrialState.FAIL)
    failed = study.get_trials(deepcopy=False)[-1 if retry_of is None else retry_of.number]
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, failed)
    return study.ask()


def test_a_retry_resumes_the_newest_killed_attempt_that_left_a_complete_checkpoint(tmp_path, caplog):
    import optuna

    from contrastive.sweep_resume import RESUMED_ATTR, ResumeRetries, resume_point
    from hydra_plugins.contrastive_sweeper.trial import retry_history

    caplog.set_level(logging.INFO, logger="contrastive.sweep_resume")

    first, second = tmp_path / "trial_0", tmp_path / "trial_1"
    assert resume_point([0], {0: str(first)}) == (None, f"trial 0's job dir {first} holds no complete checkpoint")
    assert resume_point([0], {})[0] is None and resume_point([], {}) == (None, "not a retry")
    _checkpoint(2, first / "trainer"), _checkpoint(4, first / "trainer", complete=False)  # 4: killed while saving
    point, _ = resume_point([0], {0: str(first)})
    assert (point.trial, point.step, point.job_dir) == (0, 2, str(first))
    assert point.checkpoint == str(first / "trainer" / "checkpoint-2")

    study = optuna.create_study(direction="maximize")
    callback = ResumeRetries("trainer.resume")
    assert callback.on_trial_start(study, study.ask()) == []  # not a retry: nothing added, nothing recorded
    retry = _killed_attempt(study, None)  # trial 2 retries trial 1
    assert callback.on_trial_start(study, retry) == []  # trial 1 recorded no job dir: starts over, and says why
    assert retry.user_attrs[RESUMED_ATTR] is None and "trial 1 recorded no job dir" in caplog.text

    study2 = optuna.create_study(direction="maximize")
    retry = _killed_attempt(study2, first)  # trial 1 retries trial 0, which left checkpoint-2
    assert callback.on_trial_start(study2, retry) == [f"trainer.resume='{first}'"]
    assert retry.user_attrs[RESUMED_ATTR] == {
        "trial": 0,
        "job_dir": str(first),
        "checkpoint": str(first / "trainer" / "checkpoint-2"),
        "step": 2,
    }
    assert "trial 1 resumes trial 0 from step 2" in caplog.text
    # killed again before saving: its retry still resumes trial 0's checkpoint; after saving: its own
    again = _killed_attempt(study2, second, retry_of=retry)
    assert retry_history(again) == [0, 1]
    assert callback.on_trial_start(study2, again) == [f"trainer.resume='{first}'"]
    _checkpoint(6, second / "trainer")
    assert callback.on_trial_start(study2, again) == [f"trainer.resume='{second}'"]
    assert again.user_attrs[RESUMED_ATTR]["trial"] == 1 and again.user_attrs[RESUMED_ATTR]["step"] == 6

    study2.tell(again, 1.0)  # the retry completed: its killed attempts' checkpoints are not needed any more
    callback.on_trial_end(study2, study2.trials[again.number], None)
    assert not (first / "trainer").exists() and not (second / "trainer").exists()


@pytest.mark.slow
def test_a_sweep_trial_killed_mid_training_is_retried_from_its_checkpoint(tmp_path):
    """SIGKILL the sweep (its trial trains in the sweep process) once trial 0 saved a checkpoint; the rerun fails
    the stale trial, and its retry resumes that checkpoint: recorded, logged, and trained on to the same max_steps."""
    import optuna
    from optuna.trial import TrialState

    out = tmp_path / "outputs"
    command = [
        sys.executable,
        "-m",
        "contrastive.train",
        "+sweeps=fixture_tiny",
        f"paths.output_root={out}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.callbacks.report.promote_best=false",
        "tracking.enabled=false",
        "batch.size=8",
        "trainer.max_steps=6",
        "trainer.eval_steps=2",
        "trainer.save_every=2",
        "trainer.save_keep=1",
        "save_model=false",
    ]
    sweep_dir = out / "sweeps" / "fixture_tiny"
    killed_dir = sweep_dir / "trial_0"
    first = subprocess.Popen(
        command, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 900  # a hang guard only
    while newest_checkpoint(killed_dir / "trainer") is None and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep process trains its trial itself: both die, no clean-up
    first.wait(timeout=60)
    saved = newest_checkpoint(killed_dir / "trainer")
    assert saved is not None and not (killed_dir / "metrics.json").exists(), "the kill must land mid-training"
    step = int(Path(saved).name.removeprefix("checkpoint-"))
    assert step in (2, 4)

    done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    study = optuna.load_study(study_name="fixture_tiny", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    killed, retry = study.trials
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == killed.params
    assert killed.user_attrs["output_dir"] == str(killed_dir)  # recorded as its job started, before the kill
    assert retry.user_attrs["resumed_from"] == {
        "trial": 0,
        "job_dir": str(killed_dir),
        "checkpoint": saved,
        "step": step,
    }
    assert f"trial 1 resumes trial 0 from step {step} ({saved})" in text and f"resuming from {saved}" in text
    metrics = json.loads((sweep_dir / "trial_1" / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 6
    assert 2 * 8 in killed.intermediate_values  # reported at step 2 (examples seen), before checkpoint-2 was saved
    assert all(seen > step * 8 for seen in retry.intermediate_values)  # the retry reports from where it resumed
    assert not (killed_dir / "trainer").exists()  # the retry completed: the checkpoint it resumed is removed
    assert not any(t.state == TrialState.RUNNING for t in study.trials)

"""Resumable training: `trainer.save_every` checkpoints, `trainer.resume=auto|PATH` continues a killed run."""

from __future__ import annotations

import json
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

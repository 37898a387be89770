"""Running the toy task (app.py) as a sweep in a subprocess, for the sweeper and sweep-report tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

TOY_APP = Path(__file__).parent / "app.py"
TOY_TIMEOUT_S = 120


def toy_objective(x: float) -> float:
    return -((x - 2.0) ** 2)


def toy_command(out: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(TOY_APP), "-m", f"out={out}", *overrides]


def run_toy(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    done = subprocess.run(toy_command(out, *overrides), capture_output=True, text=True, timeout=TOY_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def load_toy_study(out: Path, name: str = "toy") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'sweeps' / name / 'optuna.db'}")


def start_toy_until_hang(out: Path, marker: Path, *overrides: str, **popen: Any) -> subprocess.Popen:
    """Start the toy sweep in a subprocess and return once its hanging trial has written `marker` (the test then
    signals it); the overrides must make a trial hang (`hang_marker`, `hang_at_trial`)."""
    proc = subprocess.Popen(toy_command(out, *overrides), **popen)
    deadline = time.time() + TOY_TIMEOUT_S
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if not marker.exists():
        proc.kill()
        proc.wait()
        raise AssertionError("the hanging trial never started")
    return proc

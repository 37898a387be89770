"""The console scripts of pyproject's [project.scripts]: installed, each a Hydra entry point, tab-completed by Hydra."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contrastive import PROJECT_ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

BIN = Path(sys.executable).parent  # the venv's bin/, where pip put the scripts


def _declared() -> dict[str, str]:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_entry_point_is_a_declared_installed_script():
    declared = _declared()
    assert {"contrastive-train", "contrastive-evaluate", "contrastive-app", "contrastive-export"} <= set(declared)
    assert {"contrastive-teacher", "contrastive-merge"} <= set(declared)
    for name, target in declared.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
        script = BIN / name
        assert script.is_file(), f"{name}: not installed; pip install -e . (make install) after changing the scripts"
        assert f"from {module} import {attr}" in script.read_text(), name  # pip's launcher calls the declared target


def _complete(script: str, line: str) -> list[str]:
    """What Hydra's bash completion (`SCRIPT -sc install=bash`, sourced) offers for `line`, cursor at its end."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    install = subprocess.run([script, "-sc", "install=bash"], capture_output=True, text=True, env=env, timeout=120)
    assert install.returncode == 0, install.stderr
    assert install.stdout.rstrip().endswith(f"hydra_bash_completion {script}")  # registered for the command itself
    words = line.split(" ")
    shell = (
        f'{install.stdout}\nCOMP_LINE="{line}"; COMP_POINT={len(line)}; COMP_CWORD={len(words) - 1}\n'
        'hydra_bash_completion; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "line", "expected"),
    [
        ("contrastive-train", "contrastive-train loss.aux_w", "loss.aux_weight="),
        ("contrastive-train", "contrastive-train trainer.lr=1e-5 trainer.save_e", "trainer.save_every="),
        ("contrastive-evaluate", "contrastive-evaluate checkp", "checkpoint="),
    ],
)
def test_hydra_tab_completion_completes_a_key_of_the_command(script, line, expected):
    assert expected in _complete(script, line)

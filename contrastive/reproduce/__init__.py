"""`make reproduce`: sweep on real QQP -> final training -> ablation -> test-split report -> README Results.

    python -m contrastive.reproduce [overrides of conf/reproduce.yaml]    (= make reproduce ARGS="...")

A Hydra app like the other entry points (`--cfg job` prints the composed config, `--help` the options): it turns
the config into typed settings and checks the training config its stages compose before any stage runs, then
runs the stages (`contrastive.reproduce.stages`: every one a real entry point in a subprocess, with its own log
in the work dir) and writes the report (`contrastive.reproduce.report`). A rerun resumes: the Optuna study
resumes, and a row whose run dir holds a metrics.json made with the same overrides is read instead of retrained
(`reproduce.fresh=true` starts over, moving the last run's stages to `<work_dir>.previous`).

The final model is the last ablation row: all the sweep's promoted parameters at `reproduce.budget_pairs`
(the sweep's trials train on a smaller cap). The test split is only touched by the rows and the final report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from contrastive.cli import hydra_app, user_errors
from contrastive.errors import ConfigError
from contrastive.reproduce.settings import ReproduceSettings, load_reproduce
from contrastive.settings import load_train


def check_config(cfg: DictConfig) -> ReproduceSettings:
    """Every check before any work: reproduce's own settings, then the training config its stages compose."""
    settings = load_reproduce(cfg)
    rp = settings.reproduce
    check_data([*rp.data, *rp.extra])
    return settings


def check_data(stage_overrides: list[str]) -> None:
    """The stages' training config, composed and checked as training checks it; a local pairs file must exist."""
    from contrastive.cli import compose_config as compose

    data = load_train(compose(stage_overrides)).data
    if data.source == "local" and not Path(str(data.path)).expanduser().is_file():
        raise ConfigError(f"data.path: {data.path!r}: file not found (reproduce.data: {stage_overrides})")


def command_line(overrides: Sequence[str]) -> str:
    """How results.json names the invocation: `make reproduce` and, when any were given, `ARGS="<overrides>"`."""
    return " ".join(["make reproduce", *([f'ARGS="{" ".join(overrides)}"'] if overrides else [])])


def reproduce(cfg: DictConfig, command: str) -> dict[str, Any]:
    """Check the config, then run every stage and write the report; results.json's content."""
    from contrastive.reproduce import stages

    settings = check_config(cfg)  # every config check, before any stage
    return stages.run(settings, command)


@hydra_app("reproduce")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with user_errors():
        reproduce(cfg, command_line(list(HydraConfig.get().overrides.task)))

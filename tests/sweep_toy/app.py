"""A toy Hydra task for fast sweeper tests: objective -(x - 2)^2, reported at every "eval step".

Knobs (conf/toy.yaml) make a trial fail, diverge, hang (to be killed) or write a model dir, the way the
real train job can; like it, the job records its MLflow run and objective on its trial (trial.py) for the
sweep report. No model, no data: a sweep of a few trials takes seconds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from contrastive.errors import ConfigError, TrainingDiverged
from hydra_plugins.contrastive_sweeper.trial import Reporter, reporter_from_cfg


def objective(x: float) -> float:
    return -((x - 2.0) ** 2)


def intermediate(x: float, step: int, steps: int) -> float:
    """Improves by 1 per step and ends at objective(x)."""
    return objective(x) - (steps - step)


def work(cfg: DictConfig, out: Path, reporter: Reporter | None) -> float:
    x = float(cfg.x)
    (out / "pid").write_text(str(os.getpid()))
    if cfg.fail_above is not None and x > cfg.fail_above:
        raise ConfigError(f"x={x}: above fail_above={cfg.fail_above}")
    if cfg.diverge_below is not None and x < cfg.diverge_below:
        raise TrainingDiverged(f"loss is nan at step 1 (x={x})")
    trial = cfg.get("optuna", {}).get("trial_number")
    if cfg.broken_pipe_at_trial is not None and trial == cfg.broken_pipe_at_trial:
        raise BrokenPipeError(32, "Broken pipe")  # what print() raises once the reader of stdout is gone
    if cfg.hang_marker and trial == cfg.hang_at_trial and not Path(cfg.hang_marker).exists():
        Path(cfg.hang_marker).write_text(str(os.getpid()))
        time.sleep(600)  # the test kills the sweep process here
    for step in range(1, cfg.steps + 1):
        time.sleep(cfg.step_sleep)
        if reporter is not None:
            reporter.report(intermediate(x, step, cfg.steps), step)
    value = objective(x)
    if cfg.make_model:
        (out / "model").mkdir(exist_ok=True)
        (out / "model" / "config.json").write_text(json.dumps({"x": x}))
        metrics = {"split": "val", "objective": {"name": "toy", "value": value}}
        (out / "metrics.json").write_text(json.dumps(metrics))
        if reporter is not None:
            reporter.record(objective=metrics["objective"])
    return [value, -abs(x)] if cfg.two_objectives else value


@hydra.main(config_path="conf", config_name="toy", version_base="1.3")
def main(cfg: DictConfig) -> float | list[float]:
    out = Path(HydraConfig.get().runtime.output_dir)
    reporter = reporter_from_cfg(cfg)
    if not cfg.tracking.enabled:
        return work(cfg, out, reporter)
    from contrastive import tracking

    with tracking.run(cfg.tracking, out.name) as run_id:
        if reporter is not None:
            reporter.record(mlflow_run_id=run_id)
        tracking.log_params(tracking.config_params(cfg))
        value = work(cfg, out, reporter)
        if cfg.make_model:
            tracking.log_artifact(out / "model", "model")  # not a real model: plain artifacts
        tracking.log_metrics({"objective": value})
    print(f"mlflow run: {run_id}")
    return value


if __name__ == "__main__":
    main()

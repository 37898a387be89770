"""The Hydra entry point: `python -m contrastive.train [overrides]` runs one training job."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from contrastive import CONF_DIR
from contrastive.cli import user_errors
from contrastive.config import check_train_config
from contrastive.data import format_summary, prepare

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    """One job; returns the objective."""
    check_train_config(cfg)
    data = prepare(cfg.data)
    print(format_summary(data.summary), flush=True)
    return float("nan")


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    with user_errors():
        return run(cfg)


if __name__ == "__main__":
    main()

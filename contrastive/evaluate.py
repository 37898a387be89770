"""The evaluate entry point: a checkpoint's metrics beside the untuned baseline's on one split (conf/evaluate.yaml).

`python -m contrastive.evaluate checkpoint=<dir or hub id> [eval.split=test] [data=fixture] [json=out.json]
[overrides]`; `--cfg job` prints the composed config, `--help` the groups. The work is `contrastive.evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from contrastive import CONF_DIR
from contrastive.cli import user_errors
from contrastive.errors import ConfigError

if TYPE_CHECKING:
    from contrastive.evaluation import EvalResult

# numpy, pandas, torch and sentence-transformers are imported inside `run`, so that `--help`, `--cfg job` and a
# missing checkpoint answer in a second.


def checkpoint_of(cfg: DictConfig) -> str:
    """The `checkpoint` to score; a one-line ConfigError when it is not given."""
    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint in (None, ""):
        raise ConfigError("checkpoint: missing; pass checkpoint=<checkpoint dir or hub id> (see --help)")
    return str(cfg.checkpoint)


def run(cfg: DictConfig) -> EvalResult:
    """Load the data and the checkpoint, evaluate it beside the baseline, print the table, write `json`."""
    from contrastive.data import prepare
    from contrastive.evaluation import Evaluator, check_eval_config
    from contrastive.model import backend_args, fingerprint, load_model
    from contrastive.utils import write_json

    checkpoint = checkpoint_of(cfg)
    check_eval_config(cfg.eval)
    checkpoint_fp = fingerprint(checkpoint)  # a missing directory fails here, before any work
    data = prepare(cfg.data)
    model = load_model(checkpoint, cfg.model.max_seq_length, cfg.device, **backend_args(cfg.model))
    untuned = bool(cfg.eval.baseline) and checkpoint_fp == fingerprint(cfg.model.name_or_path)
    result = Evaluator(cfg.eval, cfg.model, data, cfg.device).run(model, untuned=untuned)
    print(result.table(), flush=True)
    if cfg.json:
        write_json(result.to_json(model=checkpoint), Path(cfg.json).expanduser().resolve())
        print(f"wrote {cfg.json}", flush=True)
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()

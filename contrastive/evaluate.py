"""The evaluate entry point: a checkpoint's metrics beside the untuned baseline's on one split (conf/evaluate.yaml).

`python -m contrastive.evaluate checkpoint=<dir, hub id or models:/NAME@ALIAS> [eval.split=test] [data=fixture]
[json=out.json] [overrides]`; `--cfg job` prints the composed config, `--help` the groups. The work is
`contrastive.evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from contrastive.cli import hydra_app, user_errors
from contrastive.settings import load_evaluate

if TYPE_CHECKING:
    from contrastive.evaluation import EvalResult

# numpy, pandas, torch and sentence-transformers are imported inside `run`, so that `--help`, `--cfg job` and a
# missing checkpoint answer in a second.


def run(cfg: DictConfig) -> EvalResult:
    """Load the data and the checkpoint, evaluate it beside the baseline, print the table, write `json`."""
    settings = load_evaluate(cfg)  # every config check, before any work
    from contrastive.data import prepare
    from contrastive.evaluation import Evaluator
    from contrastive.model import backend_args, fingerprint, load_model
    from contrastive.utils import write_json

    checkpoint, model_settings = settings.checkpoint, settings.model
    checkpoint_fp = fingerprint(checkpoint)  # a missing directory fails here, before any work
    data = prepare(settings.data)
    model = load_model(checkpoint, model_settings.max_seq_length, settings.device, **backend_args(model_settings))
    untuned = settings.eval.baseline and checkpoint_fp == fingerprint(model_settings.name_or_path)
    result = Evaluator(settings.eval, model_settings, data, settings.device).run(model, untuned=untuned)
    print(result.table(), flush=True)
    if settings.json:
        write_json(result.to_json(model=checkpoint), Path(settings.json).expanduser().resolve())
        print(f"wrote {settings.json}", flush=True)
    return result


@hydra_app("evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()

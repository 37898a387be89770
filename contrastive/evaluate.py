"""The evaluate entry point: a checkpoint's metrics beside the untuned baseline's on one split (conf/evaluate.yaml).

`python -m contrastive.evaluate checkpoint=<dir, hub id or models:/NAME@ALIAS> [eval.split=test] [data=fixture]
[json=out.json] [overrides]`; `--cfg job` prints the composed config, `--help` the groups. The work is
`contrastive.evaluation`. With `eval.interpolate=[..]` it also scores the weight mixes (1-a)*untuned + a*checkpoint
(contrastive/interpolate.py), the untuned model being `model.name_or_path`: WiSE-FT of any checkpoint, no training.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from contrastive.cli import hydra_app, user_errors
from contrastive.settings import load_evaluate

if TYPE_CHECKING:
    from contrastive.evaluation import EvalResult

# numpy, pandas, torch and sentence-transformers are imported inside `run`, so that `--help`, `--cfg job` and a
# missing checkpoint answer in a second.


SEEN_SPLIT_WARNING = (
    "warning: eval.split=train scores the pairs a checkpoint trained on this data has seen: "
    "its metrics are not held-out (use eval.split=val or test)"
)


def run(cfg: DictConfig) -> EvalResult:
    """Load the data and the checkpoint, evaluate it beside the baseline, print the table, write `json`."""
    settings = load_evaluate(cfg)  # every config check, before any work
    if settings.eval.split == "train":
        print(SEEN_SPLIT_WARNING, file=sys.stderr, flush=True)
    from contrastive.data import prepare
    from contrastive.evaluation import Evaluator
    from contrastive.model import backend_args, fingerprint, load_model, named_key, use_cache_dir
    from contrastive.utils import write_json

    use_cache_dir(settings.paths.cache_dir)  # a models:/ checkpoint downloads there, not into the project

    checkpoint, model_settings = settings.checkpoint, settings.model
    with named_key("checkpoint"):
        checkpoint_fp = fingerprint(checkpoint)  # a missing directory fails here, before any work
    data = prepare(settings.data)
    with named_key("checkpoint"):
        model = load_model(checkpoint, model_settings.max_seq_length, settings.device, **backend_args(model_settings))
    untuned = settings.eval.baseline and checkpoint_fp == fingerprint(model_settings.name_or_path)
    evaluator = Evaluator(settings.eval, model_settings, data, settings.device)
    result = evaluator.run(model, untuned=untuned)
    print(result.table(), flush=True)
    mixes = score_mixes(evaluator, model, settings.eval) if settings.eval.interpolate else {}
    if settings.json:
        extra = {"interpolate": mixes} if mixes else {}
        write_json(result.to_json(model=checkpoint, **extra), Path(settings.json).expanduser().resolve())
        print(f"wrote {settings.json}", flush=True)
    return result


def score_mixes(evaluator, model, ev) -> dict:
    """`eval.interpolate`'s weight mixes of the untuned model (the model group's, loaded here) and `model`, scored
    and printed; {alpha: {finetuned, delta}}."""
    from contrastive import interpolate

    untuned = interpolate.untuned_state(evaluator.load_baseline())
    mixes = interpolate.score_interpolations(evaluator, model, untuned, list(ev.interpolate))
    print(interpolate.format_table(mixes, interpolate.table_metrics(ev)), flush=True)
    return mixes


@hydra_app("evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()

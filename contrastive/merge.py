r"""Merging finished checkpoints of one base, evaluation only: soups, task arithmetic and TIES (`conf/merge.yaml`).

Fine-tunes of one base with small learning rates stay in its basin, so their weights can be combined. With
:math:`\theta_0` the untuned model (``merge.base``) and :math:`\tau_i = \theta_i - \theta_0` the task vectors:

.. math::

    \text{uniform:}\quad \theta = \sum_i w_i\,\theta_i \quad (\textstyle\sum_i w_i = 1) \qquad
    \text{task\_arithmetic:}\quad \theta = \theta_0 + \lambda \sum_i \tau_i

- ``greedy`` (a greedy soup, Wortsman et al. 2022): the ingredients sorted by their own ``merge.metric`` on
  eval.split, best first; each is added to the uniform soup only if the soup's metric does not fall.
- ``ties`` (Yadav et al. 2023): each :math:`\tau_i` keeps its ``ties_density`` largest-magnitude entries, each
  entry's sign is elected by the sum of the trimmed vectors, and the entries agreeing with it are averaged
  (disjoint mean); :math:`\theta = \theta_0 + \lambda\,\tau_{\text{ties}}`.

One checkpoint with task_arithmetic at :math:`\lambda > 1` extrapolates along its own task vector. Every
floating-point entry of the state dict is merged (non-float buffers are the first ingredient's), and the result is
the first ingredient's model with merged weights: its modules (pooling, normalisation) as saved. An ingredient
whose keys or shapes differ from the base, or whose weights lie further than ``merge.max_distance`` (relative L2)
from :math:`\theta_0` (trained from another base), is refused in one line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from contrastive.cli import hydra_app, user_errors
from contrastive.errors import ModelError
from contrastive.interpolate import State, load_state, untuned_state
from contrastive.utils import write_dir_atomic, write_json

log = logging.getLogger(__name__)

MERGE_FILE = "merge.json"  # in the merged checkpoint: method, ingredients, weights, metrics


# ---------------------------------------------------------------- the arithmetic (torch tensors, no model)
def relative_distance(state: State, base: State) -> float:
    """‖θ − θ0‖ / ‖θ0‖ over every float entry."""
    num = sum(float((state[k].float() - base[k].float()).pow(2).sum()) for k in base)
    den = sum(float(base[k].float().pow(2).sum()) for k in base)
    return math.sqrt(num / max(den, 1e-30))


def check_same_base(base: State, states: Sequence[State], names: Sequence[str], max_distance: float) -> list[float]:
    """Each ingredient's distance to θ0; ModelError naming the first whose keys, shapes or distance say it was not
    fine-tuned from the base."""
    distances = []
    for i, (state, name) in enumerate(zip(states, names)):
        where = f"checkpoints[{i}]={name}"
        if set(state) != set(base):
            extra, missing = sorted(set(state) - set(base))[:2], sorted(set(base) - set(state))[:2]
            raise ModelError(f"{where}: not a model of merge.base's architecture (extra {extra}, missing {missing})")
        for key, tensor in state.items():
            if tuple(tensor.shape) != tuple(base[key].shape):
                raise ModelError(f"{where}: {key} has shape {tuple(tensor.shape)}, the base {tuple(base[key].shape)}")
        d = relative_distance(state, base)
        if d > max_distance:
            raise ModelError(
                f"{where}: its weights lie {d:.3f} from merge.base (relative L2, limit merge.max_distance="
                f"{max_distance:g}): trained from another base? models of different bases are not merged"
            )
        distances.append(d)
    return distances


def uniform(states: Sequence[State], weights: Sequence[float] | None = None) -> State:
    """Σ w_i θ_i with the weights normalised to sum 1 (equal when None), in float32 at least."""
    w = [1.0] * len(states) if weights is None else [float(x) for x in weights]
    total = sum(w)
    out: State = {}
    for key, first in states[0].items():
        acc = sum(s[key].float() * (x / total) for s, x in zip(states, w))
        out[key] = acc.to(first.dtype)
    return out


def task_arithmetic(base: State, states: Sequence[State], lam: float) -> State:
    """θ0 + λ Σ τ_i."""
    return {k: (b.float() + lam * sum(s[k].float() - b.float() for s in states)).to(b.dtype) for k, b in base.items()}


def ties(base: State, states: Sequence[State], lam: float, density: float) -> State:
    """θ0 + λ · TIES(τ_1..τ_n): trim to `density`, elect signs, disjoint mean."""
    import torch

    out: State = {}
    for key, b in base.items():
        taus = torch.stack([s[key].float() - b.float() for s in states])  # (n, ...)
        flat = taus.reshape(len(states), -1)
        keep = max(1, int(round(density * flat.shape[1])))
        threshold = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
        trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
        sign = torch.sign(trimmed.sum(dim=0, keepdim=True))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        merged = (trimmed * agree).sum(dim=0) / agree.sum(dim=0).clamp(min=1)
        out[key] = (b.float() + lam * merged.reshape(b.shape)).to(b.dtype)
    return out


def greedy(states: Sequence[State], score: Callable[[State], float]) -> tuple[State, list[int], list[dict[str, Any]]]:
    """A greedy soup: ingredients best-first by `score` (higher is better), each kept only if the uniform soup's score
    does not fall. Returns the soup, the kept indices and every step's record."""
    alone = [score(s) for s in states]
    order = sorted(range(len(states)), key=lambda i: -alone[i])
    kept = [order[0]]
    best = alone[order[0]]
    steps = [{"ingredient": i, "alone": alone[i]} for i in range(len(states))]
    for i in order[1:]:
        value = score(uniform([states[j] for j in [*kept, i]]))
        steps[i]["soup_with_it"] = value
        if value >= best:
            kept.append(i)
            best = value
        steps[i]["kept"] = i in kept
    steps[order[0]]["kept"] = True
    return uniform([states[j] for j in kept]), kept, steps


def weights_of(method: str, n: int, lam: float, weights: Sequence[float] | None, kept: Sequence[int]) -> dict:
    """Each ingredient's coefficient in θ (and the base's, for task arithmetic); TIES is not linear: its lam."""
    if method == "uniform":
        w = [1.0] * n if weights is None else [float(x) for x in weights]
        return {str(i): x / sum(w) for i, x in enumerate(w)}
    if method == "greedy":
        return {str(i): (1.0 / len(kept) if i in kept else 0.0) for i in range(n)}
    if method == "task_arithmetic":
        return {"base": 1.0 - n * lam, **{str(i): lam for i in range(n)}}
    return {"lam": lam}


# ---------------------------------------------------------------- the entry point
def merge_states(settings: Any, base: State, states: list[State], score: Callable[[State], float]) -> tuple:
    """(merged state, kept ingredient indices, greedy steps) of `merge.method`."""
    m = settings.merge
    everyone = list(range(len(states)))
    if m.method == "uniform":
        return uniform(states, m.weights), everyone, []
    if m.method == "greedy":
        return greedy(states, score)
    if m.method == "task_arithmetic":
        return task_arithmetic(base, states, float(m.lam)), everyone, []
    return ties(base, states, float(m.lam), float(m.ties_density)), everyone, []


def output_dir(settings: Any) -> Path:
    """Where the merged checkpoint goes: `output`, else this command's Hydra run dir + /model."""
    if settings.output:
        return Path(settings.output).expanduser()
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) / "model"


def describe(settings: Any, record: dict[str, Any]) -> str:
    """The model card's section on the merge: method, ingredients with weights and distance, the greedy steps."""
    lines = ["## Merge", "", f"Merged by `contrastive.merge` with `merge.method={settings.merge.method}`"]
    if settings.merge.method in ("task_arithmetic", "ties"):
        lines[-1] += f", `merge.lam={settings.merge.lam:g}` over θ0 = `{settings.merge.base}`"
    lines += ["", "| # | ingredient | weight | distance to θ0 | kept |", "|---|---|---|---|---|"]
    for i, name in enumerate(record["ingredients"]):
        w = record["weights"].get(str(i), "")
        w = f"{w:.4g}" if isinstance(w, float) else w
        kept = "yes" if i in record["kept"] else "no"
        lines.append(f"| {i} | `{name}` | {w} | {record['distances'][i]:.4f} | {kept} |")
    return "\n".join(lines) + "\n"


def run(cfg: Any, objective: Callable[[Any], float] | None = None) -> dict[str, Any]:
    """Load the ingredients, merge, score beside the baseline, save, card, log; the record, with the checkpoint's
    `output_dir` and `mlflow_run_id`. `objective` (an EvalResult -> float, higher better) is what greedy keeps an
    ingredient by; default: `merge.metric` on eval.split."""
    from contrastive.settings import load_merge

    settings = load_merge(cfg)  # every config check, before any work
    from contrastive import tracking
    from contrastive.data import prepare
    from contrastive.evaluation import Evaluator
    from contrastive.model import load_model
    from contrastive.train import eval_protocol

    names = [str(c) for c in settings.checkpoints]
    max_len = settings.model.max_seq_length
    base = untuned_state(load_model(settings.merge.base, max_len, "cpu"))
    models = [load_model(name, max_len, settings.device) for name in names]
    states = [untuned_state(m) for m in models]
    distances = check_same_base(base, states, names, float(settings.merge.max_distance))
    template = models[0]
    del models[1:]
    data = prepare(settings.data)
    evaluator = Evaluator(settings.eval, settings.model, data, settings.device)

    def score(state: State) -> float:
        load_state(template, state)
        result = evaluator.run(template)
        return float(objective(result)) if objective else float(result.finetuned[settings.merge.metric])

    merged, kept, steps = merge_states(settings, base, states, score)
    load_state(template, merged)
    result = evaluator.run(template)
    record = {
        "method": settings.merge.method,
        "lam": settings.merge.lam,
        "base": settings.merge.base,
        "ingredients": names,
        "distances": distances,
        "weights": weights_of(
            settings.merge.method, len(names), float(settings.merge.lam), settings.merge.weights, kept
        ),
        "kept": kept,
        "greedy_steps": steps,
        **result.to_json(),
    }
    out = output_dir(settings)
    card = template.model_card_data
    card.local_files_only = True
    card.model_name = f"merge ({settings.merge.method}) of {len(kept)} QQP fine-tunes"
    card.add_tags([f"merge:{settings.merge.method}"])

    def fill(tmp: Path) -> None:
        template.save(str(tmp))
        readme = tmp / "README.md"
        readme.write_text(readme.read_text() + "\n" + describe(settings, record))
        write_json(record, tmp / MERGE_FILE)

    write_dir_atomic(out, fill)
    name = settings.run_name or f"merge {settings.merge.method} of {len(names)}"
    tags = {
        "kind": "merge",
        "merge_method": settings.merge.method,
        "ingredients": ",".join(names)[:5000],
        "data_fingerprint": data.fingerprint,
        "eval_protocol": eval_protocol(settings.eval),  # what the registry compares a promoted merge on
        "output_dir": str(out),
        "git_commit": tracking.git_commit(),
    }
    with tracking.run(settings.tracking, name, tags) as run_id:
        if run_id:
            weights = {f"merge.weight.{k}": v for k, v in record["weights"].items()}
            tracking.log_params(
                {
                    "merge.method": settings.merge.method,
                    "merge.lam": settings.merge.lam,
                    "merge.base": settings.merge.base,
                    **weights,
                    **{f"merge.ingredient.{i}": n for i, n in enumerate(names)},
                }
            )
            tracking.log_metrics(tracking.eval_metrics(result.finetuned, result.baseline, result.delta))
            tracking.log_artifact(out / MERGE_FILE)
            tracking.log_artifact(out / "README.md")
    print(result.table(), flush=True)
    print(f"merged {len(kept)} of {len(names)} ingredient(s) ({settings.merge.method}) -> {out}", flush=True)
    return record | {"output_dir": str(out), "mlflow_run_id": run_id}


@hydra_app("merge")
def main(cfg: Any) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()

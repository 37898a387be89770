r"""Weight interpolation (WiSE-FT, Wortsman et al. 2022): a mix of the untuned and the fine-tuned weights.

.. math::

    \theta(\alpha) = (1 - \alpha)\,\theta_{\text{untuned}} + \alpha\,\theta_{\text{tuned}}
                   = \theta_{\text{untuned}} + \alpha\,\tau, \qquad \alpha \in [0, 2]

over every floating-point entry of the model's state dict; non-float entries (integer buffers such as position
ids) are taken from the tuned model. :math:`\alpha = 1` is the fine-tuned model, :math:`\alpha = 0` the untuned
one; :math:`\alpha > 1` extrapolates along the task vector :math:`\tau` (task arithmetic, Ilharco et al. 2023).
Fine-tuning all-MiniLM-L6-v2 from its own starting point keeps both ends in one basin, so the mixes in
between are models too, often better than either end on the metric that fine-tuning hurt.

`untuned_state` takes the CPU copy of the untuned weights (before training); `interpolated` applies a mix to a
model in place for the duration of a `with` block and restores the tuned weights exactly; `apply_interpolation`
makes a mix permanent (what `model.interpolate` saves and serves); `score_interpolations` scores the mixes of
`eval.interpolate` with the run's Evaluator (the baseline is cached: each mix costs one encode and the scoring).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from contrastive.errors import ModelError
from contrastive.utils import fmt_metric

State = dict[str, Any]  # parameter / buffer name -> torch.Tensor


def is_float(tensor: Any) -> bool:
    """A floating-point tensor (the entries that are mixed)."""
    return bool(tensor.is_floating_point())


def untuned_state(model: Any) -> State:
    """A CPU copy of the model's floating-point state dict: the untuned weights, taken BEFORE training."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if is_float(v)}


def need_alpha(alpha: float) -> float:
    """`alpha` as a float in [0, MAX_ALPHA] (ValueError otherwise); past 1 it extrapolates along τ = tuned − untuned."""
    from contrastive.settings import MAX_ALPHA

    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not (math.isfinite(alpha) and 0 <= alpha <= MAX_ALPHA)
    ):
        raise ValueError(f"interpolation alpha={alpha!r}: must be a number in [0, {MAX_ALPHA:g}]")
    return float(alpha)


def mixed_state(untuned: Mapping[str, Any], tuned: Mapping[str, Any], alpha: float) -> State:
    """θ(α) = (1−α)·untuned + α·tuned for every float entry of `tuned` (on its device and dtype); non-float entries
    are `tuned`'s. α = 0 and α = 1 give the untuned and tuned tensors exactly."""
    alpha = need_alpha(alpha)
    floats = {k for k, v in tuned.items() if is_float(v)}
    if floats != set(untuned):
        missing, extra = sorted(floats - set(untuned)), sorted(set(untuned) - floats)
        raise ModelError(
            f"weight interpolation: the untuned and tuned models differ (missing {missing[:3]}, extra {extra[:3]})"
        )
    mixed: State = {}
    for name, t in tuned.items():
        if name not in floats:
            mixed[name] = t
            continue
        u = untuned[name]
        if tuple(u.shape) != tuple(t.shape):
            raise ModelError(f"weight interpolation: {name} has shape {tuple(u.shape)} untuned, {tuple(t.shape)} tuned")
        u = u.to(device=t.device, dtype=t.dtype)
        if alpha == 0.0:
            mixed[name] = u
        elif alpha == 1.0:
            mixed[name] = t
        else:  # in float32 at least (half-precision weights are mixed in float32, then cast back)
            wide = t.float() if t.element_size() < 4 else t
            mixed[name] = (u.to(wide.dtype) * (1.0 - alpha) + wide * alpha).to(t.dtype)
    return mixed


def load_state(model: Any, state: Mapping[str, Any]) -> None:
    """Copy `state`'s tensors into the model's own (in place: parameters stay the same objects)."""
    import torch

    own = model.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)


def tuned_state(model: Any) -> State:
    """A copy (same device) of the model's floating-point state dict: what `interpolated` restores."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if is_float(v)}


def apply_interpolation(model: Any, untuned: Mapping[str, Any], alpha: float) -> None:
    """Make the model θ(α) for good (its current weights are the tuned ones)."""
    load_state(model, mixed_state(untuned, model.state_dict(), alpha))


@contextlib.contextmanager
def interpolated(model: Any, untuned: Mapping[str, Any], alpha: float) -> Iterator[Any]:
    """The model as θ(α) inside the block; its tuned weights are restored exactly on the way out."""
    tuned = tuned_state(model)
    try:
        load_state(model, mixed_state(untuned, tuned, alpha))
        yield model
    finally:
        load_state(model, tuned)


# ---------------------------------------------------------------- scoring the mixes
def alpha_key(alpha: float) -> str:
    """The metrics.json key of a mix: the α as Python writes the float (0.5, 1.0)."""
    return repr(float(alpha))


def score_interpolations(evaluator: Any, model: Any, untuned: Mapping[str, Any], alphas: Sequence[float]) -> dict:
    """{alpha_key: {"finetuned": metrics, "delta": per-metric delta and CI}} of every mix, each scored by
    `evaluator.run` beside the (cached) untuned baseline; the model keeps its tuned weights."""
    entries: dict[str, dict[str, Any]] = {}
    for alpha in alphas:
        with interpolated(model, untuned, alpha):
            result = evaluator.run(model)
        entries[alpha_key(alpha)] = {"finetuned": result.finetuned, "delta": result.delta}
    return entries


def objective_at(evaluator: Any, model: Any, untuned: Mapping[str, Any], alpha: float) -> float:
    """The evaluator's intermediate objective of θ(α) built from the model's current weights (restored after)."""
    with interpolated(model, untuned, alpha):
        return evaluator.objective(model)


def table_metrics(ev: Any) -> list[str]:
    """The metrics of the printed table: the objective(s), MRR@k and pair AP."""
    return list(dict.fromkeys([*ev.objective_names, f"mrr_at_{ev.k}", "pair_ap"]))


def format_table(entries: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], used: float | None = None) -> str:
    """One row per α: each metric's value and its delta on the baseline; `used` marks model.interpolate's α."""
    head = "alpha  " + "".join(f"{m:>14}{'delta':>10}" for m in metrics)
    lines = ["weight interpolation θ(α) = (1-α)·untuned + α·tuned (α=1: the trained model, α=0: the untuned)", head]
    for key, entry in entries.items():
        ft, delta = entry.get("finetuned") or {}, entry.get("delta") or {}
        cells = "".join(
            f"{fmt_metric(ft.get(m)):>14}{fmt_metric((delta.get(m) or {}).get('delta'), signed=True):>10}"
            for m in metrics
        )
        mark = "  <- model.interpolate" if used is not None and key == alpha_key(used) else ""
        lines.append(f"{key:<7}{cells}{mark}")
    return "\n".join(lines)

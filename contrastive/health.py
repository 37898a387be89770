"""Is a finished run healthy? Flags for a run that trained nothing (loss and gradient zero) or wrecked the model
(the objective far below the untuned baseline's), so such a run is not reported as a plain success."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def no_gradient(history: Sequence[Mapping[str, Any]]) -> str | None:
    """A flag when every logged loss and gradient norm is 0 (nothing was learned: e.g. an absurd loss.scale)."""
    losses = [float(e["loss"]) for e in history if "loss" in e]
    grads = [float(e["grad_norm"]) for e in history if e.get("grad_norm") is not None]
    if losses and all(v == 0 for v in losses) and all(g == 0 for g in grads):
        return f"no_gradient: all {len(losses)} logged losses and gradient norms are 0 (nothing was learned)"
    return None


def collapsed(
    finetuned: Mapping[str, float], baseline: Mapping[str, float] | None, names: Sequence[str], drop: float
) -> list[str]:
    """A flag per objective metric that ended more than `drop` below the baseline's."""
    if not baseline:
        return []
    flags = []
    for name in names:
        ft, base = finetuned.get(name), baseline.get(name)
        if ft is None or base is None or not (math.isfinite(ft) and math.isfinite(base)):
            continue
        if ft < base - drop:
            flags.append(
                f"collapsed: {name} {ft:.4f} vs the baseline's {base:.4f} (more than eval.collapse_drop={drop} below)"
            )
    return flags


def run_flags(history: Sequence[Mapping[str, Any]], result: Any, names: Sequence[str], drop: float) -> list[str]:
    """Every health flag of a finished run ([] when healthy)."""
    flag = no_gradient(history)
    return ([flag] if flag else []) + collapsed(result.finetuned, result.baseline, names, drop)

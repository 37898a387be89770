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


def zero_mnrl(history: Sequence[Mapping[str, Any]]) -> str | None:
    """A flag when every logged MNRL term is 0 (e.g. `loss.scale=1e38` saturates the softmax: nothing in-batch
    is learned while the auxiliary loss still moves the weights, so `no_gradient` does not fire)."""
    terms = [float(e["loss_mnrl"]) for e in history if e.get("loss_mnrl") is not None]
    if terms and all(v == 0 for v in terms):
        return f"zero_mnrl: all {len(terms)} logged MNRL losses are 0 (the in-batch ranking loss taught nothing)"
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


def flag_names(flags: Sequence[str]) -> str:
    """The run's `health` tag: the flags' names joined by commas, `ok` when there are none."""
    return ",".join(f.partition(":")[0] for f in flags) or "ok"


def run_flags(history: Sequence[Mapping[str, Any]], result: Any, names: Sequence[str], drop: float) -> list[str]:
    """Every health flag of a finished run ([] when healthy)."""
    flags = [flag for flag in (no_gradient(history), zero_mnrl(history)) if flag]
    return flags + collapsed(result.finetuned, result.baseline, names, drop)

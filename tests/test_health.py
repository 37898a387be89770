"""Run health flags: nothing learned (loss and gradient 0), or a model wrecked far below the baseline."""

from __future__ import annotations

from types import SimpleNamespace

from contrastive.health import collapsed, no_gradient, run_flags


def test_no_gradient_needs_every_loss_and_gradient_zero():
    assert no_gradient([{"loss": 0.0, "grad_norm": 0.0}, {"loss": 0.0, "grad_norm": 0.0}]).startswith("no_gradient:")
    assert no_gradient([{"loss": 0.0, "grad_norm": 0.0}, {"loss": 0.1, "grad_norm": 0.0}]) is None
    assert no_gradient([{"loss": 0.0, "grad_norm": 0.3}]) is None
    assert no_gradient([{"train_runtime": 3.0}]) is None  # no loss logged: nothing to judge


def test_collapsed_flags_only_objectives_far_below_the_baseline():
    base = {"mrr_at_10": 0.97, "pair_ap": 0.80}
    wrecked = {"mrr_at_10": 0.157, "pair_ap": 0.79}
    (flag,) = collapsed(wrecked, base, ["mrr_at_10", "pair_ap"], 0.1)
    assert flag == "collapsed: mrr_at_10 0.1570 vs the baseline's 0.9700 (more than eval.collapse_drop=0.1 below)"
    assert collapsed({"mrr_at_10": 0.90, "pair_ap": 0.80}, base, ["mrr_at_10"], 0.1) == []
    assert collapsed(wrecked, None, ["mrr_at_10"], 0.1) == []  # no baseline scored
    assert collapsed({"mrr_at_10": float("nan")}, base, ["mrr_at_10"], 0.1) == []


def test_run_flags_lists_both():
    result = SimpleNamespace(finetuned={"mrr_at_10": 0.1}, baseline={"mrr_at_10": 0.9})
    flags = run_flags([{"loss": 0.0, "grad_norm": 0.0}], result, ["mrr_at_10"], 0.1)
    assert [f.partition(":")[0] for f in flags] == ["no_gradient", "collapsed"]

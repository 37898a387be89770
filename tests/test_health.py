"""Run health flags: nothing learned (loss and gradient 0), or a model wrecked far below the baseline."""

from __future__ import annotations

from types import SimpleNamespace

from contrastive.health import collapsed, flag_names, no_gradient, run_flags, zero_mnrl


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


def test_zero_mnrl_catches_a_saturated_ranking_loss_the_aux_loss_hides():
    """Seen: loss.scale=1e38 trained with loss_mnrl 0 and was tagged health=ok (the aux loss kept gradients)."""
    history = [{"loss": 0.2, "loss_mnrl": 0.0, "loss_cosine": 0.2, "grad_norm": 1.5}] * 3
    assert no_gradient(history) is None
    assert zero_mnrl(history) == "zero_mnrl: all 3 logged MNRL losses are 0 (the in-batch ranking loss taught nothing)"
    assert zero_mnrl([{"loss": 0.2, "loss_mnrl": 0.0}, {"loss": 0.3, "loss_mnrl": 0.1}]) is None
    assert zero_mnrl([{"loss": 0.0}]) is None  # no MNRL term logged on its own
    result = SimpleNamespace(finetuned={"mrr_at_10": 0.9}, baseline={"mrr_at_10": 0.9})
    flags = run_flags(history, result, ["mrr_at_10"], 0.1)
    assert flag_names(flags) == "zero_mnrl" and flag_names([]) == "ok"

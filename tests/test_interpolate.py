"""Weight interpolation (contrastive/interpolate.py): the mix, its in-place application and restore, the scoring of
`eval.interpolate`, its MLflow names, the sweep's search over `model.interpolate`, and one end-to-end run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config, train_settings
from torch import nn

from contrastive import PROJECT_ROOT, tracking
from contrastive.errors import ModelError
from contrastive.interpolate import (
    alpha_key,
    apply_interpolation,
    format_table,
    interpolated,
    mixed_state,
    need_alpha,
    objective_at,
    score_interpolations,
    untuned_state,
)


class Tiny(nn.Module):
    """A float layer, a float buffer and a persistent integer buffer (like position ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)
        self.register_buffer("scale", torch.ones(3))
        self.register_buffer("ids", torch.arange(5))


def _tiny_pair(seed: int = 0) -> tuple[Tiny, dict, dict]:
    """A model whose weights went from `untuned` to `tuned` (as training would), the integer buffer changed too."""
    torch.manual_seed(seed)
    model = Tiny()
    untuned = untuned_state(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.scale.mul_(3.0)
        model.ids.add_(10)
    tuned = {k: v.clone() for k, v in model.state_dict().items()}
    return model, untuned, tuned


def _equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_untuned_state_is_a_cpu_copy_of_the_float_entries():
    model = Tiny()
    state = untuned_state(model)
    assert set(state) == {"layer.weight", "layer.bias", "scale"}  # the integer buffer is not kept
    assert all(v.device.type == "cpu" for v in state.values())
    before = state["layer.weight"].clone()
    with torch.no_grad():
        model.layer.weight.add_(1.0)
    assert torch.equal(state["layer.weight"], before)  # a copy, not a view of the live weights


def test_alpha_0_is_the_untuned_weights_and_1_the_tuned_exactly():
    _, untuned, tuned = _tiny_pair()
    at0, at1 = mixed_state(untuned, tuned, 0.0), mixed_state(untuned, tuned, 1)
    assert _equal({k: at0[k] for k in untuned}, untuned)
    assert _equal(at1, tuned)
    assert torch.equal(at0["ids"], tuned["ids"])  # non-float entries: the tuned model's at every alpha


def test_alpha_half_is_the_mean_and_the_mix_is_linear():
    _, untuned, tuned = _tiny_pair()
    half = mixed_state(untuned, tuned, 0.5)
    for name in untuned:
        assert torch.allclose(half[name], (untuned[name] + tuned[name]) / 2, atol=0, rtol=1e-6)
    at = {a: mixed_state(untuned, tuned, a)["layer.weight"] for a in (0.2, 0.8)}
    expected = 0.8 * untuned["layer.weight"] + 0.2 * tuned["layer.weight"]
    assert torch.allclose(at[0.2], expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(half["ids"], tuned["ids"])
    assert not torch.equal(half["layer.weight"], tuned["layer.weight"])


def test_alpha_past_1_extrapolates_along_the_task_vector():
    _, untuned, tuned = _tiny_pair()
    far = mixed_state(untuned, tuned, 1.5)
    for name in untuned:
        expected = untuned[name] + 1.5 * (tuned[name] - untuned[name])
        assert torch.allclose(far[name], expected, rtol=1e-6, atol=1e-6)


def test_half_precision_weights_are_mixed_and_keep_their_dtype():
    untuned = {"w": torch.tensor([0.0, 1.0], dtype=torch.float16)}
    tuned = {"w": torch.tensor([1.0, 3.0], dtype=torch.float16)}
    mixed = mixed_state(untuned, tuned, 0.25)["w"]
    assert mixed.dtype == torch.float16 and mixed.tolist() == [0.25, 1.5]


def test_interpolated_applies_the_mix_in_place_and_restores_the_tuned_model_exactly():
    model, untuned, tuned = _tiny_pair()
    params = [id(p) for p in model.parameters()]
    with interpolated(model, untuned, 0.3) as inside:
        assert inside is model
        assert _equal(model.state_dict(), mixed_state(untuned, tuned, 0.3))
        assert torch.equal(model.ids, tuned["ids"])
    assert _equal(model.state_dict(), tuned)
    assert [id(p) for p in model.parameters()] == params  # the same parameter objects (an optimiser keeps them)
    with pytest.raises(RuntimeError, match="boom"), interpolated(model, untuned, 0.0):
        raise RuntimeError("boom")
    assert _equal(model.state_dict(), tuned)  # restored after an error too


def test_apply_interpolation_keeps_the_mix():
    model, untuned, tuned = _tiny_pair()
    apply_interpolation(model, untuned, 0.8)
    assert _equal(model.state_dict(), mixed_state(untuned, tuned, 0.8))
    apply_interpolation(model, untuned, 1.0)  # alpha 1: unchanged
    assert _equal(model.state_dict(), mixed_state(untuned, tuned, 0.8))


def test_mismatched_models_and_bad_alphas_are_refused():
    _, untuned, tuned = _tiny_pair()
    with pytest.raises(ModelError, match="differ"):
        mixed_state({k: v for k, v in untuned.items() if k != "scale"}, tuned, 0.5)
    with pytest.raises(ModelError, match="shape"):
        mixed_state({**untuned, "scale": torch.ones(4)}, tuned, 0.5)
    for bad in (2.5, -0.1, math.nan, math.inf, True, "0.5"):
        with pytest.raises(ValueError, match="alpha"):
            need_alpha(bad)


def test_the_real_model_is_restored_after_a_mix(minilm):
    """all-MiniLM-L6-v2 (its integer buffers are not in the state dict): a mix changes the embeddings, the restore
    gives back the same weights and embeddings."""
    untuned = untuned_state(minilm)
    before = {k: v.clone() for k, v in minilm.state_dict().items()}
    text = ["How do I learn Python?"]
    emb = minilm.encode(text)
    zero = {k: torch.zeros_like(v) for k, v in untuned.items()}
    name = "0.model.embeddings.word_embeddings.weight"
    with interpolated(minilm, zero, 0.5):
        assert torch.equal(minilm.state_dict()[name], before[name] / 2)
        assert abs(minilm.encode(text) - emb).max() > 1e-3
    with interpolated(minilm, untuned, 0.5):  # untuned == tuned here: every mix is the same model
        assert (abs(minilm.encode(text) - emb).max()) < 1e-5
    assert _equal(minilm.state_dict(), before)


class _StubEvaluator:
    """Scores a Tiny model by its first weight (as `Evaluator.run` / `.objective` would score the model)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def run(self, model):
        value = float(model.layer.weight[0, 0].detach())
        self.seen.append(value)
        return SimpleNamespace(finetuned={"mrr_at_10": value, "n_queries": 5}, delta={"mrr_at_10": {"delta": value}})

    def objective(self, model):
        return float(model.layer.weight[0, 0].detach())


def test_score_interpolations_scores_every_alpha_and_leaves_the_tuned_model():
    model, untuned, tuned = _tiny_pair()
    u, t = float(untuned["layer.weight"][0, 0]), float(tuned["layer.weight"][0, 0])
    entries = score_interpolations(_StubEvaluator(), model, untuned, [0.0, 0.5, 1.0])
    assert list(entries) == ["0.0", "0.5", "1.0"]
    assert entries["0.0"]["finetuned"]["mrr_at_10"] == u and entries["1.0"]["finetuned"]["mrr_at_10"] == t
    assert entries["0.5"]["finetuned"]["mrr_at_10"] == pytest.approx((u + t) / 2)
    assert entries["0.5"]["delta"]["mrr_at_10"]["delta"] == pytest.approx((u + t) / 2)
    assert _equal(model.state_dict(), tuned)
    assert objective_at(_StubEvaluator(), model, untuned, 0.0) == u and _equal(model.state_dict(), tuned)
    table = format_table(entries, ["mrr_at_10"], used=0.5)
    assert "0.5" in table and "<- model.interpolate" in table and len(table.splitlines()) == 5


def test_alpha_keys_and_mlflow_names():
    assert [alpha_key(a) for a in (0, 0.5, 1)] == ["0.0", "0.5", "1.0"]
    entry = {"finetuned": {"mrr_at_10": 0.9, "n_queries": 7}, "delta": {"mrr_at_10": {"delta": 0.01, "ci_low": 0.0}}}
    names = tracking.interpolation_metrics({"0.5": entry, "1.0": entry})
    assert names["interp/0_5/finetuned/mrr_at_10"] == 0.9 and names["interp/1_0/delta/mrr_at_10"] == 0.01
    assert names["interp/0_5/ci/mrr_at_10/low"] == 0.0
    assert not any("." in n for n in names) and not any("n_queries" in n for n in names)  # one namespace style


def test_the_sweep_can_search_model_interpolate():
    """`model.interpolate: interval(0.3, 1.0)` or `choice(0.7, 1.0)` in a sweep (Hydra's choice() takes no null; 1.0 is
    the trained model): the Optuna sweeper plugin makes it a distribution, and a sampled value composes into valid
    settings."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from hydra_plugins.contrastive_sweeper.search_space import parse_search_space, trial_overrides

    space = parse_search_space({"model.interpolate": "interval(0.3, 1.0)"}, ["data=fixture"])
    assert space.distributions["model.interpolate"] == FloatDistribution(0.3, 1.0)
    overrides = trial_overrides(SimpleNamespace(params={"model.interpolate": 0.6180339887}), space)
    assert train_settings(*overrides).model.interpolate == 0.6180339887
    space = parse_search_space({}, ["model.interpolate=choice(0.7,1.0)"])
    assert space.distributions["model.interpolate"] == CategoricalDistribution([0.7, 1.0])
    overrides = trial_overrides(SimpleNamespace(params={"model.interpolate": 1.0}), space)
    assert train_settings(*overrides).model.interpolate == 1.0


@pytest.mark.slow
def test_train_run_scores_the_mixes_and_keeps_model_interpolate(tmp_path):
    """A fixture run with `eval.interpolate=[0.5,0.8,1.0] model.interpolate=0.8`: metrics.json holds every mix, the
    run's `finetuned` metrics and deltas are the 0.8 mix's exactly, MLflow has `interp/<alpha>/...` and the
    checkpoint's card says WiSE-FT."""
    args = [
        sys.executable,
        "-m",
        "contrastive.train",
        "data=fixture",
        "trainer.max_steps=4",
        "batch.size=8",
        "eval.n_boot=50",
        "eval.umap.enabled=false",
        "tracking.log_model=false",
        "eval.interpolate=[0.5,0.8,1.0]",
        "model.interpolate=0.8",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model_interpolate"] == 0.8
    assert list(metrics["interpolate"]) == ["0.5", "0.8", "1.0"]
    assert metrics["interpolate"]["0.8"]["finetuned"] == metrics["finetuned"]  # the run's model IS the 0.8 mix
    assert metrics["interpolate"]["0.8"]["delta"] == metrics["delta"]
    for entry in metrics["interpolate"].values():
        assert 0 <= entry["finetuned"]["mrr_at_10"] <= 1 and "ci_low" in entry["delta"]["pair_ap"]
    assert "weight interpolation" in proc.stdout and "<- model.interpolate" in proc.stdout

    tracking.configure(f"sqlite:///{tmp_path / 'mlruns.db'}", "contrastive")
    info = tracking.run_info(metrics["mlflow_run_id"])
    assert info["params"]["model.interpolate"] == "0.8" and info["params"]["eval.interpolate"] == "[0.5, 0.8, 1.0]"
    got = info["metrics"]
    assert got["interp/0_8/finetuned/mrr_at_10"] == got["finetuned/mrr_at_10"]
    assert {"interp/0_5/delta/pair_ap", "interp/1_0/ci/mrr_at_10/low"} <= set(got)
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "0.2·base + 0.8·fine-tuned (WiSE-FT)" in card


def test_default_settings_ask_for_no_interpolation():
    settings = train_settings()
    assert settings.model.interpolate is None and settings.eval.interpolate == []


def test_metrics_json_gets_interpolation_keys_only_when_asked():
    from contrastive.train import interpolation_extra

    assert interpolation_extra({}, None) == {}
    assert interpolation_extra({}, 0.7) == {"model_interpolate": 0.7}
    assert interpolation_extra({"0.5": {}}, None) == {"interpolate": {"0.5": {}}}


@pytest.mark.slow
def test_evaluate_scores_the_mixes_of_any_checkpoint(tmp_path, capsys):
    """`python -m contrastive.evaluate checkpoint=... eval.interpolate=[..]`: WiSE-FT of a checkpoint, no training.
    With the untuned model as the checkpoint every mix is that model: the same metrics as the checkpoint's, exactly."""
    from contrastive import evaluate
    from contrastive.model import packaged_model_dir

    out = tmp_path / "m.json"
    cfg = compose_config(
        "evaluate",
        f"checkpoint={packaged_model_dir()}",
        "data=fixture",
        "eval.n_boot=20",
        "eval.interpolate=[0.0,0.5]",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"json={out}",
    )
    result = evaluate.run(cfg)
    doc = json.loads(out.read_text())
    assert list(doc["interpolate"]) == ["0.0", "0.5"]
    for entry in doc["interpolate"].values():
        assert entry["finetuned"] == doc["finetuned"] == json.loads(json.dumps(result.finetuned))
        assert entry["delta"]["mrr_at_10"]["delta"] == 0
    assert "weight interpolation" in capsys.readouterr().out

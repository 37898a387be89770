"""Merging (contrastive/merge.py): the arithmetic of each method, the greedy soup's choices, the refusal of models of
another base, and the entry point end to end on the fixture (a normal checkpoint out, its card and record)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import perturbed_checkpoint, run_module

from contrastive.errors import ModelError
from contrastive.merge import check_same_base, greedy, task_arithmetic, ties, uniform, weights_of


def _states():
    base = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    a = {"w": torch.tensor([1.2, 1.0, 0.9, 1.0])}
    b = {"w": torch.tensor([1.0, 1.1, 0.8, 1.3])}
    return base, a, b


def test_uniform_soup_is_the_weighted_mean():
    _, a, b = _states()
    assert torch.allclose(uniform([a, b])["w"], (a["w"] + b["w"]) / 2)
    assert torch.allclose(uniform([a, b], [3, 1])["w"], 0.75 * a["w"] + 0.25 * b["w"])  # weights normalised


def test_task_arithmetic_adds_the_scaled_task_vectors_and_extrapolates_one():
    base, a, b = _states()
    both = task_arithmetic(base, [a, b], 0.5)["w"]
    assert torch.allclose(both, base["w"] + 0.5 * ((a["w"] - base["w"]) + (b["w"] - base["w"])))
    far = task_arithmetic(base, [a], 1.5)["w"]
    assert torch.allclose(far, base["w"] + 1.5 * (a["w"] - base["w"]))


def test_ties_trims_elects_signs_and_averages_the_agreeing_entries():
    base = {"w": torch.zeros(4)}
    a = {"w": torch.tensor([0.4, -0.1, 0.3, 0.0])}
    b = {"w": torch.tensor([0.2, 0.5, -0.6, 0.05])}
    out = ties(base, [a, b], lam=1.0, density=0.5)["w"]  # keep 2 of 4 per vector: a {0, 2}, b {1, 2}
    # entry 0: only a (0.4); entry 1: only b (0.5); entry 2: 0.3 vs -0.6, the sum elects "-": -0.6; entry 3: none
    assert torch.allclose(out, torch.tensor([0.4, 0.5, -0.6, 0.0]))


def test_greedy_keeps_an_ingredient_only_if_the_soup_does_not_get_worse():
    a, b, bad = {"w": torch.tensor([1.0])}, {"w": torch.tensor([0.9])}, {"w": torch.tensor([-5.0])}

    def score(state):  # best at w = 0.96: a alone -0.04, b alone -0.06, their soup (0.95) -0.01
        return -abs(float(state["w"][0]) - 0.96)

    soup, kept, steps = greedy([bad, b, a], score)
    assert kept == [2, 1] and torch.allclose(soup["w"], torch.tensor([0.95]))
    assert steps[0]["kept"] is False and steps[1]["kept"] is True and steps[2]["kept"] is True
    assert steps[0]["soup_with_it"] < steps[1]["soup_with_it"]
    assert weights_of("greedy", 3, 1.0, None, kept) == {"0": 0.0, "1": 0.5, "2": 0.5}
    _, kept_alone, _ = greedy([a, bad], lambda s: -abs(float(s["w"][0]) - 1.0))
    assert kept_alone == [0]


def test_models_of_another_base_or_shape_are_refused_in_one_line():
    base, a, _ = _states()
    assert check_same_base(base, [a], ["A"], 0.25)[0] == pytest.approx(
        float(torch.linalg.norm(a["w"] - base["w"]) / torch.linalg.norm(base["w"]))
    )
    other = {"w": torch.tensor([3.0, -2.0, 0.5, 4.0])}
    with pytest.raises(ModelError, match=r"checkpoints\[1\]=B: its weights lie .* from merge.base") as err:
        check_same_base(base, [a, other], ["A", "B"], 0.25)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match=r"checkpoints\[0\]=C: w has shape \(2,\)"):
        check_same_base(base, [{"w": torch.zeros(2)}], ["C"], 0.25)
    with pytest.raises(ModelError, match="not a model of merge.base's architecture"):
        check_same_base(base, [{"v": torch.zeros(4)}], ["D"], 0.25)


@pytest.mark.slow
def test_merge_entry_point_writes_a_normal_checkpoint_naming_its_ingredients(tmp_path, minilm):
    from sentence_transformers import SentenceTransformer

    a = perturbed_checkpoint(minilm, tmp_path / "a", 0.01, 1)
    b = perturbed_checkpoint(minilm, tmp_path / "b", 0.02, 2)
    out = tmp_path / "merged"
    common = (
        "data=fixture",
        f"paths.cache_dir={tmp_path}/cache",
        f"paths.output_root={tmp_path}/out",
        "eval.n_boot=50",
        "eval.umap.enabled=false",
    )
    done = run_module(
        "contrastive.merge", f"checkpoints=[{a},{b}]", "merge.method=greedy", f"output={out}", *common, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "merged" in done.stdout and "mrr_at_10" in done.stdout
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "greedy" and record["ingredients"] == [str(a), str(b)]
    assert record["kept"] and len(record["greedy_steps"]) == 2 and "finetuned" in record
    card = (out / "README.md").read_text()
    assert "## Merge" in card and str(a) in card and str(b) in card and "| weight |" in card
    loaded = SentenceTransformer(str(out), device="cpu")  # no project code needed
    assert loaded.encode(["How do I learn Python?"]).shape == (1, 384)
    far = perturbed_checkpoint(minilm, tmp_path / "far", 3.0, 3)
    refused = run_module("contrastive.merge", f"checkpoints=[{a},{far}]", f"output={tmp_path}/x", *common, timeout=300)
    assert refused.returncode == 2 and "models of different bases are not merged" in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.stderr and not (tmp_path / "x").exists()


def test_merge_settings_refuse_what_cannot_be_merged_in_one_line():
    from conftest import compose_config

    from contrastive.errors import ConfigError
    from contrastive.settings import load_merge

    cases = [
        ((), "checkpoints: missing; pass checkpoints=[DIR_A,DIR_B,...]"),
        (("checkpoints=[a]",), "checkpoints=['a']: a uniform soup needs two checkpoints or more"),
        (("checkpoints=[a,a]", "merge.method=greedy"), "checkpoints=['a', 'a']: names repeat"),
        (("checkpoints=[a,b]", "merge.lam=2.5", "merge.method=task_arithmetic"), "merge.lam=2.5: must be a number"),
        (("checkpoints=[a,b]", "merge.weights=[1]"), "merge.weights=[1.0]: must give one weight per checkpoint (2)"),
        (("checkpoints=[a,b]", "merge.method=ties", "merge.weights=[1,2]"), "merge.weights=[1.0, 2.0]: only merge"),
        (("checkpoints=[a,b]", "merge.method=soup"), "merge.method='soup': choose one of"),
    ]
    for overrides, start in cases:
        with pytest.raises(ConfigError) as err:
            load_merge(compose_config("merge", *overrides))
        assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)
    ok = load_merge(compose_config("merge", "checkpoints=[a]", "merge.method=task_arithmetic", "merge.lam=1.5"))
    assert ok.merge.lam == 1.5 and list(ok.checkpoints) == ["a"]

"""`hydra.sweeper.warm_start`: recorded runs enter the study as finished trials, only those that match and lie in
the space; the rest are counted with a reason. Whole sweeps of the toy task (tests/sweep_toy/app.py)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from sweep_toy.runner import load_toy_study, run_toy

from hydra_plugins.contrastive_sweeper import SweeperConfigError
from hydra_plugins.contrastive_sweeper._warm_start import Skip, record_params, record_values, warm_start_conf
from hydra_plugins.contrastive_sweeper.search_space import SearchSpace

RECORDS = [
    {"name": "good", "protocol": "toy-v1", "overrides": ["x=2.0"], "finetuned": {"toy": -0.0}},
    {"name": "good_params", "protocol": "toy-v1", "params": {"x": 1.0}, "values": [-1.0]},
    {"name": "outside", "protocol": "toy-v1", "overrides": ["x=9.0"], "values": [-49.0]},
    {"name": "other_protocol", "protocol": "toy-v0", "overrides": ["x=2.1"], "values": [-0.01]},
    {"name": "no_protocol", "overrides": ["x=2.2"], "values": [-0.04]},
    {"name": "no_value", "protocol": "toy-v1", "overrides": ["x=2.3"], "finetuned": {}},
]


def write_records(path: Path) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    return path


def test_a_warm_started_sweep_adds_matching_runs_and_counts_the_rest(tmp_path):
    records = write_records(tmp_path / "runs.jsonl")
    args = (
        f"++hydra.sweeper.warm_start.files=[{records}]",
        "++hydra.sweeper.warm_start.match.protocol=toy-v1",
        "++hydra.sweeper.metric_names=toy",
        "hydra.sweeper.n_trials=2",
        "make_model=true",
    )
    run_toy(tmp_path, *args)
    study = load_toy_study(tmp_path)
    warm = [t for t in study.trials if t.user_attrs.get("warm_start")]
    ran = [t for t in study.trials if not t.user_attrs.get("warm_start")]
    assert [(t.user_attrs["warm_start"], t.params, t.values) for t in warm] == [
        ("runs.jsonl#good", {"x": 2.0}, [0.0]),
        ("runs.jsonl#good_params", {"x": 1.0}, [-1.0]),
    ]
    assert [t.number for t in warm] == [0, 1]  # before the first ask: the sampler sees them
    assert len(ran) == 2 and {t.state for t in ran} == {TrialState.COMPLETE}  # n_trials counts the trials run
    assert study.user_attrs["warm_start_summary"]["skipped"] == {
        "x outside the space": 1,
        "another protocol": 1,
        "no protocol": 1,
        "no value per objective": 1,
    }
    summary = json.loads((tmp_path / "sweeps" / "toy" / "summary.json").read_text())
    assert summary["best_trial"] in {t.number for t in ran}  # a recorded run has no model: never promoted
    assert summary["states"] == {"COMPLETE": 2}

    run_toy(tmp_path, *args)  # a rerun resumes: nothing is added twice, the budget is already spent
    again = load_toy_study(tmp_path)
    assert len(again.trials) == 4
    assert again.user_attrs["warm_start_summary"]["skipped"]["already added"] == 2


def test_a_record_takes_unset_params_from_the_sweep_config_and_must_agree_with_fixed_ones():
    space = SearchSpace(
        distributions={
            "lr": FloatDistribution(1e-5, 1e-4, log=True),
            "neg": CategoricalDistribution(["mined", "both"]),
        },
        fixed={"aux": "aux=cosent"},
    )
    defaults = OmegaConf.create({"lr": 2e-5, "neg": "mined", "aux": "cosent"})
    assert record_params({"overrides": ["neg=both"]}, space, defaults) == {"lr": 2e-5, "neg": "both"}
    with pytest.raises(Skip, match="aux is not the fixed cosent"):
        record_params({"overrides": ["aux=cosine"]}, space, defaults)
    with pytest.raises(Skip, match="neg outside the space"):
        record_params({"overrides": ["neg=labeled"]}, space, defaults)
    with pytest.raises(Skip, match="mnrl differs from the sweep's"):  # a lever the space does not hold
        record_params({"overrides": ["mnrl=gist"]}, space, defaults)
    ignored = {"overrides": ["paths.cache_dir=.cache", "neg=both"]}
    assert record_params(ignored, space, defaults, ignore=["paths.*"]) == {"lr": 2e-5, "neg": "both"}
    assert record_values({"finetuned": {"a": 0.9, "b": 0.8}}, ["a", "b"], 2, "finetuned") == [0.9, 0.8]
    with pytest.raises(Skip):
        record_values({"finetuned": {"a": float("nan")}}, ["a"], 1, "finetuned")


def test_warm_start_settings_are_checked():
    assert warm_start_conf({"files": [], "study": None}) is None  # nothing to add
    assert warm_start_conf({"files": "a.jsonl"}).files == ["a.jsonl"]
    with pytest.raises(SweeperConfigError, match="unknown key"):
        warm_start_conf({"file": ["a.jsonl"]})


def test_another_study_warm_starts_a_new_one(tmp_path):
    run_toy(tmp_path, "hydra.sweeper.n_trials=2")
    old = load_toy_study(tmp_path)
    storage = f"sqlite:///{tmp_path / 'sweeps' / 'toy' / 'optuna.db'}"
    run_toy(
        tmp_path,
        "hydra.sweeper.study_name=toy2",
        f"hydra.sweeper.storage={storage}",
        "++hydra.sweeper.warm_start.study=toy",
        "hydra.sweeper.n_trials=1",
    )
    new = optuna.load_study(study_name="toy2", storage=storage)
    warm = [t for t in new.trials if t.user_attrs.get("warm_start")]
    assert [t.params for t in warm] == [t.params for t in old.trials] and len(new.trials) == 3

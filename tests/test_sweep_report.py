"""The project's sweep report (contrastive/sweep_report.py): MLflow parent and child runs, promotion rule,
summary and figures, read from the study (what the jobs recorded on their trials).

One toy sweep (tests/sweep_toy/app.py) runs with MLflow; one slow test sweeps the real training job on the
fixture.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState
from sweep_toy.runner import load_toy_study, run_toy, toy_objective

from contrastive import sweep_report
from contrastive.errors import ConfigError
from hydra_plugins.contrastive_sweeper import SweepInfo


def test_three_trial_sweep_with_mlflow_parent_and_children(tmp_path):
    run_toy(tmp_path, "tracking.enabled=true", "make_model=true")
    study = load_toy_study(tmp_path)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        assert -2.0 <= t.params["x"] <= 6.0
        assert t.value == pytest.approx(toy_objective(t.params["x"]))
        assert Path(t.user_attrs["output_dir"]) == tmp_path / "sweeps" / "toy" / f"trial_{t.number}"
        assert len(t.intermediate_values) == 3  # every "eval step" reached the storage
    best = max(trials, key=lambda t: t.value)
    summary = json.loads((tmp_path / "sweeps" / "toy" / "summary.json").read_text())
    assert summary["best_trial"] == best.number and summary["states"] == {"COMPLETE": 3}
    promoted = tmp_path / "sweeps" / "toy" / "best"
    assert json.loads((promoted / "config.json").read_text())["x"] == best.params["x"]
    assert json.loads((promoted / "metrics.json").read_text())["objective"]["value"] == pytest.approx(best.value)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["study_name"] == "toy" and parent.data.params["space.x"] == "float[-2.0, 6.0]"
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "objective_by_trial.png",
        "param_importances.png",
        "summary.json",
    }
    children = {r.data.tags["trial_number"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert sorted(children) == ["0", "1", "2"]
    assert {r.data.tags["trial_state"] for r in children.values()} == {"COMPLETE"}
    assert best.user_attrs["mlflow_run_id"] == children[str(best.number)].info.run_id
    version = client.get_model_version_by_alias("toy-model", "best")
    assert version.run_id == best.user_attrs["mlflow_run_id"]


# ---------------------------------------------------------------- the real training job


@pytest.mark.slow
def test_real_train_sweep_on_the_fixture(tmp_path):
    out = tmp_path / "outputs"
    uri = f"sqlite:///{out / 'fixture_mlruns.db'}"  # the sweep's own store, under paths.output_root
    command = [
        sys.executable,
        "-m",
        "contrastive.train",
        "+sweeps=fixture_tiny",
        f"paths.output_root={out}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "hydra.sweeper.callbacks.report.promote.soup.enabled=true",  # and a soup of both trials at the end
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = out / "sweeps" / "fixture_tiny"
    study = optuna.load_study(study_name="fixture_tiny", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = study.trials
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        metrics = json.loads((sweep_dir / f"trial_{t.number}" / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["finetuned"]["mrr_at_10"])
        # what the report reads: the job recorded its results on the trial, as structures
        assert t.user_attrs["metrics"] == metrics["finetuned"] and t.user_attrs["delta"] == metrics["delta"]
        assert t.user_attrs["baseline"] == metrics["baseline"] and t.user_attrs["objective"] == metrics["objective"]
        assert t.user_attrs["pair_threshold"] == metrics["finetuned"]["pair_threshold"]
        assert t.user_attrs["mlflow_run_id"] == metrics["mlflow_run_id"]
        # eval_steps=2 reached the trial, reported at the examples seen by then (step 2 x batch size)
        assert 2 * t.params["batch.size"] in t.intermediate_values
        assert t.params["batch.size"] in (8, 16) and 0.0 <= t.params["loss.aux_weight"] <= 1.0
        config = OmegaConf.load(sweep_dir / f"trial_{t.number}" / "config.yaml")
        assert config.batch.size == t.params["batch.size"]
        assert math.isclose(config.trainer.lr, t.params["trainer.lr"])
    best = study.best_trial
    promoted = sweep_dir / "best"
    assert (promoted / "model.safetensors").is_file()
    summary = json.loads((sweep_dir / "summary.json").read_text())
    soup = summary["soup"]  # made, scored on the trials' val protocol, promoted only if it beat the best trial
    assert soup["candidates"] == [best.number, 1 - best.number] and (sweep_dir / "soup" / "merge.json").is_file()
    assert [i["path"] for i in soup["ingredients"]] == [
        str(sweep_dir / f"trial_{n}" / "model") for n in soup["candidates"]
    ]
    soup_mrr = soup["val"]["soup"]["finetuned"]["mrr_at_10"]
    assert soup["promoted"] == (len(soup["kept_trials"]) > 1 and soup_mrr > best.value), soup["why"]
    if not soup["promoted"]:  # the fixture's trials reach MRR@10 1.0, which no soup beats
        assert json.loads((promoted / "metrics.json").read_text())["objective"]["value"] == pytest.approx(best.value)

    from contrastive import tracking

    tracking.configure(uri, "contrastive")
    child = tracking.run_info(best.user_attrs["mlflow_run_id"])
    assert child["tags"]["trial_state"] == "COMPLETE" and child["tags"]["trial_number"] == str(best.number)
    assert child["metrics"]["finetuned/mrr_at_10"] == pytest.approx(best.value)
    parent = tracking.run_info(child["tags"]["mlflow.parentRunId"])
    assert parent["status"] == "FINISHED" and parent["tags"]["best_trial"] == str(best.number)
    assert "param_importances.png" in parent["artifacts"]
    from mlflow.tracking import MlflowClient

    def datasets(run_id: str) -> set[tuple[str, str]]:
        return {(i.dataset.name, i.dataset.digest) for i in MlflowClient(uri).get_run(run_id).inputs.dataset_inputs}

    parent_id = child["tags"]["mlflow.parentRunId"]
    assert datasets(parent_id) == datasets(best.user_attrs["mlflow_run_id"]) != set()  # the data the sweep trained on
    assert (
        parent["tags"]["soup_promoted"] == str(soup["promoted"]).lower()
        and "trial 0" in parent["tags"]["soup_ingredients"]
    )
    assert summary["registered"]["name"] == "contrastive-fixture" and summary["registered"]["alias"] == "best"

    (version,) = MlflowClient(tracking_uri=uri).search_model_versions("name='contrastive-fixture'")
    assert version.run_id == (soup["mlflow_run_id"] if soup["promoted"] else best.user_attrs["mlflow_run_id"])
    assert not (tmp_path / "mlruns").exists() and (out / "mlartifacts").is_dir()  # artifacts beside the store


# ---------------------------------------------------------------- promotion rule and Pareto plot
def _study_with_metrics(tmp_path: Path | None = None, before_tell: Any = None) -> optuna.Study:
    """Three complete 2-objective trials whose jobs recorded MRR / AP and their deltas vs a 0.90 / 0.70 baseline
    (with `tmp_path`: each trial also has an output dir holding a model)."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    for number, (mrr, ap) in enumerate([(0.92, 0.72), (0.89, 0.80), (0.91, 0.75)]):
        metrics = {
            "objective": {"name": ["mrr_at_10", "pair_ap"], "value": [mrr, ap]},
            "finetuned": {"mrr_at_10": mrr, "pair_ap": ap, "pair_threshold": 0.5 + number / 10},
            "baseline": {"mrr_at_10": 0.90, "pair_ap": 0.70},
            "delta": {"mrr_at_10": {"delta": mrr - 0.90}, "pair_ap": {"delta": ap - 0.70}},
        }
        trial = study.ask()
        for key, value in sweep_report.result_attrs(metrics).items():
            trial.set_user_attr(key, value)
        if tmp_path is not None:
            out = tmp_path / f"trial_{number}"
            (out / "model").mkdir(parents=True)
            (out / "model" / "weights").write_text(str(number))
            (out / "metrics.json").write_text(json.dumps(metrics))
            trial.set_user_attr("output_dir", str(out))
        if before_tell is not None:
            before_tell(trial, out)
        study.tell(trial, [mrr, ap])
    return study


def test_promotion_rule_picks_the_best_ap_that_keeps_retrieval():
    study = _study_with_metrics()
    rule = sweep_report.PromotionRule.from_spec({"pick": "pair_ap", "floor_metric": "mrr_at_10", "floor_delta": 0.0})
    best, why = sweep_report.choose_trial(study, rule)
    assert best.number == 2 and "2 eligible" in why  # trial 1 has the best AP but lowers MRR
    loose = sweep_report.PromotionRule.from_spec({"pick": "pair_ap"})
    assert sweep_report.choose_trial(study, loose)[0].number == 1
    strict = sweep_report.PromotionRule.from_spec({"pick": "pair_ap", "floor_metric": "mrr_at_10", "floor_delta": 0.05})
    best, why = sweep_report.choose_trial(study, strict)
    assert best.number == 0 and "no trial held" in why  # nobody holds the floor: the closest to it
    default = sweep_report.PromotionRule.from_spec(None)
    assert sweep_report.choose_trial(study, default)[0].number == 0  # Pareto front, best first objective


def test_promotion_rule_rejects_unknown_keys_and_bad_floors():
    with pytest.raises(ConfigError, match="promote: unknown key"):
        sweep_report.PromotionRule.from_spec({"pik": "pair_ap"})
    with pytest.raises(ConfigError, match="floor_delta: 'x'"):
        sweep_report.PromotionRule.from_spec({"pick": "pair_ap", "floor_delta": "x"})


def test_pareto_plot_marks_front_promoted_and_baseline(tmp_path):
    study = _study_with_metrics()
    path = sweep_report.plot_pareto(study, tmp_path / "pareto.png", ["mrr_at_10", "pair_ap"], study.trials[2])
    assert path is not None and path.stat().st_size > 10_000
    single = optuna.create_study()
    assert sweep_report.plot_pareto(single, tmp_path / "none.png", ["x"]) is None  # one objective: no front


def test_result_attrs_are_what_a_job_records():
    metrics = {
        "split": "val",
        "objective": {"name": "mrr_at_10", "value": 0.9},
        "finetuned": {"mrr_at_10": 0.9, "pair_threshold": 0.61},
        "baseline": {"mrr_at_10": 0.8},
        "delta": {"mrr_at_10": {"delta": 0.1, "ci_low": 0.05, "ci_high": 0.15}},
        "training": {"steps": 4},
    }
    assert sweep_report.result_attrs(metrics) == {
        "objective": {"name": "mrr_at_10", "value": 0.9},
        "metrics": {"mrr_at_10": 0.9, "pair_threshold": 0.61},
        "baseline": {"mrr_at_10": 0.8},
        "delta": {"mrr_at_10": {"delta": 0.1, "ci_low": 0.05, "ci_high": 0.15}},
        "pair_threshold": 0.61,
        "health": [],
    }
    flagged = sweep_report.result_attrs(metrics | {"flags": ["collapsed: mrr_at_10 0.1 vs 0.9"]})
    assert flagged["health"] == ["collapsed: mrr_at_10 0.1 vs 0.9"]


def _flagged_study(tmp_path: Path, flags: dict[int, str]) -> optuna.Study:
    """`_study_with_metrics` where the jobs of the trials in `flags` had their runs flagged by the health check."""

    def record(trial: optuna.Trial, out: Path) -> None:
        if trial.number in flags:
            trial.set_user_attr("health", [flags[trial.number]])

    return _study_with_metrics(tmp_path, before_tell=record)


def test_a_flagged_trial_is_never_chosen_and_the_reason_says_so(tmp_path):
    default = sweep_report.PromotionRule.from_spec(None)
    assert sweep_report.choose_trial(_study_with_metrics(), default)[0].number == 0
    study = _flagged_study(tmp_path / "a", {0: "collapsed: mrr_at_10 0.1249 vs the baseline's 1.0000"})
    best, why = sweep_report.choose_trial(study, default)
    assert best.number == 2 and "trial 0 not promoted: collapsed: mrr_at_10 0.1249" in why
    picky = sweep_report.PromotionRule.from_spec({"pick": "pair_ap", "floor_metric": "mrr_at_10", "floor_delta": 0.05})
    assert sweep_report.choose_trial(_study_with_metrics(), picky)[0].number == 0
    study = _flagged_study(tmp_path / "b", {0: "zero_mnrl: all 4 logged MNRL losses are 0"})
    best, why = sweep_report.choose_trial(study, picky)  # the closest-to-floor fallback skips flagged trials too
    assert best.number == 2 and "trial 0 not promoted: zero_mnrl" in why
    every = {n: "no_gradient: all 4 logged losses and gradient norms are 0" for n in range(3)}
    best, why = sweep_report.choose_trial(_flagged_study(tmp_path / "c", every), default)
    assert best is None and why.startswith("no healthy COMPLETE trial (3 flagged)")


def test_a_one_trial_sweep_that_collapsed_promotes_and_registers_nothing(tmp_path):
    """Seen: a collapsed 1-trial sweep became best/ and the registry's @best. Now: no best/, no version, and the
    summary and the parent run say why."""
    from mlflow.tracking import MlflowClient

    from contrastive import tracking

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tcfg = OmegaConf.create({"enabled": True, "tracking_uri": store, "experiment": "x", "registered_model": "m"})
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    out = tmp_path / "trial_0"
    (out / "model").mkdir(parents=True)
    with tracking.run(tcfg, "trial 0", {"health": "collapsed"}) as run_id:
        pass
    flags = ["collapsed: mrr_at_10 0.1249 vs the baseline's 1.0000 (more than eval.collapse_drop=0.1 below)"]
    metrics = {"objective": {"name": "mrr_at_10", "value": 0.1249}, "finetuned": {"mrr_at_10": 0.1249}}
    for key, value in sweep_report.result_attrs(metrics | {"flags": flags}).items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("output_dir", str(out))
    trial.set_user_attr("mlflow_run_id", run_id)
    study.tell(trial, 0.1249)
    report = sweep_report.SweepReport(tracking=tcfg)
    sweep_dir = tmp_path / "sweep"
    info = SweepInfo("s", "sqlite://", ["maximize"], 1, 1, "optuna.samplers.RandomSampler", 0, "none", sweep_dir)
    report.on_sweep_start(study, info)
    report.on_sweep_end(study, info)
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["promoted_dir"] is None and not (sweep_dir / "best").exists()
    assert summary["promotion"]["unhealthy"] == {"0": flags}
    assert "trial 0 not promoted: collapsed" in summary["promotion"]["why"]
    client = MlflowClient(tracking_uri=store)
    assert client.search_registered_models() == [] or not client.search_model_versions("name='m'")
    parent = client.get_run(report.parent_run_id)
    assert "trial 0 not promoted: collapsed" in parent.data.tags["promotion"]
    assert parent.data.tags["unhealthy_trials"] == "0"
    # and the registry refuses a flagged run whoever asks
    assert tracking.register_best(tcfg, run_id, out, "mrr_at_10", 0.1249)["alias"] is None
    assert not client.search_model_versions("name='m'")


def test_report_at_the_end_reads_the_study_not_the_trials_files(tmp_path):
    study = _study_with_metrics(tmp_path)
    for number in range(3):  # the rule and the Pareto baseline need no trial's metrics.json
        (tmp_path / f"trial_{number}" / "metrics.json").unlink()
    report = sweep_report.SweepReport(promote={"pick": "pair_ap", "floor_metric": "mrr_at_10", "floor_delta": 0.0})
    sweep_dir = tmp_path / "sweep"
    info = SweepInfo(
        "s", "sqlite://", ["maximize", "maximize"], 3, 1, "optuna.samplers.RandomSampler", 0, "none", sweep_dir
    )
    assert report.on_sweep_start(study, info) == []  # no tracking: no parent run, no override for the jobs
    report.on_sweep_end(study, info)
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["best_trial"] == 2 and "2 eligible" in summary["promotion"]["why"]
    assert {Path(p).name for p in summary["figures"]} == {"objective_by_trial.png", "pareto_front.png"}
    assert summary["promoted_dir"] == str(sweep_dir / "best")
    assert (sweep_dir / "best" / "weights").read_text() == "2"
    assert json.loads((sweep_dir / "best" / "sweep_best.json").read_text())["trial"] == 2
    assert set(summary) >= {"study_name", "directions", "n_trials", "states", "retried", "best_values", "trials"}
    assert sweep_report.objective_names(study) == ["mrr_at_10", "pair_ap"]


def test_two_sweeps_started_together_on_a_fresh_store_share_one_parent_run(tmp_path):
    """Two sweep processes on one fresh SQLite MLflow store and Optuna storage: neither crashes creating the
    tables (a lock beside the store), and the study has one parent run holding every trial's child."""
    import subprocess

    from mlflow.tracking import MlflowClient
    from sweep_toy.runner import TOY_TIMEOUT_S, toy_command

    args = ("tracking.enabled=true", "hydra.sweeper.n_trials=4", "step_sleep=0.1", "hydra/sweeper/pruner=none")
    procs = [
        subprocess.Popen(toy_command(tmp_path, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=TOY_TIMEOUT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert len({r.data.tags["trial_number"] for r in children}) == 4


def test_a_resumed_sweep_closes_the_run_a_killed_worker_left_running(tmp_path):
    """SIGKILL mid-trial leaves the trial's MLflow run RUNNING (nothing can close it then); the rerun recovers the
    trial (FAIL, retried) and ends that run KILLED with the reason "worker lost": no run stays RUNNING."""
    import os
    import signal
    import subprocess

    from mlflow.tracking import MlflowClient
    from sweep_toy.runner import start_toy_until_hang

    marker = tmp_path / "hanging"
    args = (
        "tracking.enabled=true",
        "hydra.sweeper.n_trials=3",
        f"hang_marker={marker}",
        "hang_at_trial=1",
        "hydra/sweeper/pruner=none",
    )
    first = start_toy_until_hang(
        tmp_path, marker, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("toy").experiment_id
    assert "RUNNING" in {r.info.status for r in client.search_runs([experiment])}

    run_toy(tmp_path, *args)
    runs = client.search_runs([experiment])
    assert "RUNNING" not in {r.info.status for r in runs}
    killed = load_toy_study(tmp_path).trials[1]
    assert killed.state == TrialState.FAIL
    lost = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert lost.info.status == "KILLED" and lost.data.tags["trial_reason"].startswith("worker lost")
    assert sum(t.state == TrialState.COMPLETE for t in load_toy_study(tmp_path).trials) == 3


# ---------------------------------------------------------------- several workers: one promotion
def _info(sweep_dir: Path, n_trials: int = 4) -> SweepInfo:
    return SweepInfo(
        "s", "sqlite://", ["maximize", "maximize"], n_trials, 1, "optuna.samplers.RandomSampler", 0, "none", sweep_dir
    )


def test_only_the_last_worker_to_end_promotes_and_only_once(tmp_path):
    """Worker A ends while B still runs a trial: A writes its summary and promotes nothing. B ends last and
    promotes; a rerun (or a worker ending at the same moment) finds the promotion on the study: not again."""
    study = _study_with_metrics(tmp_path)
    running = study.ask()  # B's trial
    rule = {"pick": "pair_ap", "floor_metric": "mrr_at_10", "floor_delta": 0.0}
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    sweep_report.SweepReport(promote=rule).on_sweep_end(study, _info(a_dir))
    summary = json.loads((a_dir / "summary.json").read_text())
    assert "deferred" in summary["promotion"] and summary["promoted_dir"] is None and not (a_dir / "best").exists()
    assert sweep_report.PROMOTED_ATTR not in study.user_attrs

    study.tell(running, [0.5, 0.5])
    sweep_report.SweepReport(promote=rule).on_sweep_end(study, _info(b_dir))
    assert (b_dir / "best" / "weights").read_text() == "2"
    assert study.user_attrs[sweep_report.PROMOTED_ATTR]["trial"] == 2

    sweep_report.SweepReport(promote=rule).on_sweep_end(study, _info(a_dir))
    summary = json.loads((a_dir / "summary.json").read_text())
    assert summary["promotion"]["already"]["trial"] == 2 and not (a_dir / "best").exists()


def test_promotion_fetches_the_model_from_mlflow_when_another_machine_ran_the_trial(tmp_path):
    """The promoted trial's output dir is on another machine: its model comes from its MLflow run, is promoted
    and registered as @best; the study records the one promotion."""
    import mlflow
    from mlflow.tracking import MlflowClient

    tcfg = OmegaConf.create(
        {
            "enabled": True,
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "experiment": "elsewhere",
            "registered_model": "elsewhere-model",
        }
    )
    from contrastive import tracking

    tracking.configure(tcfg.tracking_uri, tcfg.experiment)

    def logged_elsewhere(trial: optuna.Trial, out: Path) -> None:  # the job logged its model; its files stay there
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(out / "model"), "model")
            mlflow.log_artifact(str(out / "metrics.json"))
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        trial.set_user_attr("output_dir", f"/elsewhere/{trial.number}")

    study = _study_with_metrics(tmp_path, logged_elsewhere)
    report = sweep_report.SweepReport(
        tracking=tcfg, promote={"pick": "pair_ap", "floor_metric": "mrr_at_10", "floor_delta": 0.0}
    )
    sweep_dir = tmp_path / "sweep"
    report.on_sweep_start(study, _info(sweep_dir, 3))
    report.on_sweep_end(study, _info(sweep_dir, 3))
    best = sweep_dir / "best"
    assert (best / "weights").read_text() == "2" and json.loads((best / "metrics.json").read_text())["delta"]
    run_id = study.trials[2].user_attrs["mlflow_run_id"]
    assert json.loads((best / "sweep_best.json").read_text())["mlflow_run_id"] == run_id
    client = MlflowClient(tracking_uri=tcfg.tracking_uri)
    assert client.get_model_version_by_alias("elsewhere-model", "best").run_id == run_id
    assert study.user_attrs[sweep_report.PROMOTED_ATTR]["run_id"] == run_id
    assert [p.name for p in sweep_dir.iterdir() if p.name.startswith(".")] == []  # no download left behind


# ---------------------------------------------------------------- a soup at the end
def _val(mrr: float, ap_delta: float) -> dict[str, Any]:
    """A model's val result as the rule reads it: fine-tuned MRR@10 and the pair AP delta vs the baseline."""
    return {"finetuned": {"mrr_at_10": mrr}, "delta": {"pair_ap": {"delta": ap_delta}}}


def test_the_soup_takes_the_promotion_only_when_it_beats_the_best_trial_on_the_rule():
    rule = sweep_report.PromotionRule.from_spec({"pick": "mrr_at_10", "floor_metric": "pair_ap", "floor_delta": 0.0})
    verdict = sweep_report.soup_verdict
    wins, why = verdict(rule, "mrr_at_10", _val(0.95, 0.01), _val(0.93, 0.02))
    assert wins and why == "the soup's mrr_at_10 0.9500 beats the best trial's 0.9300"
    wins, why = verdict(rule, "mrr_at_10", _val(0.93, 0.01), _val(0.93, 0.02))  # a tie keeps the single trial
    assert not wins and why == "the soup's mrr_at_10 0.9300 does not beat the best trial's 0.9300"
    wins, why = verdict(rule, "mrr_at_10", _val(0.99, -0.01), _val(0.93, 0.02))  # higher MRR, but below the floor
    assert not wins and why == "the soup's pair_ap delta -0.0100 is below the floor +0"
    wins, why = verdict(rule, "mrr_at_10", _val(0.90, 0.01), _val(0.93, -0.02))  # the trial was the fallback
    assert wins and "the best trial did not" in why
    loose = sweep_report.PromotionRule.from_spec({"pick": "mrr_at_10"})
    assert verdict(loose, "mrr_at_10", _val(0.99, -0.5), _val(0.93, 0.0))[0]  # no floor: the metric alone
    lower_better = sweep_report.PromotionRule.from_spec(None)  # the first objective, minimized
    assert verdict(lower_better, "loss", {"finetuned": {"loss": 0.2}}, {"finetuned": {"loss": 0.3}}, sign=-1)[0]
    # greedy's score on the same rule: below the floor ranks below any soup above it, whatever its MRR
    above = sweep_report.rule_score(rule, "mrr_at_10", 1, **_val(0.50, 0.0))
    below = sweep_report.rule_score(rule, "mrr_at_10", 1, **_val(0.99, -0.01))
    assert above == 0.50 and below < above


def test_the_soup_ingredients_are_the_top_trials_by_the_rule():
    study = _study_with_metrics()  # (mrr, ap): 0 (0.92, 0.72), 1 (0.89, 0.80), 2 (0.91, 0.75) vs 0.90 / 0.70
    rule = sweep_report.PromotionRule.from_spec({"pick": "pair_ap", "floor_metric": "mrr_at_10", "floor_delta": 0.0})
    assert [t.number for t in sweep_report.ranked_trials(study, rule)] == [2, 0, 1]  # trial 1 is below the floor
    assert sweep_report.ranked_trials(study, rule)[0].number == sweep_report.choose_trial(study, rule)[0].number
    by_ap = sweep_report.PromotionRule.from_spec({"pick": "pair_ap"})
    assert [t.number for t in sweep_report.ranked_trials(study, by_ap)] == [1, 2, 0]
    default = sweep_report.PromotionRule.from_spec(None)
    assert [t.number for t in sweep_report.ranked_trials(study, default)] == [0, 2, 1]  # first objective first


def test_the_soup_settings_refuse_bad_values_in_one_line():
    rule = sweep_report.PromotionRule.from_spec({"soup": {"enabled": True, "top_k": 2, "method": "uniform"}})
    assert rule.soup == sweep_report.SoupSpec(enabled=True, top_k=2, method="uniform")
    assert sweep_report.PromotionRule.from_spec(None).soup.enabled is False
    cases = [
        ({"top_k": 1}, "hydra.sweeper.callbacks.report.promote.soup.top_k=1: must be an integer >= 2"),
        (
            {"method": "ties"},
            "hydra.sweeper.callbacks.report.promote.soup.method='ties': choose one of greedy, uniform",
        ),
        ({"enabled": "yes"}, "hydra.sweeper.callbacks.report.promote.soup.enabled='yes': must be true or false"),
        ({"topk": 3}, "hydra.sweeper.callbacks.report.promote.soup: unknown key(s) ['topk']"),
        (True, "hydra.sweeper.callbacks.report.promote.soup=True: must be a mapping"),
    ]
    for soup, start in cases:
        with pytest.raises(ConfigError) as err:
            sweep_report.PromotionRule.from_spec({"soup": soup})
        assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)


def _soup_sweep(tmp_path: Path, minilm: Any, recorded_mrr: float, method: str) -> tuple[optuna.Study, Any, Any]:
    """A finished 2-trial sweep on the fixture whose trial dirs hold real small fine-tunes of MiniLM (seeded
    perturbations), the config.yaml their jobs ran with and an MLflow run each, with val MRR@10 `recorded_mrr`
    (trial 0) and 0.01 lower (trial 1) recorded; its report (tracking on, soup promotion by `method`) has ended."""
    from conftest import compose_config, perturbed_checkpoint

    from contrastive import tracking

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tcfg = OmegaConf.create({"enabled": True, "tracking_uri": store, "experiment": "soup", "registered_model": "m"})
    job = compose_config(
        "train",
        "data=fixture",
        "eval.n_boot=20",
        "eval.umap.enabled=false",
        f"paths.output_dir={tmp_path / 'job'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    )
    sweep_dir = tmp_path / "sweep"
    study = optuna.create_study(directions=["maximize", "maximize"])
    for number in range(2):
        out = sweep_dir / f"trial_{number}"
        out.mkdir(parents=True)
        perturbed_checkpoint(minilm, out / "model", 0.01 * (number + 1), number)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(job, resolve=True))
        with tracking.run(tcfg, f"trial {number}") as run_id:
            pass
        mrr, ap = recorded_mrr - 0.01 * number, 0.8
        metrics = {
            "objective": {"name": ["mrr_at_10", "pair_ap"], "value": [mrr, ap]},
            "finetuned": {"mrr_at_10": mrr, "pair_ap": ap},
            "baseline": {"mrr_at_10": 0.9, "pair_ap": 0.7},
            "delta": {"mrr_at_10": {"delta": mrr - 0.9}, "pair_ap": {"delta": ap - 0.7}},
        }
        trial = study.ask()
        for key, value in sweep_report.result_attrs(metrics).items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("output_dir", str(out))
        trial.set_user_attr("mlflow_run_id", run_id)
        study.tell(trial, [mrr, ap])
    rule = {
        "pick": "mrr_at_10",
        "floor_metric": "pair_ap",
        "floor_delta": -1.0,
        "soup": {"enabled": True, "method": method},
    }
    report = sweep_report.SweepReport(tracking=tcfg, promote=rule)
    report.on_sweep_start(study, _info(sweep_dir, 2))
    report.on_sweep_end(study, _info(sweep_dir, 2))
    return study, report, tcfg


def _one_version(tcfg: Any) -> Any:
    """The one version of the registered model `m` (the test fails on none or several)."""
    from mlflow.tracking import MlflowClient

    (version,) = MlflowClient(tracking_uri=tcfg.tracking_uri).search_model_versions("name='m'")
    return version


def test_a_soup_that_beats_the_best_trial_is_promoted_and_registered_naming_its_ingredients(tmp_path, minilm):
    """Trials recorded MRR@10 0.5 / 0.49: the uniform soup of both, scored on their val protocol, beats trial 0
    on the rule, so it is best/, the one registered version and the parent run's soup; its card names both."""
    from mlflow.tracking import MlflowClient

    study, report, tcfg = _soup_sweep(tmp_path, minilm, 0.5, "uniform")
    sweep_dir = tmp_path / "sweep"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    soup = summary["soup"]
    assert soup["promoted"] is True and soup["kept_trials"] == [0, 1], soup.get("why")
    assert [(i["trial"], i["path"], i["weight"]) for i in soup["ingredients"]] == [
        (0, str(sweep_dir / "trial_0" / "model"), 0.5),
        (1, str(sweep_dir / "trial_1" / "model"), 0.5),
    ]
    mine = soup["val"]["soup"]["finetuned"]["mrr_at_10"]
    assert soup["val"]["best_trial"]["trial"] == 0 and soup["val"]["best_trial"]["finetuned"]["mrr_at_10"] == 0.5
    assert mine > 0.5 and soup["why"] == f"the soup's mrr_at_10 {mine:.4f} beats the best trial's 0.5000"
    best = sweep_dir / "best"
    assert summary["promoted_dir"] == str(best) and json.loads((best / "merge.json").read_text())["kept"] == [0, 1]
    assert json.loads((best / "sweep_best.json").read_text())["soup"]["kept_trials"] == [0, 1]
    assert json.loads((best / "metrics.json").read_text())["finetuned"]["mrr_at_10"] == mine  # the app's thresholds
    card = (best / "README.md").read_text()
    assert "## Merge" in card and str(sweep_dir / "trial_1" / "model") in card and "trials 0, 1" in card
    version = _one_version(tcfg)
    assert version.run_id == soup["mlflow_run_id"] != study.trials[0].user_attrs["mlflow_run_id"]
    assert version.source == str(best.resolve()) and summary["registered"]["alias"] == "best"
    assert float(version.tags["metric.mrr_at_10"]) == pytest.approx(mine)
    client = MlflowClient(tracking_uri=tcfg.tracking_uri)
    parent = client.get_run(report.parent_run_id)
    assert parent.data.tags["soup_promoted"] == "true" and parent.data.tags["soup_kept_trials"] == "0,1"
    assert parent.data.tags["soup_ingredients"] == "trial 0 (weight 0.5), trial 1 (weight 0.5)"
    assert parent.data.metrics["soup/finetuned/mrr_at_10"] == pytest.approx(mine)
    assert (
        parent.data.params["soup.method"] == "uniform" and "the soup of trials [0, 1]" in parent.data.tags["promotion"]
    )
    run = client.get_run(soup["mlflow_run_id"])  # the soup's own run: the parent's child, kind=merge
    assert run.data.tags["mlflow.parentRunId"] == report.parent_run_id and run.data.tags["kind"] == "merge"
    assert run.data.tags["eval_protocol"].startswith("split=val,")  # scored on the trials' val protocol
    assert study.user_attrs[sweep_report.PROMOTED_ATTR]["soup"] == [0, 1]


def test_a_soup_that_does_not_beat_the_best_trial_leaves_it_promoted_and_says_why(tmp_path, minilm):
    """Trial 0 recorded MRR@10 1.0, which no soup beats: the greedy soup is made and reported, but trial 0 is
    best/ and the one registered version."""
    study, report, tcfg = _soup_sweep(tmp_path, minilm, 1.0, "greedy")
    sweep_dir = tmp_path / "sweep"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    soup = summary["soup"]
    assert soup["promoted"] is False and soup["candidates"] == [0, 1] and (sweep_dir / "soup" / "merge.json").is_file()
    mine = soup["val"]["soup"]["finetuned"]["mrr_at_10"]
    alone = [f"greedy kept trial {n} alone: no mix of two or more scored higher" for n in (0, 1)]
    assert soup["why"] in (f"the soup's mrr_at_10 {mine:.4f} does not beat the best trial's 1.0000", *alone)
    assert all(i["score_alone"] is not None for i in soup["ingredients"])  # greedy scored each on its own
    assert not (sweep_dir / "best" / "merge.json").exists()
    assert json.loads((sweep_dir / "best" / "sweep_best.json").read_text())["trial"] == 0
    version = _one_version(tcfg)
    assert version.run_id == study.trials[0].user_attrs["mlflow_run_id"]
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(tracking_uri=tcfg.tracking_uri).get_run(report.parent_run_id)
    assert parent.data.tags["soup_promoted"] == "false" and parent.data.tags["soup_why"] == soup["why"]

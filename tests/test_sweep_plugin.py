"""The generic Optuna sweeper plugin (hydra_plugins/contrastive_sweeper/): search-space parsing, typed settings,
budget accounting, the job side (pruning and results through the storage), and whole sweeps.

Whole sweeps run the toy Hydra task (tests/sweep_toy/app.py: objective -(x-2)^2, reported at every
"eval step") as subprocesses, so resume-after-kill and two processes sharing one storage are real.
The project's report at the end of a sweep is tested in test_sweep_report.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import warnings
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from sweep_toy.runner import TOY_TIMEOUT_S, load_toy_study, run_toy, start_toy_until_hang, toy_command, toy_objective

from contrastive import PROJECT_ROOT
from hydra_plugins.contrastive_sweeper import SweeperConfigError, _impl, budget, search_space
from hydra_plugins.contrastive_sweeper import trial as job
from hydra_plugins.contrastive_sweeper.config import OptunaSweeperConf

# ---------------------------------------------------------------- search space and overrides


def test_hydra_sweep_syntax_becomes_optuna_distributions():
    params = {
        "batch.size": "choice(16, 32, 64)",
        "loss.aux_weight": "interval(0.0, 1.0)",
        "trainer.lr": "tag(log, interval(5e-6, 1e-4))",
        "trainer.max_steps": "range(100, 501, 100)",
        "loss.hard_negatives": "choice(true, false)",
        "data.max_pairs": 2000,
    }
    space = search_space.parse_search_space(
        params, ["loss.aux_weight=0.5", "+extra=tag(int, interval(1, 4))", "++skip=tag(log, int, interval(2, 64))"]
    )
    d = space.distributions
    assert d["batch.size"] == CategoricalDistribution([16, 32, 64])
    assert d["trainer.lr"] == FloatDistribution(5e-6, 1e-4, log=True)
    assert d["trainer.max_steps"] == IntDistribution(100, 500, step=100)
    assert d["loss.hard_negatives"] == CategoricalDistribution([True, False])
    assert d["extra"] == IntDistribution(1, 4)
    assert d["skip"] == IntDistribution(2, 64, log=True)
    assert space.keys["extra"] == "+extra"
    # a command-line override of the same key replaces the params entry (here: fixes it)
    assert "loss.aux_weight" not in d
    assert space.fixed == {"data.max_pairs": "data.max_pairs=2000", "loss.aux_weight": "loss.aux_weight=0.5"}


def test_optuna_form_and_bad_specs():
    space = search_space.parse_search_space(
        {
            "trainer.lr": OmegaConf.create({"type": "float", "low": 1e-5, "high": 1e-3, "log": True}),
            "batch.size": {"type": "int", "low": 16, "high": 256, "step": 16},
            "loss.aux": {"type": "categorical", "choices": ["cosine", "cosent"]},
        },
        [],
    )
    assert space.distributions == {
        "trainer.lr": FloatDistribution(1e-5, 1e-3, log=True),
        "batch.size": IntDistribution(16, 256, step=16),
        "loss.aux": CategoricalDistribution(["cosine", "cosent"]),
    }
    with pytest.raises(SweeperConfigError, match="hydra.sweeper.params.x.type='normal'"):
        search_space.parse_search_space({"x": {"type": "normal", "low": 0, "high": 1}}, [])
    with pytest.raises(SweeperConfigError, match="hydra.sweeper.params.x"):
        search_space.parse_search_space({"x": {"type": "float", "low": 0}}, [])
    with pytest.raises(SweeperConfigError, match="not supported"):
        search_space.parse_search_space({"data": "glob(*)"}, [])


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        0,
        256,
        0.1,
        3.0e-05,
        1e-12,
        "fixture",
        "a b",
        "it's",
        "1",
        "true",
        "x,y",
        "a\\b",
        "end\\",
        "x\\'y",
        "sqlite:////tmp/o.db",
    ],
)
def test_sampled_values_round_trip_through_hydra_overrides(value):
    line = f"key={search_space.format_value(value)}"
    parsed = OverridesParser.create().parse_overrides([line])[0].value()
    assert parsed == value and type(parsed) is type(value)


def test_objective_values():
    assert _impl.objective_values(0.5, 1) == [0.5]
    assert _impl.objective_values([0.5, 2], 2) == [0.5, 2.0]
    assert _impl.objective_values({"name": "mrr_at_10", "value": 0.9}, 1) == [0.9]
    for bad, n in ((float("nan"), 1), ([0.5], 2), (None, 1), ("high", 1)):
        with pytest.raises(ValueError):
            _impl.objective_values(bad, n)


# ---------------------------------------------------------------- budget across processes


def _trial(number: int, state: TrialState, **system_attrs) -> optuna.trial.FrozenTrial:
    values = [0.0] if state == TrialState.COMPLETE else None
    trial = optuna.trial.create_trial(state=state, values=values, system_attrs=system_attrs)
    trial.number = number
    return trial


def test_budget_counts_the_study_total_and_lets_retries_replace_killed_trials():
    trials = [
        _trial(0, TrialState.COMPLETE),
        _trial(1, TrialState.FAIL),  # killed, re-queued as trial 3
        _trial(2, TrialState.PRUNED),
        _trial(3, TrialState.WAITING, failed_trial=1, retry_history=[1]),
    ]
    assert [t.number for t in budget.budget_trials(trials)] == [0, 2, 3]
    assert budget.asks_left(trials, n_trials=3) == 1  # only the waiting retry
    assert budget.asks_left(trials, n_trials=5) == 3  # the retry and two new trials
    assert not budget.over_budget(trials, 3, n_trials=3)  # the retry: 2 counted trials before it
    trials.append(_trial(4, TrialState.RUNNING))
    assert budget.over_budget(trials, 5, n_trials=4)  # a 5th counted trial in a budget of 4


def test_trial_seeded_sampler_draws_by_trial_number():
    spec = {"_target_": "optuna.samplers.RandomSampler", "seed": 7}
    space = {"x": FloatDistribution(0.0, 1.0)}

    def first_values(n: int) -> list[float]:
        study = optuna.create_study(sampler=_impl.TrialSeededSampler(spec, 7))
        return [study.ask(space).params["x"] for _ in range(n)]

    a, b = first_values(3), first_values(2)
    assert a[:2] == b  # trial n draws the same value in any process
    assert len(set(a)) == 3  # and different trials differ


# ---------------------------------------------------------------- the job side: pruning through the storage


def _study_with_running_trial(tmp_path: Path, pruner: dict | None, directions=("maximize",)) -> tuple[str, int]:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=list(directions))
    trial = study.ask()
    if pruner:
        trial.set_user_attr(job.PRUNER_ATTR, pruner)
    return url, trial.number


def test_reporter_finds_its_trial_through_the_storage_and_prunes(tmp_path):
    url, number = _study_with_running_trial(tmp_path, {"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.5})
    cfg = OmegaConf.create({"x": 1})
    assert job.reporter_from_cfg(cfg) is None  # not a trial: no reporter
    overrides = job.address_overrides(url, "s", number)
    assert all(o.startswith("++optuna.") for o in overrides)
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.removeprefix("++").replace("'", "") for o in overrides]))
    reporter = job.reporter_from_cfg(cfg)
    reporter.report(0.8, 1)  # above the threshold: goes on
    with pytest.raises(optuna.TrialPruned, match="step 2"):
        reporter.report(0.2, 2)
    stored = optuna.load_study(study_name="s", storage=url).trials[number]
    assert stored.intermediate_values == {1: 0.8, 2: 0.2}


def test_multi_objective_trials_are_pruned_on_their_first_objective(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "maximize"])
    median = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 0}
    for first in (0.8, 0.9):  # two finished trials that reported 0.8 and 0.9 at step 1
        done = study.ask()
        done.storage.set_trial_intermediate_value(done._trial_id, 1, first)
        study.tell(done, [first, 0.1])
    cfg = {}
    for value in (0.95, 0.5):
        trial = study.ask()
        trial.set_user_attr(job.PRUNER_ATTR, median)
        cfg[value] = OmegaConf.create({"optuna": {"storage": url, "study_name": "s", "trial_number": trial.number}})
    job.reporter_from_cfg(cfg[0.95]).report(0.95, 1)  # above the median (0.85): goes on
    with pytest.raises(optuna.TrialPruned, match="step 1"):
        job.reporter_from_cfg(cfg[0.5]).report(0.5, 1)  # below it: pruned
    assert optuna.load_study(study_name="s", storage=url).trials[3].intermediate_values == {1: 0.5}


@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "maximize"]])
def test_a_step_reported_again_is_judged_without_an_error(tmp_path, directions):
    """A resumed retry may report a step its trial already holds (e.g. intermediate values it was given): the pruner
    judges it as any other report (single objective: Optuna keeps the first value, with a warning)."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=directions)
    for value in (0.8, 0.9):
        done = study.ask()
        done.storage.set_trial_intermediate_value(done._trial_id, 16, value)
        study.tell(done, [value] * len(directions))
    trial = study.ask()
    trial.set_user_attr(job.PRUNER_ATTR, {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2})
    trial.storage.set_trial_intermediate_value(trial._trial_id, 16, 0.95)  # already there when the job starts
    cfg = OmegaConf.create({"optuna": {"storage": url, "study_name": "s", "trial_number": trial.number}})
    reporter = job.reporter_from_cfg(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's "already reported" note
        reporter.report(0.95, 16)  # above the median: goes on
        reporter.report(0.95, 32)
    assert optuna.load_study(study_name="s", storage=url).trials[2].intermediate_values == {16: 0.95, 32: 0.95}


def test_reporter_records_the_jobs_results_as_user_attributes(tmp_path):
    url, number = _study_with_running_trial(tmp_path, None)
    cfg = OmegaConf.create({"optuna": {"storage": url, "study_name": "s", "trial_number": number}})
    reporter = job.reporter_from_cfg(cfg)
    reporter.record(mlflow_run_id="abc", metrics={"mrr_at_10": 0.9, "pair_threshold": 0.7}, skipped=None)
    stored = optuna.load_study(study_name="s", storage=url).trials[number]
    assert stored.user_attrs == {"mlflow_run_id": "abc", "metrics": {"mrr_at_10": 0.9, "pair_threshold": 0.7}}
    study = optuna.load_study(study_name="s", storage=url)
    study.tell(number, 0.9)
    reporter.record(late=1)  # the trial was finished meanwhile (e.g. failed as stale): a warning, no error
    assert "late" not in optuna.load_study(study_name="s", storage=url).trials[number].user_attrs


def test_typed_settings_refuse_bad_values_in_one_line():
    assert OptunaSweeperConf(direction=["maximize", "MINIMIZE"]).directions == ["maximize", "minimize"]
    for settings, match in (
        ({"n_trials": 0}, r"hydra.sweeper.n_trials=0: must be an integer >= 1"),
        ({"n_jobs": True}, r"hydra.sweeper.n_jobs=True: must be an integer >= 1"),
        ({"direction": "up"}, r"hydra.sweeper.direction='up': maximize, minimize"),
        ({"promote": {"pick": "x"}}, r"hydra.sweeper: unknown key\(s\) \['promote'\]"),
        ({"metric_names": ["a", "b"]}, r"hydra.sweeper.metric_names=\['a', 'b'\]: one name per objective \(1, as"),
    ):
        with pytest.raises(SweeperConfigError, match=match):
            OptunaSweeperConf.from_settings(settings)


def test_metric_names_one_per_objective():
    assert OptunaSweeperConf().names is None
    assert OptunaSweeperConf(metric_names="mrr_at_10").names == ["mrr_at_10"]
    both = OptunaSweeperConf(direction=["maximize", "maximize"], metric_names=["mrr_at_10", "pair_ap"])
    assert both.names == ["mrr_at_10", "pair_ap"]


def test_the_search_space_attribute_is_a_structure_and_resume_compares_structures(caplog):
    space = search_space.SearchSpace(distributions={"x": FloatDistribution(0.0, 1.0, log=False)})
    study = optuna.create_study()
    old = {"x": optuna.distributions.distribution_to_json(FloatDistribution(0.0, 1.0))}  # JSON text, as before
    study.set_user_attr(_impl.SPACE_ATTR, old)
    sweeper = _impl.OptunaSweeperImpl(OptunaSweeperConf())
    with caplog.at_level("WARNING"):
        sweeper._record_space(study, space)
    assert "differs" not in caplog.text  # the same space, once written as text
    assert study.user_attrs[_impl.SPACE_ATTR] == {
        "x": {"name": "FloatDistribution", "attributes": {"low": 0.0, "high": 1.0, "log": False, "step": None}}
    }
    with caplog.at_level("WARNING"):
        sweeper._record_space(study, search_space.SearchSpace(distributions={"x": FloatDistribution(0.0, 2.0)}))
    assert "the search space differs" in caplog.text


def test_a_bad_sweeper_setting_is_one_line_and_exit_2(tmp_path):
    for override, message in (
        ("hydra.sweeper.n_trials=0", "error: hydra.sweeper.n_trials=0: must be an integer >= 1"),
        ("x=glob(*)", "error: x=glob(*): this sweep type is not supported by the Optuna sweeper"),
    ):
        done = subprocess.run(toy_command(tmp_path, override), capture_output=True, text=True, timeout=TOY_TIMEOUT_S)
        assert done.returncode == 2 and done.stderr.strip().startswith(message), done.stderr[-2000:]
        assert len(done.stderr.strip().splitlines()) == 1
    typo = subprocess.run(toy_command(tmp_path, "hydra.sweeper.n_trail=3"), capture_output=True, text=True)
    assert typo.returncode != 0 and "Key 'n_trail' not in 'OptunaSweeperConf'" in typo.stderr  # the schema


def test_sweeper_is_registered_as_a_hydra_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
    assert "hydra_plugins.contrastive_sweeper.OptunaSweeper" in names
    target = OmegaConf.load(PROJECT_ROOT / "conf" / "hydra" / "sweeper" / "optuna.yaml")["_target_"]
    assert target == "hydra_plugins.contrastive_sweeper.OptunaSweeper"


# ---------------------------------------------------------------- whole sweeps of the toy task


def test_pruned_and_failed_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    # x > 5 raises ConfigError, x < -1 raises TrainingDiverged; step 1 reports objective(x) - 2, so the
    # threshold pruner (lower -6) stops exactly the trials with (x - 2)^2 > 4 that did not fail
    run_toy(
        tmp_path,
        "fail_above=5.0",
        "diverge_below=-1.0",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=-6.0",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=8",
    )
    trials = load_toy_study(tmp_path).trials
    assert len(trials) == 8
    for t in trials:
        x = t.params["x"]
        if x > 5.0:
            assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("ConfigError: x=")
        elif x < -1.0:
            assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("TrainingDiverged: ")
        elif (x - 2) ** 2 > 4:
            assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [1]
        else:
            assert t.state == TrialState.COMPLETE and t.value == pytest.approx(toy_objective(x))
        if t.state == TrialState.FAIL:
            assert "Traceback" in (Path(t.user_attrs["output_dir"]) / "error.txt").read_text()
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE}


def test_rerun_after_a_kill_resumes_and_retries_the_killed_trial(tmp_path):
    marker = tmp_path / "hanging"
    args = ("hydra.sweeper.n_trials=4", f"hang_marker={marker}", "hang_at_trial=1", "hydra/sweeper/pruner=none")
    first = start_toy_until_hang(
        tmp_path, marker, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = load_toy_study(tmp_path).trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]

    run_toy(tmp_path, *args)
    trials = load_toy_study(tmp_path).trials
    killed = trials[1]
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    assert killed.user_attrs["output_dir"] == str(tmp_path / "sweeps" / "toy" / "trial_1")  # recorded as it started
    assert retries[0].user_attrs["resumed_from"] is None  # the toy saves no checkpoint: its retry starts over
    counted = budget.budget_trials(trials)
    assert len(counted) == 4 and all(t.state == TrialState.COMPLETE for t in counted)
    assert trials[0].value == before[0].value  # the finished trial was kept, not rerun


def test_two_processes_share_one_study(tmp_path):
    args = ("hydra.sweeper.n_trials=6", "step_sleep=0.1", "hydra/sweeper/pruner=none")
    procs = [
        subprocess.Popen(toy_command(tmp_path, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=TOY_TIMEOUT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    trials = load_toy_study(tmp_path).trials
    counted = budget.budget_trials(trials)
    assert len(counted) == 6 and all(t.state == TrialState.COMPLETE for t in counted)
    assert all(t.state == TrialState.FAIL for t in trials if t not in counted)  # over-budget asks only
    assert len({t.params["x"] for t in counted}) == 6  # no trial sampled twice
    dirs = {t.user_attrs["output_dir"] for t in counted}
    assert len(dirs) == 6
    pids = {(Path(d) / "pid").read_text() for d in dirs}
    assert len(pids) == 2  # both processes ran trials


def test_the_study_names_its_objectives_and_stores_its_space_as_a_structure(tmp_path):
    """optuna-dashboard reads `study.metric_names` (not "Objective 0"); `hydra.sweeper.metric_names` sets them (the
    project's optuna.yaml: `${eval.objective}`)."""
    run_toy(tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.metric_names=neg_sq_error")
    study = load_toy_study(tmp_path)
    assert study.metric_names == ["neg_sq_error"]
    assert study.user_attrs["search_space"]["x"]["attributes"] == {"low": -2.0, "high": 6.0, "log": False, "step": None}


def test_the_plugin_runs_without_the_projects_callbacks(tmp_path):
    off = ("hydra.sweeper.callbacks.report=null", "hydra.sweeper.callbacks.resume=null")
    run_toy(tmp_path, *off, "make_model=true", "hydra.sweeper.n_trials=2")
    trials = load_toy_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[0].user_attrs["objective"]["value"] == pytest.approx(toy_objective(trials[0].params["x"]))
    sweep_dir = tmp_path / "sweeps" / "toy"
    assert not (sweep_dir / "summary.json").exists() and not (sweep_dir / "best").exists()  # no report


@pytest.mark.parametrize("target", ["optuna.samplers.TPESampler", "optuna.samplers.NSGAIISampler"])
def test_multi_objective_samplers_accept_pruned_trials_with_intermediate_values(target):
    """Optuna's TPE ranks pruned trials by `study.direction`, which a multi-objective study refuses."""
    spec = {"_target_": target, "n_startup_trials": 2} if "TPE" in target else {"_target_": target}
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=_impl.TrialSeededSampler(spec, 0))
    space = {"x": FloatDistribution(0.0, 1.0), "y": CategoricalDistribution(["a", "b"])}
    for i in range(6):
        trial = study.ask(space)
        if i % 2:
            trial.storage.set_trial_intermediate_value(trial._trial_id, 1, 0.5)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, [trial.params["x"], 1 - trial.params["x"]])
    assert 0.0 <= study.ask(space).params["x"] <= 1.0


def test_a_sampler_error_fails_the_asked_trial_instead_of_leaving_it_running(tmp_path):
    class Broken(optuna.samplers.RandomSampler):
        def sample_independent(self, *args, **kwargs):
            raise RuntimeError("sampler broke")

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, sampler=Broken())
    sweep = _impl.OptunaSweeperImpl(OptunaSweeperConf(n_trials=3, heartbeat_interval=None))
    space = search_space.SearchSpace(distributions={"x": FloatDistribution(0.0, 1.0)})
    with pytest.raises(RuntimeError, match="sampler broke"):
        sweep._ask_batch(study, job.rdb_storage(url), space)
    (trial,) = optuna.load_study(study_name="s", storage=url).trials
    assert trial.state == TrialState.FAIL and "sampler broke" in trial.user_attrs[job.FAIL_ATTR]


def test_sigterm_fails_the_running_trial_with_the_reason_and_a_rerun_retries_it(tmp_path):
    """SIGTERM (or SIGINT) stops the sweep cleanly: the running trial is told FAIL with the signal as its reason (not
    left RUNNING), its params are queued again, and the rerun finishes the budget with that retry."""
    marker = tmp_path / "hanging"
    args = ("hydra.sweeper.n_trials=3", f"hang_marker={marker}", "hang_at_trial=1", "hydra/sweeper/pruner=none")
    first = start_toy_until_hang(tmp_path, marker, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=60)[0]
    assert first.returncode != 0, output[-2000:]
    before = load_toy_study(tmp_path).trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert before[1].user_attrs["fail_reason"] == "SweepStopped: interrupted by SIGTERM"
    assert before[2].params == before[1].params and before[2].system_attrs["failed_trial"] == 1

    run_toy(tmp_path, *args)
    trials = load_toy_study(tmp_path).trials
    counted = budget.budget_trials(trials)
    assert len(counted) == 3 and all(t.state == TrialState.COMPLETE for t in counted)
    assert trials[2].state == TrialState.COMPLETE and trials[2].params == trials[1].params
    assert before[2].user_attrs.get("fail_reason")  # the retry inherited the failed trial's reason (Optuna copies it)
    assert trials[2].user_attrs.get("fail_reason") is None  # completed: the stale reason is dropped


def test_a_jobs_config_gets_the_storage_without_its_password_and_the_job_still_connects(tmp_path, monkeypatch):
    monkeypatch.delenv(job.STORAGE_ENV, raising=False)
    url = "postgresql://sweeper:s3cret@db:5432/optuna"
    overrides = job.address_overrides(url, "s", 3)
    assert overrides[0] == "++optuna.storage='postgresql://sweeper:***@db:5432/optuna'"
    assert job.job_storage("postgresql://sweeper:***@db:5432/optuna") == url  # handed over in the environment
    assert job.job_storage("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.delenv(job.STORAGE_ENV)
    with pytest.raises(SweeperConfigError, match=r"optuna.storage=postgresql://sweeper:\*\*\*@db.*~/.pgpass"):
        job.job_storage("postgresql://sweeper:***@db:5432/optuna")
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "overrides.yaml").write_text(f"- hydra.sweeper.storage={url}\n")
    (hydra_dir / "config.yaml").write_text("x: 1\n")
    assert job.hide_passwords_in_files(hydra_dir) == [hydra_dir / "overrides.yaml"]
    assert "s3cret" not in (hydra_dir / "overrides.yaml").read_text()


def test_a_closed_output_stops_the_sweep_instead_of_failing_every_trial(tmp_path):
    """A sweep whose stdout reader died (its parent killed) gets BrokenPipeError in every job: it stops at the
    first one, queues that trial again and exits non-zero, instead of burning the budget on instant failures."""
    done = subprocess.run(
        toy_command(tmp_path, "hydra.sweeper.n_trials=4", "broken_pipe_at_trial=1", "hydra/sweeper/pruner=none"),
        capture_output=True,
        text=True,
        timeout=TOY_TIMEOUT_S,
    )
    assert done.returncode != 0
    trials = load_toy_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["fail_reason"].startswith("BrokenPipeError")
    assert "its output closed" in done.stdout + done.stderr
    run_toy(tmp_path, "hydra.sweeper.n_trials=4", "hydra/sweeper/pruner=none")  # the rerun finishes the budget
    counted = budget.budget_trials(load_toy_study(tmp_path).trials)
    assert [t.state for t in counted] == [TrialState.COMPLETE] * 4


def test_the_joblib_launcher_runs_trials_side_by_side_on_one_study(tmp_path):
    """Hydra's joblib launcher (README: parallel trials in one process): 2 jobs at a time in worker processes,
    each finding its trial through the storage, reporting and being told; the budget holds exactly."""
    run_toy(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "step_sleep=0.2",
        "hydra/sweeper/pruner=none",
    )
    trials = load_toy_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(len(t.intermediate_values) == 3 for t in trials)  # each job reported to its own trial
    pids = {(tmp_path / "sweeps" / "toy" / f"trial_{t.number}" / "pid").read_text() for t in trials}
    assert len(pids) >= 2  # the jobs ran in joblib's worker processes (the basic launcher: one pid)


def test_url_passwords_never_reach_configs_or_logs(tmp_path):
    """A storage URL's password stays in the storage: hidden in multirun.yaml and in the launcher's log of each
    job's overrides (and, job side, in config.yaml and the MLflow params: test_tracking)."""
    assert job.hide_passwords("postgresql+psycopg://sweeper:s3cr%40t@db:5432/optuna?x=1") == (
        "postgresql+psycopg://sweeper:***@db:5432/optuna?x=1"
    )
    assert job.hide_passwords("sqlite:////tmp/a.db http://host:5000/x") == "sqlite:////tmp/a.db http://host:5000/x"
    done = run_toy(tmp_path, "hydra.sweeper.n_trials=1", "+note=http://user:s3cret@mlflow-host:5000/")
    assert "s3cret" not in done.stdout + done.stderr
    assert "http://user:***@mlflow-host:5000/" in done.stdout + done.stderr  # the launcher's line, hidden
    multirun = (tmp_path / "sweeps" / "toy" / "multirun.yaml").read_text()
    assert "s3cret" not in multirun and "user:***@mlflow-host" in multirun


def test_a_stopped_sweep_cancels_the_submitit_jobs_it_left_running(tmp_path, caplog):
    """SIGTERM / SIGINT while trial jobs run (here: submitit's local executor, as SLURM jobs are run): the sweep
    cancels them on its way out instead of leaving them running."""
    import threading
    import time

    submitit = pytest.importorskip("submitit")
    from hydra_plugins.contrastive_sweeper import jobs as cluster_jobs
    from hydra_plugins.contrastive_sweeper._errors import SweepStopped

    submitted: list = []

    class Launcher:  # what hydra-submitit-launcher's launch does: submit through an executor, wait for the results
        def launch(self, job_overrides, initial_job_idx):
            jobs = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local").map_array(time.sleep, [600])
            submitted.extend(jobs)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # the stop reaches the sweep now
            return [j.results()[0] for j in jobs]

    def stop(signum, frame):
        raise SweepStopped("SIGTERM")

    previous = signal.signal(signal.SIGUSR1, stop)
    try:
        with pytest.raises(SweepStopped):
            cluster_jobs.launch_each(Launcher(), [["x=1"]], 0)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    (job,) = submitted
    assert f"cancelled job(s) {job.job_id}: the sweep was stopped (interrupted by SIGTERM)" in caplog.text
    deadline = time.monotonic() + 120  # a hang guard only
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.done()  # cancelled: its process ended, long before its 600 s sleep

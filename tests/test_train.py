"""Training: the Hydra entry point end to end on the fixture, determinism, failure handling, samplers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config

from contrastive import PROJECT_ROOT
from contrastive.errors import TrainingDiverged

FAST = [
    "data=fixture",
    "trainer.max_steps=4",
    "batch.size=8",
    "trainer.logging_steps=1",
    "eval.n_boot=50",
    "eval.umap.n_pairs=30",
    "eval.umap.n_neighbors=5",
    "tracking.log_model=false",
]


def _cfg(tmp_path: Path, *overrides: str):
    return compose_config(
        "train",
        *FAST,
        f"paths.output_dir={tmp_path / 'out'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        *overrides,
    )


def _run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "contrastive.train",
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_train_cli_end_to_end(tmp_path):
    """`python -m contrastive.train` trains, evaluates, saves a reloadable checkpoint and one complete MLflow run."""
    proc = _run_cli(tmp_path, "loss.aux_weight=0.3", "trainer.eval_steps=2", "tracking.log_model=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for side in ("finetuned", "baseline"):
        assert 0.0 <= metrics[side]["mrr_at_10"] <= 1.0
        assert 0.0 <= metrics[side]["pair_ap"] <= 1.0
    assert metrics["objective"]["name"] == "mrr_at_10"
    assert metrics["objective"]["value"] == pytest.approx(metrics["finetuned"]["mrr_at_10"])
    assert {"delta", "ci_low", "ci_high"} <= set(metrics["delta"]["mrr_at_10"])
    assert (run_dir / "config.yaml").is_file()
    assert "baseline" in proc.stdout and "output dir" in proc.stdout

    from contrastive.model import load_model

    model = load_model(str(run_dir / "model"))
    assert model.encode(["How do I learn Python?"]).shape == (1, 384)

    from contrastive import tracking

    tracking.configure(f"sqlite:///{tmp_path / 'mlruns.db'}", "contrastive")
    info = tracking.run_info(metrics["mlflow_run_id"])
    assert info["status"] == "FINISHED"
    assert info["params"]["loss.aux_weight"] == "0.3"
    assert info["params"]["batch.size"] == "8"
    cfg = _cfg(tmp_path, "loss.aux_weight=0.3", "trainer.eval_steps=2", "tracking.log_model=true")
    expected = {k for k in tracking.config_params(cfg) if not k.startswith("paths.") and not k.startswith("tracking.")}
    assert expected <= set(info["params"])  # every resolved config value
    names = {"finetuned/mrr_at_10", "baseline/mrr_at_10", "delta/mrr_at_10", "ci/mrr_at_10/low", "train/loss"}
    assert names <= set(info["metrics"]) and not any("." in m for m in info["metrics"])  # one namespace style
    assert not any(m.startswith("data") for m in info["metrics"])  # counts are params, not charts
    assert info["params"]["data.train_pairs_used"] and info["params"]["data.eval_n_queries"]
    assert not any("/" in p for p in info["params"])  # one param naming style: dotted, as the config keys
    assert info["tags"]["mlflow.runName"].startswith("data=fixture,trainer.max_steps=4")  # what changed
    assert info["tags"]["eval_protocol"].startswith("split=val,k=10")
    loss_steps = [step for step, _ in tracking.metric_history(metrics["mlflow_run_id"], "train/loss")]
    assert len(loss_steps) >= 4 and len(loss_steps) == len(set(loss_steps))  # one point per logged step
    assert len(tracking.metric_history(metrics["mlflow_run_id"], "intermediate/objective")) >= 1
    assert info["tags"]["data_fingerprint"] and info["tags"]["mlflow.source.git.commit"] is not None
    arts = info["artifacts"]
    assert "config.yaml" in arts and "metrics.json" in arts and "data_summary.json" in arts
    assert any(a.startswith("figures/") and a.endswith(".png") for a in arts)
    import mlflow

    run = mlflow.get_run(metrics["mlflow_run_id"])
    assert run.inputs.dataset_inputs[0].dataset.digest == info["tags"]["data_fingerprint"][:36]
    uri = info["tags"]["model_uri"]  # the sentence_transformers flavor, loadable by MLflow
    assert mlflow.models.get_model_info(uri).flavors.keys() >= {"sentence_transformers", "python_function"}
    assert (tmp_path / "mlartifacts").is_dir()  # the artifact root sits beside the store


@pytest.mark.slow
def test_bad_config_fails_before_training(tmp_path):
    for override, key in [
        ("batch.size=1", "batch.size"),
        ("trainer.lr=0", "trainer.lr"),
        ("batch.sampler=fancy", "batch.sampler"),
        ("loss.aux=mse", "loss.aux"),
    ]:
        proc = _run_cli(tmp_path, override)
        assert proc.returncode == 2, override
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        assert lines[-1].startswith("error: " + key), proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "run").exists()  # a refused run leaves no (empty) run directory


def _losses(tmp_path: Path, name: str) -> list[float]:
    from contrastive.data import prepare
    from contrastive.model import load_model
    from contrastive.settings import load_train
    from contrastive.training import fit

    settings = load_train(_cfg(tmp_path / name, "tracking.enabled=false", "trainer.max_steps=3"))
    data = prepare(settings.data)
    model = load_model(settings.model.name_or_path, settings.model.max_seq_length)
    return [entry["loss"] for entry in fit(model, settings, data, tmp_path / name)["history"]]


@pytest.mark.slow
def test_same_seed_same_losses(tmp_path):
    first, second = _losses(tmp_path, "a"), _losses(tmp_path, "b")
    assert len(first) == 3
    assert first == second


@pytest.mark.slow
def test_diverging_loss_fails_the_run(tmp_path):
    from contrastive import tracking
    from contrastive.train import run

    cfg = _cfg(tmp_path, "trainer.lr=1.0e+12", "trainer.warmup_ratio=0.0", "trainer.max_steps=6", "run_name=diverge")
    with pytest.raises(TrainingDiverged, match="non-finite"):
        run(cfg)
    tracking.configure(cfg.tracking.tracking_uri, cfg.tracking.experiment)
    import mlflow

    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    assert runs and runs[0].info.status == "FAILED"
    assert "TrainingDiverged" in runs[0].data.tags["error"]
    assert not (tmp_path / "out" / "model").exists()


def test_eval_at_fractions_of_the_epoch():
    from contrastive.training import fraction_steps

    assert fraction_steps([0.125, 0.25, 0.5], 342) == {43, 86, 171}  # one full-data epoch at batch 64
    assert fraction_steps([0.1, 0.5], 4) == {1, 2}  # never step 0


def test_eval_at_fractions_are_checked(compose_cfg):
    from contrastive.errors import ConfigError
    from contrastive.settings import load_train

    assert load_train(compose_cfg("trainer.eval_at_fractions=[0.25,0.5]")).trainer.eval_at_fractions == [
        0.25,
        0.5,
    ]
    for bad in ("[0.5,0.25]", "[1.0]", "[0]"):
        with pytest.raises(ConfigError, match="trainer.eval_at_fractions"):
            load_train(compose_cfg(f"trainer.eval_at_fractions={bad}"))


def test_eval_due_by_steps_or_examples():
    from contrastive.training import eval_due

    assert [s for s in range(1, 9) if eval_due(s, 64, 3, 0)] == [3, 6]
    # every 100 examples at batch 64: crossings of 100, 200, 300 happen at steps 2, 4, 5
    assert [s for s in range(1, 6) if eval_due(s, 64, 0, 100)] == [2, 4, 5]
    assert not any(eval_due(s, 64, 0, 0) for s in range(1, 20))


def test_aux_share_sets_the_aux_datasets_size(tmp_path, fixture_data):
    from contrastive.settings import load_train
    from contrastive.training import training_datasets

    recipe = ("loss.combine=alternate", "loss.negatives=labeled")  # aux_share sets the alternate steps' share
    full = training_datasets(fixture_data, load_train(_cfg(tmp_path, *recipe)))[1]
    part = training_datasets(fixture_data, load_train(_cfg(tmp_path, *recipe, "loss.aux_share=0.5")))[1]
    assert abs(part["examples_aux_pairs"] - full["examples_aux_pairs"] / 2) <= 1  # rounded per label
    assert {k: v for k, v in part.items() if k != "examples_aux_pairs"} == {
        k: v for k, v in full.items() if k != "examples_aux_pairs"
    }


# ---------------------------------------------------------------- the pinned fixture run
PINNED = PROJECT_ROOT / "tests" / "fixtures" / "fixture_run_metrics.json"


def _leaves(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory) -> Path:
    """`python -m contrastive.train data=fixture` (the default recipe) once for this module: its run directory."""
    tmp_path = tmp_path_factory.mktemp("fixture_run")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "contrastive.train",
            "data=fixture",
            f"hydra.run.dir={tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / "run"


@pytest.mark.slow
def test_fixture_run_metrics_are_pinned(fixture_run):
    """`python -m contrastive.train data=fixture` (the default recipe) gives exactly the pinned metrics.json values
    (tests/fixtures/fixture_run_metrics.json, re-pinned when the default became mined negatives + joint losses;
    before that, written by the run before the settings/evaluation refactor): a change of any number, or any key,
    fails here. On the 180-pair fixture that recipe makes one optimiser step, at the warm-up's learning rate 0."""
    got = json.loads((fixture_run / "metrics.json").read_text())
    pinned = json.loads(PINNED.read_text())
    want = dict(_leaves(pinned))
    have = {k: v for k, v in _leaves(got) if not k.startswith((".wall_time_s", ".mlflow_run_id"))}
    assert sorted(have) == sorted(want)
    for key, value in want.items():
        if isinstance(value, float):
            assert have[key] == pytest.approx(value, rel=0, abs=1e-12), key
        else:
            assert have[key] == value, key


def test_a_batch_larger_than_the_data_is_refused(tmp_path, fixture_data):
    from contrastive.errors import ConfigError
    from contrastive.settings import load_train
    from contrastive.training import training_datasets

    settings = load_train(_cfg(tmp_path, "batch.size=100000"))
    with pytest.raises(ConfigError, match=r"batch.size=100000: larger than the 108 examples"):
        training_datasets(fixture_data, settings)


@pytest.mark.slow
def test_fixture_run_model_card(fixture_run, fixture_data):
    """The checkpoint's README.md (sentence-transformers' model card, filled by contrastive.model_card) names the base
    model, QQP with the data fingerprint, the losses and their settings in words, and the evaluation beside the
    baseline."""
    card = (fixture_run / "model" / "README.md").read_text()
    metrics = json.loads((fixture_run / "metrics.json").read_text())
    fingerprint = fixture_data.fingerprint
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert "- **Base model:** [sentence-transformers/all-MiniLM-L6-v2]" in card
    assert "Unknown](https://huggingface.co/unknown)" not in card
    mined = "QQP mined triplets: question, its duplicate, non-duplicates mined by the untuned model"
    assert f"{mined} (data fingerprint {fingerprint})" in card  # the Trainer's lone dataset, named
    assert "QQP None" not in card and "#### mnrl_mined" not in card
    assert "WeightedLoss" not in card and "JointLoss" not in card
    assert "- loss:MultipleNegativesRankingLoss" in card and "- loss:CosineSimilarityLoss" in card
    assert "<code>MultipleNegativesRankingLoss</code>" in card
    assert "scale: 20.0" in card and "plus 1 mined by the untuned model" in card and "hard negatives" in card
    assert "plus aux_weight 0.3 x cosine on a labelled pair zipped onto each row" in card
    assert "## Evaluation" in card
    header = next(line for line in card.splitlines() if line.startswith("| Metric"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Metric", "fine-tuned", "baseline", "delta [95% CI]"]
    ft, base, delta = metrics["finetuned"], metrics["baseline"], metrics["delta"]["pair_ap"]
    row = next(line for line in card.splitlines() if line.startswith("| pair_ap "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "pair_ap",
        f"{ft['pair_ap']:.4f}",
        f"{base['pair_ap']:.4f}",
        f"{delta['delta']:+.4f} [{delta['ci_low']:+.4f}, {delta['ci_high']:+.4f}]",
    ]
    assert "| **mrr_at_10**" in card  # the objective, in bold
    assert "pair_threshold" not in card  # a cut-off the evaluation found, not a metric
    # what sentence-transformers' own card carries, filled truly
    assert "\nlicense: apache-2.0\n" in card and "\ndatasets:\n- nyu-mll/glue\n" in card
    # MNRL's citation as the library's own loss gives it (InfoNCE, van den Oord et al., for query_to_doc)
    assert "@misc{oord2019representationlearningcontrastivepredictive," in card
    assert "sentence_transformers_model_id" not in card
    assert f'SentenceTransformer("{fixture_run / "model"}")' in card
    import yaml

    widget = yaml.safe_load(card.split("---")[1])["widget"]
    for example in widget:
        assert example["source_sentence"] not in example["sentences"]
        assert len(set(example["sentences"])) == len(example["sentences"])


@pytest.mark.slow
def test_sigterm_ends_the_run_killed_and_removes_a_dead_runs_half_model(tmp_path):
    """SIGTERM mid-training: exit 143, one `stopped:` line, the MLflow run KILLED with the signal as its error (not
    left RUNNING). A half-saved model a killed process left beside the run is removed when the next run starts."""
    import signal

    import mlflow

    run_dir = tmp_path / "runs" / "now"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / "runs" / "before" / f".model.tmp-{int(dead.stdout)}"
    leftover.mkdir(parents=True)
    args = [
        sys.executable,
        "-m",
        "contrastive.train",
        *FAST,
        "trainer.max_steps=400",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("training examples:"):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines()]
    assert "stopped: interrupted by SIGTERM" in lines  # (a progress bar closing at exit may print after it)
    assert not leftover.exists()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "KILLED"
    assert run.data.tags["state"] == "KILLED" and "SIGTERM" in run.data.tags["error"]


@pytest.mark.slow
def test_a_wrecked_model_is_flagged_not_reported_as_a_plain_success(tmp_path):
    """trainer.lr=1e3 wrecks the model: the run still completes, but metrics.json, the printed table and the MLflow
    tag `health` say `collapsed`."""
    import mlflow

    proc = _run_cli(tmp_path, "trainer.lr=1e3", "trainer.warmup_ratio=0", "eval.umap.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [f.partition(":")[0] for f in doc["flags"]] == ["collapsed"]
    assert "WARNING: collapsed: mrr_at_10" in proc.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FINISHED" and run.data.tags["health"] == "collapsed"

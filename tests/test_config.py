"""config.py on the real composed config (Hydra compose API), and the CLI's handling of bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import contrastive
from contrastive.config import AUX_LOSSES, INTERLEAVE, SAMPLERS, check_train_config
from contrastive.data import prepare
from contrastive.errors import ConfigError

GROUPS = ("model", "data", "loss", "batch", "trainer", "eval", "tracking", "paths")


def _compose(*overrides: str) -> DictConfig:
    """The real train config; `paths.output_dir` needs a running Hydra job, so tests never resolve it."""
    with initialize_config_dir(config_dir=str(contrastive.CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_default_config_composes_and_passes():
    cfg = _compose()
    assert set(GROUPS) <= set(cfg)
    assert {g: cfg.hydra.runtime.choices[g] for g in ("model", "data", "loss", "batch")} == {
        "model": "minilm",
        "data": "qqp",
        "loss": "mnrl_cosine",
        "batch": "default",
    }
    check_train_config(cfg)
    assert cfg.loss.aux in AUX_LOSSES and cfg.batch.sampler in SAMPLERS and cfg.loss.interleave in INTERLEAVE


def test_every_interpolation_but_the_job_dir_resolves(tmp_path):
    cfg = _compose()
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    cfg.paths.output_dir = str(tmp_path)  # ${hydra:runtime.output_dir} exists only inside a running job
    resolved = OmegaConf.to_container(cfg, resolve=True)
    root = contrastive.PROJECT_ROOT
    assert resolved["paths"]["root_dir"] == str(root)
    assert Path(resolved["data"]["default_path"]).resolve() == (root.parent / "shared/data/qqp/train.parquet").resolve()
    assert resolved["tracking"]["tracking_uri"].startswith("sqlite:///")


@pytest.mark.parametrize(("group", "expected"), [("qqp", "auto"), ("qqp_local", "local"), ("fixture", "local")])
def test_data_groups_compose(group, expected):
    cfg = _compose(f"data={group}")
    assert cfg.data.source == expected
    check_train_config(cfg)


def test_fixture_config_prepares_the_fixture():
    cfg = _compose("data=fixture")
    assert Path(cfg.data.path) == contrastive.PROJECT_ROOT / "tests/fixtures/qqp_fixture.csv"
    prepared = prepare(cfg.data)
    assert set(prepared.splits) == {"train", "val", "test"}
    assert prepared.summary["leaked_keys"] == 0
    assert prepared.summary["rows_kept"] == 300


BAD = [
    ("loss.aux_weight=-1", "loss.aux_weight", "-1"),
    ("loss.aux_weight=abc", "loss.aux_weight", "'abc'"),
    ("loss.aux_share=0", "loss.aux_share", "0"),
    ("loss.aux_share=1.5", "loss.aux_share", "1.5"),
    ("loss.scale=0", "loss.scale", "0"),
    ("trainer.max_grad_norm=0", "trainer.max_grad_norm", "0"),
    ("loss.aux=triplet", "loss.aux", "'triplet'"),
    ("loss.interleave=zigzag", "loss.interleave", "'zigzag'"),
    ("loss.hard_negatives=maybe", "loss.hard_negatives", "'maybe'"),
    ("loss.cached=1", "loss.cached", "1"),
    ("loss.mini_batch_size=0", "loss.mini_batch_size", "0"),
    ("loss.mini_batch_size=true", "loss.mini_batch_size", "True"),  # a bool is no integer
    ("batch.size=1", "batch.size", "1"),
    ("batch.size=8.5", "batch.size", "8.5"),
    ("batch.sampler=shuffle", "batch.sampler", "'shuffle'"),
    ("trainer.lr=0", "trainer.lr", "0"),
    ("trainer.lr=-1e-5", "trainer.lr", "-1e-05"),
    ("trainer.epochs=0", "trainer.epochs", "0"),
    ("trainer.max_steps=1.5", "trainer.max_steps", "1.5"),
    ("trainer.max_steps=false", "trainer.max_steps", "False"),
    ("trainer.warmup_ratio=1", "trainer.warmup_ratio", "1"),
    ("trainer.weight_decay=-0.1", "trainer.weight_decay", "-0.1"),
    ("trainer.eval_steps=-1", "trainer.eval_steps", "-1"),
    ("trainer.logging_steps=0", "trainer.logging_steps", "0"),
    ("data.max_pairs=0", "data.max_pairs", "0"),
    ("eval.split=dev", "eval.split", "'dev'"),
    ("eval.k=0", "eval.k", "0"),
    ("eval.k=true", "eval.k", "True"),
    ("eval.n_boot=-1", "eval.n_boot", "-1"),
    ("eval.ci=1.0", "eval.ci", "1.0"),
]


@pytest.mark.parametrize(("override", "key", "shown"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_a_config_error_naming_key_and_value(override, key, shown):
    cfg = _compose(override)
    with pytest.raises(ConfigError) as err:
        check_train_config(cfg)
    message = str(err.value)
    assert message.startswith(f"{key}={shown}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    "override",
    [
        "loss.aux_weight=0",
        "batch.size=2",
        "data.max_pairs=1000",
        "trainer.max_steps=5",
        "trainer.warmup_ratio=0",
        "eval.n_boot=0",
        "loss.aux=cosent",
        "loss.aux=online_contrastive",
        "batch.sampler=random",
        "batch.sampler=no_duplicates",
        "loss.interleave=round_robin",
    ],
)
def test_edge_values_are_accepted(override):
    check_train_config(_compose(override))


# ---------------------------------------------------------------- the CLI, end to end
def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "contrastive.train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_cli_prints_the_composed_config(tmp_path):
    done = _cli("--cfg", "job", "loss.aux_weight=0.7", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = OmegaConf.create(done.stdout)
    assert set(GROUPS) <= set(printed)
    assert printed.loss.aux_weight == 0.7
    assert printed.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_cli_help_lists_the_groups(tmp_path):
    done = _cli("--help", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    groups = done.stdout.split("== Configuration groups ==")[1].split("==")[0]
    for group in GROUPS:
        assert f"{group}:" in groups, group
    assert "qqp_local" in groups and "fixture" in groups


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loss.aux_weight=-1"], "loss.aux_weight=-1"),
        (["data=qqp_local", "data.path=/nonexistent.parquet"], "data.path: file not found: /nonexistent.parquet"),
    ],
)
def test_cli_user_error_is_one_line_without_traceback(tmp_path, overrides, expected):
    done = _cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}", "tracking.enabled=false", tmp_path=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert lines == [lines[0]] and lines[0].startswith("error: ") and expected in lines[0], done.stderr

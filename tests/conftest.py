"""Shared fixtures: the committed QQP-like fixture, small synthetic pair files, the one real model load."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from contrastive import CONF_DIR, PROJECT_ROOT
from contrastive.data import PreparedData, prepare
from contrastive.settings import DataSettings, TrainSettings, load_train

FIXTURE_CSV = PROJECT_ROOT / "tests" / "fixtures" / "qqp_fixture.csv"
SHARED_QQP = PROJECT_ROOT.parent / "shared" / "data" / "qqp" / "train.parquet"


@pytest.fixture(autouse=True)
def _own_mlflow_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or write the project's mlruns.db or registry cache: MLflow URIs resolve in a temp store."""
    root = tmp_path_factory.mktemp("mlflow_default")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    monkeypatch.setenv("CONTRASTIVE_REGISTRY_CACHE", str(root / "registry"))


def run_module(module: str, *args: str, timeout: int = 60, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` offline, output captured: the entry points' end-to-end tests."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def compose_config(config_name: str = "train", *overrides: str) -> DictConfig:
    """conf/<config_name>.yaml with `overrides`, composed by Hydra's compose API as the entry points compose it.

    The one way tests build configs: real YAML, real schema, small overrides (no hand-written config dicts).
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def train_settings(*overrides: str) -> TrainSettings:
    """The checked settings of conf/train.yaml with `overrides`."""
    return load_train(compose_config("train", *overrides))


def fixture_data_settings(*overrides: str) -> DataSettings:
    """The `data=fixture` group (the committed QQP-like fixture), checked, with `data.*` overrides."""
    return train_settings("data=fixture", *overrides).data


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Factory: a composed config whose job dir, caches and MLflow store live under tmp_path."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        isolated = {
            "train": [
                f"paths.output_dir={tmp_path / 'out'}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}",
            ],
            "app": [f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_root={tmp_path / 'outputs'}"],
        }.get(config_name, [])
        return compose_config(config_name, *isolated, *overrides)

    return _compose


@pytest.fixture(scope="session")
def fixture_csv() -> Path:
    """The committed QQP-like fixture (tests/fixtures/qqp_fixture.csv)."""
    return FIXTURE_CSV


@pytest.fixture(scope="session")
def shared_qqp() -> Path:
    """The shared QQP parquet beside the repository; tests using it skip where it is absent."""
    if not SHARED_QQP.is_file():
        pytest.skip(f"shared QQP parquet not present at {SHARED_QQP}")
    return SHARED_QQP


@pytest.fixture
def data_cfg() -> DataSettings:
    """Fresh data settings (conf/data/fixture.yaml, composed and checked); tests may change them."""
    return fixture_data_settings()


@pytest.fixture(scope="session")
def fixture_data() -> PreparedData:
    """The fixture prepared once with whole connected components per split (group_by=all_pairs)."""
    return prepare(fixture_data_settings())


@pytest.fixture(scope="session")
def fixture_data_by_duplicates() -> PreparedData:
    """The fixture prepared once with the design's grouping (duplicate components; crossings dropped)."""
    return prepare(fixture_data_settings("data.split.group_by=duplicates"))


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame in the format its file extension names (parquet, csv, tsv, jsonl)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix in (".jsonl", ".json"):
        frame.to_json(path, orient="records", lines=True)
    else:
        raise ValueError(f"no writer for {path}")
    return path


@pytest.fixture
def write_pairs(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write rows (tuples or a DataFrame) as `name` under tmp_path, in the format of its extension."""

    def _write(
        rows: Sequence[Sequence[Any]] | pd.DataFrame,
        name: str = "pairs.csv",
        columns: Sequence[str] = ("question1", "question2", "label"),
    ) -> Path:
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=list(columns))
        return write_frame(frame, tmp_path / name)

    return _write


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2, loaded once per session (about 8 s on CPU) for every test that needs it."""
    from contrastive.model import DEFAULT_MODEL_ID, load_model

    return load_model(DEFAULT_MODEL_ID, max_seq_length=128, device="cpu")


def perturbed_checkpoint(model: Any, path: Path, scale: float, seed: int) -> Path:
    """`model` with a small seeded perturbation of every weight matrix, saved as a checkpoint at `path` (a stand-in
    for a fine-tune of it: merges and soups accept it as one of the same base)."""
    import copy

    import torch

    copied = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in copied.parameters():
            if p.dim() == 2:
                p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=gen))
    copied.save(str(path))
    return path

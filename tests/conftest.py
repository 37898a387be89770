"""Shared fixtures: the committed QQP-like fixture, small synthetic pair files, the one real model load."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from contrastive import PROJECT_ROOT
from contrastive.data import PreparedData, prepare

FIXTURE_CSV = PROJECT_ROOT / "tests" / "fixtures" / "qqp_fixture.csv"
SHARED_QQP = PROJECT_ROOT.parent / "shared" / "data" / "qqp" / "train.parquet"

_FIXTURE_CFG: dict[str, Any] = {
    "source": "local",
    "path": str(FIXTURE_CSV),
    "format": None,
    "columns": {"question1": "question1", "question2": "question2", "label": "label", "qid1": "qid1", "qid2": "qid2"},
    "on_empty": "drop",
    "split": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0, "group_by": "all_pairs"},
}


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
def data_cfg() -> dict[str, Any]:
    """A fresh data config (as plain dicts) pointing at the committed fixture; tests may mutate it."""
    return copy.deepcopy(_FIXTURE_CFG)


@pytest.fixture(scope="session")
def fixture_data() -> PreparedData:
    """The fixture prepared once with whole connected components per split (group_by=all_pairs)."""
    return prepare(copy.deepcopy(_FIXTURE_CFG))


@pytest.fixture(scope="session")
def fixture_data_by_duplicates() -> PreparedData:
    """The fixture prepared once with the design's grouping (duplicate components; crossings dropped)."""
    cfg = copy.deepcopy(_FIXTURE_CFG)
    cfg["split"]["group_by"] = "duplicates"
    return prepare(cfg)


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

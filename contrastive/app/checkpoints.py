"""Which checkpoint the app serves, and its duplicate thresholds (best-F1 cosines from the run's metrics.json)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastive.errors import ConfigError, ModelError

log = logging.getLogger("contrastive.app")  # one logger for the whole app package

MODEL_MARKERS = ("modules.json", "config_sentence_transformers.json", "model.safetensors")
REGISTERED_MODEL = "contrastive-qqp"  # conf/tracking/mlflow.yaml's registered_model: the app serves its @best


# ---------------------------------------------------------------- which checkpoint
@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint the app serves: a model directory, or None when only the untuned baseline exists."""

    path: str | None
    source: str  # checkpoint | sweep best | latest run | none
    note: str = ""


def is_model_dir(path: str | os.PathLike) -> bool:
    """True for a saved SentenceTransformer directory."""
    directory = Path(path)
    return directory.is_dir() and any((directory / name).is_file() for name in MODEL_MARKERS)


def _model_dir_in(path: Path) -> Path | None:
    """The model directory at `path` or in its `model/` subdirectory (a promoted run dir)."""
    for candidate in (path, path / "model"):
        if is_model_dir(candidate):
            return candidate
    return None


def _newest(paths: Sequence[Path]) -> Path | None:
    return max(paths, key=lambda p: (p.stat().st_mtime, str(p)), default=None)


def registry_best(registered_model: str | None = REGISTERED_MODEL) -> str | None:
    """`models:/<registered_model>@best` when the MLflow store ($MLFLOW_TRACKING_URI, else the project's
    mlruns.db) has that alias; a SQLite store that does not exist is not opened (nor MLflow imported)."""
    from contrastive import PROJECT_ROOT

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlruns.db'}"
    if not registered_model or (uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file()):
        return None
    from contrastive import tracking

    try:
        return tracking.registry_champion(registered_model, uri)
    except Exception as exc:  # noqa: BLE001 - an unreadable store: fall back to outputs/
        log.warning("MLflow registry at %s unreadable: %s", uri, exc)
        return None


def find_checkpoint(
    model: str | None, output_root: str | os.PathLike, registered_model: str | None = REGISTERED_MODEL
) -> Checkpoint:
    """`checkpoint` if given (a dir, hub id or MLflow model URI); else the MLflow registry's champion
    (`models:/<registered_model>@best`); else the newest `outputs/sweeps/*/best`; else the newest
    `outputs/runs/**/model`; else no checkpoint (the app then serves the untuned baseline alone and says so)."""
    if model in (None, "") and (champion := registry_best(registered_model)):
        found = find_checkpoint(champion, output_root)
        return Checkpoint(found.path, "registry champion", champion)
    if model not in (None, ""):
        from contrastive.model import resolve_model

        try:
            resolved = resolve_model(str(model))
        except ModelError as exc:
            raise ConfigError(f"checkpoint={model!r}: {str(exc).split(': ', 1)[-1]}") from None
        directory = _model_dir_in(Path(resolved)) if Path(resolved).is_dir() else None
        if Path(resolved).is_dir() and directory is None:
            raise ConfigError(f"checkpoint={model!r}: not a SentenceTransformer directory (no modules.json)")
        return Checkpoint(str(directory or resolved), "checkpoint")
    root = Path(output_root)
    bests = [d for p in sorted(root.glob("sweeps/*/best")) if (d := _model_dir_in(p)) is not None]
    if best := _newest(bests):
        return Checkpoint(str(best), "latest promoted sweep best")
    runs = [p for p in sorted(root.glob("runs/**/model")) if is_model_dir(p)]
    if run := _newest(runs):
        return Checkpoint(str(run), "newest training run")
    return Checkpoint(None, "none", f"no checkpoint under {root}/sweeps/*/best or {root}/runs/**/model")


# ---------------------------------------------------------------- which thresholds
@dataclass(frozen=True)
class Thresholds:
    """Cosine thresholds for a duplicate verdict, per model, and where they came from."""

    finetuned: float
    baseline: float
    calibrated: bool
    source: str | None = None  # the metrics.json read, if any
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)


def find_metrics(model_dir: str | os.PathLike | None) -> Path | None:
    """metrics.json in the model directory, else in its parent (the run directory)."""
    if not model_dir:
        return None
    directory = Path(model_dir)
    for candidate in (directory / "metrics.json", directory.parent / "metrics.json"):
        if candidate.is_file():
            return candidate
    return None


def _threshold(metrics: dict[str, Any], side: str) -> float | None:
    value = (metrics.get(side) or {}).get("pair_threshold") if isinstance(metrics.get(side), dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def load_thresholds(model_dir: str | os.PathLike | None, fallback: float) -> Thresholds:
    """`finetuned.pair_threshold` and `baseline.pair_threshold` from the checkpoint's metrics.json (best-F1 on
    the eval split); the configured fallback, marked uncalibrated, where a file or a value is missing."""
    path = find_metrics(model_dir)
    if path is None:
        why = "no checkpoint" if not model_dir else f"no metrics.json in {model_dir} or its parent"
        return Thresholds(fallback, fallback, False, None, why)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return Thresholds(fallback, fallback, False, str(path), f"{path} unreadable ({exc})")
    finetuned, baseline = _threshold(metrics, "finetuned"), _threshold(metrics, "baseline")
    if finetuned is None:
        return Thresholds(
            fallback,
            baseline if baseline is not None else fallback,
            False,
            str(path),
            f"{path} has no finetuned.pair_threshold",
            metrics,
        )
    note = "" if baseline is not None else f"{path} has no baseline.pair_threshold (the baseline uses the fallback)"
    return Thresholds(finetuned, baseline if baseline is not None else fallback, True, str(path), note, metrics)

"""The embedding cache: a .npy per cache key (written atomically, with the key beside it as JSON); a file read
once stays in memory for the process (read-only) while it is unchanged, so a sweep's trials in one worker load the
baseline's embeddings once."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from contrastive.data import PreparedData
from contrastive.evaluation.eval_sets import EvalSet
from contrastive.utils import file_state, json_digest, write_atomic, write_text_atomic

log = logging.getLogger(__name__)


def baseline_cache_key(model: Any, data: PreparedData, es: EvalSet) -> dict[str, Any]:
    """What the untuned model's (group `model`) embeddings depend on: weights, data, split, corpus and protocol."""
    from contrastive.model import backend_args, fingerprint

    return {
        "model": fingerprint(model.name_or_path),
        "data": data.fingerprint,
        "split": es.split,
        "corpus": es.corpus_hash,
        "max_seq_length": model.max_seq_length,
        "backend": backend_args(model)["backend"],
        **es.protocol,
    }


def cache_path(cache_dir: str | os.PathLike, key: Mapping[str, Any]) -> Path:
    """The .npy file of a cache key: `<split>-<hash of the key>.npy` under cache_dir."""
    digest = json_digest(dict(key))
    return Path(cache_dir).expanduser() / f"{key['split']}-{digest}.npy"


_READ: dict[tuple[str, int, int], np.ndarray] = {}  # this process's last reads: a sweep's next trial reuses them
KEEP_READS = 4  # cache files kept in memory at most


def _load(path: Path) -> np.ndarray:
    """np.load of a cache file, kept in memory (read-only) for the process while the file is unchanged."""
    key = file_state(path)
    if key not in _READ:
        emb = np.load(path, allow_pickle=False)
        emb.flags.writeable = False
        while len(_READ) >= KEEP_READS:
            _READ.pop(next(iter(_READ)))
        _READ[key] = emb
    return _READ[key]


def _read_cached(path: Path, rows: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        emb = _load(path)
    except (OSError, ValueError) as exc:
        log.warning("baseline cache %s unreadable (%s); recomputing", path, exc)
        return None
    if emb.ndim != 2 or emb.shape[0] != rows or emb.dtype != np.float32:
        log.warning("baseline cache %s has shape %s, expected %d rows; recomputing", path, emb.shape, rows)
        return None
    return emb


def cached_embeddings(
    path: Path, key: Mapping[str, Any], rows: int, compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, bool]:
    """Embeddings from `path` when it holds `rows` rows, else `compute()` written there atomically."""
    emb = _read_cached(path, rows)
    if emb is not None:
        return emb, True
    emb = np.ascontiguousarray(compute(), dtype=np.float32)
    write_atomic(path, lambda handle: np.save(handle, emb, allow_pickle=False))
    write_text_atomic(path.with_suffix(".json"), json.dumps(dict(key), indent=2, sort_keys=True, default=str))
    return emb, False

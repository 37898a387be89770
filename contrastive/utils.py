"""Shared utilities: atomic file and directory writes, stable hashes, JSON-safe values, number formats."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np


# ---------------------------------------------------------------- atomic writes
def temp_path_beside(path: str | os.PathLike) -> Path:
    """A temporary path in `path`'s directory (created), for tools that write a named file themselves."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file through `write(handle)` into a temporary file beside it, then rename it into place:
    a reader sees the old file or the whole new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """`text` (UTF-8) written atomically to `path`."""
    data = text.encode()
    return write_atomic(path, lambda handle: handle.write(data))


def write_json(obj: Any, path: str | os.PathLike, default: Callable[[Any], Any] = str) -> Path:
    """`obj` as indented JSON, written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=default))


STAGING_MARKERS = (".tmp-", ".old-")  # `.model.tmp-<pid>-<host>`, `.best.old-<pid>-<host>`: staging, replaced dirs


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content (what write_json wrote)."""
    return json.loads(Path(path).read_text())


def process_tag() -> str:
    """`<pid>-<host key>`: names a staging directory after its process, so another process can tell a dead one's
    leftovers from a live one's work (on a shared file system, only this machine's processes are judged)."""
    return f"{os.getpid()}-{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_staging(parent: str | os.PathLike) -> list[Path]:
    """Staging / replaced directories in `parent` (`.<name>.tmp-<pid>`, `.<name>.old-<pid>`) whose process is gone."""
    here = process_tag().partition("-")[2]
    found = []
    for path in Path(parent).glob(".*"):
        for marker in STAGING_MARKERS:
            head, sep, tag = path.name.rpartition(marker)
            pid, _, host = tag.partition("-")
            mine = host in ("", here)  # no host key: written by an older version on this machine
            if sep and head and pid.isdigit() and mine and int(pid) != os.getpid() and not pid_alive(int(pid)):
                found.append(path)
    return sorted(found)


def remove_stale_staging(parents: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete what `stale_staging` finds in each of `parents` (a killed save's half model); returns what went."""
    removed = []
    for parent in parents:
        for path in stale_staging(parent):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


def staging_dir(target: str | os.PathLike) -> Path:
    """A free temporary path beside `target` (not created: `copytree` and `model.save` create it), on the same
    file system, so the final rename is atomic. Stale ones of dead processes beside it are removed first."""
    target = Path(target)
    remove_stale_staging([target.parent])
    tmp = target.with_name(f".{target.name}.tmp-{process_tag()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def replace_dir(staged: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move a finished staging directory to `target`, replacing what was there (old one removed last). Writers
    of one target on this machine take turns (a lock on its parent directory, no file left): the swap is two
    renames."""
    staged, target = Path(staged), Path(target)
    old = target.with_name(f".{target.name}.old-{process_tag()}")
    with dir_lock(target.parent):
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def write_dir_atomic(target: str | os.PathLike, fill: Callable[[Path], Any]) -> Path:
    """A directory written by `fill(staged)` (a free path beside `target`, which `fill` creates), then moved into
    place: a crash never leaves a half-written `target`."""
    staged = staging_dir(target)
    try:
        fill(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return replace_dir(staged, target)


@contextlib.contextmanager
def dir_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on an existing directory itself (flock on its descriptor) while inside."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock held on `path` (created if missing) while inside: processes on this machine that create
    the same thing at once (a fresh store's tables, a study's parent run) take turns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------- process memory
def file_state(path: str | os.PathLike) -> tuple[str, int, int]:
    """(resolved path, size, mtime in ns) of a file: the key of a per-process memory of what was read from it."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_size, stat.st_mtime_ns


def freeze_heap_once() -> bool:
    """`gc.collect()` then `gc.freeze()`, once per process, after its first job set-up; True when this call froze
    (False when the heap was frozen already: the collector's permanent generation is not empty).

    What is alive then (imports and the prepared data kept per process; call it before the model and Trainer,
    whose objects reference each other, exist) moves to the collector's permanent generation, so a full
    collection walks only what later trials allocate: the HF Trainer calls `gc.collect()` at every train start
    (accelerate's `free_memory`), ~0.1-0.2 s per trial over the whole heap. Frozen objects are still freed by
    reference counting; only reference cycles among them are never collected."""
    import gc

    if gc.get_freeze_count():
        return False
    gc.collect()  # garbage so far is freed first, not kept for good
    gc.freeze()
    return True


# ---------------------------------------------------------------- stable hashes
def seeded_hash(text: str, seed: int) -> int:
    """A 64-bit hash of `text` under `seed`, the same in every process and Python version (blake2b)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest(), "big")


def sha256_hex(data: bytes | str, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of `data` (str is hashed as UTF-8)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:length]


def json_digest(obj: Any, length: int = 24) -> str:
    """A stable digest of a JSON-able object (keys sorted): cache keys."""
    return sha256_hex(json.dumps(obj, sort_keys=True, default=str), length)


# ---------------------------------------------------------------- JSON-safe values
def json_safe(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, tuples to lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def numpy_default(value: Any) -> Any:
    """`json.dumps(default=...)` for numpy values; anything else as its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------- number formats
def fmt_metric(value: Any, signed: bool = False, digits: int = 4) -> str:
    """A metric value to `digits` decimals (`+` sign when `signed`); None or non-finite as 'n/a'."""
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_delta(d: Mapping[str, Any] | None) -> str:
    """'+0.0123 [+0.0100, +0.0150]' from a {delta, ci_low, ci_high} entry; 'n/a' when there is none."""
    if not d:
        return "n/a"
    low, high = fmt_metric(d.get("ci_low"), True), fmt_metric(d.get("ci_high"), True)
    return f"{fmt_metric(d.get('delta'), True)} [{low}, {high}]"


def fmt_cell(value: Any, digits: int = 3) -> str:
    """A compact table cell: counts with thousands separators, floats by magnitude, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "-"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}f}" if magnitude >= 0.01 or value == 0 else f"{value:.2e}"
    return str(value)

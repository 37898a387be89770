"""A lock held in the study's own storage, so that every sweep process on every machine shares it.

What must happen once per study however many workers run it (open the MLflow parent run, promote the winner)
is done under `study_lock(study, name)`:

- PostgreSQL: a session-level advisory lock (`pg_advisory_lock`) on a dedicated connection, keyed by a 63-bit
  hash of the study name and `name`. The server releases it when the holder's connection dies, so a killed
  worker never leaves it taken.
- MySQL: `GET_LOCK(key, timeout)` on a dedicated connection (released the same way).
- SQLite: an exclusive `flock` on a file beside the database (SQLite is one machine's storage anyway).
- In-memory storage: a lock of this process.

No shared filesystem is needed: the lock lives where the trials live.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra_plugins.contrastive_sweeper._errors import LockTimeout  # private module: one class (see _errors)

log = logging.getLogger(__name__)

_LOCAL: dict[str, threading.Lock] = {}

__all__ = ["LockTimeout", "lock_key", "storage_engine", "study_lock"]


def lock_key(study_name: str, name: str) -> tuple[str, int]:
    """The lock's name (`<study>:<name>`, at most 64 chars for MySQL) and its signed 63-bit number (PostgreSQL)."""
    text = f"{study_name}:{name}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    number = int.from_bytes(digest, "big") >> 1  # 0 <= number < 2**63: a PostgreSQL bigint
    short = text if len(text) <= 64 else text[:47] + "-" + digest.hex()
    return short, number


def storage_engine(study: Any) -> Any:
    """The SQLAlchemy engine behind the study's storage (unwrapping Optuna's cache), or None (in-memory)."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    return getattr(backend, "engine", None)


@contextlib.contextmanager
def study_lock(study: Any, name: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the study-wide lock `name` for the duration of the block (LockTimeout after `timeout_s`)."""
    text, number = lock_key(study.study_name, name)
    engine = storage_engine(study)
    dialect = engine.dialect.name if engine is not None else "memory"
    if dialect == "postgresql":
        with _postgres_lock(engine, number, timeout_s, text):
            yield
    elif dialect in ("mysql", "mariadb"):
        with _mysql_lock(engine, text, timeout_s):
            yield
    elif dialect == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with _file_lock(Path(engine.url.database), text, timeout_s):
            yield
    else:
        with _local_lock(text, timeout_s):
            yield


@contextlib.contextmanager
def _postgres_lock(engine: Any, number: int, timeout_s: float, text: str) -> Iterator[None]:
    from sqlalchemy import text as sql

    with engine.connect() as conn:
        deadline = time.monotonic() + timeout_s
        while not conn.execute(sql("SELECT pg_try_advisory_lock(:k)"), {"k": number}).scalar():
            conn.commit()  # end the implicit transaction between tries
            if time.monotonic() > deadline:
                raise LockTimeout(f"study lock {text!r}: still held by another worker after {timeout_s:.0f} s")
            time.sleep(0.1)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sql("SELECT pg_advisory_unlock(:k)"), {"k": number})
            conn.commit()


@contextlib.contextmanager
def _mysql_lock(engine: Any, text: str, timeout_s: float) -> Iterator[None]:
    from sqlalchemy import text as sql

    with engine.connect() as conn:
        if conn.execute(sql("SELECT GET_LOCK(:k, :t)"), {"k": text, "t": int(timeout_s)}).scalar() != 1:
            raise LockTimeout(f"study lock {text!r}: still held by another worker after {timeout_s:.0f} s")
        try:
            yield
        finally:
            conn.execute(sql("SELECT RELEASE_LOCK(:k)"), {"k": text})


@contextlib.contextmanager
def _file_lock(database: Path, text: str, timeout_s: float) -> Iterator[None]:
    path = database.with_name(f"{database.name}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', text)}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(
                        f"study lock {text!r}: still held by another process after {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _local_lock(text: str, timeout_s: float) -> Iterator[None]:
    lock = _LOCAL.setdefault(text, threading.Lock())
    if not lock.acquire(timeout=timeout_s):
        raise LockTimeout(f"study lock {text!r}: still held after {timeout_s:.0f} s")
    try:
        yield
    finally:
        lock.release()

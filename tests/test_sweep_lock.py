"""The study lock (hydra_plugins/contrastive_sweeper/lock.py) on SQLite and in memory: one holder at a time,
a timeout that says who waits, a stable key. The PostgreSQL lock is tested against a real server in
tests/test_cluster.py."""

from __future__ import annotations

import threading

import optuna
import pytest

from hydra_plugins.contrastive_sweeper.lock import LockTimeout, lock_key, study_lock


def _holder(study: optuna.Study, name: str, held: threading.Event, release: threading.Event) -> threading.Thread:
    def hold() -> None:
        with study_lock(study, name):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    return thread


@pytest.mark.parametrize("where", ["sqlite", "memory"])
def test_one_holder_at_a_time_and_a_timeout_that_names_the_lock(tmp_path, where):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if where == "sqlite" else None
    study = optuna.create_study(study_name="s", storage=storage)
    held, release = threading.Event(), threading.Event()
    thread = _holder(study, "promotion", held, release)
    busy = pytest.raises(LockTimeout, match=r"study lock 's:promotion': still held")
    with busy, study_lock(study, "promotion", timeout_s=0.3):
        pass
    with study_lock(study, "parent_run", timeout_s=0.3):  # another name: another lock
        pass
    release.set()
    thread.join()
    with study_lock(study, "promotion", timeout_s=0.3):
        pass


def test_lock_keys_are_stable_postgres_bigints_and_short_mysql_names():
    text, number = lock_key("reproduce", "promotion")
    assert (text, number) == lock_key("reproduce", "promotion") and 0 <= number < 2**63
    assert lock_key("reproduce", "parent_run")[1] != number
    long_text, _ = lock_key("s" * 100, "promotion")
    assert len(long_text) <= 64

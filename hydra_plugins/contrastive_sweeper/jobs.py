"""Trials as cluster jobs (hydra-submitit-launcher: `hydra/launcher=submitit_slurm` or `submitit_local`).

The submitit launcher submits a batch as one job array and waits for every result in turn: one job that ends
without a result (`scancel`, a lost node, its time limit) raises out of the whole batch, and the finished trials
beside it lose their values. So the sweeper hands it one trial per `launch` call, side by side: each trial is its
own SLURM job, waited for on its own thread, and a job that ends without a result comes back as a FAILED
`JobReturn` holding `JobLost`; the sweeper fails that trial and queues its params again (`max_retry`), as it does
for a trial of a killed sweep worker.

Only the launcher's public `launch` is used, so its executor, resources (`hydra.launcher.*`) and job folder
(`submitit_folder`, on a disk the jobs share) stay the library's. The jobs it submits are noted on their way out
of submitit's `Executor.map_array` (`noting_jobs`), so a sweep stopped by SIGTERM / SIGINT cancels those still
queued or running (`job.cancel()`: `scancel` on SLURM) instead of leaving them on the cluster.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher

log = logging.getLogger(__name__)

SUBMITIT_PACKAGE = "hydra_plugins.hydra_submitit_launcher"
JOIN_POLL_S = 1.0  # the main thread wakes this often while jobs run (SIGTERM / SIGINT reach the sweep meanwhile)


class JobLost(RuntimeError):
    """A trial's job ended without a result: cancelled, killed, or lost with its node."""


def submits_jobs(launcher: Launcher | None) -> bool:
    """Whether the launcher runs each job elsewhere through submitit (SLURM, or local subprocesses)."""
    return launcher is not None and type(launcher).__module__.startswith(SUBMITIT_PACKAGE)


def lost_reason(exc: BaseException) -> str:
    """The first two lines of submitit's UncompletedJobError: the job id, its folder and its final state."""
    return " ".join(str(exc).splitlines()[:2])


def launch_one(launcher: Launcher, overrides: Sequence[str], job_idx: int) -> JobReturn:
    """One trial as one job; a job that ends without a result becomes a FAILED JobReturn holding JobLost."""
    from submitit.core.utils import UncompletedJobError

    try:
        return launcher.launch([list(overrides)], initial_job_idx=job_idx)[0]
    except UncompletedJobError as exc:
        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        ret.return_value = JobLost(lost_reason(exc))
        return ret


@contextmanager
def noting_jobs() -> Iterator[list[Any]]:
    """The submitit jobs that `Executor.map_array` returns while inside (the launcher submits through it)."""
    from submitit.core.core import Executor

    noted: list[Any] = []
    original = Executor.map_array

    def map_array(executor: Any, fn: Any, *iterable: Any) -> list[Any]:
        jobs = original(executor, fn, *iterable)
        noted.extend(jobs)
        return jobs

    Executor.map_array = map_array
    try:
        yield noted
    finally:
        Executor.map_array = original


def cancel_jobs(jobs: Sequence[Any], why: str) -> list[str]:
    """Cancel the jobs not done yet (`scancel` on SLURM, SIGINT for local ones); the ids of those cancelled."""
    cancelled = []
    for submitted in jobs:
        with suppress(Exception):  # a job that ended meanwhile, or a cluster that is gone: nothing more to do
            if not submitted.done():
                submitted.cancel(check=False)
                cancelled.append(str(submitted.job_id))
    if cancelled:
        log.warning("cancelled job(s) %s: %s", ", ".join(cancelled), why)
    return cancelled


def launch_each(launcher: Launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Every trial of a batch as its own job, all submitted at once; their JobReturns in order. A submission
    error (sbatch refused the job) is raised once every thread is back; a stop (SIGTERM / SIGINT) while the jobs
    run cancels them."""
    with noting_jobs() as submitted:
        try:
            return _launch_each(launcher, job_overrides, initial_job_idx)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # stopped, not broken: nothing may keep running on the cluster
                cancel_jobs(submitted, f"the sweep was stopped ({exc})")
            raise


def _launch_each(launcher: Launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """`launch_each` without the stop handling."""
    results: list[Any] = [None] * len(job_overrides)

    def run(i: int) -> None:
        try:
            results[i] = launch_one(launcher, job_overrides[i], initial_job_idx + i)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            results[i] = exc

    threads = [
        threading.Thread(target=run, args=(i,), name=f"trial-job-{initial_job_idx + i}", daemon=True)
        for i in range(len(job_overrides))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:  # daemon threads, joined in steps: a stopped sweep does not wait for its jobs to end
        while thread.is_alive():
            thread.join(JOIN_POLL_S)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results

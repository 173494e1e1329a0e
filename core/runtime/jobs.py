"""A small in-process job registry for long work (training, scoring) run off the UI thread.

A job is a function ``fn(ctx)`` run in a worker thread; ``ctx`` (a :class:`JobContext`) carries the
progress, log and per-epoch callbacks and the cancel token, so the function never touches the UI.
Pages poll :meth:`JobRegistry.snapshot` from a fragment; Cancel sets the token, which the training
loop checks every step. Jobs run one at a time (a single worker) so two trainings never fight for
the two cores; queued jobs wait their turn.
"""
from __future__ import annotations

import copy
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import IntentLensError, NotFoundError
from core.progress import Cancelled, CancelToken

STATUSES = ("queued", "running", "done", "failed", "cancelled")
MAX_LOG_LINES = 500


@dataclass
class JobState:
    """What a page may read about a job (copied under the registry's lock)."""

    id: str
    kind: str
    params: dict[str, Any]
    status: str = "queued"
    done: float = 0.0
    total: float | None = None
    message: str = ""
    epochs: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result: Any = None              # what the job function returned (its type depends on ``kind``)

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    @property
    def eta_seconds(self) -> float | None:
        """Time left, extrapolated from progress so far (None until there is progress)."""
        frac = self.fraction
        if self.status != "running" or not frac or self.started_at is None:
            return None
        elapsed = time.time() - self.started_at
        return elapsed * (1 - frac) / frac

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


class JobContext:
    """Handed to a job function: report progress, log lines, epochs; check for cancel."""

    def __init__(self, registry: JobRegistry, job_id: str, token: CancelToken):
        self._registry = registry
        self._id = job_id
        self.cancel = token

    def progress(self, done: float, total: float | None, message: str) -> None:
        self._registry._update(self._id, done=done, total=total, message=message)

    def log(self, line: str) -> None:
        self._registry._append(self._id, "log", line)

    def on_epoch(self, record: dict[str, Any]) -> None:
        self._registry._append(self._id, "epochs", dict(record))


class JobRegistry:
    """Thread-safe registry of jobs run by one worker thread.

    resource_log: when given, a :class:`core.serving.resources.ResourceSampler` writes this
    process's CPU and memory there (source ``job:<kind>``) every ``resource_interval`` seconds
    while each job runs.
    """

    def __init__(self, workers: int = 1, resource_log: str | Path | None = None, resource_interval: float = 2.0):
        self.resource_log = Path(resource_log) if resource_log is not None else None
        self.resource_interval = float(resource_interval)
        self._lock = threading.Lock()
        self._jobs: dict[str, JobState] = {}
        self._tokens: dict[str, CancelToken] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="intentlens-job")

    def submit(self, kind: str, fn: Callable[[JobContext], object], params: dict[str, Any] | None = None) -> str:
        job_id = uuid.uuid4().hex[:12]
        token = CancelToken()
        with self._lock:
            self._jobs[job_id] = JobState(id=job_id, kind=kind, params=dict(params or {}))
            self._tokens[job_id] = token
        self._pool.submit(self._run, job_id, fn, JobContext(self, job_id, token))
        return job_id

    def _run(self, job_id: str, fn: Callable[[JobContext], object], ctx: JobContext) -> None:
        if ctx.cancel.cancelled:
            return                                   # cancelled while queued (already marked)
        self._update(job_id, status="running", started_at=time.time())
        sampler = None
        if self.resource_log is not None:
            from core.serving.resources import ResourceSampler

            sampler = ResourceSampler(self.resource_log, f"job:{self._jobs[job_id].kind}",
                                      interval=self.resource_interval).start()
        try:
            result = fn(ctx)
        except Cancelled:
            self._update(job_id, status="cancelled", finished_at=time.time(), message="cancelled")
        except IntentLensError as err:
            self._update(job_id, status="failed", finished_at=time.time(), error=str(err))
        except Exception as err:  # a worker must record every failure, not die silently
            self._append(job_id, "log", traceback.format_exc(limit=5))
            self._update(job_id, status="failed", finished_at=time.time(),
                         error=f"Unexpected error: {type(err).__name__}: {err}")
        else:
            self._update(job_id, status="done", finished_at=time.time(), result=result,
                         message="finished")
        finally:
            if sampler is not None:
                sampler.stop()

    def _update(self, job_id: str, **values: object) -> None:
        with self._lock:
            job = self._jobs[job_id]
            for key, value in values.items():
                setattr(job, key, value)

    def _append(self, job_id: str, attr: str, value: object) -> None:
        with self._lock:
            items = getattr(self._jobs[job_id], attr)
            items.append(value)
            if len(items) > MAX_LOG_LINES:
                del items[: len(items) - MAX_LOG_LINES]

    def snapshot(self, job_id: str) -> JobState:
        """A copy of the job's state; NotFoundError for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFoundError(f"there is no job {job_id!r} in this app process.",
                                    hint="Jobs live as long as the app process; start a new one.")
            result, job.result = job.result, None
            copied = copy.deepcopy(job)
            job.result = copied.result = result
            return copied

    def jobs(self) -> list[JobState]:
        with self._lock:
            ids = list(self._jobs)
        return [self.snapshot(i) for i in ids]

    def active(self) -> list[JobState]:
        return [j for j in self.jobs() if not j.finished]

    def cancel(self, job_id: str) -> None:
        """Stop a job: a running one at its next cancel check, a queued one at once."""
        self.snapshot(job_id)  # raises for unknown ids
        self._tokens[job_id].cancel()
        with self._lock:
            job = self._jobs[job_id]
            if job.status == "queued":
                job.status, job.finished_at, job.message = "cancelled", time.time(), "cancelled"

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.05) -> JobState:
        """Block until the job finished or ``timeout`` seconds passed (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.snapshot(job_id)
            if state.finished or time.monotonic() > deadline:
                return state
            time.sleep(poll)

    def shutdown(self) -> None:
        for token in self._tokens.values():
            token.cancel()
        self._pool.shutdown(wait=True)

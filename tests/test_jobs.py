import threading

import pytest

from core.errors import DataError, NotFoundError
from core.runtime.jobs import JobRegistry


@pytest.fixture
def registry():
    reg = JobRegistry()
    yield reg
    reg.shutdown()


def test_job_reports_progress_epochs_and_result(registry):
    def work(ctx):
        for i in range(3):
            ctx.progress(i + 1, 3, f"step {i + 1}")
            ctx.on_epoch({"epoch": i + 1, "train_loss": 1.0 / (i + 1)})
        ctx.log("all done")
        return {"answer": 42}

    job_id = registry.submit("test", work, {"x": 1})
    state = registry.wait(job_id, timeout=10)
    assert state.status == "done" and state.result == {"answer": 42}
    assert [e["epoch"] for e in state.epochs] == [1, 2, 3]
    assert state.fraction == 1.0 and state.log == ["all done"]


def test_cancel_stops_a_running_job(registry):
    started = threading.Event()
    steps = []

    def work(ctx):
        started.set()
        for i in range(10_000):
            ctx.cancel.check()
            steps.append(i)
            threading.Event().wait(0.01)
        return "never"

    job_id = registry.submit("long", work)
    assert started.wait(5)
    threading.Event().wait(0.1)                      # let it run a few steps
    registry.cancel(job_id)
    at_cancel = len(steps)
    state = registry.wait(job_id, timeout=10)
    assert state.status == "cancelled" and state.result is None and state.error is None
    # the work stopped at its next check: at most the step in flight ran after the request
    assert 1 <= at_cancel <= len(steps) <= at_cancel + 1
    threading.Event().wait(0.05)
    assert len(steps) <= at_cancel + 1                 # and nothing runs after the job ended


def test_project_errors_and_crashes_are_recorded(registry):
    def bad(ctx):
        raise DataError("the file is empty.")

    def crash(ctx):
        raise ZeroDivisionError("boom")

    state = registry.wait(registry.submit("bad", bad), timeout=10)
    assert state.status == "failed" and "the file is empty" in state.error
    state = registry.wait(registry.submit("crash", crash), timeout=10)
    assert state.status == "failed" and "ZeroDivisionError" in state.error


def test_unknown_job(registry):
    with pytest.raises(NotFoundError, match="no job"):
        registry.snapshot("nope")


def test_cancelling_a_queued_job_marks_it_at_once(registry):
    gate = threading.Event()
    first = registry.submit("blocker", lambda ctx: gate.wait(10))
    queued = registry.submit("queued", lambda ctx: "ran")
    registry.cancel(queued)
    assert registry.snapshot(queued).status == "cancelled"
    gate.set()
    assert registry.wait(first, timeout=10).status == "done"
    assert registry.wait(queued, timeout=10).status == "cancelled"

"""Delays, retries, unique jobs, eager mode and drain, end to end on a real
SQLite file."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import JobFailed, Offload, Retry, current_job
from tests.helpers import make_app


def test_a_delayed_job_is_scheduled_and_left_alone_until_due(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task()
    def later() -> str:
        return "done"

    job = later.using(delay=timedelta(hours=1)).enqueue()
    at = datetime.now(timezone.utc) + timedelta(minutes=5)
    pinned = later.using(run_at=at).enqueue()

    assert offload.drain() == 0
    assert (job.status, pinned.status) == ("scheduled", "scheduled")
    assert job.run_at > datetime.now(timezone.utc) + timedelta(minutes=59)
    assert abs((pinned.run_at - at).total_seconds()) < 0.01
    assert offload.stats()["default"]["scheduled"] == 2


def test_a_job_delayed_by_a_moment_runs_once_it_is_due(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task()
    def soon() -> str:
        return "done"

    job = soon.using(delay=0.3).enqueue()
    offload.start_worker(app)

    assert job.wait(timeout=10) == "done"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -1}, "delay must be a number of seconds or a timedelta"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at must be a timezone-aware"),
        (
            {"delay": 1, "run_at": datetime.now(timezone.utc)},
            "Give delay or run_at, not both",
        ),
    ],
)
def test_a_bad_delay_is_refused_saying_what_is_accepted(
    options: dict[str, object], message: str
) -> None:
    offload = Offload()
    task = offload.task()(print)

    with pytest.raises(ValueError, match=message):
        task.using(**options)


def test_a_failing_task_is_retried_and_every_attempts_error_is_kept(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload
    caplog.set_level(logging.WARNING, logger="flask_offload.worker")

    @offload.task(retries=2, retry_backoff=0.05)
    def flaky() -> int:
        if current_job.attempt < 3:
            raise ConnectionError(f"attempt {current_job.attempt} failed")
        return current_job.attempt

    job = flaky.enqueue()
    offload.start_worker(app)

    assert job.wait(timeout=10) == 3
    assert job.attempts == 3
    assert [error.message for error in job.errors] == [
        "attempt 1 failed",
        "attempt 2 failed",
    ]
    retries = [r for r in caplog.records if r.__dict__.get("action") == "retrying"]
    assert len(retries) == 2
    assert "failed on attempt 1 and runs again in" in retries[0].getMessage()


def test_a_job_fails_for_good_once_its_retries_are_used_up(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task(retries=1, retry_backoff=0)
    def broken() -> None:
        raise ValueError(f"attempt {current_job.attempt}")

    job = broken.enqueue()
    offload.start_worker(app)

    with pytest.raises(JobFailed, match="attempt 2"):
        job.wait(timeout=10)
    assert [error.message for error in job.errors] == ["attempt 1", "attempt 2"]


def test_only_the_exceptions_named_in_retry_on_are_retried(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task(retries=3, retry_on=(ConnectionError,), retry_backoff=0)
    def wrong_input() -> None:
        raise ValueError("not worth retrying")

    job = wrong_input.enqueue()
    offload.start_worker(app)

    with pytest.raises(JobFailed):
        job.wait(timeout=10)
    assert job.attempts == 1


def test_a_task_can_ask_for_a_retry_after_a_given_delay(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task(retries=1)
    def not_yet() -> None:
        raise Retry(delay=3600, reason="the report is not ready")

    job = not_yet.enqueue()
    offload.drain()

    job.refresh()
    assert job.status == "scheduled"
    assert job.run_at > datetime.now(timezone.utc) + timedelta(minutes=59)
    assert job.errors[0].message == "the report is not ready"


def test_enqueueing_a_unique_job_twice_returns_the_waiting_one(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task(unique_key=lambda user_id: f"rebuild:{user_id}")
    def rebuild(user_id: int) -> None:
        pass

    first, again, other = rebuild.enqueue(1), rebuild.enqueue(1), rebuild.enqueue(2)

    assert again.id == first.id
    assert other.id != first.id
    assert offload.drain() == 2
    assert rebuild.enqueue(1).id != first.id


def test_eager_mode_runs_the_job_at_enqueue_and_keeps_its_outcome(
    tmp_path: Path,
) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREADS=0, OFFLOAD_EAGER=True)
    offload.init_app(app)

    @offload.task()
    def double(n: int) -> int:
        return n * 2

    @offload.task()
    def broken() -> None:
        raise ValueError("no")

    try:
        job, failed = double.enqueue(21), broken.enqueue()

        assert (job.status, job.result) == ("succeeded", 42)
        assert failed.status == "failed"
        assert offload.get_job(job.id) is not None
    finally:
        offload.close(app)


def test_drain_runs_everything_queued_in_the_calling_thread(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload
    seen: list[int] = []

    @offload.task()
    def note(n: int) -> None:
        seen.append(n)

    for n in range(150):
        note.enqueue(n)

    assert offload.drain(max_jobs=10) == 10
    assert offload.drain() == 140
    assert sorted(seen) == list(range(150))
    assert offload.stats()["default"]["succeeded"] == 150


def test_a_bad_retry_setting_is_refused_at_decoration() -> None:
    offload = Offload()

    with pytest.raises(ValueError, match="retries must be an int of 0 or more"):
        offload.task(retries=-1)
    with pytest.raises(TypeError, match="retry_on must be a tuple of exception"):
        offload.task(retry_on=ValueError)  # type: ignore[arg-type]


def test_finished_jobs_are_purged_after_their_keep_time(tmp_path: Path) -> None:
    app, offload = make_app(
        tmp_path, OFFLOAD_WORKER_THREADS=0, OFFLOAD_KEEP_FINISHED=3600
    )
    offload.init_app(app)

    @offload.task()
    def ordinary() -> None:
        pass

    @offload.task(keep_finished=0)
    def forgettable() -> None:
        pass

    @offload.task(keep_finished=math.inf)
    def precious() -> None:
        pass

    try:
        jobs = [ordinary.enqueue(), forgettable.enqueue(), precious.enqueue()]
        waiting = ordinary.enqueue()
        offload.drain(max_jobs=3)
        state = offload.state(app)

        assert state.purge_finished() == 1
        assert [offload.get_job(job.id) is None for job in jobs] == [
            False,
            True,
            False,
        ]

        state.settings = dataclasses.replace(state.settings, keep_finished=0.0)
        assert state.purge_finished() == 1
        assert offload.get_job(jobs[0].id) is None
        assert offload.get_job(jobs[2].id) is not None
        assert offload.get_job(waiting.id) is not None
    finally:
        offload.close(app)


def test_a_unique_key_holds_under_concurrent_enqueues_from_two_stores(
    tmp_path: Path,
) -> None:
    apps = [make_app(tmp_path, OFFLOAD_WORKER_THREADS=0) for _ in range(2)]
    for app, offload in apps:
        offload.init_app(app)
        offload.task(name="tests.rebuild", unique_key="rebuild")(lambda n: None)
    ids: set[str] = set()
    lock = threading.Lock()

    def enqueue_many(offload: Offload) -> None:
        for n in range(50):
            job = offload.tasks["tests.rebuild"].enqueue(n)
            with lock:
                ids.add(job.id)

    threads = [
        threading.Thread(target=enqueue_many, args=(offload,))
        for _, offload in apps
        for _ in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for app, offload in apps:
            offload.close(app)

    assert len(ids) == 1


def test_a_job_past_its_timeout_is_stopped_even_if_it_catches_exception(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    laps: list[int] = []

    @offload.task(timeout=0.3, retries=1, retry_backoff=0)
    def spins() -> None:
        laps.append(current_job.attempt)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # A task's own broad handler must not swallow the timeout.
            with contextlib.suppress(Exception):
                sum(range(1000))

    @offload.task()
    def after() -> str:
        return "the worker goes on"

    job = spins.enqueue()
    offload.start_worker(app)

    with pytest.raises(JobFailed) as raised:
        job.wait(timeout=20)
    assert laps == [1, 2]
    error = raised.value.error
    assert error is not None
    assert error.type == "flask_offload.errors.JobTimeout"
    assert "longer than its timeout of 0.3 s" in error.message
    assert after.enqueue().wait(timeout=10) == "the worker goes on"


def test_a_job_that_ends_in_time_is_not_touched_by_its_timeout(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task(timeout=5)
    def quick() -> str:
        return "done"

    offload.start_worker(app)
    jobs = [quick.enqueue() for _ in range(50)]

    assert [job.wait(timeout=10) for job in jobs] == ["done"] * 50


def test_a_bad_timeout_is_refused() -> None:
    offload = Offload()

    with pytest.raises(ValueError, match="timeout must be a number of seconds"):
        offload.task(timeout=0)

"""Jobs run end to end: a Flask app, a real SQLite file, the in-process
worker."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from flask import Flask, current_app

from flask_offload import (
    Job,
    JobCancelled,
    JobFailed,
    Offload,
    Task,
    WaitTimeout,
    current_job,
)
from flask_offload.records import JobRecord
from flask_offload.stores import SQLStore
from tests.helpers import make_app


def test_a_job_runs_in_an_app_context_and_its_result_is_kept(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    app.config["GREETING"] = "hello"

    @offload.task()
    def greet(name: str) -> str:
        return f"{current_app.config['GREETING']} {name}"

    job = greet.enqueue("ada")
    offload.start_worker(app)

    assert job.wait(timeout=10) == "hello ada"
    assert job.status == "succeeded"
    assert job.result == "hello ada"
    assert job.attempts == 1
    assert job.started_at is not None and job.finished_at is not None


def test_a_view_that_enqueues_returns_before_the_job_ends(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    release = threading.Event()

    @offload.task()
    def slow() -> None:
        release.wait(10)

    @app.post("/start")
    def start() -> dict[str, str]:
        return {"id": slow.enqueue().id}

    offload.start_worker(app)
    response = app.test_client().post("/start")
    job = offload.get_job(response.get_json()["id"])

    assert job is not None
    assert job.status in ("queued", "running")
    release.set()
    job.wait(timeout=10)
    final: str = job.status
    assert final == "succeeded"


def test_a_failing_task_is_recorded_with_its_traceback_and_the_worker_goes_on(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload

    @offload.task(name="tests.broken")
    def broken(n: int) -> None:
        raise ValueError(f"cannot handle {n}")

    @offload.task(name="tests.fine")
    def fine() -> str:
        return "ok"

    caplog.set_level(logging.INFO, logger="flask_offload.worker")
    failing, later = broken.enqueue(7), fine.enqueue()
    offload.start_worker(app)

    with pytest.raises(JobFailed) as raised:
        failing.wait(timeout=10)
    assert later.wait(timeout=10) == "ok"

    error = raised.value.error
    assert error is not None
    assert (error.type, error.message) == ("ValueError", "cannot handle 7")
    assert 'raise ValueError(f"cannot handle {n}")' in error.traceback
    assert "failed: ValueError: cannot handle 7" in str(raised.value)

    failure = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert failure.getMessage().startswith(f"Job {failing.id} (tests.broken) failed")
    assert failure.__dict__["action"] == "failed"
    assert failure.__dict__["job_id"] == failing.id
    success = next(r for r in caplog.records if r.__dict__.get("action") == "succeeded")
    assert success.getMessage().startswith(f"Job {later.id} (tests.fine) succeeded in")
    assert success.__dict__["task"] == "tests.fine"


def test_progress_reported_by_a_task_is_visible_while_it_runs(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    reported, finish = threading.Event(), threading.Event()

    @offload.task()
    def steps() -> None:
        current_job.set_progress(3, 10, "rendering")
        reported.set()
        finish.wait(10)

    job = steps.enqueue()
    offload.start_worker(app)
    assert reported.wait(10)

    progress = job.refresh().progress
    assert progress is not None
    assert (progress.done, progress.total, progress.message) == (3, 10, "rendering")
    assert progress.fraction == pytest.approx(0.3)
    finish.set()
    job.wait(timeout=10)


def test_the_last_progress_is_kept_even_when_reported_in_quick_succession(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task()
    def fast_steps() -> None:
        for done in range(1, 1001):
            current_job.set_progress(done, 1000)

    job = fast_steps.enqueue()
    offload.start_worker(app)
    job.wait(timeout=10)

    progress = job.progress
    assert progress is not None
    assert progress.done == 1000


def test_a_cancelled_queued_job_never_runs(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    ran = []

    @offload.task()
    def record() -> None:
        ran.append(True)

    job = record.enqueue()
    assert job.cancel() == "cancelled"
    after = record.enqueue()
    offload.start_worker(app)
    after.wait(timeout=10)

    assert ran == [True]
    with pytest.raises(JobCancelled):
        job.wait(timeout=1)


def test_a_running_job_sees_a_cancel_request_and_ends_as_cancelled(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    started = threading.Event()

    @offload.task()
    def long_loop() -> None:
        started.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            current_job.raise_if_cancelled()
            time.sleep(0.01)

    job = long_loop.enqueue()
    offload.start_worker(app)
    assert started.wait(10)

    assert job.cancel() == "running"
    with pytest.raises(JobCancelled):
        job.wait(timeout=10)
    assert job.status == "cancelled"


def test_higher_priority_jobs_run_first(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    order: list[str] = []

    @offload.task()
    def note(label: str) -> None:
        order.append(label)

    jobs = [note.enqueue("low"), note.using(priority=10).enqueue("high")]
    offload.start_worker(app)
    for job in jobs:
        job.wait(timeout=10)

    assert order == ["high", "low"]


def test_stats_count_jobs_by_queue_and_status(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task()
    def nothing() -> None:
        pass

    nothing.enqueue()
    nothing.using(queue="mail").enqueue()
    nothing.using(queue="mail").enqueue()

    stats = offload.stats()
    assert stats["default"]["queued"] == 1
    assert stats["mail"]["queued"] == 2
    assert stats["mail"]["succeeded"] == 0


def test_a_job_of_an_unknown_task_fails_with_a_message_saying_why(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task(name="tests.renamed")
    def renamed() -> None:
        pass

    job = renamed.enqueue()
    del offload.tasks["tests.renamed"]
    offload.start_worker(app)

    with pytest.raises(JobFailed) as raised:
        job.wait(timeout=10)
    assert raised.value.error is not None
    assert "No task named 'tests.renamed' is registered" in raised.value.error.message


def test_a_result_json_cannot_carry_fails_the_job(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task()
    def returns_object() -> object:
        return object()

    job = returns_object.enqueue()
    offload.start_worker(app)

    with pytest.raises(JobFailed, match="return value cannot be stored as JSON"):
        job.wait(timeout=10)


def test_an_async_task_runs_to_completion(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    import asyncio

    app, offload = app_and_offload

    @offload.task()
    async def later(n: int) -> int:
        await asyncio.sleep(0.01)
        return n * 2

    job = later.enqueue(21)
    offload.start_worker(app)

    assert job.wait(timeout=10) == 42


def test_wait_gives_up_after_its_timeout_without_touching_the_job(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task()
    def never_run() -> None:
        pass

    job = never_run.enqueue()

    with pytest.raises(WaitTimeout, match=r"is still queued after 0\.2 seconds"):
        job.wait(timeout=0.2)
    assert job.refresh().status == "queued"


def test_arguments_json_cannot_carry_fail_at_enqueue_and_store_nothing(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task(name="tests.takes_anything")
    def takes_anything(value: object) -> None:
        pass

    with pytest.raises(TypeError, match=r"Task 'tests\.takes_anything': positional"):
        takes_anything.enqueue(object())
    assert offload.stats() == {}


def test_several_worker_threads_run_jobs_side_by_side(tmp_path: Path) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREADS=0)
    offload.init_app(app)
    barrier = threading.Barrier(3, timeout=10)

    @offload.task()
    def meet() -> None:
        barrier.wait()

    jobs = [meet.enqueue() for _ in range(3)]
    worker = offload.make_worker(app, threads=3)
    worker.start()
    try:
        for job in jobs:
            job.wait(timeout=10)
    finally:
        worker.stop()


def test_stopping_hands_back_a_job_that_outlives_the_grace_period(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    started, release = threading.Event(), threading.Event()

    @offload.task()
    def stubborn() -> None:
        started.set()
        release.wait(10)

    job = stubborn.enqueue()
    offload.start_worker(app)
    assert started.wait(10)

    offload.stop_worker(app, grace=0.1)

    assert job.refresh().status == "queued"
    assert job.attempts == 1
    release.set()


def test_enqueue_outside_an_app_context_uses_the_only_app(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task()
    def anywhere() -> None:
        pass

    assert anywhere.enqueue().status == "queued"


def test_with_two_apps_enqueue_needs_an_app_context(tmp_path: Path) -> None:
    offload = Offload()
    apps = []
    for name in ("one", "two"):
        app = Flask(name, instance_path=str(tmp_path / name))
        app.config["OFFLOAD_WORKER_THREADS"] = 0
        offload.init_app(app)
        apps.append(app)

    @offload.task()
    def which() -> None:
        pass

    with pytest.raises(RuntimeError, match="initialised for several apps"):
        which.enqueue()
    with apps[1].app_context():
        job = which.enqueue()
    assert offload.state(apps[1]).store.get(job.id) is not None
    assert offload.state(apps[0]).store.get(job.id) is None


def test_current_job_outside_a_job_says_so() -> None:
    with pytest.raises(RuntimeError, match="only available while a task runs"):
        current_job.set_progress(1)


def test_the_task_decorator_needs_parentheses() -> None:
    offload = Offload()

    with pytest.raises(TypeError, match=r"@offload.task\(\) with parentheses"):
        offload.task(print)  # type: ignore[arg-type]


def test_two_tasks_cannot_share_a_name() -> None:
    offload = Offload()
    offload.task(name="same")(print)

    with pytest.raises(ValueError, match="'same' is registered already"):
        offload.task(name="same")(repr)


def test_an_unknown_enqueue_option_is_refused_naming_it() -> None:
    offload = Offload()
    task = offload.task()(print)

    with pytest.raises(TypeError, match="Unknown enqueue option"):
        task.using(prioritty=3)


def test_calling_a_task_runs_the_function_here() -> None:
    offload = Offload()

    @offload.task()
    def double(n: int) -> int:
        return n * 2

    assert double(4) == 8


def wait_until_idle(offload: Offload, app: Flask) -> None:
    worker = offload.state(app).worker
    assert worker is not None
    deadline = time.monotonic() + 10
    while worker._idle_threads == 0:
        assert time.monotonic() < deadline, "the worker never became idle"
        time.sleep(0.005)


def test_a_job_enqueued_while_a_thread_is_idle_is_handed_to_it_already_claimed(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    release = threading.Event()

    @offload.task()
    def held() -> None:
        release.wait(10)

    offload.start_worker(app)
    wait_until_idle(offload, app)

    job = held.enqueue()

    assert job.status == "running"
    assert job.attempts == 1
    release.set()
    job.wait(timeout=10)
    assert job.refresh().attempts == 1


def test_a_job_for_a_queue_this_worker_does_not_serve_is_not_handed_to_it(
    tmp_path: Path,
) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREADS=0)
    offload.init_app(app)

    @offload.task()
    def mail() -> None:
        pass

    state = offload.state(app)
    state.worker = offload.make_worker(app, threads=1, queues=["reports"])
    state.worker.start()
    try:
        wait_until_idle(offload, app)
        job = mail.using(queue="mail").enqueue()
        time.sleep(0.2)
        assert job.refresh().status == "queued"
    finally:
        offload.stop_worker(app)


def test_close_stops_the_worker_and_forgets_the_app(tmp_path: Path) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREADS=0)
    offload.init_app(app)
    offload.start_worker(app)

    offload.close(app)

    assert "offload" not in app.extensions
    with pytest.raises(RuntimeError, match="not initialised for any app"):
        offload.stats()


def test_a_job_longer_than_its_lease_keeps_it_while_its_worker_lives(
    tmp_path: Path,
) -> None:
    settings = {"OFFLOAD_WORKER_THREADS": 0, "OFFLOAD_LEASE_SECONDS": 0.6}
    app, offload = make_app(tmp_path, **settings)
    other_app, other = make_app(tmp_path, **settings)
    offload.init_app(app)
    other.init_app(other_app)

    @offload.task(name="tests.outlives_lease")
    def outlives_lease() -> None:
        time.sleep(2)

    # A second worker on the same file that serves no queue of this job but
    # recovers expired leases, as another process would.
    recoverer = other.make_worker(other_app, threads=1, queues=["elsewhere"])
    recoverer.start()
    offload.start_worker(app)
    try:
        job = outlives_lease.enqueue()
        job.wait(timeout=10)
    finally:
        recoverer.stop()
        offload.close(app)
        other.close(other_app)

    stored = offload_store_record(tmp_path, job.id)
    assert (stored.status, stored.attempts, stored.recoveries) == ("succeeded", 1, 0)


def offload_store_record(instance: Path, job_id: str) -> JobRecord:
    store = SQLStore(f"sqlite:///{instance / 'offload.sqlite3'}")
    record = store.get(job_id)
    store.close()
    assert record is not None

    return record


def test_a_task_derives_its_concurrency_key_from_the_arguments(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task(concurrency_key=lambda user_id, **_: f"user:{user_id}")
    def sync_user(user_id: int, full: bool = False) -> None:
        pass

    job = sync_user.enqueue(7, full=True)
    bound = sync_user.using(concurrency_key="everyone", concurrency_limit=2)

    stored = offload.store.get(job.id)
    other = offload.store.get(bound.enqueue(8).id)
    assert stored is not None and other is not None
    assert (stored.concurrency_key, stored.concurrency_limit) == ("user:7", 1)
    assert (other.concurrency_key, other.concurrency_limit) == ("everyone", 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency_key": ""}, "concurrency_key must be a non-empty str"),
        ({"concurrency_key": 5}, "concurrency_key must be a non-empty str"),
        ({"concurrency_limit": 0}, "concurrency_limit must be an int of at least 1"),
    ],
)
def test_a_bad_concurrency_option_is_refused_saying_what_is_accepted(
    options: dict[str, object], message: str
) -> None:
    offload = Offload()
    task = offload.task()(print)

    with pytest.raises(ValueError, match=message):
        task.using(**options)


def test_a_key_function_returning_a_bad_key_fails_the_enqueue(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    _, offload = app_and_offload

    @offload.task(concurrency_key=lambda n: n)
    def keyed(n: object) -> None:
        pass

    with pytest.raises(ValueError, match="concurrency_key must be a non-empty str"):
        keyed.enqueue(3)
    assert offload.stats() == {}


def test_jobs_of_a_limited_queue_are_not_handed_to_an_idle_thread(
    tmp_path: Path,
) -> None:
    app, offload = make_app(
        tmp_path,
        OFFLOAD_WORKER_THREADS=0,
        OFFLOAD_QUEUES={"serial": {"concurrency": 1}},
    )
    offload.init_app(app)
    release = threading.Event()

    @offload.task(queue="serial")
    def serial() -> None:
        release.wait(10)

    offload.start_worker(app, threads=2)
    try:
        wait_until_idle(offload, app)
        first, second = serial.enqueue(), serial.enqueue()
        deadline = time.monotonic() + 10
        while first.refresh().status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)

        assert second.refresh().status == "queued"
        release.set()
        second.wait(timeout=10)
    finally:
        release.set()
        offload.close(app)


def warm_up_with_fast_jobs(task: Task[[], None], count: int = 50) -> None:
    """Make the worker expect fast jobs, so that it claims in large batches."""
    jobs = [task.enqueue() for _ in range(count)]
    for job in jobs:
        job.wait(timeout=10)


def two_apps_on_one_file(
    instance: Path,
) -> tuple[Flask, Offload, Flask, Offload]:
    """Two apps sharing one store, as two processes would. A job enqueued
    through the second is not handed to the first one's idle thread: the
    first one's worker claims it, like a job from another process."""
    app, offload = make_app(instance, OFFLOAD_WORKER_THREADS=0)
    other_app, other = make_app(instance, OFFLOAD_WORKER_THREADS=0)
    other_app.name = "other"
    offload.init_app(app)
    other.init_app(other_app)

    return app, offload, other_app, other


def test_slow_jobs_claimed_together_still_run_side_by_side_on_idle_threads(
    tmp_path: Path,
) -> None:
    app, offload, other_app, other = two_apps_on_one_file(tmp_path)
    barrier = threading.Barrier(2, timeout=10)

    def meet_body() -> None:
        barrier.wait()

    fast = offload.task(name="tests.fast")(lambda: None)
    offload.task(name="tests.meet")(meet_body)
    meet = other.task(name="tests.meet")(meet_body)

    offload.start_worker(app, threads=2)
    try:
        warm_up_with_fast_jobs(fast)
        jobs = [meet.enqueue() for _ in range(2)]
        for job in jobs:
            job.wait(timeout=15)
    finally:
        offload.close(app)
        other.close(other_app)


def test_a_claimed_job_stuck_behind_a_slow_one_is_handed_to_another_worker(
    tmp_path: Path,
) -> None:
    app, offload, other_app, other = two_apps_on_one_file(tmp_path)
    ran_in: dict[int, str] = {}

    def slow_body(n: int) -> None:
        ran_in[n] = current_app.name
        time.sleep(3)

    fast = offload.task(name="tests.fast")(lambda: None)
    offload.task(name="tests.slow")(slow_body)
    slow = other.task(name="tests.slow")(slow_body)

    offload.start_worker(app, threads=1)
    try:
        warm_up_with_fast_jobs(fast)
        jobs = [slow.enqueue(n) for n in range(2)]
        wait_for_running(jobs[0])
        other.start_worker(other_app, threads=1)
        for job in jobs:
            job.wait(timeout=15)
    finally:
        offload.close(app)
        other.close(other_app)

    assert sorted(ran_in.values()) == ["offload_test_app", "other"]


def wait_for_running(job: Job) -> None:
    deadline = time.monotonic() + 10
    while job.refresh().status != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)

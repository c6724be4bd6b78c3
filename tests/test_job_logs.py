"""Each job's own log: what its task logged while it ran, kept bounded with
the job, on a real SQLite file."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import Offload, current_job, joblog
from tests.helpers import make_app

task_logger = logging.getLogger("tests.job_logs.tasks")


def test_what_a_task_logs_is_kept_with_its_job_and_still_reaches_the_app(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload
    caplog.set_level(logging.DEBUG, logger=task_logger.name)

    @offload.task()
    def report(user: int) -> str:
        task_logger.debug("connecting")
        task_logger.info("building the report of user %d", user)
        task_logger.warning("slow page %s", "<b>3</b>")
        return "done"

    job = report.enqueue(42)
    offload.start_worker(app)
    job.wait(timeout=10)

    log = job.log
    assert log is not None
    lines = log.split("\n")
    assert len(lines) == 2, log
    assert lines[0].startswith("[attempt 1] ")
    assert lines[0].endswith(
        " INFO tests.job_logs.tasks: building the report of user 42"
    )
    assert lines[1].endswith(" WARNING tests.job_logs.tasks: slow page <b>3</b>")
    # The app's own handlers still get every record, DEBUG included.
    messages = [r.getMessage() for r in caplog.records if r.name == task_logger.name]
    assert messages == [
        "connecting",
        "building the report of user 42",
        "slow page <b>3</b>",
    ]


def test_each_attempt_of_a_retried_job_keeps_its_own_lines(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload
    caplog.set_level(logging.INFO, logger=task_logger.name)

    @offload.task(retries=2, retry_backoff=0, retry_jitter=False)
    def flaky() -> str:
        task_logger.info("trying, attempt %d", current_job.attempt)
        if current_job.attempt < 3:
            raise ValueError("not yet")
        return "ok"

    job = flaky.enqueue()
    for _ in range(3):
        offload.drain(app)

    assert job.refresh().status == "succeeded"
    log = job.log or ""
    assert [line.split(" ")[:2] for line in log.split("\n")] == [
        ["[attempt", "1]"],
        ["[attempt", "2]"],
        ["[attempt", "3]"],
    ]
    assert log.split("\n")[2].endswith("trying, attempt 3")


def test_a_long_log_keeps_the_newest_lines_and_says_how_many_were_dropped(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload
    caplog.set_level(logging.INFO, logger=task_logger.name)

    @offload.task()
    def chatty() -> None:
        for number in range(1000):
            task_logger.info("line %d", number)
        task_logger.info("x" * 100_000)

    job = chatty.enqueue()
    offload.drain(app)

    log = job.refresh().log or ""
    lines = log.split("\n")
    assert lines[0] == f"[{1001 - (len(lines) - 1)} earlier lines dropped]"
    assert len(lines) - 1 <= joblog.MAX_LINES
    assert len(log) <= joblog.MAX_CHARS + 100
    assert lines[-1].endswith("characters cut)")
    assert lines[-2].endswith("line 999")


def test_a_record_that_cannot_be_formatted_does_not_fail_the_task(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task()
    def careless() -> str:
        # Made as a logger makes it, but handed to no handler: the app's
        # handlers report a bad record themselves, which is not tested here.
        task_logger.makeRecord(
            task_logger.name, logging.INFO, __file__, 1, "%d items", ("many",), None
        )
        return "fine"

    job = careless.enqueue()
    offload.drain(app)

    assert job.refresh().result == "fine"
    assert "unformattable log record '%d items'" in (job.log or "")


def test_an_async_task_has_what_its_coroutines_log_kept(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload
    caplog.set_level(logging.INFO, logger=task_logger.name)

    async def fetch(page: int) -> int:
        await asyncio.sleep(0)
        task_logger.info("fetched page %d", page)
        return page

    @offload.task()
    async def crawl() -> int:
        pages = await asyncio.gather(fetch(1), fetch(2))
        return sum(pages)

    job = crawl.enqueue()
    offload.drain(app)

    lines = (job.refresh().log or "").split("\n")
    assert job.result == 3
    assert [line.rpartition(": ")[2] for line in lines] == [
        "fetched page 1",
        "fetched page 2",
    ]


def test_records_of_other_threads_and_outside_jobs_are_not_kept(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload
    caplog.set_level(logging.INFO, logger=task_logger.name)

    @offload.task()
    def with_helper() -> None:
        helper = threading.Thread(target=task_logger.info, args=("from a helper",))
        helper.start()
        helper.join()
        task_logger.info("from the task")

    job = with_helper.enqueue()
    task_logger.info("before the job")
    offload.drain(app)

    log = job.refresh().log or ""
    assert log.endswith("from the task")
    assert "helper" not in log and "before" not in log


def test_with_the_job_log_level_none_nothing_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = make_app(
        tmp_path, OFFLOAD_WORKER_THREADS=0, OFFLOAD_JOB_LOG_LEVEL=None
    )
    offload.init_app(app)
    caplog.set_level(logging.INFO, logger=task_logger.name)

    @offload.task()
    def quiet() -> None:
        task_logger.warning("not kept")

    job = quiet.enqueue()
    offload.drain(app)
    offload.close(app)

    assert job.refresh().log is None
    assert any(r.getMessage() == "not kept" for r in caplog.records)


def test_the_job_log_level_setting_chooses_the_lowest_level_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = make_app(
        tmp_path, OFFLOAD_WORKER_THREADS=0, OFFLOAD_JOB_LOG_LEVEL="WARNING"
    )
    offload.init_app(app)
    caplog.set_level(logging.INFO, logger=task_logger.name)

    @offload.task()
    def mixed() -> None:
        task_logger.info("routine")
        task_logger.error("broken")

    job = mixed.enqueue()
    offload.drain(app)
    offload.close(app)

    assert (job.refresh().log or "").endswith("ERROR tests.job_logs.tasks: broken")
    assert "routine" not in (job.log or "")


def test_a_bad_job_log_level_is_refused_saying_what_is_accepted(
    tmp_path: Path,
) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_JOB_LOG_LEVEL="LOUD")

    with pytest.raises(ValueError, match="OFFLOAD_JOB_LOG_LEVEL must be one of"):
        offload.init_app(app)


def test_merging_keeps_the_count_of_lines_dropped_by_earlier_attempts() -> None:
    earlier = "\n".join(
        ["[5 earlier lines dropped]"]
        + [f"[attempt 1] line {n}" for n in range(joblog.MAX_LINES)]
    )
    capture = joblog.LogCapture(2, logging.INFO)
    capture.add_lines(["second attempt"])

    lines = (joblog.merged(earlier, capture) or "").split("\n")

    assert lines[0] == "[6 earlier lines dropped]"
    assert lines[1] == "[attempt 1] line 1"
    assert lines[-1] == "[attempt 2] second attempt"
    assert len(lines) == joblog.MAX_LINES + 1
    assert joblog.merged(None, joblog.LogCapture(1, logging.INFO)) is None


def test_long_lines_are_bounded_by_characters_before_lines() -> None:
    capture = joblog.LogCapture(1, logging.INFO)
    capture.add_lines([f"{n:04d} " + "x" * 995 for n in range(150)])

    log = joblog.merged(None, capture) or ""
    lines = log.split("\n")

    kept = len(lines) - 1
    assert lines[0] == f"[{150 - kept} earlier lines dropped]"
    assert len(log) <= joblog.MAX_CHARS + len(lines[0]) + 1
    assert kept == joblog.MAX_CHARS // (len(lines[-1]) + 1)
    assert lines[-1].startswith("[attempt 1] 0149 ")

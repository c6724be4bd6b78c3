"""The ``flask offload`` commands, through Flask's test runner and as real
processes sharing one SQLite file."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import JobError, Offload, Progress
from flask_offload.cli import offload_group
from flask_offload.records import Outcome
from flask_offload.stores import ListFilter, SQLStore
from tests.conftest import FakeClock
from tests.processes import (
    BackgroundCommand,
    read_events,
    run_flask_command,
    wait_for,
)

NO_JOBS = {
    "scheduled": 0,
    "queued": 0,
    "running": 0,
    "succeeded": 0,
    "failed": 0,
    "cancelled": 0,
}


@pytest.fixture
def commands() -> Iterator[list[BackgroundCommand]]:
    started: list[BackgroundCommand] = []
    yield started
    for command in started:
        command.kill()


def start_worker(
    commands: list[BackgroundCommand], instance: Path, *options: str
) -> BackgroundCommand:
    worker = BackgroundCommand(instance, "offload", "worker", *options, threads="0")
    commands.append(worker)
    worker.wait_for_output("Flask-Offload worker ")

    return worker


def stored_job(instance: Path, job_id: str) -> tuple[str, str | None, int]:
    store = SQLStore(f"sqlite:///{instance / 'offload.sqlite3'}")
    try:
        record = store.get(job_id)
    finally:
        store.close()
    assert record is not None

    return record.status, record.worker, record.attempts


def enqueue_running_jobs(
    app: Flask, offload: Offload, clock: FakeClock, count: int
) -> list[str]:
    """Enqueue ``count`` report jobs and one mail job, and let a pretend
    worker of another process claim the report jobs and report progress."""

    @offload.task(name="reports.build", queue="reports")
    def build_report(user_id: int) -> None: ...

    @offload.task(name="mail.send")
    def send_mail(to: str) -> None: ...

    store = offload.state(app).store
    store.clock = clock
    ids = [build_report.enqueue(user).id for user in range(count)]
    build_report.enqueue(99)
    send_mail.enqueue("ada@example.com")
    claimed = store.claim("web-1:42:abc123", ["reports"], count, 30.0)
    assert [record.id for record in claimed] == ids
    for job_id in ids:
        progress = Progress(3, 10, "rendering").to_json()
        store.set_progress(job_id, "web-1:42:abc123", 1, progress)
    clock.advance(75)

    return ids


def test_status_prints_counts_by_queue_with_totals_and_the_running_jobs(
    app_and_offload: tuple[Flask, Offload], clock: FakeClock, tmp_path: Path
) -> None:
    app, offload = app_and_offload
    (job_id,) = enqueue_running_jobs(app, offload, clock, 1)

    result = app.test_cli_runner().invoke(offload_group, ["status"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:7] == [
        f"Store: sqlite:///{tmp_path / 'offload.sqlite3'}",
        "",
        "queue    scheduled  queued  running  succeeded  failed  cancelled",
        "default          0       1        0          0       0          0",
        "reports          0       1        1          0       0          0",
        "total            0       2        1          0       0          0",
        "",
    ]
    assert lines[7] == "Running jobs (1):"
    assert lines[8].split() == ["id", "task", "queue", "worker", "for", "progress"]
    assert lines[9].split() == [
        job_id,
        "reports.build",
        "reports",
        "web-1:42:abc123",
        "1m15s",
        "3/10",
        "rendering",
    ]
    assert len(lines) == 10


def test_status_json_is_one_object_with_queues_totals_and_running_jobs(
    app_and_offload: tuple[Flask, Offload], clock: FakeClock, tmp_path: Path
) -> None:
    app, offload = app_and_offload
    (job_id,) = enqueue_running_jobs(app, offload, clock, 1)
    started_at = datetime.fromtimestamp(clock.now - 75, tz=timezone.utc)

    result = app.test_cli_runner().invoke(offload_group, ["status", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "store": f"sqlite:///{tmp_path / 'offload.sqlite3'}",
        "queues": {
            "default": dict(NO_JOBS, queued=1),
            "reports": dict(NO_JOBS, queued=1, running=1),
        },
        "totals": dict(NO_JOBS, queued=2, running=1),
        "running": [
            {
                "id": job_id,
                "task": "reports.build",
                "queue": "reports",
                "worker": "web-1:42:abc123",
                "started_at": started_at.isoformat(),
                "progress": {"done": 3, "total": 10, "message": "rendering"},
            }
        ],
    }


def test_status_says_how_many_running_jobs_the_limit_left_out(
    app_and_offload: tuple[Flask, Offload], clock: FakeClock
) -> None:
    app, offload = app_and_offload
    enqueue_running_jobs(app, offload, clock, 3)

    result = app.test_cli_runner().invoke(offload_group, ["status", "--limit", "2"])

    assert result.exit_code == 0, result.output
    assert "Running jobs (2 of 3):" in result.output.splitlines()
    assert result.output.count("web-1:42:abc123") == 2


def test_status_of_an_empty_store_says_there_are_no_jobs(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, _ = app_and_offload

    text = app.test_cli_runner().invoke(offload_group, ["status"])
    as_json = app.test_cli_runner().invoke(offload_group, ["status", "--json"])

    assert text.exit_code == 0
    assert text.output.splitlines()[2:] == [
        "No jobs in the store.",
        "",
        "No jobs are running.",
    ]
    assert json.loads(as_json.output)["totals"] == NO_JOBS


@pytest.mark.parametrize("command", [["status"], ["worker"]])
def test_commands_on_an_app_without_flask_offload_say_how_to_initialise_it(
    command: list[str],
) -> None:
    app = Flask("plain_app")

    result = app.test_cli_runner().invoke(offload_group, command)

    assert result.exit_code == 1
    assert (
        "Error: Flask-Offload is not initialised for app 'plain_app'. Call "
        "Offload(app), or offload.init_app(app) in the app factory, in the app "
        "that --app or FLASK_APP names." in result.output
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--threads", "0", "0 is not accepted; give 1 or more threads."),
        ("--threads", "-2", "-2 is not accepted; give 1 or more threads."),
        ("--queues", "", "'' is not accepted; give one or more queue names"),
        ("--queues", " , ", "' , ' is not accepted; give one or more queue names"),
        ("--queues", "a,,b", "'a,,b' is not accepted; give one or more queue"),
        ("--grace", "-1", "-1.0 is not in the range x>=0."),
    ],
)
def test_worker_rejects_a_bad_option_naming_it_and_what_is_accepted(
    app_and_offload: tuple[Flask, Offload], option: str, value: str, message: str
) -> None:
    app, _ = app_and_offload

    result = app.test_cli_runner().invoke(offload_group, ["worker", option, value])

    assert result.exit_code == 2
    assert f"Error: Invalid value for '{option}': {message}" in result.output


def test_worker_command_runs_jobs_and_returns_on_sigterm_leaving_logging_alone(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload

    @offload.task()
    def add(a: int, b: int) -> int:
        return a + b

    job = add.enqueue(2, 3)
    handlers_before = list(logging.getLogger().handlers)
    sigterm_before = signal.getsignal(signal.SIGTERM)

    def stop_when_done() -> None:
        job.wait(timeout=20)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_when_done, name="test-stopper")
    stopper.start()
    result = app.test_cli_runner().invoke(offload_group, ["worker", "--grace", "5"])
    stopper.join()

    assert result.exit_code == 0, result.output
    assert job.refresh().result == 5
    assert re.match(
        r"Flask-Offload worker \S+: 1 thread\(s\), queues: all, store: sqlite:///",
        result.output,
    )
    assert logging.getLogger().handlers == handlers_before
    assert signal.getsignal(signal.SIGTERM) == sigterm_before


def test_a_worker_process_runs_jobs_enqueued_by_another_process(
    tmp_path: Path, commands: list[BackgroundCommand]
) -> None:
    worker = start_worker(
        commands, tmp_path, "--threads", "2", "--queues", "default,reports"
    )

    run_flask_command(tmp_path, "enqueue-some", "5", threads="0")

    wait_for(lambda: len(read_events(tmp_path)) == 5, what="5 jobs to run")
    assert sorted(read_events(tmp_path)) == [
        ["done", f"cli-{n}", str(worker.pid), "1"] for n in range(5)
    ]
    output = worker.output()
    assert (
        f"Flask-Offload worker {socket.gethostname()}:{worker.pid}:" in output
        and ": 2 thread(s), queues: default, reports, store: "
        f"sqlite:///{tmp_path / 'offload.sqlite3'}\n"
        in output
    )
    assert re.search(
        r"^\d{4}-\d\d-\d\d [\d:,]+ INFO \[offload-worker-\d\] "
        r"flask_offload\.worker: Job \w+ \(record\) succeeded in",
        output,
        re.MULTILINE,
    )

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_sigterm_lets_a_running_job_finish_within_the_grace_period(
    tmp_path: Path, commands: list[BackgroundCommand]
) -> None:
    worker = start_worker(commands, tmp_path, "--grace", "20")
    job_id = run_flask_command(tmp_path, "enqueue-slow", "1.5", threads="0").strip()
    wait_for(lambda: read_events(tmp_path), what="the job to start")

    worker.signal(signal.SIGTERM)

    assert worker.wait() == 0
    assert read_events(tmp_path) == [
        ["start", "slow", str(worker.pid), "1"],
        ["done", "slow", str(worker.pid), "1"],
    ]
    status, _, attempts = stored_job(tmp_path, job_id)
    assert (status, attempts) == ("succeeded", 1)
    assert "Received SIGTERM: no new jobs are taken; running jobs get 20.0 s" in (
        worker.output()
    )


def test_sigterm_hands_a_job_still_running_after_the_grace_back_to_the_queue(
    tmp_path: Path, commands: list[BackgroundCommand]
) -> None:
    worker = start_worker(commands, tmp_path, "--grace", "0.2")
    job_id = run_flask_command(tmp_path, "enqueue-slow", "30", threads="0").strip()
    wait_for(lambda: read_events(tmp_path), what="the job to start")

    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)

    assert worker.wait() == 0
    assert time.monotonic() - signalled < 5
    assert stored_job(tmp_path, job_id) == ("queued", None, 1)
    assert "handed back 1 interrupted job(s) at shutdown" in worker.output()


def test_a_second_ctrl_c_during_the_grace_period_exits_at_once(
    tmp_path: Path, commands: list[BackgroundCommand]
) -> None:
    worker = start_worker(commands, tmp_path, "--grace", "30")
    job_id = run_flask_command(tmp_path, "enqueue-slow", "30", threads="0").strip()
    wait_for(lambda: read_events(tmp_path), what="the job to start")
    worker.signal(signal.SIGINT)
    worker.wait_for_output("Received SIGINT")

    signalled = time.monotonic()
    worker.signal(signal.SIGINT)

    assert worker.wait() == 130
    assert time.monotonic() - signalled < 5
    assert "Ctrl-C while stopping: exiting now." in worker.output()
    status, held_by, _ = stored_job(tmp_path, job_id)
    assert (status, held_by is not None) == ("running", True)


def test_status_json_in_another_process_counts_the_jobs_enqueued(
    tmp_path: Path,
) -> None:
    run_flask_command(tmp_path, "enqueue-some", "5", threads="0")

    output = run_flask_command(tmp_path, "offload", "status", "--json", threads="0")

    report = json.loads(output)
    assert report["queues"] == {"default": dict(NO_JOBS, queued=5)}
    assert report["totals"] == dict(NO_JOBS, queued=5)
    assert report["running"] == []


def test_with_processes_a_job_blocked_past_its_timeout_is_killed_and_others_run(
    tmp_path: Path,
) -> None:
    stuck_id = run_flask_command(tmp_path, "enqueue-stuck", threads="0").strip()
    run_flask_command(tmp_path, "enqueue-some", "3", threads="0")
    worker = BackgroundCommand(
        tmp_path, "offload", "worker", "--processes", "--threads", "1", threads="0"
    )
    try:
        wait_for(
            lambda: len([e for e in read_events(tmp_path) if e[0] == "done"]) == 3,
            timeout=60,
            what="the three jobs behind the stuck one",
        )
    finally:
        worker.signal(signal.SIGTERM)
        worker.wait()

    store = SQLStore(f"sqlite:///{tmp_path / 'offload.sqlite3'}")
    record = store.get(stuck_id)
    recorded = store.list_jobs(ListFilter(task="record"))
    store.close()
    # What a job logged in its child process comes back with its outcome.
    child_pids = {e[2] for e in read_events(tmp_path) if e[0] == "done"}
    logged_pids = [(job.log or "").rpartition(" in ")[2] for job in recorded]
    assert len(logged_pids) == 3 and set(logged_pids) == child_pids
    assert all((job.log or "").startswith("[attempt 1] ") for job in recorded)
    assert record is not None and record.error is not None
    assert record.status == "failed"
    error = JobError.from_json(record.error)
    assert error.type == "flask_offload.errors.JobTimeout"
    assert "its process was killed" in error.message
    pids = {e[2] for e in read_events(tmp_path)}
    assert str(worker.pid) not in pids, "jobs ran in the worker, not its children"


def make_tasks(offload: Offload) -> None:
    @offload.task(name="reports.build", queue="reports")
    def build_report(user_id: int, fmt: str = "pdf") -> str:
        return f"{user_id}.{fmt}"

    @offload.task(name="mail.send")
    def send_mail(to: str) -> None: ...


def fail_job(offload: Offload, job_id: str, message: str) -> None:
    """Let a pretend worker of another process claim the job and record a
    failure of its one attempt."""
    store = offload.store
    claimed = store.claim("web-1:42:abc123", None, 100, 30.0)
    (record,) = [record for record in claimed if record.id == job_id]
    store.release(
        "web-1:42:abc123", [r.id for r in claimed if r != record], started=False
    )
    error = JobError("builtins.ValueError", message, "Traceback: boom\n")
    outcome = Outcome(
        job_id=record.id,
        attempt=record.attempts,
        status="failed",
        finished_at=store.clock(),
        error=error.to_json(),
    )
    assert store.finish("web-1:42:abc123", [outcome]) == [record.id]


def invoke(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(offload_group, list(args))

    return result.exit_code, result.output


def test_jobs_lists_the_newest_first_and_filters_by_queue_status_and_task(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)
    first = offload.tasks["reports.build"].enqueue(1)
    second = offload.tasks["mail.send"].enqueue("ada@example.com")

    code, output = invoke(app, "jobs")
    filtered = invoke(app, "jobs", "--queue", "reports", "--status", "queued")
    by_task = invoke(app, "jobs", "--task", "mail.send", "--json")
    none = invoke(app, "jobs", "--status", "failed")
    paged = invoke(app, "jobs", "--limit", "1", "--offset", "1", "--json")

    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].split() == ["id", "task", "queue", "status", "attempts", "enqueued"]
    assert [line.split()[:5] for line in lines[1:]] == [
        [second.id, "mail.send", "default", "queued", "0"],
        [first.id, "reports.build", "reports", "queued", "0"],
    ]
    assert filtered[1].splitlines()[1].split()[0] == first.id
    assert len(filtered[1].splitlines()) == 2
    assert [job["id"] for job in json.loads(by_task[1])] == [second.id]
    assert none == (0, "No jobs match.\n")
    assert [job["id"] for job in json.loads(paged[1])] == [first.id]


def test_jobs_pages_before_and_after_a_job_id(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)
    ids = [offload.tasks["mail.send"].enqueue(f"{n}@example.com").id for n in range(5)]

    code, first = invoke(app, "jobs", "--limit", "2")
    hint = first.splitlines()[-1]
    _, older = invoke(app, "jobs", "--limit", "2", "--before", ids[3], "--json")
    _, newer = invoke(app, "jobs", "--limit", "2", "--after", ids[1], "--json")
    past = invoke(app, "jobs", "--before", ids[0])

    assert code == 0, first
    assert [line.split()[0] for line in first.splitlines()[1:3]] == [ids[4], ids[3]]
    assert hint == f"More: --before {ids[3]}"
    assert [job["id"] for job in json.loads(older)] == [ids[2], ids[1]]
    assert [job["id"] for job in json.loads(newer)] == [ids[3], ids[2]]
    assert past == (0, "No jobs past that point.\n")


def test_jobs_rejects_an_unknown_status_listing_the_six_accepted(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, _ = app_and_offload

    code, output = invoke(app, "jobs", "--status", "done")

    assert code == 2
    assert "Invalid value for '--status': 'done' is not one of 'scheduled', " in (
        output
    )
    assert "'succeeded', 'failed', 'cancelled'." in output


def test_show_prints_arguments_result_errors_and_worker_of_one_job(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)
    job = offload.tasks["reports.build"].enqueue(7, fmt="csv")
    fail_job(offload, job.id, "no data for user 7")

    code, output = invoke(app, "show", job.id)
    _, as_json = invoke(app, "show", job.id, "--json")

    assert code == 0, output
    lines = output.splitlines()
    assert lines[:7] == [
        f"id        {job.id}",
        "task      reports.build",
        "queue     reports",
        "priority  0",
        "status    failed",
        "attempts  1",
        "args      [7]",
    ]
    assert 'kwargs    {"fmt": "csv"}' in lines
    assert "Error of attempt 1: builtins.ValueError: no data for user 7" in lines
    assert "Traceback: boom" in lines
    details = json.loads(as_json)
    assert details["args"] == [7] and details["kwargs"] == {"fmt": "csv"}
    assert details["errors"] == [
        {
            "type": "builtins.ValueError",
            "message": "no data for user 7",
            "traceback": "Traceback: boom\n",
        }
    ]
    assert details["status"] == "failed" and details["finished_at"] is not None


def test_show_prints_what_the_job_logged_after_its_errors(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload
    caplog.set_level(logging.INFO, logger="tests.cli.tasks")

    @offload.task(name="tests.logs")
    def logs() -> None:
        logging.getLogger("tests.cli.tasks").info("step %d of %d", 1, 2)

    job = logs.enqueue()
    offload.drain(app)

    code, output = invoke(app, "show", job.id)
    _, as_json = invoke(app, "show", job.id, "--json")

    assert code == 0, output
    lines = output.splitlines()
    assert lines[-2] == "Log:"
    assert lines[-1].startswith("[attempt 1] ")
    assert lines[-1].endswith(" INFO tests.cli.tasks: step 1 of 2")
    assert json.loads(as_json)["log"] == lines[-1]


@pytest.mark.parametrize("command", ["show", "cancel", "retry"])
def test_a_command_given_an_unknown_job_id_exits_1_saying_so(
    app_and_offload: tuple[Flask, Offload], command: str
) -> None:
    app, _ = app_and_offload

    code, output = invoke(app, command, "nope")

    assert code == 1
    assert "Error: No job with id 'nope'. It may have been purged; list jobs " in (
        output
    )


def test_retry_enqueues_a_new_job_with_the_same_task_arguments_and_queue(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)
    old = offload.tasks["reports.build"].using(priority=5).enqueue(7, fmt="csv")
    fail_job(offload, old.id, "boom")

    code, output = invoke(app, "retry", old.id)

    assert code == 0, output
    new = offload.get_job(output.strip())
    assert new is not None and new.id != old.id
    assert (new.task, new.args, new.kwargs) == ("reports.build", [7], {"fmt": "csv"})
    assert (new.queue, new.priority, new.status) == ("reports", 5, "queued")
    assert old.refresh().status == "failed"


def test_retry_refuses_a_job_that_has_not_failed_naming_its_status(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)
    job = offload.tasks["mail.send"].enqueue("ada@example.com")

    code, output = invoke(app, "retry", job.id)

    assert code == 1
    assert (
        f"Error: Job {job.id} is queued; only failed or cancelled jobs can be "
        f"retried." in output
    )


def test_retry_of_a_task_no_longer_registered_names_it(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)
    job = offload.tasks["mail.send"].enqueue("ada@example.com")
    job.cancel()
    del offload.tasks["mail.send"]

    code, output = invoke(app, "retry", job.id)

    assert code == 1
    assert (
        "Error: No task named 'mail.send' is registered in this app. Registered "
        "tasks: reports.build." in output
    )


def test_retry_failed_of_a_task_retries_each_of_its_failed_jobs(
    app_and_offload: tuple[Flask, Offload], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flask_offload.cli.jobs.RETRY_PAGE", 2)
    app, offload = app_and_offload
    make_tasks(offload)
    build = offload.tasks["reports.build"]
    failed = [build.enqueue(user) for user in range(3)]
    for job in failed:
        fail_job(offload, job.id, "boom")
    build.enqueue(99)

    code, output = invoke(app, "retry", "--failed-of", "reports.build")
    again = invoke(app, "retry", "--failed-of", "mail.send")

    assert code == 0, output
    new_jobs = [offload.get_job(job_id) for job_id in output.split()]
    assert sorted(job.args[0] for job in new_jobs if job is not None) == [0, 1, 2]
    assert again == (0, "No failed jobs of task 'mail.send'; nothing was retried.\n")


@pytest.mark.parametrize("args", [[], ["abc", "--failed-of", "mail.send"]])
def test_retry_needs_either_an_id_or_failed_of(
    app_and_offload: tuple[Flask, Offload], args: list[str]
) -> None:
    app, _ = app_and_offload

    code, output = invoke(app, "retry", *args)

    assert code == 2
    assert "Error: Give a job ID, or --failed-of TASK" in output


def test_cancel_cancels_a_waiting_job_and_leaves_a_finished_one(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)
    waiting = offload.tasks["mail.send"].enqueue("ada@example.com")
    finished = offload.tasks["reports.build"].enqueue(1)
    fail_job(offload, finished.id, "boom")

    cancelled = invoke(app, "cancel", waiting.id)
    unchanged = invoke(app, "cancel", finished.id)

    assert cancelled == (0, f"Job {waiting.id} is now cancelled.\n")
    assert waiting.refresh().status == "cancelled"
    assert unchanged == (
        0,
        f"Job {finished.id} had already ended as failed; it is unchanged.\n",
    )


def test_purge_deletes_finished_jobs_older_than_the_option_or_the_setting(
    app_and_offload: tuple[Flask, Offload], clock: FakeClock
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)
    offload.state(app).store.clock = clock
    old, recent = (offload.tasks["mail.send"].enqueue(to) for to in ("a", "b"))
    old.cancel()
    clock.advance(600)
    recent.cancel()
    clock.advance(60)

    by_age = invoke(app, "purge", "--older-than", "300")
    by_setting = invoke(app, "purge")

    assert by_age == (0, "Deleted 1 finished job(s).\n")
    assert offload.get_job(old.id) is None
    assert offload.get_job(recent.id) is not None
    assert by_setting == (0, "Deleted 0 finished job(s).\n")


def test_enqueue_stores_a_job_with_arguments_and_options(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)

    code, output = invoke(
        app,
        "enqueue",
        "reports.build",
        "[7]",
        "--kwargs",
        '{"fmt": "csv"}',
        "--queue",
        "urgent",
        "--priority",
        "3",
        "--delay",
        "60",
    )

    assert code == 0, output
    job = offload.get_job(output.strip())
    assert job is not None
    assert (job.args, job.kwargs, job.queue) == ([7], {"fmt": "csv"}, "urgent")
    assert (job.priority, job.status) == (3, "scheduled")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["[1,"], "Invalid value for '[ARGS_JSON]': '[1,' is not valid JSON"),
        (["{}"], "Invalid value for '[ARGS_JSON]': '{}' is not accepted; give a "),
        (["--kwargs", "[1]"], "Invalid value for '--kwargs': '[1]' is not accepted"),
        (["--delay", "-1"], "Invalid value for '--delay': -1.0 is not in the range"),
    ],
)
def test_enqueue_rejects_bad_arguments_naming_the_parameter(
    app_and_offload: tuple[Flask, Offload], args: list[str], message: str
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)

    code, output = invoke(app, "enqueue", "mail.send", *args)

    assert code == 2
    assert f"Error: {message}" in output


def test_enqueue_of_an_unknown_task_lists_the_registered_ones(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    make_tasks(offload)

    code, output = invoke(app, "enqueue", "mail.sned", '["ada@example.com"]')

    assert code == 1
    assert (
        "Error: No task named 'mail.sned' is registered in this app. Registered "
        "tasks: mail.send, reports.build." in output
    )
    assert offload.jobs() == []


def test_status_watch_redraws_the_table_until_the_count(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, _ = app_and_offload

    code, output = invoke(app, "status", "--watch", "--interval", "0.1", "--count", "3")
    refused = invoke(app, "status", "--watch", "--json")

    assert code == 0, output
    assert output.count("No jobs in the store.") == 3
    assert refused[0] == 2
    assert "--watch redraws a table and cannot be combined with --json" in (refused[1])


def test_status_watch_in_a_process_exits_0_on_ctrl_c(
    tmp_path: Path, commands: list[BackgroundCommand]
) -> None:
    watch = BackgroundCommand(
        tmp_path, "offload", "status", "--watch", "--interval", "0.2", threads="0"
    )
    commands.append(watch)
    wait_for(
        lambda: watch.output().count("No jobs in the store.") >= 2,
        what="two draws",
    )

    watch.signal(signal.SIGINT)

    assert watch.wait() == 0


def test_enqueue_in_a_process_is_listed_by_jobs_json_in_another(
    tmp_path: Path,
) -> None:
    job_id = run_flask_command(
        tmp_path, "offload", "enqueue", "record", '["from-cli"]', threads="0"
    ).strip()

    output = run_flask_command(tmp_path, "offload", "jobs", "--json", threads="0")

    (listed,) = json.loads(output)
    assert listed["id"] == job_id
    assert (listed["task"], listed["queue"], listed["status"]) == (
        "record",
        "default",
        "queued",
    )

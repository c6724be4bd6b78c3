"""The worker under each way of serving an app: uWSGI, and the dev server's
SIGTERM and code reloads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_offload.stores import SQLStore
from tests.processes import (
    ROOT,
    Server,
    app_environment,
    free_port,
    read_events,
    wait_for,
)

UWSGI = Path(sys.executable).parent / "uwsgi"


def require_uwsgi() -> None:
    if UWSGI.exists():
        return
    reason = f"uWSGI is not installed at {UWSGI}; pip install -e '.[dev]'."
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class UWSGI_Server:
    """uWSGI serving ``tests.apps.jobs_wsgi`` in its own process group."""

    def __init__(self, instance: Path, *options: str, **settings: str) -> None:
        require_uwsgi()
        self.port = free_port()
        self.log = instance / f"uwsgi-{self.port}.log"
        command = [
            str(UWSGI),
            "--http-socket",
            f"127.0.0.1:{self.port}",
            "--module",
            "tests.apps.jobs_wsgi:app",
            "--virtualenv",
            sys.prefix,
            "--need-app",
            *options,
        ]
        env = app_environment(instance, **settings)
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_serving(self) -> Server:
        """A handle for HTTP calls, once uWSGI answers."""
        server = Server.__new__(Server)
        server.port, server.process, server.log = self.port, self.process, self.log
        server._wait_until_serving()

        return server

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGQUIT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def uwsgi_servers() -> Iterator[list[UWSGI_Server]]:
    started: list[UWSGI_Server] = []
    yield started
    for server in started:
        server.stop()


def test_under_uwsgi_with_threads_jobs_run_in_its_workers_not_its_master(
    tmp_path: Path, uwsgi_servers: list[UWSGI_Server]
) -> None:
    uwsgi = UWSGI_Server(tmp_path, "--master", "--processes", "2", "--enable-threads")
    uwsgi_servers.append(uwsgi)
    server = uwsgi.wait_until_serving()

    for batch in range(4):
        server.post(f"/enqueue?count=5&seconds=0.05&tag=batch{batch}")

    wait_for(lambda: len(read_events(tmp_path)) == 40, what="20 jobs to run")
    ran_in = {event[2] for event in read_events(tmp_path)}
    assert str(uwsgi.process.pid) not in ran_in
    done = [event[1] for event in read_events(tmp_path) if event[0] == "done"]
    assert sorted(done) == sorted(set(done))


def test_under_uwsgi_with_lazy_apps_each_worker_runs_jobs(
    tmp_path: Path, uwsgi_servers: list[UWSGI_Server]
) -> None:
    uwsgi = UWSGI_Server(
        tmp_path, "--master", "--processes", "2", "--threads", "2", "--lazy-apps"
    )
    uwsgi_servers.append(uwsgi)
    server = uwsgi.wait_until_serving()

    server.post("/enqueue?count=10")

    wait_for(lambda: len(read_events(tmp_path)) == 10, what="10 jobs to run")


def test_uwsgi_without_threads_refuses_to_load_the_app_and_says_how_to_fix_it(
    tmp_path: Path, uwsgi_servers: list[UWSGI_Server]
) -> None:
    uwsgi = UWSGI_Server(tmp_path, "--master", "--processes", "2")
    uwsgi_servers.append(uwsgi)

    uwsgi.process.wait(timeout=20)

    assert uwsgi.process.returncode != 0
    output = uwsgi.log.read_text()
    assert "uWSGI is running without Python threads" in output
    assert "Start uWSGI with --enable-threads" in output


def test_uwsgi_without_threads_is_fine_when_a_separate_worker_runs_jobs(
    tmp_path: Path, uwsgi_servers: list[UWSGI_Server]
) -> None:
    uwsgi = UWSGI_Server(tmp_path, "--master", "--processes", "2", threads="0")
    uwsgi_servers.append(uwsgi)
    server = uwsgi.wait_until_serving()

    server.post("/enqueue?count=3")

    assert server.get("/stats")["default"]["queued"] == 3


def test_sigterm_to_the_dev_server_lets_the_running_job_finish_and_hands_back_none(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path, grace="10")
    try:
        (job_id,) = server.post("/enqueue?count=1&seconds=1&tag=slow")["ids"]
        wait_for(lambda: read_events(tmp_path), what="the job to start")

        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=20)
    finally:
        server.stop()

    assert [event[0] for event in read_events(tmp_path)] == ["start", "done"]
    assert job_status(tmp_path, job_id) == "succeeded"


def test_sigterm_to_the_dev_server_hands_back_a_job_that_outlasts_the_grace(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path, grace="0.2")
    try:
        (job_id,) = server.post("/enqueue?count=1&seconds=30&tag=long")["ids"]
        wait_for(lambda: read_events(tmp_path), what="the job to start")
        started = time.monotonic()

        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=20)
    finally:
        server.stop()

    assert time.monotonic() - started < 10
    assert job_status(tmp_path, job_id) == "queued"


def test_a_code_reload_replaces_the_worker_and_leaves_none_behind(
    tmp_path: Path,
) -> None:
    watched = tmp_path / "watched.txt"
    watched.write_text("one")
    server = Server(tmp_path, "--debug", "--extra-files", str(watched))
    try:
        before = server.get("/pid")["pid"]
        time.sleep(1.2)  # the stat reloader compares modification times
        watched.write_text("two")
        wait_for(
            lambda: answering_pid(server) not in (None, before),
            what="the reloaded child to serve",
        )
        after = server.get("/pid")["pid"]

        server.post("/enqueue?count=10&seconds=0.02")
        wait_for(lambda: len(read_events(tmp_path)) == 20, what="10 jobs to run")

        assert not process_exists(before)
        assert {event[2] for event in read_events(tmp_path)} == {str(after)}
    finally:
        server.stop()


def answering_pid(server: Server) -> int | None:
    try:
        pid: int = server.get("/pid")["pid"]
    except OSError:
        return None

    return pid


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False

    return True


def job_status(instance: Path, job_id: str) -> str:
    store = SQLStore(f"sqlite:///{instance / 'offload.sqlite3'}")
    record = store.get(job_id)
    store.close()
    assert record is not None

    return record.status

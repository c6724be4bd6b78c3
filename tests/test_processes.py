"""Real processes sharing one SQLite file: restarts, kills and shared counts."""

from __future__ import annotations

import itertools
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_offload.stores import SQLStore
from tests.processes import (
    FLASK,
    GUNICORN,
    GUNICORN_APP,
    ROOT,
    Server,
    app_environment,
    read_events,
    run_flask_command,
    wait_for,
)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def done_tags(instance: Path) -> Counter[str]:
    return Counter(event[1] for event in read_events(instance) if event[0] == "done")


def test_jobs_enqueued_by_a_process_that_exits_run_in_the_next_one(
    tmp_path: Path, servers: list[Server]
) -> None:
    run_flask_command(tmp_path, "enqueue-some", "5")
    assert done_tags(tmp_path) == Counter()

    servers.append(Server(tmp_path))

    wait_for(lambda: len(done_tags(tmp_path)) == 5, what="5 jobs to run")
    assert done_tags(tmp_path) == Counter({f"cli-{n}": 1 for n in range(5)})


def test_queued_jobs_survive_a_restart_of_the_server(
    tmp_path: Path, servers: list[Server]
) -> None:
    first = Server(tmp_path)
    servers.append(first)
    first.post("/enqueue?count=1&seconds=1&tag=slow")
    first.post("/enqueue?count=6&tag=waiting")
    wait_for(lambda: read_events(tmp_path), what="the first job to start")

    first.signal(signal.SIGINT)
    servers.append(Server(tmp_path))

    wait_for(lambda: len(done_tags(tmp_path)) == 7, what="all 7 jobs to run")
    assert max(done_tags(tmp_path).values()) == 1


def test_a_job_whose_process_was_killed_runs_again_after_its_lease(
    tmp_path: Path, servers: list[Server]
) -> None:
    victim = Server(tmp_path, lease="1")
    servers.append(victim)
    (job_id,) = victim.post("/enqueue?count=1&seconds=30&tag=doomed")["ids"]
    wait_for(lambda: read_events(tmp_path), what="the job to start")
    victim_pid = victim.get("/pid")["pid"]

    victim.signal(signal.SIGKILL)
    survivor = Server(tmp_path, lease="1")
    servers.append(survivor)
    survivor_pid = survivor.get("/pid")["pid"]

    wait_for(
        lambda: len(read_events(tmp_path)) == 2,
        what="the job to start again in the new process",
    )
    assert read_events(tmp_path) == [
        ["start", "doomed-0", str(victim_pid), "1"],
        ["start", "doomed-0", str(survivor_pid), "2"],
    ]
    store = SQLStore(f"sqlite:///{tmp_path / 'offload.sqlite3'}")
    record = store.get(job_id)
    store.close()
    assert record is not None
    assert (record.status, record.attempts, record.recoveries) == ("running", 2, 1)


def test_two_processes_on_one_file_see_the_same_counts(
    tmp_path: Path, servers: list[Server]
) -> None:
    one = Server(tmp_path, threads="0")
    two = Server(tmp_path, threads="0")
    servers.extend([one, two])

    one.post("/enqueue?count=3")
    two.post("/enqueue?count=4")

    assert one.get("/stats")["default"]["queued"] == 7
    assert two.get("/stats")["default"]["queued"] == 7


def test_jobs_enqueued_in_one_process_are_run_by_a_worker_in_another(
    tmp_path: Path, servers: list[Server]
) -> None:
    web = Server(tmp_path, threads="0")
    worker = Server(tmp_path)
    servers.extend([web, worker])
    worker_pid = worker.get("/pid")["pid"]

    web.post("/enqueue?count=20")

    wait_for(lambda: len(done_tags(tmp_path)) == 20, what="20 jobs to run")
    assert {event[2] for event in read_events(tmp_path)} == {str(worker_pid)}


def test_the_dev_server_reloader_runs_one_worker_in_the_serving_process(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(tmp_path, "--debug")
    servers.append(server)
    serving_pid = server.get("/pid")["pid"]
    assert serving_pid != server.process.pid, "the reloader should serve in a child"

    server.post("/enqueue?count=20&seconds=0.05")

    wait_for(lambda: len(done_tags(tmp_path)) == 20, what="20 jobs to run")
    assert {event[2] for event in read_events(tmp_path)} == {str(serving_pid)}


def test_with_gunicorn_preload_jobs_run_in_the_workers_not_the_master(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(
        tmp_path, "--preload", "--workers", "2", GUNICORN_APP, command=GUNICORN
    )
    servers.append(server)
    master_pid = str(server.process.pid)

    for batch in range(4):
        server.post(f"/enqueue?count=5&seconds=0.05&tag=batch{batch}")

    wait_for(lambda: len(done_tags(tmp_path)) == 20, what="20 jobs to run")
    ran_in = {event[2] for event in read_events(tmp_path)}
    assert master_pid not in ran_in
    assert max(done_tags(tmp_path).values()) == 1


def test_a_periodic_task_served_by_three_processes_ticks_once_per_second(
    tmp_path: Path, servers: list[Server]
) -> None:
    servers.extend(Server(tmp_path, ticks="1") for _ in range(3))

    wait_for(
        lambda: len([e for e in read_events(tmp_path) if e[0] == "tick"]) >= 6,
        what="six ticks",
    )

    ticks = sorted(float(e[2]) for e in read_events(tmp_path) if e[0] == "tick")
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert min(gaps) > 0.5, f"two ticks ran {min(gaps):.3f} s apart: {ticks}"


def test_a_unique_key_holds_when_several_processes_enqueue_at_once(
    tmp_path: Path,
) -> None:
    commands = [
        subprocess.Popen(
            [*FLASK, "enqueue-unique", "30"],
            cwd=ROOT,
            env=app_environment(tmp_path, threads="0"),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [command.communicate(timeout=60)[0] for command in commands]

    assert [command.returncode for command in commands] == [0, 0, 0]
    ids = {line for output in outputs for line in output.split()}
    assert len(ids) == 1

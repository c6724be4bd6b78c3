"""The SQLite write lock, between real processes.

Children are started with the ``spawn`` context, so that each is a process
of its own as a gunicorn worker is, except in the fork tests, which are
about what a forked child inherits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import struct
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from flask_offload.stores import sqlite_lock
from flask_offload.stores.sqlite_lock import (
    LOCK_SUFFIX,
    LockMode,
    SQLiteWriteLock,
    WaitTimes,
    write_lock_for,
)

SPAWN = multiprocessing.get_context("spawn")
PROCESS_MODES: list[LockMode] = ["queue", "flock"]
#: Generous: only a broken lock waits this long.
PATIENCE = 60.0


def add_one(counter: Path) -> None:
    """Increment the number in a file the slow way: read, let others run,
    write. Two writers at once lose an increment."""
    value = int(counter.read_text())
    os.sched_yield()
    counter.write_text(str(value + 1))


def count_in_threads(
    database: str, counter: Path, mode: LockMode, threads: int, rounds: int
) -> None:
    lock = SQLiteWriteLock(database, mode=mode)

    def count() -> None:
        for _ in range(rounds):
            with lock:
                add_one(counter)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def hold_until_killed(database: str, mode: LockMode, holding: Any) -> None:
    lock = SQLiteWriteLock(database, mode=mode)
    lock.acquire()
    holding.set()
    threading.Event().wait()


def wait_in_queue(database: str) -> None:
    SQLiteWriteLock(database, mode="queue").acquire()


def tickets_taken(lock: SQLiteWriteLock) -> int:
    taken: int = struct.unpack("q", lock.path.read_bytes()[:8])[0]

    return taken


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)


def fork() -> int:
    # Python 3.12 warns about forking a process with threads; none of this
    # test's threads are running at the fork, but another test's may linger.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "offload.sqlite3")


@pytest.mark.parametrize("mode", PROCESS_MODES)
def test_writers_in_four_processes_never_overlap(
    database: str, tmp_path: Path, mode: LockMode
) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    children = [
        SPAWN.Process(target=count_in_threads, args=(database, counter, mode, 2, 150))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(PATIENCE)

    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    assert int(counter.read_text()) == 4 * 2 * 150


def test_threads_of_one_process_never_overlap(database: str, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")

    count_in_threads(database, counter, "queue", threads=6, rounds=200)

    assert int(counter.read_text()) == 6 * 200


@pytest.mark.parametrize("mode", PROCESS_MODES)
def test_a_holder_killed_with_sigkill_lets_the_next_writer_in(
    database: str, mode: LockMode
) -> None:
    holding = SPAWN.Event()
    holder = SPAWN.Process(target=hold_until_killed, args=(database, mode, holding))
    holder.start()
    assert holding.wait(PATIENCE)

    lock = SQLiteWriteLock(database, mode=mode)
    acquired = threading.Event()

    def wait_for_lock() -> None:
        with lock:
            acquired.set()

    waiter = threading.Thread(target=wait_for_lock)
    waiter.start()
    try:
        assert not acquired.wait(0.2), "took a lock another process holds"
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(PATIENCE)
        waiter.join(PATIENCE)

    assert holder.exitcode == -signal.SIGKILL
    assert acquired.is_set()


@pytest.mark.parametrize("mode", PROCESS_MODES)
def test_a_forked_child_waits_for_its_parents_hold_instead_of_sharing_it(
    database: str, mode: LockMode
) -> None:
    lock = SQLiteWriteLock(database, mode=mode)
    lock.acquire()
    reader, writer = os.pipe()
    child = fork()
    if child == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            os.close(reader)
            with lock:
                os.write(writer, b"acquired")
            status = 0
        finally:
            os._exit(status)

    os.close(writer)
    try:
        ready, _, _ = select.select([reader], [], [], 0.2)
        assert not ready, "the child took the lock its parent holds"
        lock.release()
        ready, _, _ = select.select([reader], [], [], PATIENCE)
        assert ready
        assert os.read(reader, 16) == b"acquired"
    finally:
        os.close(reader)
        _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("mode", PROCESS_MODES)
def test_a_forked_child_that_exits_leaves_its_parents_hold_in_place(
    database: str, mode: LockMode
) -> None:
    lock = SQLiteWriteLock(database, mode=mode)
    lock.acquire()
    child = fork()
    if child == 0:  # pragma: no cover - runs in the child
        lock.after_fork()  # again, as the store does: must change nothing
        os._exit(0)
    os.waitpid(child, 0)

    other = SQLiteWriteLock(database, mode=mode)
    acquired = threading.Event()

    def wait_for_lock() -> None:
        with other:
            acquired.set()

    waiter = threading.Thread(target=wait_for_lock)
    waiter.start()
    try:
        assert not acquired.wait(0.2), "the child's exit released the parent's hold"
    finally:
        lock.release()
        waiter.join(PATIENCE)

    assert acquired.is_set()


def test_a_writer_killed_while_queueing_does_not_let_the_next_one_in_early(
    database: str,
) -> None:
    holder = SQLiteWriteLock(database, mode="queue")
    holder.acquire()
    killed = SPAWN.Process(target=wait_in_queue, args=(database,))
    killed.start()
    wait_until(lambda: tickets_taken(holder) == 2)

    behind = SQLiteWriteLock(database, mode="queue")
    acquired = threading.Event()

    def wait_for_lock() -> None:
        with behind:
            acquired.set()

    waiter = threading.Thread(target=wait_for_lock)
    waiter.start()
    try:
        wait_until(lambda: tickets_taken(holder) == 3)
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        killed.join(PATIENCE)
        assert not acquired.wait(0.2), "went in while the writer ahead still held"
    finally:
        holder.release()
        waiter.join(PATIENCE)

    assert acquired.is_set()


def test_a_place_kept_for_a_thread_that_stops_waiting_goes_to_the_next_process(
    database: str,
) -> None:
    # A thread interrupted while it waits for its own process's lock can
    # leave the process holding its place in the queue for nobody; the
    # interrupted wait gives that place up. The interruption itself cannot
    # be timed from a test, so the waiting thread is counted by hand.
    lock = SQLiteWriteLock(database, mode="queue")
    lock.acquire()
    with lock._count_lock:
        lock._waiting += 1
    lock.release()
    with lock._count_lock:
        lock._waiting -= 1
    lock._give_up_unused_turn()

    other = SQLiteWriteLock(database, mode="queue")
    acquired = threading.Event()

    def wait_for_lock() -> None:
        with other:
            acquired.set()

    waiter = threading.Thread(target=wait_for_lock, daemon=True)
    waiter.start()

    assert acquired.wait(PATIENCE)


def test_every_wait_is_recorded(database: str) -> None:
    lock = SQLiteWriteLock(database, recorded_waits=16)
    for _ in range(5):
        with lock.hold():
            pass

    assert lock.waits.count == 5
    assert len(lock.waits.recent()) == 5
    assert lock.waits.max_ns == max(lock.waits.recent()) > 0
    summary = lock.waits.summary()
    assert summary["count"] == 5
    assert 0 < summary["p50"] <= summary["p99"] <= summary["p99.9"] <= summary["max"]


def test_recorded_waits_keep_the_latest_in_order_and_count_them_all() -> None:
    waits = WaitTimes(capacity=3)
    for wait in (5, 1, 4, 2, 3):
        waits.add(wait)

    assert waits.recent() == [4, 2, 3]
    assert (waits.count, waits.total_ns, waits.max_ns) == (5, 15, 5)


def test_a_thread_cannot_take_the_lock_twice(database: str) -> None:
    lock = SQLiteWriteLock(database)
    with lock, pytest.raises(RuntimeError, match="already holds the write lock"):
        lock.acquire()


def test_releasing_a_lock_this_thread_does_not_hold_fails(database: str) -> None:
    lock = SQLiteWriteLock(database)
    with pytest.raises(RuntimeError, match="does not hold the write lock"):
        lock.release()


def test_the_side_file_sits_next_to_the_database(database: str) -> None:
    lock = write_lock_for(database)
    assert lock is not None
    with lock:
        pass

    assert lock.path == Path(database + LOCK_SUFFIX)
    assert lock.path.exists()


@pytest.mark.parametrize("database", [None, "", ":memory:", "file::memory:"])
def test_a_database_in_memory_needs_no_lock(database: str | None) -> None:
    assert write_lock_for(database) is None


def test_a_shared_memory_uri_needs_no_lock() -> None:
    assert write_lock_for("file:jobs?mode=memory&cache=shared") is None


def test_a_url_whose_query_asks_for_memory_needs_no_lock() -> None:
    url = make_url("sqlite:///file:jobs?mode=memory&cache=shared&uri=true")

    assert write_lock_for(url.database, url.query) is None


def test_a_url_naming_a_file_gets_a_lock_beside_it(tmp_path: Path) -> None:
    url = make_url(f"sqlite:///{tmp_path / 'offload.sqlite3'}")
    lock = write_lock_for(url.database, url.query)

    assert lock is not None
    assert lock.path == tmp_path / f"offload.sqlite3{LOCK_SUFFIX}"


def test_a_file_system_without_locks_falls_back_to_threads_with_one_warning(
    database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*descriptors: int) -> None:
        for fd in descriptors:
            os.close(fd)
        raise OSError(37, "No locks available")

    monkeypatch.setattr(sqlite_lock, "_check_ofd_locks", refuse)
    monkeypatch.setattr(sqlite_lock, "_check_flock", refuse)
    monkeypatch.setattr(sqlite_lock, "_warned", set())
    caplog.set_level(logging.WARNING, logger=sqlite_lock.__name__)

    first = SQLiteWriteLock(database)
    second = SQLiteWriteLock(database)
    with first:
        pass
    with second:
        pass

    assert (first.mode, second.mode) == ("thread", "thread")
    assert [record.getMessage() for record in caplog.records] == [
        f"Cannot lock {database}{LOCK_SUFFIX} ([Errno 37] No locks available): "
        "SQLite writers of other processes will wait in SQLite's busy handler, "
        "which is not fair and may time out with 'database is locked' under "
        "heavy load"
    ]


def test_an_unknown_mode_is_refused_with_the_accepted_ones(database: str) -> None:
    with pytest.raises(ValueError, match="mode must be 'auto', 'queue', 'flock'"):
        SQLiteWriteLock(database, mode="fair")  # type: ignore[arg-type]

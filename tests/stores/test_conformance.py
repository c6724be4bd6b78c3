"""The store contract, run against every store.

Time-based behaviour (leases, recovery) is driven by a fake clock, so
nothing here sleeps.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from flask_offload.records import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobError,
    JobRecord,
    Outcome,
    Status,
    new_job_id,
)
from flask_offload.stores import ListFilter, Store
from tests.conftest import FakeClock

LEASE = 30.0


def make_job(
    store: Store,
    *,
    task: str = "tasks.work",
    queue: str = "default",
    priority: int = 0,
    run_at: float | None = None,
    key: str | None = None,
    key_limit: int | None = None,
) -> JobRecord:
    now = store.clock()
    job = JobRecord(
        id=new_job_id(),
        task=task,
        arguments='{"args":[1],"kwargs":{}}',
        queue=queue,
        priority=priority,
        enqueued_at=now,
        run_at=now if run_at is None else run_at,
        concurrency_key=key,
        concurrency_limit=key_limit,
    )

    return store.enqueue(job)


def succeeded(job: JobRecord, result: str = "42") -> Outcome:
    return Outcome(job.id, job.attempts, SUCCEEDED, time.time(), result=result)


def test_an_enqueued_job_reads_back_as_queued_with_its_fields(store: Store) -> None:
    job = make_job(store, task="reports.build", queue="reports", priority=3)

    stored = store.get(job.id)

    assert stored is not None
    assert (stored.task, stored.queue, stored.priority) == (
        "reports.build",
        "reports",
        3,
    )
    assert stored.status == QUEUED
    assert stored.arguments == '{"args":[1],"kwargs":{}}'
    assert stored.attempts == 0


def test_text_beyond_ascii_reads_back_unchanged(store: Store) -> None:
    now = store.clock()
    text = 'Zoë 😀 \u2028 "quoted" \\ back'
    job = store.enqueue(
        JobRecord(
            id=new_job_id(),
            task="tâches.rapport",
            arguments=json.dumps({"args": [text], "kwargs": {}}, ensure_ascii=False),
            queue="file-dattente-à",
            priority=0,
            enqueued_at=now,
            run_at=now,
            concurrency_key=f"clé:{text}",
            unique_key=f"unique:{text}",
        )
    )

    [claimed] = store.claim("w1", None, 1, LEASE)
    stored = store.get(job.id)

    for record in (claimed, stored):
        assert record is not None
        assert json.loads(record.arguments)["args"] == [text]
        assert (record.task, record.queue) == ("tâches.rapport", "file-dattente-à")
        assert (record.concurrency_key, record.unique_key) == (
            f"clé:{text}",
            f"unique:{text}",
        )


def test_get_of_an_unknown_id_returns_none(store: Store) -> None:
    assert store.get("no-such-job") is None


def test_claim_hands_out_the_highest_priority_first_then_the_oldest(
    store: Store, clock: FakeClock
) -> None:
    first = make_job(store)
    clock.advance(1)
    second = make_job(store)
    urgent = make_job(store, priority=5)

    claimed = store.claim("w1", None, 10, LEASE)

    assert [job.id for job in claimed] == [urgent.id, first.id, second.id]


def test_claim_marks_jobs_running_with_a_lease_and_an_attempt(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)

    (job,) = store.claim("w1", None, 1, LEASE)

    stored = store.get(job.id)
    assert stored is not None
    assert stored.status == RUNNING
    assert stored.worker == "w1"
    assert stored.attempts == 1
    assert stored.lease_expires_at == pytest.approx(clock.now + LEASE)


def test_claim_takes_no_more_than_the_limit(store: Store) -> None:
    for _ in range(5):
        make_job(store)

    assert len(store.claim("w1", None, 3, LEASE)) == 3
    assert len(store.claim("w2", None, 3, LEASE)) == 2
    assert store.claim("w3", None, 3, LEASE) == []


def test_claim_serves_only_the_queues_asked_for(store: Store) -> None:
    mail = make_job(store, queue="mail")
    make_job(store, queue="reports")

    claimed = store.claim("w1", ["mail"], 10, LEASE)

    assert [job.id for job in claimed] == [mail.id]


def test_claim_skips_jobs_whose_run_time_has_not_come(
    store: Store, clock: FakeClock
) -> None:
    later = make_job(store, run_at=clock.now + 60)

    assert store.claim("w1", None, 10, LEASE) == []
    clock.advance(61)
    assert [job.id for job in store.claim("w1", None, 10, LEASE)] == [later.id]


def test_concurrent_claims_never_hand_one_job_to_two_workers(store: Store) -> None:
    for _ in range(200):
        make_job(store)
    handed_out: list[str] = []
    lock = threading.Lock()

    def claim_all(worker: str) -> None:
        while batch := store.claim(worker, None, 7, LEASE):
            with lock:
                handed_out.extend(job.id for job in batch)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(handed_out) == 200
    assert Counter(handed_out).most_common(1)[0][1] == 1


def test_finish_records_success_and_ends_the_lease(store: Store) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)

    applied = store.finish("w1", [succeeded(job, result='{"n":1}')])

    stored = store.get(job.id)
    assert applied == [job.id]
    assert stored is not None
    assert stored.status == SUCCEEDED
    assert stored.result == '{"n":1}'
    assert stored.worker is None
    assert stored.lease_expires_at is None
    assert stored.finished_at is not None


def test_finish_records_a_failure_with_its_error(store: Store) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    error = JobError("ValueError", "bad input", "Traceback ...")

    store.finish(
        "w1",
        [Outcome(job.id, job.attempts, FAILED, time.time(), error=error.to_json())],
    )

    stored = store.get(job.id)
    assert stored is not None
    assert stored.status == FAILED
    assert stored.error is not None
    assert JobError.from_json(stored.error) == error


def test_finish_from_a_worker_that_lost_the_lease_is_dropped(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)
    (stale,) = store.claim("w1", None, 1, LEASE)
    clock.advance(LEASE + 1)
    store.recover(max_recoveries=3)
    (fresh,) = store.claim("w2", None, 1, LEASE)

    assert store.finish("w1", [succeeded(stale, result='"stale"')]) == []
    stored = store.get(fresh.id)
    assert stored is not None
    assert (stored.status, stored.worker) == (RUNNING, "w2")

    assert store.finish("w2", [succeeded(fresh, result='"fresh"')]) == [fresh.id]
    stored = store.get(fresh.id)
    assert stored is not None
    assert stored.result == '"fresh"'


def test_finish_and_claim_reports_and_claims_in_one_call(store: Store) -> None:
    make_job(store)
    make_job(store)
    (first,) = store.claim("w1", None, 1, LEASE)

    applied, claimed = store.finish_and_claim("w1", [succeeded(first)], None, 5, LEASE)

    assert applied == [first.id]
    assert len(claimed) == 1
    assert claimed[0].id != first.id


def test_finish_keeps_progress_reported_with_the_outcome(store: Store) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    outcome = succeeded(job)
    outcome.progress = '{"done":10,"total":10,"message":null}'

    store.finish("w1", [outcome])

    stored = store.get(job.id)
    assert stored is not None
    assert stored.progress == '{"done":10,"total":10,"message":null}'


def test_heartbeat_extends_the_lease_of_held_jobs(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    clock.advance(LEASE - 1)

    beat = store.heartbeat("w1", [job.id], LEASE)
    clock.advance(LEASE - 1)

    assert beat.lost == frozenset()
    assert store.recover(max_recoveries=3) == []
    stored = store.get(job.id)
    assert stored is not None
    assert stored.status == RUNNING


def test_heartbeat_reports_jobs_the_worker_no_longer_holds(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    clock.advance(LEASE + 1)
    store.recover(max_recoveries=3)

    beat = store.heartbeat("w1", [job.id], LEASE)

    assert beat.lost == frozenset({job.id})


def test_heartbeat_reports_cancellation_requests(store: Store) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)

    assert store.cancel(job.id) == RUNNING
    beat = store.heartbeat("w1", [job.id], LEASE)

    assert beat.cancel_requested == frozenset({job.id})


def test_recover_returns_an_expired_job_to_the_queue(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    clock.advance(LEASE + 1)

    recovered = store.recover(max_recoveries=3)

    assert [r.id for r in recovered] == [job.id]
    stored = store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.worker, stored.recoveries) == (QUEUED, None, 1)
    (again,) = store.claim("w2", None, 1, LEASE)
    assert (again.id, again.attempts) == (job.id, 2)


def test_recover_leaves_live_leases_alone(store: Store, clock: FakeClock) -> None:
    make_job(store)
    store.claim("w1", None, 1, LEASE)
    clock.advance(LEASE - 1)

    assert store.recover(max_recoveries=3) == []


def test_recover_fails_a_job_whose_worker_died_too_often(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)
    for _ in range(2):
        store.claim("w1", None, 1, LEASE)
        clock.advance(LEASE + 1)
        store.recover(max_recoveries=1)

    (job,) = store.list_jobs(ListFilter())
    assert job.status == FAILED
    assert job.error is not None
    error = JobError.from_json(job.error)
    assert error.type == "WorkerLost"
    assert "OFFLOAD_MAX_RECOVERIES" in error.message


def test_release_hands_jobs_back_and_undoes_an_unstarted_attempt(
    store: Store,
) -> None:
    make_job(store)
    make_job(store)
    first, second = store.claim("w1", None, 2, LEASE)

    assert store.release("w1", [first.id], started=False) == 1
    assert store.release("w1", [second.id], started=True) == 1

    stored_first, stored_second = store.get(first.id), store.get(second.id)
    assert stored_first is not None and stored_second is not None
    assert (stored_first.status, stored_first.attempts) == (QUEUED, 0)
    assert (stored_second.status, stored_second.attempts) == (QUEUED, 1)


def test_release_ignores_jobs_held_by_another_worker(store: Store) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)

    assert store.release("w2", [job.id], started=True) == 0


def test_cancel_of_a_queued_job_means_it_never_runs(store: Store) -> None:
    job = make_job(store)

    assert store.cancel(job.id) == CANCELLED
    assert store.claim("w1", None, 10, LEASE) == []


def test_cancel_of_a_finished_job_changes_nothing(store: Store) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    store.finish("w1", [succeeded(job)])

    assert store.cancel(job.id) == SUCCEEDED


def test_cancel_of_an_unknown_job_returns_none(store: Store) -> None:
    assert store.cancel("no-such-job") is None


def test_set_progress_is_recorded_and_reports_cancellation(store: Store) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)

    assert store.set_progress(job.id, "w1", 1, '{"done":1}') is False
    store.cancel(job.id)
    assert store.set_progress(job.id, "w1", 1, '{"done":2}') is True

    stored = store.get(job.id)
    assert stored is not None
    assert stored.progress == '{"done":2}'


def test_set_progress_from_a_stale_attempt_is_ignored(store: Store) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)

    store.set_progress(job.id, "w1", 99, '{"done":1}')

    stored = store.get(job.id)
    assert stored is not None
    assert stored.progress is None


def test_counts_are_by_queue_and_status_with_every_status_present(
    store: Store,
) -> None:
    make_job(store, queue="mail")
    make_job(store, queue="mail")
    make_job(store, queue="reports")
    store.claim("w1", ["mail"], 1, LEASE)

    counts = store.counts()

    assert counts["mail"][QUEUED] == 1
    assert counts["mail"][RUNNING] == 1
    assert counts["reports"][QUEUED] == 1
    assert set(counts["reports"]) == {
        "scheduled",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    }


def test_list_filters_and_pages_newest_first(store: Store) -> None:
    jobs = [make_job(store, task=f"t{i % 2}") for i in range(6)]

    newest = store.list_jobs(ListFilter(limit=2))
    second_page = store.list_jobs(ListFilter(limit=2, offset=2))
    of_task = store.list_jobs(ListFilter(task="t1"))

    assert [job.id for job in newest] == [jobs[5].id, jobs[4].id]
    assert [job.id for job in second_page] == [jobs[3].id, jobs[2].id]
    assert [job.id for job in of_task] == [jobs[5].id, jobs[3].id, jobs[1].id]
    assert store.list_jobs(ListFilter(status=RUNNING)) == []


def test_list_pages_by_id_before_and_after_a_cursor(store: Store) -> None:
    jobs = [make_job(store, task=f"t{i % 2}", queue="q") for i in range(7)]
    ids = [job.id for job in jobs]

    first = store.list_jobs(ListFilter(limit=3))
    second = store.list_jobs(ListFilter(limit=3, before=first[-1].id))
    third = store.list_jobs(ListFilter(limit=3, before=second[-1].id))
    back = store.list_jobs(ListFilter(limit=3, after=third[0].id))
    top = store.list_jobs(ListFilter(limit=3, after=second[0].id))
    between = store.list_jobs(ListFilter(before=ids[5], after=ids[1]))
    # Two filters: the Redis store scans one index and checks the other.
    of_task = store.list_jobs(ListFilter(limit=2, queue="q", task="t0", before=ids[6]))
    newer_of_task = store.list_jobs(
        ListFilter(limit=2, queue="q", task="t0", after=ids[0])
    )

    assert [job.id for job in first] == ids[6:3:-1]
    assert [job.id for job in second] == ids[3:0:-1]
    assert [job.id for job in third] == [ids[0]]
    assert [job.id for job in back] == ids[3:0:-1]
    assert [job.id for job in top] == ids[6:3:-1]
    assert [job.id for job in between] == ids[4:1:-1]
    assert [job.id for job in of_task] == [ids[4], ids[2]]
    assert [job.id for job in newer_of_task] == [ids[4], ids[2]]
    assert store.list_jobs(ListFilter(before=ids[0])) == []
    assert store.list_jobs(ListFilter(after=ids[6])) == []


def test_running_jobs_page_by_id_too(store: Store) -> None:
    for _ in range(4):
        make_job(store)
    ids = sorted(job.id for job in store.claim("w1", None, 3, LEASE))

    first = store.list_jobs(ListFilter(status=RUNNING, limit=2))
    older = store.list_jobs(ListFilter(status=RUNNING, limit=2, before=ids[1]))
    newer = store.list_jobs(ListFilter(status=RUNNING, limit=1, after=ids[0]))

    assert [job.id for job in first] == [ids[2], ids[1]]
    assert [job.id for job in older] == [ids[0]]
    assert [job.id for job in newer] == [ids[1]]


def test_purge_deletes_only_jobs_finished_before_the_cutoff(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)
    waiting = make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    outcome = succeeded(job)
    outcome.finished_at = clock.now
    store.finish("w1", [outcome])

    assert store.purge(clock.now - 1) == 0
    assert store.purge(clock.now + 1) == 1
    assert store.get(job.id) is None
    assert store.get(waiting.id) is not None


def test_an_enqueue_wakes_a_waiting_worker_at_once(store: Store) -> None:
    store.wait_for_work(0)  # forget earlier rings
    woke = threading.Event()

    def wait() -> None:
        store.wait_for_work(10)
        woke.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    make_job(store)

    assert woke.wait(2), "wait_for_work did not return after an enqueue"
    waiter.join()


def test_wait_for_work_returns_after_the_timeout_when_nothing_happens(
    store: Store,
) -> None:
    store.wait_for_work(0)
    started = time.monotonic()

    store.wait_for_work(0.2)

    assert time.monotonic() - started >= 0.15


def test_a_queue_with_concurrency_one_runs_its_jobs_one_at_a_time_in_order(
    store: Store, clock: FakeClock
) -> None:
    store.queue_limits = {"serial": 1}
    jobs = []
    for _ in range(3):
        jobs.append(make_job(store, queue="serial"))
        clock.advance(1)

    (first,) = store.claim("w1", None, 10, LEASE)
    assert store.claim("w2", None, 10, LEASE) == []
    store.finish("w1", [succeeded(first)])
    (second,) = store.claim("w2", None, 10, LEASE)

    assert [first.id, second.id] == [jobs[0].id, jobs[1].id]


def test_a_queue_limit_caps_its_running_jobs_and_leaves_other_queues_alone(
    store: Store,
) -> None:
    store.queue_limits = {"limited": 2}
    for _ in range(5):
        make_job(store, queue="limited")
    free = [make_job(store, queue="free") for _ in range(3)]

    claimed = store.claim("w1", None, 10, LEASE)

    assert Counter(job.queue for job in claimed) == {"limited": 2, "free": 3}
    assert {job.id for job in claimed} >= {job.id for job in free}
    assert store.claim("w2", ["limited"], 10, LEASE) == []


def test_jobs_sharing_a_concurrency_key_run_one_at_a_time_by_default(
    store: Store, clock: FakeClock
) -> None:
    a1 = make_job(store, key="user:1")
    clock.advance(1)
    a2 = make_job(store, key="user:1")
    b1 = make_job(store, key="user:2")
    plain = make_job(store)

    claimed = store.claim("w1", None, 10, LEASE)
    assert {job.id for job in claimed} == {a1.id, b1.id, plain.id}
    assert store.claim("w2", None, 10, LEASE) == []

    store.finish("w1", [succeeded(job) for job in claimed if job.id == a1.id])
    assert [job.id for job in store.claim("w2", None, 10, LEASE)] == [a2.id]


def test_a_concurrency_limit_above_one_lets_that_many_share_a_key(
    store: Store,
) -> None:
    for _ in range(5):
        make_job(store, key="ffmpeg", key_limit=2)

    assert len(store.claim("w1", None, 10, LEASE)) == 2
    assert store.claim("w2", None, 10, LEASE) == []


def test_jobs_of_a_saturated_key_do_not_hold_back_the_jobs_behind_them(
    store: Store, clock: FakeClock
) -> None:
    make_job(store, key="busy")
    store.claim("w1", None, 1, LEASE)
    for _ in range(150):
        make_job(store, key="busy")
    clock.advance(1)
    other = make_job(store, key="other")

    assert [job.id for job in store.claim("w2", None, 5, LEASE)] == [other.id]


def test_concurrent_claims_never_exceed_a_limit(store: Store) -> None:
    store.queue_limits = {"serial": 1}
    for _ in range(20):
        make_job(store, queue="serial")
        make_job(store, key="shared", key_limit=3)
    running_at_once: list[int] = []
    lock = threading.Lock()

    def claim_and_count(worker: str) -> None:
        for _ in range(10):
            store.claim(worker, None, 5, LEASE)
            with lock:
                running = store.list_jobs(ListFilter(status=RUNNING, limit=1000))
                running_at_once.append(len(running))

    threads = [
        threading.Thread(target=claim_and_count, args=(f"w{i}",)) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    running = store.list_jobs(ListFilter(status=RUNNING, limit=1000))
    assert Counter(job.queue for job in running if job.concurrency_key is None) == {
        "serial": 1
    }
    assert sum(1 for job in running if job.concurrency_key == "shared") == 3
    assert max(running_at_once) == 4


def test_a_scheduled_job_is_claimed_only_once_its_time_has_come(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now
    job = JobRecord(
        id=new_job_id(),
        task="tasks.later",
        arguments='{"args":[],"kwargs":{}}',
        status="scheduled",
        enqueued_at=now,
        run_at=now + 60,
    )
    store.enqueue(job)

    assert store.claim("w1", None, 10, LEASE) == []
    assert store.counts()["default"]["scheduled"] == 1
    clock.advance(61)
    (claimed,) = store.claim("w1", None, 10, LEASE)

    assert (claimed.id, claimed.status, claimed.attempts) == (job.id, RUNNING, 1)


def test_a_retry_outcome_schedules_the_next_attempt_and_keeps_the_errors(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    error = JobError("ValueError", "flaky", "Traceback ...")
    retry = Outcome(
        job.id,
        job.attempts,
        "scheduled",
        clock.now,
        error=error.to_json(),
        retry_at=clock.now + 30,
        attempt_errors=f"[{error.to_json()}]",
    )

    store.finish("w1", [retry])

    stored = store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.finished_at, stored.worker) == (
        "scheduled",
        None,
        None,
    )
    assert stored.run_at == pytest.approx(clock.now + 30)
    assert stored.attempt_errors == f"[{error.to_json()}]"
    assert store.claim("w1", None, 1, LEASE) == []
    clock.advance(31)
    (again,) = store.claim("w1", None, 1, LEASE)
    assert again.attempts == 2


def test_throughput_counts_the_jobs_that_succeeded_and_failed_each_minute(
    store: Store, clock: FakeClock
) -> None:
    start = clock.now
    minute = int(start // 60) * 60

    def run(status: Status, ended: float) -> None:
        make_job(store)
        (job,) = store.claim("w1", None, 1, LEASE)
        store.finish("w1", [Outcome(job.id, job.attempts, status, ended)])

    run(SUCCEEDED, start - 60)
    run(SUCCEEDED, start)
    run(SUCCEEDED, start + 1)
    run(FAILED, start)
    run(SUCCEEDED, start - 3600)  # too long ago to be shown
    store.cancel(make_job(store).id)
    make_job(store)
    store.claim("w1", None, 1, LEASE)
    clock.advance(LEASE + 40)
    store.recover(max_recoveries=0)  # fails it now, in a later minute

    shown = store.throughput(minutes=30)

    last = int(clock.now // 60) * 60
    assert len(shown) == 30
    assert [bucket.start for bucket in shown] == list(
        range(last - 29 * 60, last + 60, 60)
    )
    counted = {
        b.start: (b.succeeded, b.failed) for b in shown if b.succeeded or b.failed
    }
    assert counted == {minute - 60: (1, 0), minute: (2, 1), last: (0, 1)}


def test_throughput_counts_past_minutes_once_and_the_last_ones_again(
    store: Store, clock: FakeClock
) -> None:
    def run(ended: float) -> None:
        make_job(store)
        (job,) = store.claim("w1", None, 1, LEASE)
        store.finish("w1", [Outcome(job.id, job.attempts, SUCCEEDED, ended)])

    run(clock.now - 600)
    before = store.throughput(minutes=30)
    run(clock.now - 600)  # reported after its minute settled: not counted
    run(clock.now - 1)
    after = store.throughput(minutes=30)

    old = int((clock.now - 600) // 60) * 60
    assert [b.succeeded for b in before if b.start == old] == [1]
    assert [b.succeeded for b in after if b.start == old] == [1]
    assert sum(b.succeeded for b in after) == 2


def test_the_log_of_each_outcome_is_kept_and_reaches_the_next_attempt(
    store: Store, clock: FakeClock
) -> None:
    make_job(store)
    (job,) = store.claim("w1", None, 1, LEASE)
    first = "[attempt 1] 10:00:00.000 INFO app: <b>trying</b> é\n[attempt 1] x"
    retry = Outcome(
        job.id, job.attempts, "scheduled", clock.now, retry_at=clock.now, log=first
    )
    store.finish("w1", [retry])
    (again,) = store.claim("w1", None, 1, LEASE)
    both = first + "\n[attempt 2] 10:00:01.000 INFO app: done"
    store.finish("w1", [succeeded(again)])
    plain = store.get(job.id)
    make_job(store)
    (other,) = store.claim("w1", None, 1, LEASE)
    with_log = succeeded(other)
    with_log.log = both
    store.finish("w1", [with_log])

    assert again.log == first
    assert plain is not None and plain.log is None
    stored = store.get(other.id)
    assert stored is not None and stored.log == both


def test_enqueueing_a_unique_key_again_returns_the_unfinished_job(
    store: Store,
) -> None:
    first = make_unique_job(store, "report:7")
    again = make_unique_job(store, "report:7")
    other = make_unique_job(store, "report:8")

    assert again.id == first.id
    assert other.id != first.id
    assert sum(store.counts()["default"].values()) == 2


def test_a_unique_key_is_free_again_once_its_job_has_finished(store: Store) -> None:
    first = make_unique_job(store, "report:7")
    (claimed,) = store.claim("w1", None, 1, LEASE)
    assert make_unique_job(store, "report:7").id == first.id
    store.finish("w1", [succeeded(claimed)])

    assert make_unique_job(store, "report:7").id != first.id


def make_unique_job(store: Store, key: str) -> JobRecord:
    now = store.clock()

    return store.enqueue(
        JobRecord(
            id=new_job_id(),
            task="tasks.report",
            arguments='{"args":[],"kwargs":{}}',
            enqueued_at=now,
            run_at=now,
            unique_key=key,
        )
    )


def tick_job(store: Store) -> JobRecord:
    now = store.clock()

    return JobRecord(
        id=new_job_id(),
        task="tasks.tick",
        arguments='{"args":[],"kwargs":{}}',
        enqueued_at=now,
        run_at=now,
    )


def test_a_tick_fires_once_however_many_processes_try(store: Store) -> None:
    due = store.sync_schedule("tick", "every 60", store.clock())

    wins = [store.fire_schedule("tick", due, due + 60, tick_job(store)) for _ in "ab"]

    assert wins == [True, False]
    assert store.counts()["default"]["queued"] == 1
    assert store.list_schedules() == [("tick", "every 60", due + 60)]


def test_a_changed_schedule_replaces_the_stored_next_run(store: Store) -> None:
    store.sync_schedule("tick", "every 60", 100.0)

    assert store.sync_schedule("tick", "every 60", 999.0) == 100.0
    assert store.sync_schedule("tick", "every 30", 130.0) == 130.0


def test_queues_given_to_a_claim_are_served_in_their_order(
    store: Store, clock: FakeClock
) -> None:
    low = make_job(store, queue="low", priority=50)
    clock.advance(1)
    high = make_job(store, queue="high")
    other = make_job(store, queue="ignored", priority=99)

    claimed = store.claim("w1", ["high", "low"], 10, LEASE)

    assert [job.id for job in claimed] == [high.id, low.id]
    assert other.id not in {job.id for job in claimed}

"""Periodic tasks: each tick once across processes, missed ticks once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import Offload
from flask_offload.schedules import Schedule
from tests.conftest import FakeClock
from tests.helpers import make_app


def test_cron_expressions_give_the_next_minute_in_utc() -> None:
    schedule = Schedule(task="t", cron="*/5 * * * *")

    # 2026-01-01 00:03:10 UTC is 1767225790.
    assert schedule.next_after(1767225790.0) == 1767225900.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "every five minutes"}, "is not a cron expression"),
        ({"every": 0}, "every must be a positive number of seconds"),
        ({}, "needs a cron expression or every="),
    ],
)
def test_a_bad_schedule_is_refused_where_it_is_written(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule(task="t", **options)  # type: ignore[arg-type]


@pytest.fixture
def two_apps(tmp_path: Path) -> Iterator[list[tuple[Flask, Offload]]]:
    """Two apps on one file with the same periodic task, as two processes."""
    pairs = []
    for name in ("one", "two"):
        app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREADS=0)
        app.name = name
        offload.init_app(app)
        offload.periodic(every=timedelta(minutes=10), name="tasks.report")(lambda: None)
        pairs.append((app, offload))
    yield pairs
    for app, offload in pairs:
        offload.close(app)


def test_several_processes_enqueue_each_tick_once_and_missed_ticks_once(
    two_apps: list[tuple[Flask, Offload]], clock: FakeClock
) -> None:
    for app, offload in two_apps:
        offload.state(app).store.clock = clock

    fired = [offload.state(app).fire_due_schedules() for app, offload in two_apps]
    assert fired == [0, 0]  # first look: the first tick is ten minutes away

    clock.advance(600)
    fired = [offload.state(app).fire_due_schedules() for app, offload in two_apps]
    assert sorted(fired) == [0, 1]

    clock.advance(3 * 3600)  # downtime: eighteen ticks missed
    fired = [offload.state(app).fire_due_schedules() for app, offload in two_apps]
    assert sorted(fired) == [0, 1]

    app, offload = two_apps[0]
    assert offload.stats()["default"]["queued"] == 2
    (listed,) = offload.scheduled(app)
    assert listed["name"] == "tasks.report"
    assert listed["next_run_at"].timestamp() == pytest.approx(clock.now + 600)

"""Signals an app can hook into: enqueued, started, succeeded, failed,
retrying, cancelled."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_offload import Job, JobFailed, Offload, current_job, signals


def test_each_step_of_a_job_sends_its_signal_with_the_app_and_the_job(
    app_and_offload: tuple[Flask, Offload],
) -> None:
    app, offload = app_and_offload
    seen: list[tuple[str, str, str, Any]] = []

    def recorder(name: str) -> Any:
        def receive(sender: Flask, job: Job, **extra: Any) -> None:
            seen.append((name, sender.name, job.status, extra.get("duration")))

        return receive

    receivers = {
        name: recorder(name)
        for name in ("enqueued", "started", "succeeded", "failed", "retrying")
    }
    for name, receiver in receivers.items():
        getattr(signals, f"job_{name}").connect(receiver, sender=app, weak=False)

    @offload.task(retries=1, retry_backoff=0)
    def flaky() -> str:
        if current_job.attempt == 1:
            raise ConnectionError("once")
        return "ok"

    @offload.task()
    def broken() -> None:
        raise ValueError("always")

    try:
        first, second = flaky.enqueue(), broken.enqueue()
        offload.start_worker(app)
        assert first.wait(timeout=10) == "ok"
        with pytest.raises(JobFailed):
            second.wait(timeout=10)
        offload.stop_worker(app)
    finally:
        for name, receiver in receivers.items():
            getattr(signals, f"job_{name}").disconnect(receiver, sender=app)

    names = [entry[0] for entry in seen]
    assert names.count("enqueued") == 2
    assert names.count("started") == 3
    assert ("retrying", app.name, "scheduled") in [entry[:3] for entry in seen]
    assert ("succeeded", app.name, "succeeded") in [entry[:3] for entry in seen]
    assert ("failed", app.name, "failed") in [entry[:3] for entry in seen]
    assert all(
        isinstance(entry[3], float)
        for entry in seen
        if entry[0] in ("succeeded", "failed", "retrying")
    )


def test_a_receiver_that_raises_breaks_neither_the_enqueue_nor_the_job(
    app_and_offload: tuple[Flask, Offload], caplog: pytest.LogCaptureFixture
) -> None:
    app, offload = app_and_offload

    def broken_receiver(sender: Flask, **extra: Any) -> None:
        raise RuntimeError("a bad hook")

    signals.job_enqueued.connect(broken_receiver, sender=app, weak=False)
    signals.job_succeeded.connect(broken_receiver, sender=app, weak=False)

    @offload.task()
    def fine() -> str:
        return "fine"

    try:
        job = fine.enqueue()
        assert offload.drain() == 1
        assert job.refresh().result == "fine"
    finally:
        signals.job_enqueued.disconnect(broken_receiver, sender=app)
        signals.job_succeeded.disconnect(broken_receiver, sender=app)

    assert "A receiver of offload-job-enqueued raised; ignored" in caplog.text

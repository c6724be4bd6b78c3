"""The Prometheus endpoint: job counts from the store, durations and queue
latency from this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from flask_offload import ConfigurationError
from tests.helpers import make_app


def test_the_metrics_endpoint_reports_counts_durations_and_latency(
    tmp_path: Path,
) -> None:
    app, offload = make_app(
        tmp_path, OFFLOAD_WORKER_THREADS=0, OFFLOAD_METRICS_URL="/offload/metrics"
    )
    offload.init_app(app)
    work = offload.task(name="tests.work")(lambda: None)
    try:
        work.enqueue()
        work.enqueue()
        work.using(queue="mail").enqueue()
        offload.drain(max_jobs=1)

        response = app.test_client().get("/offload/metrics")
    finally:
        offload.close(app)

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert 'offload_jobs{queue="default",status="succeeded"} 1.0' in text
    assert 'offload_jobs{queue="default",status="queued"} 1.0' in text
    assert 'offload_jobs{queue="mail",status="queued"} 1.0' in text
    assert (
        'offload_job_duration_seconds_count{outcome="succeeded",queue="default",'
        'task="tests.work"} 1.0'
    ) in text
    assert 'offload_job_queue_latency_seconds_count{queue="default"} 1.0' in text


def test_no_metrics_url_serves_nothing(tmp_path: Path) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREADS=0)
    offload.init_app(app)
    try:
        assert app.test_client().get("/offload/metrics").status_code == 404
    finally:
        offload.close(app)


def test_a_metrics_url_must_be_a_path(tmp_path: Path) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_METRICS_URL="metrics")

    with pytest.raises(ConfigurationError, match="must be a URL path starting"):
        offload.init_app(app)

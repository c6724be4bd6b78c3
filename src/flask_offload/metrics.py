"""A Prometheus endpoint for an app's jobs (extra ``flask-offload[metrics]``).

Set ``OFFLOAD_METRICS_URL = "/offload/metrics"`` to serve it. It reports:

- ``offload_jobs{queue, status}``: jobs in the store, counted at each scrape,
  so every process reports the same global numbers;
- ``offload_job_duration_seconds{task, queue, outcome}``: how long attempts
  ran, in this process;
- ``offload_job_queue_latency_seconds{queue}``: from the time a job could
  start (its run time) to the time it started, in this process.

The histograms are per process: under gunicorn each worker process reports
the jobs it ran, which Prometheus sums across the scrape targets. The
endpoint has no access control of its own; serve it only where your
Prometheus reaches it, or protect it in front.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flask import Flask, Response

from . import signals
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .job import Job
    from .stores.base import Store

DURATION_BUCKETS = (0.005, 0.05, 0.25, 1, 5, 30, 120, 600, 3600)


def install(app: Flask, store: Store, url: str) -> None:
    """Serve the metrics of ``app``'s jobs at ``url``.

    :raises ConfigurationError: if prometheus_client is not installed.
    """
    try:
        import prometheus_client
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.registry import Collector
    except ImportError as missing:
        raise ConfigurationError(
            f"OFFLOAD_METRICS_URL is {url!r}, which needs prometheus_client: "
            f"install flask-offload[metrics], or set OFFLOAD_METRICS_URL = None."
        ) from missing

    registry = prometheus_client.CollectorRegistry()

    class JobCounts(Collector):
        def collect(self) -> Iterator[Any]:
            family = GaugeMetricFamily(
                "offload_jobs",
                "Jobs in the store by queue and status, across all processes.",
                labels=["queue", "status"],
            )
            for queue, by_status in sorted(store.counts().items()):
                for status, count in by_status.items():
                    family.add_metric([queue, status], count)
            yield family

    registry.register(JobCounts())
    durations = prometheus_client.Histogram(
        "offload_job_duration_seconds",
        "How long job attempts ran in this process.",
        ["task", "queue", "outcome"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    latency = prometheus_client.Histogram(
        "offload_job_queue_latency_seconds",
        "From when a job could start to when it started, in this process.",
        ["queue"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )

    def ended(outcome: str) -> Any:
        def observe(sender: Flask, job: Job, duration: float, **_: Any) -> None:
            durations.labels(job.task, job.queue, outcome).observe(duration)

        return observe

    def started(sender: Flask, job: Job, **_: Any) -> None:
        waited = time.time() - job.run_at.timestamp()
        latency.labels(job.queue).observe(max(0.0, waited))

    receivers = {
        signals.job_succeeded: ended("succeeded"),
        signals.job_failed: ended("failed"),
        signals.job_retrying: ended("retrying"),
        signals.job_cancelled: ended("cancelled"),
        signals.job_started: started,
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver, sender=app, weak=False)

    def metrics_view() -> Response:
        return Response(
            prometheus_client.generate_latest(registry),
            mimetype=prometheus_client.CONTENT_TYPE_LATEST,
        )

    app.add_url_rule(url, "offload_metrics", metrics_view)

"""The three measurements, run in turn against one system in a fresh
directory.

The phases share one queue on purpose: the jobs timed while being enqueued
are the ones then drained, and the worker that drained them is the one that,
idle again, serves the latency phase, as a worker inside a web app would.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .probe import Probe
from .systems import System, SystemSpec


@dataclass(frozen=True, slots=True)
class Workload:
    """How much work each phase does.

    :param jobs: jobs enqueued one by one and then drained.
    :param latency_jobs: jobs enqueued one at a time for the latency phase.
    :param latency_interval: seconds between two latency jobs; long enough
        that the worker is idle again when the next one arrives.
    :param idle_before_latency: seconds the worker sits idle before the
        latency phase, so that a system that polls less often when idle pays
        for it as it would in an app.
    :param timeout: seconds any one phase may take before the run fails.
    """

    jobs: int
    latency_jobs: int
    latency_interval: float = 0.02
    idle_before_latency: float = 0.5
    timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class SystemResult:
    """What one system measured; times in seconds."""

    key: str
    label: str
    settings: Mapping[str, str]
    jobs: int
    enqueue_seconds: float
    drain_seconds: float
    #: Seconds from the last drained job's start until its outcome was
    #: stored, or ``None`` for a system that stores no outcomes.
    outcomes_stored_after: float | None
    latencies: list[float]

    @property
    def enqueue_rate(self) -> float:
        return self.jobs / self.enqueue_seconds

    @property
    def drain_rate(self) -> float:
        return self.jobs / self.drain_seconds


def run_system(spec: SystemSpec, workload: Workload) -> SystemResult:
    """Enqueue, drain and measure latency on ``spec`` in a temporary
    directory that is removed afterwards."""
    probe = Probe()
    gc.collect()
    with (
        tempfile.TemporaryDirectory(prefix=f"offload-bench-{spec.key}-") as workdir,
        spec.open(Path(workdir), probe) as system,
    ):
        enqueue_seconds = time_enqueue(system, workload.jobs)
        drain_seconds, stored_after = time_drain(system, probe, workload)
        latencies = measure_latency(system, probe, workload)
        settings = dict(system.settings())

    return SystemResult(
        key=spec.key,
        label=spec.label,
        settings=settings,
        jobs=workload.jobs,
        enqueue_seconds=enqueue_seconds,
        drain_seconds=drain_seconds,
        outcomes_stored_after=stored_after,
        latencies=latencies,
    )


def time_enqueue(system: System, jobs: int) -> float:
    """Seconds to enqueue ``jobs`` jobs one by one, with no worker running,
    so only the cost of handing a job over is measured."""
    started = time.perf_counter()
    for number in range(jobs):
        system.enqueue(number)

    return time.perf_counter() - started


def time_drain(
    system: System, probe: Probe, workload: Workload
) -> tuple[float, float | None]:
    """Start the worker on the queued jobs and return the seconds until the
    last one ran, and then how much longer its outcome took to be stored.

    The worker keeps running afterwards, for :func:`measure_latency`.
    """
    probe.expect(workload.jobs)
    started = time.perf_counter()
    system.start_worker()
    last_ran = probe.wait(workload.timeout)
    system.wait_for_outcomes(workload.jobs, workload.timeout)
    stored = time.perf_counter()
    stored_after = max(0.0, stored - last_ran) if system.records_outcomes else None

    return last_ran - started, stored_after


def measure_latency(system: System, probe: Probe, workload: Workload) -> list[float]:
    """Enqueue jobs at a steady pace to an idle worker and return, for each,
    the seconds from just before its enqueue call until its task started.

    Jobs are paced against a fixed schedule rather than by sleeping after
    each enqueue, so a slow enqueue does not stretch the interval.
    """
    count = workload.latency_jobs
    probe.expect(count, record_starts=True)
    time.sleep(workload.idle_before_latency)

    enqueued_at: list[float] = []
    first = time.perf_counter() + workload.latency_interval
    for number in range(count):
        _sleep_until(first + number * workload.latency_interval)
        enqueued_at.append(time.perf_counter())
        system.enqueue(number)

    probe.wait(workload.timeout)
    system.wait_for_outcomes(workload.jobs + count, workload.timeout)

    return [probe.starts[number] - enqueued_at[number] for number in range(count)]


def _sleep_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        time.sleep(delay)

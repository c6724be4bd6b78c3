"""``flask offload worker``: a worker process of its own."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import click
from flask.cli import ScriptInfo

from ..worker import Worker
from .group import (
    _describe_store,
    _offload_state,
    offload_group,
)

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: How often the waiting command checks that the worker's threads are alive.
HEALTH_CHECK_INTERVAL = 1.0
#: The exit status after a second Ctrl-C, as a shell reports a process that
#: SIGINT ended (128 + 2).
FORCED_EXIT_STATUS = 128 + signal.SIGINT


def _check_threads(
    ctx: click.Context, param: click.Parameter, value: int | None
) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(
            f"{value!r} is not accepted; give 1 or more threads. To run no "
            f"worker, do not start this command.",
            param=param,
        )

    return value


def _parse_queues(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> list[str] | None:
    if value is None:
        return None

    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise click.BadParameter(
            f"{value!r} is not accepted; give one or more queue names separated "
            f"by commas, such as 'default,reports', or leave the option out to "
            f"serve every queue.",
            param=param,
        )

    return list(dict.fromkeys(names))


@offload_group.command("worker")
@click.option(
    "--threads",
    type=int,
    callback=_check_threads,
    metavar="N",
    help="Jobs run at once. [default: OFFLOAD_WORKER_THREADS, or 1 if that is 0]",
)
@click.option(
    "--queues",
    callback=_parse_queues,
    metavar="NAME,NAME",
    help="Serve only these queues, separated by commas. [default: every queue]",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="On SIGTERM or Ctrl-C, how long running jobs get to finish before "
    "they are handed back to the queue. [default: OFFLOAD_SHUTDOWN_GRACE]",
)
@click.option(
    "--processes",
    is_flag=True,
    help="Run each job in a child process (one per thread), which is killed "
    "when the job runs past its timeout, even inside a blocking C call.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Level of the log output. [default: INFO] If the app configured "
    "logging itself, only Flask-Offload's loggers are set to this level.",
)
def worker_command(
    threads: int | None,
    queues: list[str] | None,
    grace: float | None,
    processes: bool,
    log_level: str | None,
) -> None:
    """Run a worker in the foreground until SIGTERM or Ctrl-C.

    Use it where web processes set OFFLOAD_WORKER_THREADS = 0, so that jobs
    run in a process of their own, on this machine or any other that reaches
    the store. On SIGTERM or Ctrl-C the worker stops taking jobs, gives
    running jobs the grace period to finish and hands the rest back to the
    queue, then exits with status 0. Ctrl-C during that grace period exits at
    once; the jobs it interrupts run again when their lease expires.
    """
    state = _offload_state()
    _set_up_logging(log_level)
    if state.settings.url.startswith("memory://"):
        logger.warning(
            "OFFLOAD_URL is %r: jobs in memory are not shared between "
            "processes, so this worker only sees jobs enqueued by its own tasks",
            state.settings.url,
        )

    if threads is None:
        threads = state.settings.worker_threads or 1
    if grace is None:
        grace = state.settings.shutdown_grace
    script = click.get_current_context().find_object(ScriptInfo)
    worker = state.offload.make_worker(
        state.app,
        threads=threads,
        queues=queues,
        job_processes=processes,
        app_import_path=None if script is None else script.app_import_path,
    )

    shutdown = _Shutdown()
    shutdown.install()
    try:
        _run_until_signalled(worker, shutdown, _describe_store(state), grace)
    finally:
        shutdown.restore()


def _run_until_signalled(
    worker: Worker, shutdown: _Shutdown, store: str, grace: float
) -> None:
    worker.start()
    served = "all" if worker.queues is None else ", ".join(worker.queues)
    click.echo(
        f"Flask-Offload worker {worker.name}: {worker.threads} thread(s), "
        f"queues: {served}, store: {store}"
    )

    signum = shutdown.wait(lambda: worker.is_running)
    if signum is None:
        worker.stop(0)
        raise click.ClickException(
            "Every worker thread died; the log above says why. Jobs this "
            "worker held were handed back to the queue."
        )

    logger.info(
        "Received %s: no new jobs are taken; running jobs get %s s to finish "
        "(Ctrl-C exits at once)",
        signal.Signals(signum).name,
        grace,
        extra={"action": "worker_stopping", "worker": worker.name},
    )
    worker.stop(grace)


class _Shutdown:
    """Turns SIGTERM and SIGINT into a graceful stop of the worker command.

    The handler only puts the signal on a :class:`queue.SimpleQueue`, whose
    ``put`` is safe to call from a signal handler; taking a lock there (as
    ``threading.Event.set`` does) could deadlock on a lock the interrupted
    main thread holds. Handling is left to the main thread.
    """

    def __init__(self) -> None:
        self._received: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._first: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def wait(self, still_running: Callable[[], bool]) -> int | None:
        """Block until a stop signal arrives and return it, or return
        ``None`` once ``still_running()`` is false."""
        while still_running():
            try:
                return self._received.get(timeout=HEALTH_CHECK_INTERVAL)
            except queue.Empty:
                continue

        return None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._first is None:
            self._first = signum
            self._received.put(signum)
        elif signum == signal.SIGINT:
            _exit_at_once()
        # A repeated SIGTERM changes nothing: supervisors send it once and
        # follow with SIGKILL when they stop waiting.


def _exit_at_once() -> None:
    """Leave without waiting for running jobs, from a signal handler.

    ``os._exit`` skips interpreter shutdown, which could otherwise wait on
    threads a task started. The message goes straight to the file
    descriptor because the interrupted code may hold the stream's lock.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            stream.flush()
    message = (
        "Ctrl-C while stopping: exiting now. Jobs still running here run again "
        "when their lease expires.\n"
    )
    os.write(2, message.encode())
    os._exit(FORCED_EXIT_STATUS)


def _set_up_logging(level: str | None) -> None:
    """Send log records to stderr, unless the app configured logging itself:
    then leave its handlers alone and only apply ``--log-level``, if given, to
    Flask-Offload's loggers."""
    root = logging.getLogger()
    if root.handlers:
        if level is not None:
            logging.getLogger("flask_offload").setLevel(level.upper())
        return

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel((level or "INFO").upper())

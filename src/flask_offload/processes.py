"""Running jobs in child processes, which can be killed.

A thread cannot be stopped inside a C call, so a job blocked in one can
outlive its timeout. ``flask offload worker --processes`` runs each job in
a child process instead: every worker thread keeps one child, started with
the ``spawn`` method (a fresh interpreter, so no lock held by another
thread of the parent is copied into it), which loads the app the same way
the command did and then runs the jobs it is sent, one at a time. When a
job runs past its timeout, the thread kills its child and starts another.

The child reports progress and sees cancellation through the store, as a
thread would, under the parent worker's name and the job's attempt. It
captures the job's log lines as a thread would and sends them back with the
outcome; the lines of a child killed at its timeout are lost with it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .errors import JobTimeout
from .records import JobError, JobRecord

logger = logging.getLogger(__name__)

#: Set in a child, so that loading the app there starts no worker of its own.
CHILD_ENVIRONMENT = "FLASK_OFFLOAD_JOB_PROCESS"
#: How long a new child may take to load the app.
START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ChildResult:
    """What a child sent back: the result's JSON, or the error's, and the
    lines the job logged."""

    result: str | None = None
    error: str | None = None
    log: list[str] = field(default_factory=list)
    log_dropped: int = 0


class ProcessRunner:
    """Runs jobs in child processes, one child per worker thread.

    :param app_import_path: how ``flask --app`` named the app, so that each
        child loads the same one.
    :param worker_name: the parent worker's name, under which the child
        writes progress.
    :param log_level: the level from which the child captures a job's log
        records, or ``None`` for none.
    """

    def __init__(
        self,
        app_import_path: str | None,
        worker_name: str,
        log_level: int | None = logging.INFO,
    ) -> None:
        self._app_import_path = app_import_path
        self._worker_name = worker_name
        self._log_level = log_level
        self._children = threading.local()
        self._all: list[BaseProcess] = []
        self._lock = threading.Lock()

    def run(self, record: JobRecord) -> ChildResult:
        """Run ``record`` in this thread's child and wait for it, killing the
        child if the job has a timeout and runs past it.

        :raises JobTimeout: when the job ran past its timeout.
        """
        process, connection = self._child()
        connection.send((record.id, record.task, record.arguments, record.attempts))
        if connection.poll(record.timeout):
            kind, payload, lines, dropped = connection.recv()
            if kind == "ok":
                return ChildResult(result=payload, log=lines, log_dropped=dropped)

            return ChildResult(error=payload, log=lines, log_dropped=dropped)

        logger.warning(
            "Job %s (%s) ran past its timeout of %s s; killing its process %s",
            record.id,
            record.task,
            record.timeout,
            process.pid,
            extra={"action": "timed_out", "job_id": record.id, "task": record.task},
        )
        self._discard(process)
        raise JobTimeout(
            f"The job ran longer than its timeout of {record.timeout:g} s and "
            f"its process was killed."
        )

    def close(self) -> None:
        with self._lock:
            children, self._all = self._all, []
        for process in children:
            process.kill()
            process.join()

    def _child(self) -> tuple[BaseProcess, Connection]:
        child: tuple[BaseProcess, Connection] | None = getattr(
            self._children, "current", None
        )
        if child is not None and child[0].is_alive():
            return child

        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=_child_main,
            args=(
                self._app_import_path,
                self._worker_name,
                self._log_level,
                _logging_set_up_here(),
                child_end,
            ),
            name="offload-job-process",
            daemon=True,
        )
        process.start()
        child_end.close()
        if not parent_end.poll(START_TIMEOUT) or parent_end.recv() != "ready":
            process.kill()
            raise RuntimeError(
                f"A job process could not load the app {self._app_import_path!r}; "
                f"see its output above."
            )
        with self._lock:
            self._all.append(process)
        self._children.current = (process, parent_end)

        return process, parent_end

    def _discard(self, process: BaseProcess) -> None:
        process.kill()
        process.join()
        with self._lock:
            if process in self._all:
                self._all.remove(process)
        self._children.current = None


def _logging_set_up_here() -> int | None:
    """The root logger's level, if this process set up logging output (as
    ``flask offload worker`` does, unless the app did); else ``None``."""
    root = logging.getLogger()

    return root.level if root.handlers else None


def _child_main(
    app_import_path: str | None,
    worker_name: str,
    log_level: int | None,
    parent_root_level: int | None,
    connection: Any,
) -> None:
    """The child: load the app, then run jobs until the parent goes away."""
    os.environ[CHILD_ENVIRONMENT] = "1"
    from flask.cli import ScriptInfo

    from . import joblog
    from .cli.worker import LOG_FORMAT
    from .codec import decode_arguments, encode_result
    from .context import JobContext, _current_job
    from .extension import EXTENSION_KEY

    app = ScriptInfo(app_import_path=app_import_path).load_app()
    state = app.extensions[EXTENSION_KEY]
    root = logging.getLogger()
    if parent_root_level is not None and not root.handlers:
        # The worker command set up output in the parent, and loading the
        # app set up none here: do as the parent did, so that what a job
        # logs is printed, and kept in its log, as it would be in a thread.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(parent_root_level)
    if log_level is not None:
        joblog.install()
    connection.send("ready")

    while True:
        try:
            job_id, task_name, arguments, attempt = connection.recv()
        except EOFError:
            return

        task = state.offload.tasks.get(task_name)
        context = JobContext(state.store, worker_name, job_id, task_name, "", attempt)
        token = _current_job.set(context)
        log_started = joblog.start(attempt, log_level)
        try:
            if task is None:
                raise LookupError(f"No task named {task_name!r} in the job process.")
            args, kwargs = decode_arguments(arguments)
            with app.app_context():
                value = task.function(*args, **kwargs)
            reply = ("ok", encode_result(task_name, value))
        except Exception as error:
            reply = ("error", JobError.from_exception(error).to_json())
        finally:
            captured = joblog.stop(log_started)
            _current_job.reset(token)
        if captured is None:
            connection.send((*reply, [], 0))
        else:
            connection.send((*reply, captured.lines, captured.dropped))

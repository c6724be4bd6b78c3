"""When the in-process worker starts, so that it runs in exactly the
processes that serve the app.

- The dev server's reloader runs the app twice: a parent that watches files
  and restarts a child that serves. The worker belongs in the child only.
- ``app.run(debug=True)`` creates the app in the parent too, before anything
  says whether a reloader follows; there the worker starts with the first
  request, which only the serving process receives.
- A prefork server that loads the app before forking (gunicorn with
  ``--preload``) must not run jobs in its master: threads do not survive a
  fork, so each forked child starts its own worker instead.
- uWSGI also loads the app in its master unless ``--lazy-apps`` is given,
  and it does not run Python's fork hooks; its own post-fork hook starts the
  worker in each of its workers. Without ``--enable-threads`` (or
  ``--threads``) uWSGI never runs Python threads, so the worker could not
  run a single job; that is refused at ``init_app``.
- Other ``flask`` commands (``flask shell``, ``flask db upgrade``) never
  start one: a short-lived command would claim jobs and exit.
"""

from __future__ import annotations

import enum
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click
from flask import Flask
from flask.helpers import get_debug_flag

from .errors import ConfigurationError


class StartMode(enum.Enum):
    NOW = "now"
    FIRST_REQUEST = "first request"
    IN_FORKED_CHILDREN = "in forked children"
    NEVER = "never"


def start_mode(app: Flask) -> StartMode:
    """Decide when this process should start its in-process worker."""
    if os.environ.get("FLASK_OFFLOAD_JOB_PROCESS"):
        return StartMode.NEVER
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return StartMode.NOW

    uwsgi = _uwsgi()
    if uwsgi is not None:
        # Worker id 0 means the app is loading before uWSGI forks its workers.
        return StartMode.IN_FORKED_CHILDREN if uwsgi.worker_id() == 0 else StartMode.NOW

    command = click.get_current_context(silent=True)
    if command is not None:
        return _mode_for_flask_command(command)

    gunicorn = _gunicorn_role()
    if gunicorn == "master":
        return StartMode.IN_FORKED_CHILDREN
    if gunicorn == "worker":
        return StartMode.NOW

    if app.debug:
        return StartMode.FIRST_REQUEST

    return StartMode.NOW


def _mode_for_flask_command(command: click.Context) -> StartMode:
    if command.info_name != "run":
        return StartMode.NEVER

    reload = command.params.get("reload")
    if reload is None:
        reload = get_debug_flag()

    # With the reloader, this process only watches files; the child it
    # starts has WERKZEUG_RUN_MAIN set and starts the worker.
    return StartMode.NEVER if reload else StartMode.NOW


def _gunicorn_role() -> str | None:
    """``"master"`` when gunicorn's arbiter is loading the app before forking
    (``--preload``), ``"worker"`` when a forked worker loads it, else None."""
    if "gunicorn.arbiter" not in sys.modules:
        return None

    frame = sys._getframe()
    in_arbiter = False
    while frame is not None:
        if frame.f_globals.get("__name__") == "gunicorn.arbiter":
            if frame.f_code.co_name == "spawn_worker":
                return "worker"
            in_arbiter = True
        frame = frame.f_back  # type: ignore[assignment]

    return "master" if in_arbiter else None


def _uwsgi() -> Any:
    """The ``uwsgi`` module when running inside uWSGI, else None."""
    if "uwsgi" not in sys.modules:
        return None

    return sys.modules["uwsgi"]


def check_threads_can_run() -> None:
    """Refuse to start where Python threads never run, so that jobs are not
    queued for a worker that cannot take them.

    :raises ConfigurationError: under uWSGI without threads enabled.
    """
    uwsgi = _uwsgi()
    if uwsgi is None:
        return

    if not (uwsgi.opt.get("enable-threads") or uwsgi.opt.get("threads")):
        raise ConfigurationError(
            "uWSGI is running without Python threads, so Flask-Offload's "
            "in-process worker would never run a job. Start uWSGI with "
            "--enable-threads (or --threads N), or set "
            "OFFLOAD_WORKER_THREADS = 0 and run 'flask offload worker' "
            "beside it."
        )


def call_after_fork(callback: Callable[[], None]) -> None:
    """Call ``callback`` in each child process right after a fork: through
    Python's fork hooks, and through uWSGI's post-fork hook, which uWSGI
    calls instead. The callback must tolerate being called twice."""
    os.register_at_fork(after_in_child=callback)

    uwsgi = _uwsgi()
    if uwsgi is None:
        return

    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork() -> None:
        if previous is not None:
            previous()
        callback()

    uwsgi.post_fork_hook = post_fork


def is_dev_server() -> bool:
    """Whether this process serves requests with ``flask run``."""
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return True

    command = click.get_current_context(silent=True)

    return command is not None and command.info_name == "run"


def exit_gracefully_on_sigterm() -> None:
    """Make SIGTERM end the process through ``sys.exit``, so exit handlers run
    and the worker hands its jobs back, where SIGTERM would otherwise kill
    the process outright. Only where nobody chose a handler: the dev server
    leaves SIGTERM at its default; gunicorn and uWSGI install their own."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not in_main_thread or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return

    def exit_now(signum: int, _frame: Any) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)

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
- Other ``flask`` commands (``flask shell``, ``flask db upgrade``) never
  start one: a short-lived command would claim jobs and exit.
"""

from __future__ import annotations

import enum
import os
import sys

import click
from flask import Flask
from flask.helpers import get_debug_flag


class StartMode(enum.Enum):
    NOW = "now"
    FIRST_REQUEST = "first request"
    IN_FORKED_CHILDREN = "in forked children"
    NEVER = "never"


def start_mode(app: Flask) -> StartMode:
    """Decide when this process should start its in-process worker."""
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return StartMode.NOW

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

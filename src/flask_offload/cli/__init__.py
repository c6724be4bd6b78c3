"""The ``flask offload`` commands: a worker process of its own, and a look at
the queue.

Flask finds the group through the ``flask.commands`` entry point, so every app
that installs Flask-Offload gets ``flask offload ...`` without registering
anything. Each command loads the app named by ``--app`` (or ``FLASK_APP``)
and reads and acts through the app's store only, like the dashboard.

``flask offload worker`` is the one place the library sets up logging output:
it is a program of its own, and a worker that prints nothing cannot be
watched. Everywhere else the app's logging configuration is left alone.
"""

from __future__ import annotations

from . import jobs, status, worker
from .group import offload_group

__all__ = ["jobs", "offload_group", "status", "worker"]

"""Signals for an app's own logging, metrics or alerts, on blinker (which
Flask itself uses for its signals).

Each is sent with the Flask app as sender and the job's
:class:`~flask_offload.Job` as ``job``; the ones about an ended attempt also
carry ``duration`` in seconds. Receivers run in the thread that sends: the
enqueueing request for :data:`job_enqueued`, the worker thread for the
others, so keep them quick and never let them raise (an exception in a
receiver is logged and otherwise ignored)::

    from flask_offload.signals import job_failed

    @job_failed.connect_via(app)
    def alert(app, job, duration, **extra):
        notify_on_call(f"{job.task} failed: {job.error.message}")
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import Namespace

logger = logging.getLogger(__name__)

_signals = Namespace()

job_enqueued = _signals.signal("offload-job-enqueued")
job_started = _signals.signal("offload-job-started")
job_succeeded = _signals.signal("offload-job-succeeded")
job_failed = _signals.signal("offload-job-failed")
job_retrying = _signals.signal("offload-job-retrying")
job_cancelled = _signals.signal("offload-job-cancelled")


def send(signal: Any, sender: Any, **data: Any) -> None:
    """Send ``signal`` if anyone listens; a receiver that raises is logged,
    so that an app's hook can never break a job or an enqueue."""
    if not signal.receivers:
        return

    try:
        signal.send(sender, **data)
    except Exception:
        logger.exception("A receiver of %s raised; ignored", signal.name)

"""Timeouts: a runaway loop is stopped at its limit and recorded as such.

Run: python examples/policies/timeouts.py
"""

from __future__ import annotations

import time

from _app import make_app

from flask_offload import JobFailed

app, offload = make_app()


@offload.task(timeout=0.5)
def runaway() -> None:
    while True:
        time.sleep(0.01)  # short C calls: the timeout lands between them


job = runaway.enqueue()
offload.start_worker(app)
try:
    job.wait(timeout=30)
except JobFailed as failed:
    assert failed.error is not None
    print(failed.error.type, "-", failed.error.message)
offload.close(app)

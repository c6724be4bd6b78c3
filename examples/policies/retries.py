"""Retries: a flaky call succeeds on its third attempt; every error is kept.

Run: python examples/policies/retries.py
"""

from __future__ import annotations

from _app import make_app

from flask_offload import current_job

app, offload = make_app()


@offload.task(retries=3, retry_on=(ConnectionError,), retry_backoff=0.1)
def fetch_rates() -> str:
    if current_job.attempt < 3:
        raise ConnectionError(f"the server hung up (attempt {current_job.attempt})")
    return "rates fetched"


job = fetch_rates.enqueue()
offload.start_worker(app)
print(job.wait(timeout=30))
print("attempts:", job.attempts)
for error in job.errors:
    print("earlier error:", error.type, "-", error.message)
offload.close(app)

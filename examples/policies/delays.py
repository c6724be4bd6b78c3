"""Delays: a job waits as scheduled until its time.

Run: python examples/policies/delays.py
"""

from __future__ import annotations

from datetime import timedelta

from _app import make_app

app, offload = make_app()


@offload.task()
def remind(user_id: int) -> str:
    return f"reminded user {user_id}"


later = remind.using(delay=timedelta(days=1)).enqueue(1)
soon = remind.using(delay=0.5).enqueue(2)
print(later.status, "until", later.run_at.isoformat(timespec="seconds"))
offload.start_worker(app)
print(soon.wait(timeout=30))
print(later.refresh().status)
offload.close(app)

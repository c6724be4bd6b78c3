"""Periodic tasks: one tick a second, enqueued once per tick.

Run: python examples/policies/periodic.py
"""

from __future__ import annotations

import time

from _app import make_app

app, offload = make_app()
ticks: list[float] = []


@offload.periodic(every=1)
def heartbeat() -> None:
    ticks.append(time.time())


@offload.periodic("0 9 * * mon")  # needs flask-offload[cron]
def weekly_report() -> None:
    pass


offload.start_worker(app)
time.sleep(3.5)
for schedule in offload.scheduled(app):
    print(schedule["name"], schedule["schedule"], "next:", schedule["next_run_at"])
offload.close(app)
print("ticks:", len(ticks))

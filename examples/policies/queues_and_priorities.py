"""Queues and priorities: higher priority first; a worker serves its queues
in the order given.

Run: python examples/policies/queues_and_priorities.py
"""

from __future__ import annotations

from _app import make_app

app, offload = make_app()
order: list[str] = []


@offload.task()
def note(label: str) -> None:
    order.append(label)


note.using(queue="reports").enqueue("report")
note.enqueue("low")
note.using(priority=10).enqueue("high")
worker = offload.make_worker(app, threads=1, queues=["default", "reports"])
print("ran:", worker.drain())
print(order)
offload.close(app)

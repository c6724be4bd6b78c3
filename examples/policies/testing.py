"""Testing: eager mode runs a job at enqueue; drain() runs what is queued.

Run: python examples/policies/testing.py
"""

from __future__ import annotations

from _app import make_app

app, offload = make_app(OFFLOAD_EAGER=True)


@offload.task()
def double(n: int) -> int:
    return n * 2


job = double.enqueue(21)
print("eager:", job.status, job.result)
offload.close(app)

app, offload = make_app()
offload.task(name="double")(double.function)
for n in range(3):
    offload.tasks["double"].enqueue(n)
print("drained:", offload.drain())
offload.close(app)

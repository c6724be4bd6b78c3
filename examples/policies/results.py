"""Results and clean-up: wait() returns the result; old jobs are purged.

Run: python examples/policies/results.py
"""

from __future__ import annotations

from _app import make_app

app, offload = make_app(OFFLOAD_KEEP_FINISHED=3600)


@offload.task(keep_finished=0)
def throwaway() -> str:
    return "gone soon"


@offload.task()
def report() -> dict[str, int]:
    return {"rows": 42}


kept, dropped = report.enqueue(), throwaway.enqueue()
offload.start_worker(app)
print(kept.wait(timeout=30), dropped.wait(timeout=30))
print("purged:", offload.state(app).purge_finished())
print("kept:", offload.get_job(kept.id) is not None)
offload.close(app)

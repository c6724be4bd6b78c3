"""Unique jobs: enqueueing the same key again returns the waiting job.

Run: python examples/policies/unique.py
"""

from __future__ import annotations

from _app import make_app

app, offload = make_app()


@offload.task(unique_key=lambda account_id: f"reindex:{account_id}")
def reindex(account_id: int) -> None:
    pass


first = reindex.enqueue(7)
again = reindex.enqueue(7)
print("same job:", again.id == first.id)
print("ran:", offload.drain())
print("a new one once it finished:", reindex.enqueue(7).id != first.id)
offload.close(app)

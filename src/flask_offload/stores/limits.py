"""Concurrency limits, applied by every store when it claims jobs.

Two kinds of limit keep jobs apart across all processes and machines that
share a store:

- a queue's concurrency (``OFFLOAD_QUEUES = {"mail": {"concurrency": 2}}``):
  at most that many of the queue's jobs run at once; 1 makes the queue run
  its jobs one at a time, in order;
- a job's concurrency key and limit (``using(concurrency_key="user:7")``): at
  most ``concurrency_limit`` (default 1) running jobs share the key.

A store counts the running jobs and then walks the ready jobs in claim
order, admitting each one the limits still allow, all inside the same
atomic claim.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

DEFAULT_KEY_LIMIT = 1


class Admission:
    """Decides, for one claim, which ready jobs may start.

    :param queue_limits: the concurrency of each limited queue.
    :param running: ``(queue, concurrency_key, concurrency_limit)`` of every
        running job.
    """

    def __init__(
        self,
        queue_limits: Mapping[str, int],
        running: Iterable[tuple[str, str | None, int | None]],
    ) -> None:
        self._queue_limits = queue_limits
        self._by_queue: Counter[str] = Counter()
        self._by_key: Counter[str] = Counter()
        self._key_limits: dict[str, float] = {}
        for queue, key, key_limit in running:
            self._by_queue[queue] += 1
            if key is not None:
                self._by_key[key] += 1
                self._key_limits[key] = min(
                    self._key_limits.get(key, math.inf), _key_limit(key_limit)
                )

    def saturated_queues(self) -> list[str]:
        """Limited queues that cannot start another job now."""
        return [
            queue
            for queue, limit in self._queue_limits.items()
            if self._by_queue[queue] >= limit
        ]

    def saturated_keys(self) -> list[str]:
        """Concurrency keys that cannot start another job now."""
        return [
            key for key, count in self._by_key.items() if count >= self._key_limits[key]
        ]

    def admit(self, queue: str, key: str | None, key_limit: int | None) -> bool:
        """Whether a job may start now; if so it is counted as running."""
        queue_limit = self._queue_limits.get(queue)
        if queue_limit is not None and self._by_queue[queue] >= queue_limit:
            return False
        if key is not None and self._by_key[key] >= _key_limit(key_limit):
            return False

        self._by_queue[queue] += 1
        if key is not None:
            self._by_key[key] += 1

        return True


def _key_limit(limit: int | None) -> int:
    return DEFAULT_KEY_LIMIT if limit is None else limit

"""The systems under test, one column of the results table each, in the
order they are run and printed."""

from __future__ import annotations

from .base import SYNCHRONOUS_NAMES, System, SystemSpec
from .huey_sqlite import FAST_POLLING, huey_opener
from .offload import offload_opener
from .plain_queue import open_plain_queue

SYSTEMS: tuple[SystemSpec, ...] = (
    SystemSpec(
        "offload",
        "Flask-Offload, SQLite default store (synchronous=NORMAL)",
        offload_opener(),
    ),
    SystemSpec(
        "offload-full",
        "Flask-Offload, OFFLOAD_SQLITE_SYNCHRONOUS='FULL' (Huey's durability)",
        offload_opener(OFFLOAD_SQLITE_SYNCHRONOUS="FULL"),
    ),
    SystemSpec("queue", "queue.Queue and one thread (not durable)", open_plain_queue),
    SystemSpec("huey", "Huey, SqliteHuey and consumer defaults", huey_opener({})),
    SystemSpec(
        "huey-1ms",
        "Huey, SqliteHuey, consumer polling every 1 ms",
        huey_opener(FAST_POLLING),
    ),
)

__all__ = ["SYNCHRONOUS_NAMES", "SYSTEMS", "System", "SystemSpec"]

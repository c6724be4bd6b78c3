"""PostgreSQL's wake-ups: one thread per store LISTENs on its own connection
and turns every process's NOTIFY into a ring of this process's bells.

An enqueue's NOTIFY may carry an offer, ``"{job id} {queue}"``, of a job
that a claim of that one row may start; the listener keeps the latest
offers for idle worker threads (see :meth:`SQLStore.wait_for_job`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Container, Sequence

from sqlalchemy.engine import URL

from .base import Bell

logger = logging.getLogger(__name__)

#: Enqueues notify this channel: a job may be ready.
WORK_CHANNEL = "flask_offload_work"
#: Other changes notify this one, for :meth:`Job.wait`.
CHANGE_CHANNEL = "flask_offload_change"
#: How often the listening thread looks up from waiting for a NOTIFY, to
#: notice that its store closed.
LISTEN_SLICE = 0.25
#: Offers kept for idle threads; older ones were long claimed.
OFFERS_KEPT = 32


class NotifyListener:
    """The listening thread of one store, started on first use.

    :param url: the store's database, as SQLAlchemy names it.
    :param work: rung for every NOTIFY on :data:`WORK_CHANNEL`.
    :param changes: rung for every NOTIFY.
    """

    def __init__(self, url: URL, work: Bell, changes: Bell) -> None:
        self._url = url.set(drivername="postgresql")
        self._work = work
        self._changes = changes
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._offers: deque[tuple[str, str]] = deque(maxlen=OFFERS_KEPT)

    def ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._listen, name="offload-listener", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join()

    def take_offer(
        self, queues: Sequence[str] | None, limited: Container[str]
    ) -> str | None:
        """The id of the newest offered job of one of ``queues`` (``None``:
        any) outside the ``limited`` queues, removed from the offers; older
        ones stay for other threads."""
        with self._lock:
            for index in range(len(self._offers) - 1, -1, -1):
                job_id, queue = self._offers[index]
                if (queues is None or queue in queues) and queue not in limited:
                    del self._offers[index]
                    return job_id

        return None

    def _listen(self) -> None:
        """LISTEN and ring the bells until stopped; a lost connection is
        opened again a second later."""
        import psycopg

        address = self._url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(address, autocommit=True) as connection:
                    connection.execute(f"LISTEN {WORK_CHANNEL}")
                    connection.execute(f"LISTEN {CHANGE_CHANNEL}")
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=LISTEN_SLICE):
                            self._heard(notice.channel, notice.payload)
            except psycopg.Error:
                logger.warning(
                    "Lost the LISTEN connection to %s; opening it again",
                    self._url.render_as_string(hide_password=True),
                    exc_info=True,
                )
                self._stop.wait(1.0)

    def _heard(self, channel: str, payload: str) -> None:
        if channel == WORK_CHANNEL:
            if payload:
                job_id, _, queue = payload.partition(" ")
                with self._lock:
                    self._offers.append((job_id, queue))
            self._work.ring()
        self._changes.ring()

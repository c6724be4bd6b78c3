"""How a job tells the harness that it ran: one UDP datagram to loopback.

Every system runs the same task body, :func:`job_ran`, in its own worker
processes. A datagram costs a few microseconds and no round trip, so it
measures the system rather than the reporting. The clock is
``time.monotonic``, which on Linux is one clock for every process, so a
start time taken in a worker can be set against an enqueue time taken in
the harness.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

#: Where a worker sends its reports: "host:port", set by the harness.
ADDRESS_VARIABLE = "BENCH_REPORT_ADDRESS"

_sender: socket.socket | None = None
_address: tuple[str, int] | None = None


def job_ran(number: int) -> None:
    """The no-op task's whole body, the same in every system."""
    global _sender, _address

    now = time.monotonic()
    if _sender is None or _address is None:
        host, port = os.environ[ADDRESS_VARIABLE].rsplit(":", 1)
        _address = (host, int(port))
        _sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _sender.sendto(f"{number} {os.getpid()} {now!r}".encode(), _address)


@dataclass
class Phase:
    """The reports of one phase: per job number, when it started and in
    which process."""

    expected: int
    starts: dict[int, float] = field(default_factory=dict)
    processes: dict[int, float] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)


class Collector:
    """Receives the datagrams on a thread of its own and groups them into
    the current :class:`Phase`."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Four workers can report tens of thousands of jobs a second; a
        # large buffer keeps the kernel from dropping any while this
        # thread waits for the GIL. Raising the limit needs root, so the
        # plain request is the fallback.
        buffer_force = getattr(socket, "SO_RCVBUFFORCE", socket.SO_RCVBUF)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, buffer_force, 32 << 20)
        except PermissionError:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self._socket.bind(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._phase = Phase(expected=0)
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._socket.getsockname()

        return f"{host}:{port}"

    def expect(self, count: int) -> Phase:
        """Start a phase that ends when ``count`` distinct jobs reported."""
        with self._lock:
            self._phase = Phase(expected=count)

            return self._phase

    def wait(self, phase: Phase, timeout: float) -> Phase:
        """Block until ``phase`` is complete.

        :raises TimeoutError: naming how many jobs reported in time.
        """
        if not phase.done.wait(timeout):
            raise TimeoutError(
                f"Only {len(phase.starts)} of {phase.expected} jobs reported within "
                f"{timeout:g} s; the system is stuck, far slower than expected, "
                f"or its workers failed to start (see their output above)."
            )

        return phase

    def _receive(self) -> None:
        while True:
            data = self._socket.recv(128)
            number, pid, started = data.split()
            with self._lock:
                phase = self._phase
                phase.starts.setdefault(int(number), float(started))
                phase.processes.setdefault(int(pid), float(started))
                if len(phase.starts) >= phase.expected:
                    phase.done.set()

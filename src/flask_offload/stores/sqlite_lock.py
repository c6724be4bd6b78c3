"""A fair, cross-process write lock for one SQLite database file.

Why it exists. Every write transaction starts with ``BEGIN IMMEDIATE``. When
another connection holds SQLite's write lock, SQLite's busy handler sleeps
and tries again, with sleeps growing from 1 ms to 100 ms and no queue: a
connection that just committed takes the lock again before the sleepers
wake, so under load one process can starve another for seconds and, past
the busy timeout, ``database is locked`` reaches the caller. Writers that
take this lock before ``BEGIN IMMEDIATE`` and release it after ``COMMIT`` or
``ROLLBACK`` wait in a queue instead and find SQLite's lock free when their
turn comes. The data never depends on this lock: SQLite's own locking still
guards it, so a writer that does not take the lock (the ``sqlite3`` shell,
an older release) is merely unfair, never unsafe.

The design has two layers, each chosen by measurement on a two-core
machine (``bench/contention.py``; its results are in ``bench/results``):

- Between processes, a ticket queue. ``flock`` is the obvious lock, but
  Linux does not hand a released ``flock`` to the next waiter: it wakes the
  waiters and whichever asks first wins, usually the writer that just
  released, since it is already running. With eight threads in four
  processes each holding a lock for 200 us and asking again at once,
  ``flock`` gave a 99.9th-percentile wait of 160 ms and a maximum of
  300 ms, one thread getting 2.5 times the turns of another; SQLite's busy
  handler gave one thread 13,476 turns and another 1, and a 3.1 s wait; a
  ticket queue of the threads gave each the same turns within 0.5%, and
  waits of at most 5 ms. The queue is built from Linux open-file-description
  byte-range locks (``F_OFD_SETLKW``) on a side file next to the database,
  ``<database>-writer.lock``: they block in the kernel, and the kernel
  drops them when a process dies. A process takes a ticket from a counter
  kept in the side file, locks the byte of its ticket, and waits for the
  byte of the ticket before it, which that process unlocks only when it is
  done; so processes go in ticket order, each woken by one release. Last it
  takes a mutex byte, free in the normal case, so that a process killed
  while queueing (which drops its ticket byte early) cannot let the one
  behind it in while the one ahead still writes.

- Within a process, a ``threading.Lock``, and *turns*: while a process
  holds its place at the head of the queue, a writer that leaves hands the
  lock to a thread of the same process that is already waiting, for up to
  ``turn`` seconds (5 ms by default), instead of sending it to the back.
  Queueing every thread on its own made each commit a switch to another
  process, and a worker's claims shrank to one job each: on the store,
  four processes moved 4,800 jobs a second where the busy handler moved
  16,000 to 17,000. With 5 ms turns (and a worker that pauses 2 ms after a
  claim that did not fill its batch) four processes moved 13,200 jobs a
  second, 86% of what one process moved, with a 99.9th-percentile wait of
  25 ms and a longest wait of 39 ms; the busy handler's 99.9th percentile
  was 108 ms and its longest wait 830 ms. Shorter turns (2 ms) kept the
  tail lower (15 ms), but four processes then moved only 77% of one.

Where ``F_OFD_SETLKW`` is missing (macOS, the BSDs) the queue between
processes is ``flock`` on the side file: mutual exclusion without the
order. Where the file system refuses locks (some network file systems) or
there is no ``fcntl`` (Windows), only the threads of one process queue, and
other processes' writers wait in SQLite's busy handler as before; a warning
says so once. Databases that are not files (``:memory:``) need none of
this: :func:`write_lock_for` returns ``None`` for them.

The wait has no timeout, unlike SQLite's busy handler: a writer that stops
inside a transaction (a debugger, ``SIGSTOP``) stops the others until it
goes on, rather than failing them after the busy timeout.

After ``os.fork()`` the child must not use its parent's descriptor: locks
belong to the open file description, which the child shares, so it would
share the parent's hold, and a copy kept open in a child would keep a dead
parent's lock alive. :meth:`SQLiteWriteLock.after_fork` closes it in the
child; it is also registered with ``os.register_at_fork``, so a child
forked by any means starts afresh.
"""

from __future__ import annotations

import errno
import itertools
import logging
import mmap
import os
import struct
import sys
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LockMode = Literal["queue", "flock", "thread"]
LOCK_SUFFIX = "-writer.lock"
DEFAULT_TURN = 0.005
DEFAULT_RECORDED_WAITS = 4096

# Byte offsets of the queue's locks in the side file. Locks are advisory and
# need no data behind them; only the ticket counter (bytes 0-7) is data.
_GUARD = 0
_MUTEX = 8
_SLOTS = 64
_SLOT_COUNT = 1 << 20
_PROBE = _SLOTS + _SLOT_COUNT
_COUNTER_BYTES = 64

# errno values that mean "this file system or platform does not do locks",
# as opposed to a lock that is merely taken.
_UNSUPPORTED = frozenset(
    {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}
)
_warned: set[str] = set()
_probes = itertools.count()


class WaitTimes:
    """How long this process waited for a lock: a count, a total and a
    maximum over every wait, and the last ``capacity`` waits for percentiles.

    Adding a wait costs a few attribute updates (about 0.2 us); it happens
    while the lock is held, so the threads of a process never add at once.
    ``capacity=0`` keeps the totals only.
    """

    __slots__ = ("_next", "_ring", "capacity", "count", "max_ns", "total_ns")

    def __init__(self, capacity: int = DEFAULT_RECORDED_WAITS) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be 0 or more, not {capacity!r}.")
        self.capacity = capacity
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0
        self._ring = array("q", bytes(8 * self.capacity))
        self._next = 0

    def add(self, wait_ns: int) -> None:
        self.count += 1
        self.total_ns += wait_ns
        if wait_ns > self.max_ns:
            self.max_ns = wait_ns
        if self.capacity:
            self._ring[self._next] = wait_ns
            self._next = (self._next + 1) % self.capacity

    def recent(self) -> list[int]:
        """The recorded waits in nanoseconds, oldest first."""
        if self.count < self.capacity:
            return self._ring[: self.count].tolist()

        return (self._ring[self._next :] + self._ring[: self._next]).tolist()

    def summary(self) -> dict[str, float]:
        """Count, and mean, percentiles and maximum in seconds; percentiles
        over the recorded waits, the rest over all of them."""
        ordered = sorted(self.recent())

        return {
            "count": self.count,
            "mean": self.total_ns / self.count / 1e9 if self.count else 0.0,
            "p50": percentile(ordered, 50) / 1e9,
            "p99": percentile(ordered, 99) / 1e9,
            "p99.9": percentile(ordered, 99.9) / 1e9,
            "max": self.max_ns / 1e9,
        }


def percentile(ordered: list[int], rank: float) -> float:
    """The nearest-rank percentile of sorted values, 0 for none."""
    if not ordered:
        return 0.0

    index = max(0, min(len(ordered) - 1, -(-len(ordered) * rank // 100) - 1))

    return float(ordered[int(index)])


class SQLiteWriteLock:
    """The write lock of one SQLite database, shared by every thread of
    every process that opens it with this class.

    Use it as ``with lock:`` (or ``with lock.hold():``) around a write
    transaction, from ``BEGIN IMMEDIATE`` to ``COMMIT`` or ``ROLLBACK``. It is
    not reentrant: a thread that already holds it gets a ``RuntimeError``.

    :param database: the database file; the side file is created next to it
        on first use, so the directory must exist by then.
    :param mode: ``"auto"`` picks the best the platform offers; ``"queue"``,
        ``"flock"`` and ``"thread"`` force one (see the module's docs), for
        tests and benchmarks. Every process sharing a database must use the
        same mode; ``"auto"`` makes the same choice on one machine.
    :param turn: seconds a process may pass the lock among its own threads
        before other processes get theirs; 0 sends every writer to the back
        of the queue.
    :param recorded_waits: how many recent waits :attr:`waits` keeps.
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        mode: Literal["auto"] | LockMode = "auto",
        turn: float = DEFAULT_TURN,
        recorded_waits: int = DEFAULT_RECORDED_WAITS,
    ) -> None:
        if mode not in ("auto", "queue", "flock", "thread"):
            raise ValueError(
                f"mode must be 'auto', 'queue', 'flock' or 'thread', not {mode!r}."
            )
        if turn < 0:
            raise ValueError(f"turn must be 0 or more seconds, not {turn!r}.")
        self.path = Path(os.fspath(database) + LOCK_SUFFIX)
        self.waits = WaitTimes(recorded_waits)
        self._requested = mode
        self._turn_ns = int(turn * 1e9)
        self._mode: LockMode | None = None
        self._setup_lock = threading.Lock()
        self._map: mmap.mmap | None = None
        self._counter: memoryview | None = None
        self._fd = -1
        self._mine = 0
        self._ahead = 0
        self._start_afresh()
        after_fork = weakref.WeakMethod(self.after_fork)
        os.register_at_fork(after_in_child=lambda: _call_if_alive(after_fork))

    def _start_afresh(self) -> None:
        """The state of one process: nothing held, nobody waiting."""
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._holder: int | None = None
        self._waiting = 0
        self._process_holds = False
        self._turn_ends = 0

    @property
    def mode(self) -> LockMode:
        """How processes queue; deciding it creates the side file."""
        if self._mode is None:
            with self._setup_lock:
                if self._mode is None:
                    self._mode = self._choose_mode()

        return self._mode

    def hold(self) -> SQLiteWriteLock:
        """The lock as a context manager: ``with lock.hold(): ...``."""
        return self

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Wait for this thread's turn, then hold the lock.

        :raises RuntimeError: if this thread holds the lock already.
        """
        started = time.perf_counter_ns()
        mode = self._mode or self.mode
        me = threading.get_ident()
        if self._holder == me:
            raise RuntimeError(
                f"This thread already holds the write lock {str(self.path)!r}; "
                "release it before taking it again."
            )

        with self._count_lock:
            self._waiting += 1
        try:
            self._thread_lock.acquire()
        except BaseException:
            self._stop_waiting()
            self._give_up_unused_turn()
            raise
        self._stop_waiting()
        self._holder = me

        if not self._process_holds and mode != "thread":
            try:
                self._join_queue(mode)
            except BaseException:
                self._holder = None
                self._thread_lock.release()
                raise
            self._process_holds = True
            self._turn_ends = time.perf_counter_ns() + self._turn_ns
        self.waits.add(time.perf_counter_ns() - started)

    def release(self) -> None:
        """Hand the lock to a waiting thread of this process while its turn
        lasts, else to the next process in the queue.

        :raises RuntimeError: if this thread does not hold the lock.
        """
        if self._holder != threading.get_ident():
            raise RuntimeError(
                f"This thread does not hold the write lock {str(self.path)!r}."
            )

        self._holder = None
        if self._process_holds and (
            not self._waiting or time.perf_counter_ns() >= self._turn_ends
        ):
            self._process_holds = False
            self._leave_queue()
        self._thread_lock.release()

    def after_fork(self) -> None:
        """In a child process, drop the parent's descriptor and state: a new
        descriptor on first use, a free thread lock, no recorded waits.
        Calling it again in the same process does nothing."""
        if self._pid == os.getpid():
            return

        # Closed, never unlocked: unlocking through the shared open file
        # description would release the parent's hold, while closing the
        # child's copy leaves it alone.
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        self._start_afresh()
        self._setup_lock = threading.Lock()
        self.waits.reset()

    def close(self) -> None:
        """Close the side file. No thread may hold or wait for the lock
        meanwhile; it opens again on next use."""
        with self._setup_lock:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)
            if self._counter is not None:
                self._counter.release()
                self._counter = None
            if self._map is not None:
                self._map.close()
                self._map = None
            self._mode = None
            self._process_holds = False

    def _stop_waiting(self) -> None:
        with self._count_lock:
            self._waiting -= 1

    def _give_up_unused_turn(self) -> None:
        """After an interrupted wait: a leaving writer may have kept this
        process's place for this thread, which will not use it now."""
        if not self._thread_lock.acquire(blocking=False):
            return  # another thread holds it and will leave the queue

        try:
            if self._process_holds and not self._waiting:
                self._process_holds = False
                self._leave_queue()
        finally:
            self._thread_lock.release()

    def _join_queue(self, mode: LockMode) -> None:
        fd = self._descriptor()
        if mode == "flock":
            assert fcntl is not None
            fcntl.flock(fd, fcntl.LOCK_EX)
            return

        counter = self._counter
        assert counter is not None
        _lock(fd, _GUARD)
        try:
            ticket = counter[0]
            counter[0] = ticket + 1
            mine = _SLOTS + ticket % _SLOT_COUNT
            _lock(fd, mine)
        finally:
            _unlock(fd, _GUARD)

        ahead = _SLOTS + (ticket - 1) % _SLOT_COUNT
        try:
            _lock(fd, ahead)
            _lock(fd, _MUTEX)
        except BaseException:
            # Interrupted while queueing: leave, so that the process behind
            # does not wait for a turn this one will never take.
            _unlock(fd, _MUTEX)
            _unlock_slots(fd, ahead, mine)
            raise
        self._mine = mine
        self._ahead = ahead

    def _leave_queue(self) -> None:
        if self._mode == "flock":
            assert fcntl is not None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            return

        _unlock(self._fd, _MUTEX)
        _unlock_slots(self._fd, self._ahead, self._mine)

    def _descriptor(self) -> int:
        if self._fd < 0:
            self._fd = self._open()

        return self._fd

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def _choose_mode(self) -> LockMode:
        wanted = self._requested
        if wanted == "thread":
            return "thread"
        if fcntl is None:
            logger.info(
                "This platform has no fcntl: SQLite writers of other processes "
                "wait in SQLite's busy handler, not in a queue"
            )
            return "thread"

        if wanted == "auto":
            wanted = "queue" if _has_ofd_locks() else "flock"
        try:
            if wanted == "queue":
                self._open_counter()
                _check_ofd_locks(self._open(), self._open())
            else:
                _check_flock(self._open())
        except OSError as error:
            if error.errno not in _UNSUPPORTED and not isinstance(
                error, PermissionError
            ):
                raise
            self._warn_unsupported(error)
            return "thread"

        return wanted

    def _open_counter(self) -> None:
        fd = self._open()
        try:
            if os.fstat(fd).st_size < _COUNTER_BYTES:
                # Only ever grows it, so a second process doing the same at
                # once cannot zero a counter already in use.
                os.ftruncate(fd, _COUNTER_BYTES)
            self._map = mmap.mmap(fd, _COUNTER_BYTES)
        finally:
            os.close(fd)
        self._counter = memoryview(self._map).cast("q")

    def _warn_unsupported(self, error: OSError) -> None:
        where = str(self.path)
        if where in _warned:
            return

        _warned.add(where)
        logger.warning(
            "Cannot lock %s (%s): SQLite writers of other processes will wait "
            "in SQLite's busy handler, which is not fair and may time out "
            "with 'database is locked' under heavy load",
            where,
            error,
        )


def write_lock_for(
    database: str | None,
    query: Mapping[str, object] | None = None,
    *,
    mode: Literal["auto"] | LockMode = "auto",
    turn: float = DEFAULT_TURN,
    recorded_waits: int = DEFAULT_RECORDED_WAITS,
) -> SQLiteWriteLock | None:
    """The write lock for an SQLite database named as an SQLAlchemy URL names
    it (``url.database`` and ``url.query``), or ``None`` when the database is
    not a file: ``None``, ``""`` and ``":memory:"`` are private to one
    connection, and ``mode=memory`` names shared memory. The options are
    :class:`SQLiteWriteLock`'s."""
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        path, _, inline = database[len("file:") :].partition("?")
        if not path or path == ":memory:" or "mode=memory" in inline.split("&"):
            return None
        database = path
    if query and query.get("mode") == "memory":
        return None

    return SQLiteWriteLock(
        os.path.abspath(database),
        mode=mode,
        turn=turn,
        recorded_waits=recorded_waits,
    )


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _has_ofd_locks() -> bool:
    return (
        sys.platform == "linux"
        and fcntl is not None
        and hasattr(fcntl, "F_OFD_SETLKW")
        and struct.calcsize("P") == 8
    )


# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid, padded to 32 bytes. _check_ofd_locks proves the
# layout on this machine before the queue relies on it.
_FLOCK = struct.Struct("hhqqi4x")


def _lock(fd: int, start: int) -> None:
    assert fcntl is not None
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _FLOCK.pack(fcntl.F_WRLCK, 0, start, 1, 0))


def _unlock(fd: int, start: int, length: int = 1) -> None:
    assert fcntl is not None
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, 0, start, length, 0))


def _unlock_slots(fd: int, ahead: int, mine: int) -> None:
    if mine == ahead + 1:
        _unlock(fd, ahead, 2)
    else:
        _unlock(fd, ahead)
        _unlock(fd, mine)


def _check_ofd_locks(first: int, second: int) -> None:
    """Lock a byte through one descriptor and ask through another who holds
    it: the answer proves that the kernel reads our ``struct flock`` as we
    wrote it."""
    assert fcntl is not None
    # A byte no other probe uses, so that no other lock is seen or released
    # in between.
    probe = _PROBE + (os.getpid() << 16) + next(_probes) % (1 << 16)
    try:
        request = _FLOCK.pack(fcntl.F_WRLCK, 0, probe, 1, 0)
        fcntl.fcntl(first, fcntl.F_OFD_SETLK, request)
        answer = fcntl.fcntl(second, fcntl.F_OFD_GETLK, request)
        kind, _, start, length, _ = _FLOCK.unpack(answer)
        if (kind, start, length) != (fcntl.F_WRLCK, probe, 1):
            raise OSError(errno.EINVAL, "struct flock layout not as expected")
    finally:
        os.close(first)
        os.close(second)


def _check_flock(fd: int) -> None:
    assert fcntl is not None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        pass  # held by another process: locks work
    finally:
        os.close(fd)

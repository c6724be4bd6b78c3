"""Per-job logs: what a task logs while it runs, kept with its job.

While a worker runs a task, the records that Python's ``logging`` makes in
that thread (and in coroutines the task runs) at ``OFFLOAD_JOB_LOG_LEVEL`` or
above are copied, as formatted lines, into the job's log. The copy is taken
when the record is made, through a wrapper around the log record factory, so
no handler is added: the records still reach every handler the app has, and
``logging.basicConfig`` still works after a worker started. The level a
logger lets through still decides first: a record its logger does not make
(below the logger's effective level) is not captured either.

Each line starts with ``[attempt N]``, so the lines of a retried job's
attempts stay apart, and a log is bounded: past :data:`MAX_LINES` lines or
:data:`MAX_CHARS` characters, the oldest lines are dropped and the first line
says how many.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import Any

#: A job's log keeps at most this many lines, the newest ones.
MAX_LINES = 200
#: ... and at most about this many characters.
MAX_CHARS = 64 * 1024
#: A longer line (a huge message, a long traceback line) is cut to this.
MAX_LINE_CHARS = 4096

_DROPPED = re.compile(r"^\[(\d+) earlier lines? dropped\]$")


class LogCapture:
    """The lines one attempt of a job logged, bounded as the job's log is."""

    __slots__ = ("attempt", "chars", "dropped", "level", "lines")

    def __init__(self, attempt: int, level: int) -> None:
        self.attempt = attempt
        self.level = level
        self.lines: list[str] = []
        self.chars = 0
        self.dropped = 0

    def add_record(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception as error:  # the task's logging call must not fail
            text = f"(unformattable log record {record.msg!r}: {error})"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        moment = time.strftime("%H:%M:%S", time.gmtime(record.created))
        head = f"{moment}.{int(record.msecs):03d} {record.levelname} {record.name}: "
        first, *rest = text.split("\n")
        self.add_lines([head + first, *(f"  {line}" for line in rest)])

    def add_lines(self, lines: Iterable[str]) -> None:
        """Add lines as they are, such as those a job process sent back."""
        for line in lines:
            if not line.startswith("[attempt "):
                line = f"[attempt {self.attempt}] {line}"
            if len(line) > MAX_LINE_CHARS:
                cut = len(line) - MAX_LINE_CHARS
                line = f"{line[:MAX_LINE_CHARS]}… ({cut} characters cut)"
            self.lines.append(line)
            self.chars += len(line) + 1
        # Trimmed in bulk, so a chatty task pays for it once in a while.
        if len(self.lines) > 2 * MAX_LINES or self.chars > 2 * MAX_CHARS:
            self._trim()

    def _trim(self) -> None:
        kept = _bounded(self.lines)
        self.dropped += len(self.lines) - len(kept)
        self.lines = kept
        self.chars = sum(len(line) + 1 for line in kept)


_current: ContextVar[LogCapture | None] = ContextVar(
    "flask_offload.job_log", default=None
)
_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Wrap the log record factory, once per process, so that records made
    while a job runs are copied into its log. The previous factory still
    makes every record."""
    global _installed

    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            capture = _current.get()
            if capture is not None and record.levelno >= capture.level:
                # While a line is added, records made by formatting it (a
                # __str__ that logs) are not captured again.
                token = _current.set(None)
                try:
                    capture.add_record(record)
                finally:
                    _current.reset(token)

            return record

        logging.setLogRecordFactory(make_record)
        _installed = True


def start(attempt: int, level: int | None) -> tuple[LogCapture | None, Token[Any]]:
    """Begin capturing this thread's records for one attempt; ``level`` of
    ``None`` captures nothing. Pass what it returns to :func:`stop`."""
    capture = None if level is None else LogCapture(attempt, level)

    return capture, _current.set(capture)


def stop(started: tuple[LogCapture | None, Token[Any]]) -> LogCapture | None:
    """End the capture :func:`start` began and return what it collected."""
    capture, token = started
    _current.reset(token)

    return capture


def current() -> LogCapture | None:
    """The capture of the job running in this thread, if any."""
    return _current.get()


def merged(previous: str | None, capture: LogCapture | None) -> str | None:
    """The job's log after this attempt: the earlier attempts' lines, then
    this one's, bounded to the newest :data:`MAX_LINES` lines and
    :data:`MAX_CHARS` characters; ``None`` while nothing was logged."""
    lines = [] if not previous else previous.split("\n")
    dropped = 0
    if lines and (found := _DROPPED.match(lines[0])):
        dropped = int(found.group(1))
        lines = lines[1:]
    if capture is not None:
        lines += capture.lines
        dropped += capture.dropped
    if not lines and not dropped:
        return None

    kept = _bounded(lines)
    dropped += len(lines) - len(kept)
    if dropped:
        kept.insert(0, f"[{dropped} earlier line{'s' if dropped > 1 else ''} dropped]")

    return "\n".join(kept)


def _bounded(lines: list[str]) -> list[str]:
    """The newest of ``lines`` that fit in the bounds."""
    kept: list[str] = []
    chars = 0
    for line in reversed(lines):
        chars += len(line) + 1
        if len(kept) == MAX_LINES or chars > MAX_CHARS:
            break
        kept.append(line)
    kept.reverse()

    return kept

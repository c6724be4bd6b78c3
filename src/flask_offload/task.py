"""``Task``: a function registered to run in the background."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from .codec import encode_arguments
from .job import Job
from .records import DEFAULT_QUEUE, QUEUED, JobRecord, new_job_id

if TYPE_CHECKING:
    from .stores.base import Store
    from .worker import Worker


class EnqueueTarget(Protocol):
    """Where a task's jobs go: the app's store, and the worker running in
    this process, if any."""

    store: Store
    worker: Worker | None


P = ParamSpec("P")
R = TypeVar("R")


#: A concurrency key, or a function of the task's arguments that returns one.
ConcurrencyKey = str | Callable[..., str | None] | None

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Where, in what order and beside what else one job runs."""

    queue: str = DEFAULT_QUEUE
    priority: int = 0
    concurrency_key: ConcurrencyKey = None
    concurrency_limit: int = 1

    def updated(self, **changes: Any) -> EnqueueOptions:
        unknown = sorted(set(changes) - set(self.__slots__))
        if unknown:
            raise TypeError(
                f"Unknown enqueue option(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(self.__slots__)}."
            )
        options = replace(self, **changes)
        options.validate()

        return options

    def validate(self) -> None:
        if not isinstance(self.queue, str) or not self.queue:
            raise ValueError(f"queue must be a non-empty str, not {self.queue!r}.")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise TypeError(f"priority must be an int, not {self.priority!r}.")
        key = self.concurrency_key
        if not (key is None or callable(key)):
            _check_key(key)
        limit = self.concurrency_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"concurrency_limit must be an int of at least 1, not {limit!r}."
            )

    def key_for(self, args: Any, kwargs: dict[str, Any]) -> str | None:
        """The job's concurrency key, derived from its arguments if the task
        gave a function."""
        key = self.concurrency_key
        if callable(key):
            key = key(*args, **kwargs)
            if key is not None:
                _check_key(key)

        return key


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"concurrency_key must be a non-empty str of at most {MAX_KEY_LENGTH} "
            f"characters (or a function of the task's arguments returning one), "
            f"not {key!r}."
        )


class Task(Generic[P, R]):
    """A function registered with :meth:`Offload.task`.

    Calling the task runs the function here and now; :meth:`enqueue` runs it
    on a worker. :meth:`using` sets options for one enqueue.
    """

    def __init__(
        self,
        function: Callable[P, R],
        name: str,
        options: EnqueueOptions,
        target: Callable[[], EnqueueTarget],
    ) -> None:
        self.function = function
        self.name = name
        self.options = options
        self._target = target
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Queue a run of the task with these arguments and return its job at
        once. The job is stored durably before this returns.

        :raises TypeError: if an argument cannot be stored as JSON.
        """
        return self._enqueue(self.options, args, kwargs)

    def using(self, **options: Any) -> BoundTask[P, R]:
        """Options for one enqueue: ``queue`` (a queue's name), ``priority``
        (higher runs first), ``concurrency_key`` (at most
        ``concurrency_limit`` jobs with the same key run at once, across all
        processes; the limit defaults to 1). For example
        ``report.using(queue="reports", priority=10).enqueue(42)`` or
        ``sync.using(concurrency_key=f"user:{user_id}").enqueue(user_id)``.

        :raises TypeError: for an option that does not exist.
        """
        return BoundTask(self, self.options.updated(**options))

    def _enqueue(
        self, options: EnqueueOptions, args: Any, kwargs: dict[str, Any]
    ) -> Job:
        target = self._target()
        store = target.store
        now = store.clock()
        key = options.key_for(args, kwargs)
        record = JobRecord(
            id=new_job_id(),
            task=self.name,
            arguments=encode_arguments(self.name, args, kwargs),
            queue=options.queue,
            priority=options.priority,
            status=QUEUED,
            enqueued_at=now,
            run_at=now,
            concurrency_key=key,
            concurrency_limit=None if key is None else options.concurrency_limit,
        )

        # A job under a limit must go through a claim, which counts what runs.
        limited = key is not None or record.queue in store.queue_limits
        worker = target.worker
        if limited or worker is None or not worker.reserve_thread(record.queue):
            return Job(store, store.enqueue(record))

        # A thread of this process's worker is idle: store the job as already
        # claimed by it and hand it over, which saves the worker a claim.
        try:
            stored = store.enqueue(worker.claimed_now(record))
        except BaseException:
            worker.unreserve_thread()
            raise
        worker.hand_over(stored)

        return Job(store, stored)


class BoundTask(Generic[P, R]):
    """A task with options set for the next enqueue; see :meth:`Task.using`."""

    def __init__(self, task: Task[P, R], options: EnqueueOptions) -> None:
        self.task = task
        self.options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return self.task._enqueue(self.options, args, kwargs)

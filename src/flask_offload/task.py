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


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Where and in what order one job runs."""

    queue: str = DEFAULT_QUEUE
    priority: int = 0

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
        """Options for one enqueue: ``queue`` (a queue's name) and ``priority``
        (higher runs first). For example
        ``report.using(queue="reports", priority=10).enqueue(42)``.

        :raises TypeError: for an option that does not exist.
        """
        return BoundTask(self, self.options.updated(**options))

    def _enqueue(
        self, options: EnqueueOptions, args: Any, kwargs: dict[str, Any]
    ) -> Job:
        target = self._target()
        store = target.store
        now = store.clock()
        record = JobRecord(
            id=new_job_id(),
            task=self.name,
            arguments=encode_arguments(self.name, args, kwargs),
            queue=options.queue,
            priority=options.priority,
            status=QUEUED,
            enqueued_at=now,
            run_at=now,
        )

        worker = target.worker
        if worker is None or not worker.reserve_thread(record.queue):
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

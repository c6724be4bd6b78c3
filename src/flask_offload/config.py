"""The ``OFFLOAD_*`` settings: their defaults and how each is checked.

Every setting is read once, at ``init_app``. An unknown ``OFFLOAD_`` key or a
value that is not accepted raises :class:`ConfigurationError` naming the key,
the value and what is accepted, so a typo cannot silently fall back to a
default.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .stores.sql import SQLITE_SYNCHRONOUS_LEVELS

PREFIX = "OFFLOAD_"
DEFAULT_SQLITE_FILE = "offload.sqlite3"


@dataclass(frozen=True, slots=True)
class Settings:
    """The checked settings of one app."""

    url: str
    worker_threads: int
    lease_seconds: float
    max_recoveries: int
    shutdown_grace: float
    poll_interval: float
    sqlite_synchronous: str
    queues: dict[str, int]
    eager: bool
    keep_finished: float
    metrics_url: str | None
    dashboard_url: str | None
    dashboard_poll_seconds: float
    job_log_level: int | None


def _integer(minimum: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigurationError(
                f"{key} must be an int of at least {minimum}, not {value!r}."
            )
        return value

    return check


def _seconds(*, positive: bool) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if not number or value < 0 or (positive and value == 0):
            bound = "greater than 0" if positive else "0 or more"
            raise ConfigurationError(
                f"{key} must be a number of seconds {bound}, not {value!r}."
            )
        return float(value)

    return check


def _url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{key} must be a store URL such as 'sqlite:////path/offload.sqlite3' "
            f"or 'memory://', not {value!r}."
        )
    return value


def _synchronous(key: str, value: Any) -> str:
    accepted = [level for level in SQLITE_SYNCHRONOUS_LEVELS if level != "OFF"]
    if not isinstance(value, str) or value.upper() not in accepted:
        raise ConfigurationError(
            f"{key} must be one of {', '.join(map(repr, accepted))}, not {value!r}. "
            f"'OFF' is not accepted because it can lose queued jobs in a crash."
        )
    return value.upper()


QUEUE_OPTIONS = ("concurrency",)


def _queues(key: str, value: Any) -> dict[str, int]:
    """``{"reports": {"concurrency": 1}}`` becomes ``{"reports": 1}``: the
    concurrency of each limited queue."""
    example = '{"reports": {"concurrency": 1}}'
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{key} must be a dict of queue names to settings such as {example}, "
            f"not {value!r}."
        )

    limits = {}
    for queue, options in value.items():
        where = f"{key}[{queue!r}]"
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(
                f"{key} has a queue name {queue!r}; names are non-empty str."
            )
        if not isinstance(options, Mapping):
            raise ConfigurationError(
                f"{where} must be a dict such as {{'concurrency': 1}}, not {options!r}."
            )
        unknown = sorted(set(options) - set(QUEUE_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"{where} has unknown option(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(map(repr, QUEUE_OPTIONS))}."
            )
        concurrency = options.get("concurrency")
        if concurrency is not None:
            limits[queue] = _integer(1)(f"{where}['concurrency']", concurrency)

    return limits


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(key: str, value: Any) -> int:
    """A level name such as ``"INFO"``, or a level number."""
    if isinstance(value, str) and value.upper() in LOG_LEVELS:
        return int(getattr(logging, value.upper()))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigurationError(
        f"{key} must be one of {', '.join(map(repr, LOG_LEVELS))}, a level "
        f"number, or None to keep no job logs, not {value!r}."
    )


def _path(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigurationError(
            f"{key} must be a URL path starting with '/', such as "
            f"'/offload/metrics', or None to serve nothing, not {value!r}."
        )
    return value


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False, not {value!r}.")
    return value


#: Each setting's name without the prefix, its default, and its check.
SETTINGS: dict[str, tuple[Any, Callable[[str, Any], Any]]] = {
    "URL": (None, _url),
    "WORKER_THREADS": (1, _integer(0)),
    "LEASE_SECONDS": (30.0, _seconds(positive=True)),
    "MAX_RECOVERIES": (3, _integer(0)),
    "SHUTDOWN_GRACE": (10.0, _seconds(positive=False)),
    "POLL_INTERVAL": (0.05, _seconds(positive=True)),
    "SQLITE_SYNCHRONOUS": ("NORMAL", _synchronous),
    "QUEUES": ({}, _queues),
    "EAGER": (False, _boolean),
    # A week; math.inf keeps finished jobs forever.
    "KEEP_FINISHED": (7 * 24 * 3600.0, _seconds(positive=False)),
    "METRICS_URL": (None, _path),
    # None, set explicitly, turns the dashboard off.
    "DASHBOARD_URL": ("/offload", _path),
    "DASHBOARD_POLL_SECONDS": (2.0, _seconds(positive=True)),
    # What a task logs from this level up is kept with its job; None: nothing.
    "JOB_LOG_LEVEL": (logging.INFO, _log_level),
}

#: Settings whose default is not None, where an explicit None means "off".
NONE_TURNS_OFF = frozenset({"DASHBOARD_URL", "JOB_LOG_LEVEL"})


def load_settings(config: Mapping[str, Any], instance_path: str) -> Settings:
    """Check every ``OFFLOAD_*`` key of ``config`` and return the settings.

    :raises ConfigurationError: for an unknown key or a value not accepted.
    """
    known = {PREFIX + name for name in SETTINGS}
    for key in config:
        if key.startswith(PREFIX) and key not in known:
            raise ConfigurationError(_unknown_key_message(key, known))

    values: dict[str, Any] = {}
    for name, (default, check) in SETTINGS.items():
        key = PREFIX + name
        value = config.get(key)
        if value is None and key in config and name in NONE_TURNS_OFF:
            values[name.lower()] = None
            continue
        values[name.lower()] = default if value is None else check(key, value)

    if values["url"] is None:
        path = os.path.join(instance_path, DEFAULT_SQLITE_FILE)
        values["url"] = f"sqlite:///{path}"

    return Settings(**values)


def _unknown_key_message(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""

    return (
        f"{key!r} is not a Flask-Offload setting.{hint} "
        f"Known settings: {', '.join(sorted(known))}."
    )

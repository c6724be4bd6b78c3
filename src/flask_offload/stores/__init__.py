"""Stores keep jobs; :func:`store_from_url` picks one from ``OFFLOAD_URL``."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .base import Heartbeat, ListFilter, Store, Throughput
from .memory import MemoryStore
from .sql import SQLStore

__all__ = [
    "Heartbeat",
    "ListFilter",
    "MemoryStore",
    "SQLStore",
    "Store",
    "Throughput",
]

ACCEPTED_URLS = (
    "'sqlite:///path/to/file', 'postgresql://user@host/database', "
    "'redis://host:6379/0', 'memory://'"
)


def store_from_url(url: str, **options: Any) -> Store:
    """Create the store that ``url`` names.

    :raises ConfigurationError: if the URL names no store this release has.
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite" or scheme.startswith("sqlite+"):
        return SQLStore(url, **options)
    if scheme.startswith("postgres"):
        try:
            import psycopg  # noqa: F401 - only to say what to install
        except ImportError as missing:
            raise ConfigurationError(
                f"OFFLOAD_URL {url!r} needs psycopg 3: install flask-offload[postgres]."
            ) from missing
        postgres_options = {
            key: value for key, value in options.items() if key == "poll_interval"
        }
        return SQLStore(
            url.replace("postgres://", "postgresql://", 1), **postgres_options
        )
    if scheme in ("redis", "rediss"):
        try:
            from .redis import RedisStore
        except ImportError as missing:
            raise ConfigurationError(
                f"OFFLOAD_URL {url!r} needs redis-py: install flask-offload[redis]."
            ) from missing
        return RedisStore(url)
    if scheme.startswith(("mysql", "mariadb")):
        raise ConfigurationError(
            f"OFFLOAD_URL {url!r} names MySQL or MariaDB, which Flask-Offload "
            f"does not support: its SQL store needs PostgreSQL's partial "
            f"indexes, advisory locks and LISTEN/NOTIFY, or SQLite. Use one "
            f"of {ACCEPTED_URLS}."
        )

    raise ConfigurationError(
        f"OFFLOAD_URL {url!r} is not a store URL Flask-Offload understands; "
        f"use one of {ACCEPTED_URLS}."
    )

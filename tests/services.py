"""The servers some tests need: PostgreSQL and Redis on this machine.

A test that needs one and cannot reach it is skipped with the reason, except
under ``CI=true``, where a missing server is a failure: CI must start every
service its tests need (``.ci/run`` does).
"""

from __future__ import annotations

import os

import pytest

POSTGRES_URL = os.environ.get(
    "OFFLOAD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("OFFLOAD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def unavailable(service: str, reason: str) -> None:
    """Skip, or under CI=true fail, saying why the service is missing."""
    message = f"{service} is not reachable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}. CI must start it (see .ci/run).")
    pytest.skip(message)


def postgres_url() -> str:
    """The URL of a reachable PostgreSQL, or skip (fail under CI)."""
    try:
        import psycopg
    except ImportError:
        unavailable("PostgreSQL", "psycopg is not installed (pip install -e '.[dev]')")

    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(plain, connect_timeout=3):
            pass
    except psycopg.OperationalError as error:
        unavailable("PostgreSQL", f"{POSTGRES_URL}: {error}".strip())

    return POSTGRES_URL


def redis_url() -> str:
    """The URL of a reachable Redis, or skip (fail under CI)."""
    try:
        import redis
    except ImportError:
        unavailable("Redis", "redis-py is not installed (pip install -e '.[dev]')")

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        unavailable("Redis", f"{REDIS_URL}: {error}")

    return REDIS_URL

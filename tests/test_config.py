from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flask_offload import ConfigurationError
from tests.helpers import make_app


def test_an_unknown_setting_fails_at_init_app_naming_the_key(tmp_path: Path) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREAD=2)

    with pytest.raises(ConfigurationError) as raised:
        offload.init_app(app)

    assert "'OFFLOAD_WORKER_THREAD' is not a Flask-Offload setting" in str(raised.value)
    assert "Did you mean 'OFFLOAD_WORKER_THREADS'?" in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("OFFLOAD_WORKER_THREADS", -1, "an int of at least 0"),
        ("OFFLOAD_WORKER_THREADS", "2", "an int of at least 0"),
        ("OFFLOAD_LEASE_SECONDS", 0, "greater than 0"),
        ("OFFLOAD_SQLITE_SYNCHRONOUS", "OFF", "'NORMAL', 'FULL', 'EXTRA'"),
        ("OFFLOAD_URL", "mysql://localhost/x", "does not support"),
        ("OFFLOAD_URL", "ftp://x", "not a store URL"),
        ("OFFLOAD_QUEUES", ["mail"], "a dict of queue names to settings"),
    ],
)
def test_a_bad_value_fails_at_init_app_naming_key_value_and_what_is_accepted(
    tmp_path: Path, key: str, value: Any, accepted: str
) -> None:
    app, offload = make_app(tmp_path, **{key: value})

    with pytest.raises(ConfigurationError) as raised:
        offload.init_app(app)

    message = str(raised.value)
    assert key in message
    assert repr(value) in message
    assert accepted in message


def test_a_configuration_error_is_also_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)


def test_the_default_store_is_a_sqlite_file_in_the_instance_folder(
    tmp_path: Path,
) -> None:
    app, offload = make_app(tmp_path / "instance", OFFLOAD_WORKER_THREADS=0)
    offload.init_app(app)

    assert (tmp_path / "instance" / "offload.sqlite3").exists()


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        (
            {"mail": {"concurency": 1}},
            "OFFLOAD_QUEUES['mail'] has unknown option(s) 'concurency'; "
            "accepted: 'concurrency'.",
        ),
        (
            {"mail": {"concurrency": 0}},
            "OFFLOAD_QUEUES['mail']['concurrency'] must be an int of at least 1, "
            "not 0.",
        ),
    ],
)
def test_a_bad_queue_setting_is_named_down_to_the_option(
    tmp_path: Path, queues: dict[str, Any], message: str
) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_QUEUES=queues)

    with pytest.raises(ConfigurationError) as raised:
        offload.init_app(app)

    assert str(raised.value) == message

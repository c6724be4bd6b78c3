from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_offload import Offload
from flask_offload.stores import SQLStore
from tests.apps.many_app import RESULTS_FILE, create_results
from tests.helpers import make_app
from tests.processes import Servers


@pytest.fixture(autouse=True)
def no_worker_threads_left() -> Iterator[None]:
    """Fail any test that leaves a worker thread running, so one test's worker
    cannot run another test's jobs."""
    yield

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t.name for t in threading.enumerate() if t.name.startswith("offload-")]
        if not left:
            return
        time.sleep(0.01)
    pytest.fail(f"The test left worker threads running: {left}")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app_and_offload(tmp_path: Path) -> Iterator[tuple[Flask, Offload]]:
    """An app on a real SQLite file in a temporary folder, with no worker
    started: each test starts one when it needs it."""
    app, offload = make_app(tmp_path, OFFLOAD_WORKER_THREADS=0)
    offload.init_app(app)
    yield app, offload
    offload.close(app)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """Server processes started by the test, all stopped after it."""
    servers = Servers(tmp_path)
    yield servers
    servers.close()


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """The file where ``tests.apps.many_app`` servers record each run."""
    path = tmp_path / RESULTS_FILE
    create_results(path)

    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLStore]:
    """The queue that servers on ``tmp_path`` share, read from the test
    process. The app creates its tables; this store only reads."""
    store = SQLStore(f"sqlite:///{tmp_path / 'offload.sqlite3'}")
    yield store
    store.close()

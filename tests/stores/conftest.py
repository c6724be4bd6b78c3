"""Every store, for the conformance suite. A later store joins by adding a
parameter here; the suite then runs against it unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_offload.stores import MemoryStore, SQLStore, Store
from tests.conftest import FakeClock


@pytest.fixture(params=["memory", "sqlite"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore(clock=clock)
    else:
        made = SQLStore(f"sqlite:///{tmp_path / 'offload.sqlite3'}", clock=clock)
    made.open()
    yield made
    made.close()

"""The policy examples in examples/policies run and print what their pages
say they do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"

EXPECTED = {
    "retries.py": ["rates fetched", "attempts: 3"],
    "timeouts.py": ["JobTimeout - The job ran longer than its timeout of 0.5 s"],
    "delays.py": ["reminded user 2", "scheduled"],
    "periodic.py": ["every 1", "ticks: 3"],
    "unique.py": ["same job: True", "a new one once it finished: True"],
    "queues_and_priorities.py": ["['high', 'low', 'report']"],
    "results.py": ["purged: 1", "kept: True"],
    "testing.py": ["eager: succeeded 42", "drained: 3"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_example_runs_and_prints_what_its_page_says(name: str) -> None:
    done = subprocess.run(
        [sys.executable, name],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    for expected in EXPECTED[name]:
        assert expected in done.stdout, done.stdout


def test_every_example_is_tested() -> None:
    examples = {path.name for path in EXAMPLES.glob("[a-z]*.py")}

    assert examples == set(EXPECTED)

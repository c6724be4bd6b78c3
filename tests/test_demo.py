"""The demo app in examples/demo, driven through Flask's test client."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_offload import Offload, Progress

DEMO_APP = Path(__file__).resolve().parents[1] / "examples" / "demo" / "app.py"
JOB_SECONDS = 0.2


def load_demo() -> ModuleType:
    """Import examples/demo/app.py, which is a script folder, not a package."""
    spec = importlib.util.spec_from_file_location("offload_demo_app", DEMO_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    return module


demo = load_demo()
offload: Offload = demo.offload


@offload.task(name="tests.fail_with_markup")
def fail_with_markup() -> None:
    raise ValueError("<script>alert(1)</script>")


@contextmanager
def demo_client(instance: Path, **config: Any) -> Iterator[FlaskClient]:
    app: Flask = demo.create_app(
        {"DEMO_JOB_SECONDS": JOB_SECONDS, **config}, instance_path=str(instance)
    )
    try:
        yield app.test_client()
    finally:
        offload.close(app)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    """The demo with its worker running, each job taking 0.2 s."""
    with demo_client(tmp_path) as client:
        yield client


@pytest.fixture
def idle_client(tmp_path: Path) -> Iterator[FlaskClient]:
    """The demo without a worker, so enqueued jobs stay queued."""
    with demo_client(tmp_path, OFFLOAD_WORKER_THREADS=0) as client:
        yield client


def status_of(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/status")
    assert response.status_code == 200
    state: dict[str, Any] = response.get_json()

    return state


def wait_for_empty_queue(client: FlaskClient, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (size := status_of(client)["queue_size"]) > 0:
        if time.monotonic() > deadline:
            pytest.fail(f"{size} job(s) still unfinished after {timeout} s.")
        time.sleep(0.05)


def test_the_page_shows_the_queue_size_and_the_enqueue_button(
    idle_client: FlaskClient,
) -> None:
    response = idle_client.get("/")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<span id="queue-size" class="count">0</span>' in page
    assert 'id="enqueue"' in page
    assert '<form id="enqueue-form" method="post" action="/enqueue">' in page
    assert "No jobs yet." in page


def test_enqueueing_raises_the_queue_size_in_status(idle_client: FlaskClient) -> None:
    response = idle_client.post("/enqueue", json={"count": 3})

    assert response.status_code == 202
    body = response.get_json()
    assert len(body["enqueued"]) == 3
    assert body["queue_size"] == 3

    state = status_of(idle_client)
    assert state["queue_size"] == 3
    assert state["running"] == 0
    assert [job["status"] for job in state["jobs"]] == ["queued"] * 3
    assert [job["id"] for job in state["jobs"]] == body["enqueued"][::-1]


def test_a_refreshed_page_shows_the_jobs_already_queued(
    idle_client: FlaskClient,
) -> None:
    idle_client.post("/enqueue", json={"count": 2})

    page = idle_client.get("/").get_data(as_text=True)

    assert '<span id="queue-size" class="count">2</span>' in page
    assert page.count('data-status="queued"') == 2
    assert 'id="no-jobs" class="muted" hidden' in page


def test_the_worker_burns_the_queue_down_to_zero(client: FlaskClient) -> None:
    enqueued = client.post("/enqueue", json={"count": 3}).get_json()["enqueued"]

    wait_for_empty_queue(client)

    jobs = status_of(client)["jobs"]
    assert [job["status"] for job in jobs] == ["succeeded"] * 3
    assert [job["percent"] for job in jobs] == [100] * 3
    assert all(job["detail"].startswith("took ") for job in jobs)
    app = client.application
    with app.app_context():
        job = offload.get_job(enqueued[0])
    assert job is not None
    assert job.progress == Progress(10, 10, "step 10 of 10")


def test_a_failed_job_shows_its_error_escaped(client: FlaskClient) -> None:
    with client.application.app_context():
        fail_with_markup.enqueue()

    wait_for_empty_queue(client)

    assert status_of(client)["jobs"][0]["detail"] == "<script>alert(1)</script>"
    page = client.get("/").get_data(as_text=True)
    assert 'data-status="failed"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page


def test_a_form_post_enqueues_and_redirects_back_to_the_page(
    idle_client: FlaskClient,
) -> None:
    response = idle_client.post("/enqueue", data={"count": "5"})

    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert status_of(idle_client)["queue_size"] == 5


def test_a_form_post_without_a_count_enqueues_one_job(
    idle_client: FlaskClient,
) -> None:
    response = idle_client.post("/enqueue")

    assert response.status_code == 303
    assert status_of(idle_client)["queue_size"] == 1


@pytest.mark.parametrize("count", [0, 51, -1, 2.5, True, "many", None, [3]])
def test_a_count_outside_1_to_50_is_refused_with_a_message(
    idle_client: FlaskClient, count: object
) -> None:
    response = idle_client.post("/enqueue", json={"count": count})

    assert response.status_code == 400
    assert response.get_json() == {
        "error": f"count must be a whole number from 1 to 50, not {count!r}."
    }
    assert status_of(idle_client)["queue_size"] == 0


@pytest.mark.parametrize("count", ["0", "51", "abc", "2.5", ""])
def test_a_form_post_with_a_bad_count_is_refused_with_a_message(
    idle_client: FlaskClient, count: str
) -> None:
    response = idle_client.post("/enqueue", data={"count": count})

    assert response.status_code == 400
    message = f"count must be a whole number from 1 to 50, not {count!r}."
    assert message.replace("'", "&#39;") in response.get_data(as_text=True)
    assert status_of(idle_client)["queue_size"] == 0


def test_a_json_body_that_is_not_an_object_is_refused(
    idle_client: FlaskClient,
) -> None:
    response = idle_client.post("/enqueue", json=[5])

    assert response.status_code == 400
    assert response.get_json() == {
        "error": 'The body must be a JSON object such as {"count": 5}.'
    }


@pytest.mark.parametrize("seconds", [-1, "3", float("nan")])
def test_a_bad_job_duration_is_refused_when_the_app_is_built(
    tmp_path: Path, seconds: object
) -> None:
    with pytest.raises(ValueError) as raised:
        demo.create_app({"DEMO_JOB_SECONDS": seconds}, instance_path=str(tmp_path))

    assert str(raised.value) == (
        f"DEMO_JOB_SECONDS must be a number of seconds, 0 or more, not {seconds!r}."
    )

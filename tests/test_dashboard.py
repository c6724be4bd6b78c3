"""The dashboard: who may open it, what it shows, and its token-protected
actions, on real SQLite stores."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_offload import ConfigurationError, Offload
from tests.helpers import make_app

Opener = Callable[..., tuple[Flask, Offload, FlaskClient]]


@pytest.fixture
def open_app(tmp_path: Path) -> Iterator[Opener]:
    """Make an app with the dashboard and a client asking from ``address``;
    every app made is closed after the test."""
    made: list[tuple[Flask, Offload]] = []

    def open_app(
        address: str = "127.0.0.1", debug: bool = True, **config: Any
    ) -> tuple[Flask, Offload, FlaskClient]:
        instance = tmp_path / f"app{len(made)}"
        app, offload = make_app(
            instance, OFFLOAD_WORKER_THREADS=0, DEBUG=debug, **config
        )
        offload.init_app(app)
        made.append((app, offload))
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = address

        return app, offload, client

    yield open_app

    for app, offload in made:
        offload.close(app)


def token_of(page: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', page)
    assert found is not None, "the page has no form token"

    return found.group(1)


def fail(message: str) -> None:
    raise RuntimeError(message)


def test_the_dashboard_is_refused_by_default_when_the_app_is_not_in_debug(
    open_app: Opener,
) -> None:
    _, _, client = open_app(debug=False)

    response = client.get("/offload/")

    assert response.status_code == 403
    assert "@offload.authorize_dashboard" in response.get_data(as_text=True)


def test_the_dashboard_is_refused_from_an_address_that_is_not_loopback(
    open_app: Opener,
) -> None:
    _, _, client = open_app(address="192.168.1.20")

    assert client.get("/offload/").status_code == 403
    assert client.get("/offload/stats.json").status_code == 403


@pytest.mark.parametrize(
    "header",
    [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}],
)
def test_the_dashboard_is_refused_when_a_proxy_relayed_the_request(
    open_app: Opener, header: dict[str, str]
) -> None:
    _, _, client = open_app()

    assert client.get("/offload/", headers=header).status_code == 403


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_the_dashboard_opens_on_loopback_in_debug(
    open_app: Opener, address: str
) -> None:
    _, _, client = open_app(address=address)

    response = client.get("/offload/")

    assert response.status_code == 200
    assert "Jobs by queue" in response.get_data(as_text=True)


def test_the_pages_load_only_their_own_files_and_refuse_to_be_framed(
    open_app: Opener,
) -> None:
    _, _, client = open_app()

    response = client.get("/offload/")

    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_the_hook_opens_the_dashboard_to_a_request_the_default_refuses(
    open_app: Opener,
) -> None:
    _, offload, client = open_app(address="203.0.113.9", debug=False)

    @offload.authorize_dashboard
    def everyone() -> bool:
        return True

    assert client.get("/offload/").status_code == 200


def test_without_a_secret_key_a_deployed_dashboard_warns_once_and_on_each_page(
    open_app: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    _, offload, client = open_app(debug=False)
    _, keyed, keyed_client = open_app(debug=False, SECRET_KEY="a real key")
    _, _, debug_client = open_app()
    for app_offload in (offload, keyed):
        app_offload.authorize_dashboard(lambda: True)
    caplog.set_level(logging.WARNING, logger="flask_offload.dashboard")

    pages = [client.get(path).get_data(as_text=True) for path in ("/offload/",) * 2]
    keyed_page = keyed_client.get("/offload/jobs").get_data(as_text=True)
    debug_page = debug_client.get("/offload/").get_data(as_text=True)
    offload.authorize_dashboard(lambda: False)
    refused = client.get("/offload/")

    warnings = [r for r in caplog.records if r.name == "flask_offload.dashboard"]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("The app has no SECRET_KEY")
    assert warnings[0].getMessage().endswith("Set SECRET_KEY.")
    assert all('id="no-secret-key"' in page for page in pages)
    assert 'id="no-secret-key"' not in keyed_page
    assert 'id="no-secret-key"' not in debug_page
    assert refused.status_code == 403
    assert "SECRET_KEY" not in refused.get_data(as_text=True)


def test_the_hook_closes_the_dashboard_to_a_request_the_default_allows(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    offload.authorize_dashboard(lambda: False)

    assert client.get("/offload/").status_code == 403


def test_the_static_files_are_served_even_to_a_refused_request(
    open_app: Opener,
) -> None:
    _, _, client = open_app(debug=False)

    response = client.get("/offload/static/offload/dashboard.js")

    assert response.status_code == 200
    assert "innerHTML" not in response.get_data(as_text=True)
    response.close()


@pytest.mark.parametrize("token", [None, "", "forged.token"])
def test_an_action_without_a_valid_token_is_refused_and_changes_nothing(
    open_app: Opener, token: str | None
) -> None:
    _, offload, client = open_app()
    job = offload.task(name="tests.wait")(lambda: None).enqueue()

    data = {} if token is None else {"token": token}
    response = client.post(f"/offload/jobs/{job.id}/cancel", data=data)

    assert response.status_code == 400
    assert "Reload the dashboard page" in response.get_data(as_text=True)
    assert job.refresh().status == "queued"


def test_a_token_signed_with_another_key_is_refused(open_app: Opener) -> None:
    app, offload, client = open_app(SECRET_KEY="one key")
    job = offload.task(name="tests.wait")(lambda: None).enqueue()
    token = token_of(client.get("/offload/jobs").get_data(as_text=True))
    app.secret_key = "another key"

    response = client.post(f"/offload/jobs/{job.id}/cancel", data={"token": token})

    assert response.status_code == 400
    assert job.refresh().status == "queued"


def test_retry_enqueues_a_new_job_with_the_same_task_arguments_queue_and_priority(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    task = offload.task(name="tests.fails")(lambda x, y=0: fail("no"))
    old = task.using(queue="mail", priority=7).enqueue(1, y=2)
    offload.drain()
    assert old.refresh().status == "failed"
    page = client.get(f"/offload/jobs/{old.id}").get_data(as_text=True)

    response = client.post(
        f"/offload/jobs/{old.id}/retry", data={"token": token_of(page)}
    )

    assert response.status_code == 303
    [new] = [job for job in offload.jobs() if job.id != old.id]
    assert response.location.startswith(f"/offload/jobs/{new.id}")
    assert (new.task, new.queue, new.priority) == ("tests.fails", "mail", 7)
    assert (new.args, new.kwargs, new.status) == ([1], {"y": 2}, "queued")
    assert old.refresh().status == "failed"


def test_a_job_that_has_not_failed_is_not_retried(open_app: Opener) -> None:
    _, offload, client = open_app()
    job = offload.task(name="tests.wait")(lambda: None).enqueue()
    token = token_of(client.get("/offload/jobs").get_data(as_text=True))

    response = client.post(f"/offload/jobs/{job.id}/retry", data={"token": token})

    assert response.status_code == 303
    assert "notice=not-retried" in response.location
    assert len(offload.jobs()) == 1


def test_retry_failed_enqueues_one_new_job_per_failed_job_of_the_task(
    open_app: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flask_offload.dashboard.RETRY_BATCH", 2)
    _, offload, client = open_app()
    task = offload.task(name="tests.fails")(lambda n: fail(str(n)))
    other = offload.task(name="tests.other")(lambda: fail("other"))
    for n in range(3):
        task.enqueue(n)
    other.enqueue()
    offload.drain()
    token = token_of(client.get("/offload/jobs").get_data(as_text=True))

    response = client.post(
        "/offload/retry-failed", data={"token": token, "task": "tests.fails"}
    )

    assert response.status_code == 303
    queued = offload.jobs(status="queued")
    assert sorted(job.args[0] for job in queued) == [0, 1, 2]
    assert {job.task for job in queued} == {"tests.fails"}
    followed = client.get(response.location).get_data(as_text=True)
    assert "Enqueued 3 new job(s)." in followed


def test_cancel_cancels_a_queued_job(open_app: Opener) -> None:
    _, offload, client = open_app()
    job = offload.task(name="tests.wait")(lambda: None).enqueue()
    page = client.get(f"/offload/jobs/{job.id}").get_data(as_text=True)
    assert "Cancel" in page

    response = client.post(
        f"/offload/jobs/{job.id}/cancel", data={"token": token_of(page)}
    )

    assert response.status_code == 303
    assert job.refresh().status == "cancelled"


def test_delete_purges_every_finished_job_and_keeps_waiting_ones(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    task = offload.task(name="tests.work")(lambda: None)
    task.enqueue()
    task.enqueue()
    offload.drain()
    waiting = task.enqueue()
    token = token_of(client.get("/offload/jobs").get_data(as_text=True))

    response = client.post("/offload/purge", data={"token": token})

    assert response.status_code == 303
    assert [job.id for job in offload.jobs()] == [waiting.id]
    assert "Deleted 2 finished job(s)." in client.get(response.location).get_data(
        as_text=True
    )


def test_delete_with_a_task_purges_only_that_tasks_finished_jobs(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    work = offload.task(name="tests.work")(lambda: None)
    other = offload.task(name="tests.other")(lambda: None)
    work.enqueue()
    kept = other.enqueue()
    offload.drain()
    token = token_of(client.get("/offload/jobs").get_data(as_text=True))

    client.post("/offload/purge", data={"token": token, "task": "tests.work"})

    assert [job.id for job in offload.jobs()] == [kept.id]


def test_html_in_arguments_results_and_errors_is_shown_escaped(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    script = "<script>alert(1)</script>"
    echo = offload.task(name="tests.echo")(lambda text: text)
    fails = offload.task(name="tests.fails")(lambda text: fail(text))
    echoed = echo.enqueue(script)
    failed = fails.enqueue(script)
    offload.drain()

    pages = [
        client.get(f"/offload/jobs/{echoed.id}").get_data(as_text=True),
        client.get(f"/offload/jobs/{failed.id}").get_data(as_text=True),
        client.get("/offload/jobs").get_data(as_text=True),
        client.get("/offload/").get_data(as_text=True),
    ]

    for page in pages:
        assert script not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_job_page_shows_what_the_task_logged_escaped(
    open_app: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    _, offload, client = open_app()
    caplog.set_level(logging.INFO, logger="tests.dashboard.tasks")

    @offload.task(name="tests.chatty")
    def chatty(text: str) -> None:
        logging.getLogger("tests.dashboard.tasks").warning("got %s", text)

    job = chatty.enqueue("<script>alert(1)</script>")
    quiet = offload.task(name="tests.quiet")(lambda: None).enqueue()
    offload.drain()

    page = client.get(f"/offload/jobs/{job.id}").get_data(as_text=True)
    quiet_page = client.get(f"/offload/jobs/{quiet.id}").get_data(as_text=True)

    shown = re.search(r'<pre class="log" id="job-log">([^<]*)</pre>', page)
    assert shown is not None, page
    assert shown.group(1).startswith("[attempt 1] ")
    assert shown.group(1).endswith(
        "WARNING tests.dashboard.tasks: got &lt;script&gt;alert(1)&lt;/script&gt;"
    )
    assert "<script>alert(1)" not in page
    assert "Nothing logged." in quiet_page


def test_the_job_page_shows_each_failures_type_message_and_traceback(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    job = offload.task(name="tests.fails", retries=1, retry_backoff=0)(
        lambda: fail("the disk is full")
    ).enqueue()
    offload.drain()

    page = client.get(f"/offload/jobs/{job.id}").get_data(as_text=True)

    assert page.count("RuntimeError</strong>: the disk is full") == 2
    assert "Traceback (most recent call last)" in page
    assert "Retry as a new job" in page


def test_the_stats_endpoint_has_counts_by_queue_and_status_and_totals(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    task = offload.task(name="tests.work")(lambda: None)
    task.enqueue()
    task.using(queue="mail").enqueue()
    task.using(queue="mail").enqueue()
    offload.drain(max_jobs=1)

    data = client.get("/offload/stats.json").get_json()

    assert data["queues"]["mail"]["queued"] + data["queues"]["default"]["queued"] == 2
    assert data["totals"]["succeeded"] == 1
    assert data["totals"]["queued"] == 2
    assert data["running"] == []


def test_the_overview_and_stats_show_the_jobs_finished_in_each_recent_minute(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    works = offload.task(name="tests.works")(lambda: None)
    breaks = offload.task(name="tests.breaks")(lambda: fail("no"))
    for _ in range(3):
        works.enqueue()
    breaks.enqueue()
    offload.task(name="tests.never")(lambda: None).enqueue().cancel()
    offload.drain()

    data = client.get("/offload/stats.json").get_json()
    page = client.get("/offload/").get_data(as_text=True)

    minutes = data["throughput"]
    assert len(minutes) == 30
    assert [m["start"] - minutes[0]["start"] for m in minutes] == list(
        range(0, 30 * 60, 60)
    )
    # The jobs ended a moment ago: in the last minute, or the one before it.
    recent = minutes[-1] if minutes[-1]["succeeded"] else minutes[-2]
    assert (recent["succeeded"], recent["failed"]) == (3, 1)
    assert sum(m["succeeded"] + m["failed"] for m in minutes) == 4
    # The busiest minute's bars fill the chart: 3 of 4 jobs succeeded.
    assert page.count('<rect class="bar-succeeded"') == 30
    assert re.search(
        r'class="bar-succeeded" x="\d+" y="18.0"\s+width="8" height="42.0"', page
    )
    assert re.search(
        r'class="bar-failed" x="\d+" y="4.0"\s+width="8" height="14.0"', page
    )
    assert "3 succeeded, 1 failed</title>" in page


def test_searching_by_id_opens_the_job_or_says_it_is_missing(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    job = offload.task(name="tests.work")(lambda: None).enqueue()

    found = client.get("/offload/jobs", query_string={"id": job.id})
    missing = client.get("/offload/jobs", query_string={"id": "no-such-job"})

    assert found.status_code == 302
    assert found.location == f"/offload/jobs/{job.id}"
    assert "There is no job with id" in missing.get_data(as_text=True)
    assert client.get("/offload/jobs/no-such-job").status_code == 404


def listed_ids(page: str) -> list[str]:
    return re.findall(r'class="job-id short" href="[^"]+"\s+title="([0-9a-f]+)"', page)


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)

    return None if found is None else html.unescape(found.group(1))


def test_the_job_list_pages_by_fifty_through_older_and_newer_links(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    task = offload.task(name="tests.work")(lambda n: None)
    ids = [task.enqueue(n).id for n in range(120)]
    mail = task.using(queue="mail").enqueue(99)

    def follow(url: str | None) -> str:
        assert url is not None
        return client.get(url).get_data(as_text=True)

    first = follow("/offload/jobs?queue=default")
    second = follow(link(first, "next"))
    third = follow(link(second, "next"))
    back = follow(link(third, "prev"))
    top = follow(link(back, "prev"))

    newest_first = ids[::-1]
    assert listed_ids(first) == newest_first[:50]
    assert listed_ids(second) == newest_first[50:100]
    assert listed_ids(third) == newest_first[100:]
    assert listed_ids(back) == listed_ids(second)
    assert listed_ids(top) == listed_ids(first)
    assert link(first, "prev") is None and link(third, "next") is None
    assert "queue=default" in (link(second, "next") or "")
    assert link(top, "first") is None and link(third, "first") == (
        "/offload/jobs?queue=default"
    )
    assert mail.id not in first + second + third


def test_a_page_past_the_oldest_job_is_empty_and_leads_back(
    open_app: Opener,
) -> None:
    _, offload, client = open_app()
    only = offload.task(name="tests.work")(lambda: None).enqueue()

    page = client.get(f"/offload/jobs?before={only.id}").get_data(as_text=True)

    assert listed_ids(page) == []
    assert "No jobs match." in page
    assert link(page, "prev") == f"/offload/jobs?after={only.id}"


def test_an_unknown_status_filter_is_a_bad_request(open_app: Opener) -> None:
    _, _, client = open_app()

    assert client.get("/offload/jobs?status=done").status_code == 400


def test_no_dashboard_url_serves_no_dashboard(open_app: Opener) -> None:
    _, _, client = open_app(OFFLOAD_DASHBOARD_URL=None)

    assert client.get("/offload/").status_code == 404


def test_the_dashboard_can_be_served_at_another_path(open_app: Opener) -> None:
    _, _, client = open_app(OFFLOAD_DASHBOARD_URL="/admin/jobs")

    assert client.get("/admin/jobs/").status_code == 200
    assert client.get("/offload/").status_code == 404


def test_a_dashboard_url_must_be_a_path(tmp_path: Path) -> None:
    app, offload = make_app(tmp_path, OFFLOAD_DASHBOARD_URL="offload")

    with pytest.raises(ConfigurationError, match="must be a URL path starting"):
        offload.init_app(app)

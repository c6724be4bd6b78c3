"""The demo in a real headless Chromium: click enqueue and watch the queue
size rise and fall to zero without reloading the page."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Where the screenshot goes: the test's own folder, unless
#: OFFLOAD_SCREENSHOTS names one (``docs/images`` to refresh the README's).
SCREENSHOTS_ENV = "OFFLOAD_SCREENSHOTS"


def require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("Playwright for Python (pip install -e '.[dev]')")
    if not missing:
        return
    reason = "Browser tests need " + " and ".join(missing) + "."
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " .ci/run installs Chromium.")
    pytest.skip(reason)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    yield from serve_demo(tmp_path)


@pytest.fixture
def debug_demo(tmp_path: Path) -> Iterator[str]:
    """The demo in debug mode (without the reloader), which opens the
    dashboard to this loopback browser."""
    yield from serve_demo(tmp_path, "--debug", "--no-reload")


def serve_demo(tmp_path: Path, *options: str) -> Iterator[str]:
    require_browser()
    port = free_port()
    env = dict(
        os.environ,
        FLASK_DEMO_JOB_SECONDS="0.6",
        # The demo's queue in this test's folder, not the one ./run uses.
        FLASK_OFFLOAD_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        PYTHONPATH=str(ROOT),
    )
    log = (tmp_path / "demo.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            str(ROOT / "examples" / "demo" / "app.py"),
            "run",
            "--port",
            str(port),
            *options,
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_clicking_enqueue_raises_the_queue_size_and_the_worker_brings_it_to_zero(
    demo: str, tmp_path: Path
) -> None:
    screenshots = Path(os.environ.get(SCREENSHOTS_ENV, tmp_path))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS
        )
        page = browser.new_page()
        page.goto(demo)
        assert page.text_content("#queue-size") == "0"

        for _ in range(5):
            page.click("#enqueue")
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen.append(int(page.text_content("#queue-size") or "0"))
            if len(seen) == 3:
                screenshots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshots / "demo.png"), full_page=True)
            if seen[-1] == 0 and max(seen) > 0:
                break
            time.sleep(0.2)
        url_after = page.url
        browser.close()

    assert max(seen) >= 3, f"the count never rose: {seen}"
    assert seen[-1] == 0, f"the count never fell to zero: {seen}"
    assert url_after == demo, "the page navigated instead of updating itself"


def test_the_dashboard_counts_update_without_a_reload_and_cancel_and_retry_work(
    debug_demo: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    screenshots = Path(os.environ.get(SCREENSHOTS_ENV, tmp_path))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS
        )
        demo_page = browser.new_page()
        demo_page.goto(debug_demo)
        dashboard = browser.new_page()
        dashboard.goto(debug_demo + "offload/")
        total_queued = '[data-total="queued"]'
        assert dashboard.text_content(total_queued) == "0"

        for _ in range(6):
            demo_page.click("#enqueue")
        deadline = time.monotonic() + 15
        while dashboard.text_content(total_queued) == "0":
            assert time.monotonic() < deadline, "the queued count never changed"
            time.sleep(0.2)
        assert dashboard.url == debug_demo + "offload/"
        dashboard.reload()  # a queue new to the page shows after a reload
        dashboard.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

        dashboard.goto(debug_demo + "offload/jobs?status=queued")
        dashboard.click("a[href*='/offload/jobs/']")
        job_url = dashboard.url
        dashboard.click("form[action*='cancel'] button")
        dashboard.wait_for_load_state()
        dashboard.goto(job_url)
        status = dashboard.text_content("main .status") or ""
        # A cancelled job can be retried: a new job with its arguments.
        dashboard.click("form[action*='retry'] button")
        dashboard.wait_for_load_state()
        retried_url = dashboard.url
        notice = dashboard.text_content("main .notice") or ""
        browser.close()

    assert status == "cancelled"
    assert retried_url.startswith(debug_demo + "offload/jobs/")
    assert retried_url.split("?")[0] != job_url.split("?")[0]
    assert notice == "Enqueued 1 new job(s)."


def test_the_throughput_chart_grows_without_a_reload_and_the_job_page_has_its_log(
    debug_demo: str,
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS
        )
        demo_page = browser.new_page()
        demo_page.goto(debug_demo)
        dashboard = browser.new_page()
        dashboard.goto(debug_demo + "offload/")
        busiest = "#throughput-busiest"
        assert dashboard.text_content(busiest) == "0"
        assert dashboard.locator("#throughput rect").count() == 60

        for _ in range(3):
            demo_page.click("#enqueue")
        deadline = time.monotonic() + 20
        while succeeded_in_chart(dashboard) != 3:
            assert time.monotonic() < deadline, "the chart never showed 3 jobs"
            time.sleep(0.2)
        heights = [
            float(rect.get_attribute("height") or "0")
            for rect in dashboard.locator("#throughput rect.bar-succeeded").all()
        ]
        shown_busiest = int(dashboard.text_content(busiest) or "0")
        url_after = dashboard.url

        dashboard.goto(debug_demo + "offload/jobs?status=succeeded")
        dashboard.click("a[href*='/offload/jobs/']")
        log = dashboard.text_content("#job-log") or ""

        phone = browser.new_page(
            color_scheme="dark", viewport={"width": 375, "height": 740}
        )
        phone.goto(debug_demo + "offload/jobs")
        background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
        header_shown = phone.locator("table.jobs thead").is_visible()
        row_display = phone.evaluate(
            "getComputedStyle(document.querySelector('table.jobs tbody tr')).display"
        )
        page_width = phone.evaluate("document.documentElement.scrollWidth")
        browser.close()

    assert url_after == debug_demo + "offload/"
    # The busiest minute's bar is the chart's full height; the jobs may have
    # ended on either side of a minute's turn.
    assert max(heights) == 56.0, heights
    assert shown_busiest in (2, 3)
    assert log.startswith("[attempt 1] ")
    # Dark mode and a phone's width: dark background, one card per job, and
    # nothing wider than the screen.
    assert background == "rgb(22, 22, 21)"
    assert not header_shown and row_display == "block"
    assert page_width <= 375
    assert log.endswith(" INFO app: Working for 0.6 s in 10 steps")


def succeeded_in_chart(page: Any) -> int:
    """The jobs the chart's bars say succeeded, from their titles."""
    titles = page.locator("#throughput title").all_text_contents()

    return sum(int(title.split(": ")[1].split(" ")[0]) for title in titles)

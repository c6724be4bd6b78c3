"""Start and stop real app processes for the tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "tests.apps.jobs_app:create_app"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]

    return port


def app_environment(instance: Path, **settings: str) -> dict[str, str]:
    env = dict(os.environ, OFFLOAD_TEST_INSTANCE=str(instance), PYTHONPATH=str(ROOT))
    env.update(
        {f"OFFLOAD_TEST_{key.upper()}": value for key, value in settings.items()}
    )

    return env


GUNICORN = [sys.executable, "-m", "gunicorn"]
GUNICORN_APP = "tests.apps.jobs_app:create_app()"


class Server:
    """``flask run`` (or another server command) in a subprocess, in its own
    process group."""

    def __init__(
        self,
        instance: Path,
        *extra: str,
        command: list[str] | None = None,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.log = instance / f"server-{self.port}.log"
        if command is None:
            command = [*FLASK, "run", "--port", str(self.port)]
        else:
            command = [*command, "--bind", f"127.0.0.1:{self.port}"]
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [*command, *extra],
                cwd=ROOT,
                env=app_environment(instance, **settings),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The server exited:\n{self.log.read_text()}")
            try:
                self.get("/pid")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"The server did not start:\n{self.log.read_text()}")

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def post(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def signal(self, signum: int) -> None:
        """Signal every process of the server (the reloader's child too)."""
        os.killpg(self.process.pid, signum)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGINT)


def run_flask_command(instance: Path, *args: str, **settings: str) -> str:
    done = subprocess.run(
        [*FLASK, *args],
        cwd=ROOT,
        env=app_environment(instance, **settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    return done.stdout


def read_events(instance: Path) -> list[list[str]]:
    path = instance / "events.log"
    if not path.exists():
        return []

    return [line.split() for line in path.read_text().splitlines()]


def wait_for(condition: Any, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"Timed out after {timeout} s waiting for {what}.")


class BackgroundCommand:
    """A long-running ``flask`` command, such as ``flask offload worker``, in a
    subprocess of its own session, so that only the test signals it. Its
    stdout and stderr go to one log file in the instance folder."""

    def __init__(self, instance: Path, *args: str, **settings: str) -> None:
        self.log = instance / f"command-{time.monotonic_ns()}.log"
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [*FLASK, *args],
                cwd=ROOT,
                env=app_environment(instance, **settings),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_output(self, text: str, timeout: float = 20) -> None:
        """Wait until ``text`` appears in the output; fail with the output if
        the command exits first."""
        wait_for(
            lambda: text in self.output() or self.process.poll() is not None,
            timeout,
            what=f"{text!r} in the output of {self.process.args!r}",
        )
        if text not in self.output():
            raise AssertionError(
                f"The command exited with {self.process.returncode} before "
                f"printing {text!r}:\n{self.output()}"
            )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


MANY_APP = "tests.apps.many_app:create_app()"
#: One process that serves ``tests.apps.many_app`` and runs its worker, with
#: no gunicorn master in between: killing it kills exactly one worker.
MANY_APP_SERVER = [sys.executable, "-m", "tests.apps.many_app"]


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process in the group that ``process`` leads, including
    children it left behind, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=20)


class GuardedServer(Server):
    """A :class:`Server` that kills its processes when it fails to start,
    because the test then never gets the object that could stop them."""

    def _wait_until_serving(self) -> None:
        try:
            super()._wait_until_serving()
        except BaseException:
            kill_group(self.process)
            raise


class Servers:
    """The servers one test starts. :meth:`close` stops them all even when the
    test failed, and kills whatever does not stop in time, so that no process
    outlives its test and runs the next test's jobs."""

    def __init__(self, instance: Path) -> None:
        self.instance = instance
        self.started: list[Server] = []

    def start(
        self, *extra: str, command: list[str] | None = None, **settings: str
    ) -> Server:
        server = GuardedServer(self.instance, *extra, command=command, **settings)
        self.started.append(server)

        return server

    def close(self) -> None:
        for server in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
                server.stop()
            kill_group(server.process)

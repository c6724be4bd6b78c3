"""Flask-Offload: an app whose only task is the no-op; the worker runs as
``flask --app bench.peers.apps.offload_app offload worker``."""

from __future__ import annotations

import os
import tempfile

from flask import Flask

from flask_offload import Offload

from ..report import job_ran

offload = Offload()
noop = offload.task(name="noop")(job_ran)


def create_app() -> Flask:
    app = Flask(__name__, instance_path=tempfile.gettempdir())
    app.config.update(
        OFFLOAD_URL=os.environ["BENCH_OFFLOAD_URL"], OFFLOAD_WORKER_THREADS=0
    )
    offload.init_app(app)

    return app

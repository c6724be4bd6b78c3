"""The app every policy example uses: Flask-Offload on an SQLite file in a
fresh temporary folder, with the in-process worker off so each example runs
its jobs itself, with ``offload.drain()`` or a worker it starts."""

from __future__ import annotations

import tempfile
from typing import Any

from flask import Flask

from flask_offload import Offload


def make_app(**config: Any) -> tuple[Flask, Offload]:
    app = Flask(__name__, instance_path=tempfile.mkdtemp(prefix="offload-example-"))
    app.config.update(OFFLOAD_WORKER_THREADS=0, **config)
    offload = Offload(app)

    return app, offload

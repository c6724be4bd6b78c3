"""Apps for the tests: a Flask app on a real SQLite file in a temp folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from flask_offload import Offload


def make_app(instance: Path, **config: Any) -> tuple[Flask, Offload]:
    app = Flask("offload_test_app", instance_path=str(instance))
    app.config.update(config)
    offload = Offload()

    return app, offload

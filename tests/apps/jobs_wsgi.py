"""``tests.apps.jobs_app`` as a module-level WSGI app, for servers such as
uWSGI that load an object rather than call a factory."""

from __future__ import annotations

from tests.apps.jobs_app import create_app

app = create_app()

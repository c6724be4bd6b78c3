"""Flask-Offload beside its peers on shared servers: RQ, Huey and Celery on
the same Redis, Procrastinate on the same PostgreSQL, and Flask-Offload on
both. Every worker is a separate process started by each system's own
command, as it would be deployed.

Run: ``bench/run-peers`` (see :mod:`bench.peers.run`).
"""

"""Benchmarks that put Flask-Offload side by side with a plain thread and its
peers, so the docs can quote numbers measured on one machine in one run.

Run them all with ``bench/run``.
"""

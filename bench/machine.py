"""A description of the machine and software, kept with the results so a
number quoted in the docs can be traced to where it was measured."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("flask-offload", "flask", "sqlalchemy", "huey")
REPOSITORY = Path(__file__).resolve().parent.parent


def describe_machine() -> dict[str, object]:
    temp_dir = tempfile.gettempdir()

    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: _package_version(name) for name in PACKAGES},
        "flask_offload_checkout": _git_describe(),
        # SQLite's FULL durability costs a disk sync per commit, so where the
        # temporary files live changes the numbers.
        "temp_dir": temp_dir,
        "temp_filesystem": _filesystem_of(temp_dir),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass

    return platform.processor() or "unknown"


def _usable_cores() -> int | None:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))

    return os.cpu_count()


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _git_describe() -> str:
    """The commit benchmarked, with ``-dirty`` when the checkout has changes
    that are not committed."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

    return described.stdout.strip()


def _filesystem_of(path: str) -> str:
    """The type of the filesystem that holds ``path``, from ``/proc/mounts``
    where there is one."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount_point, fs_type = fields[1], fields[2]
                inside = target == mount_point or target.startswith(
                    mount_point.rstrip("/") + "/"
                )
                if inside and len(mount_point) > len(best):
                    best, kind = mount_point, fs_type
    except OSError:
        pass

    return kind

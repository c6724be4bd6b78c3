# Sourced by ./run and ./test: make .venv and install the project into it,
# again whenever pyproject.toml changes.
set -euo pipefail

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "Flask-Offload needs Python 3.10 or newer; set PYTHON to one." >&2
    exit 1
fi

stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "Setting up .venv (once; again only when pyproject.toml changes)..." >&2
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev,bench]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi

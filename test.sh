#!/usr/bin/env bash
# Set up the virtualenv (first run) and run the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
.venv/bin/pip install --quiet -r requirements-dev.txt
exec .venv/bin/python -m pytest "$@"

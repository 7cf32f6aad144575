#!/usr/bin/env bash
# Makes .cache/python: a venv with the pinned packages of clients/python/requirements.txt
# (grpcio, grpcio-tools, protobuf, numpy, safetensors, pytest) and the campfire Python
# package (clients/python) installed editable, for its pytest, the stub drift check,
# the Python interop and conformance tests and the bench. Called by ensure-tools.sh
# and check-python-stubs.sh. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$PWD/.cache/python"
requirements="$PWD/clients/python/requirements.txt"
installed="$venv/installed-requirements.txt"
# Rebuilt when missing, when its interpreter no longer runs (the Python it was made
# from is gone), or when the pins changed since it was installed (a copy is kept in it).
if ! "$venv/bin/python" -c "" >/dev/null 2>&1 || ! cmp -s "$requirements" "$installed"; then
  python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "ensure-python: the Python client's tests need Python 3.11 or later as $python (set PYTHON to another interpreter)" >&2
    exit 1
  fi
  echo "installing the pinned Python packages into .cache/python (first run, or the pins changed)..."
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
  cp "$requirements" "$installed"
fi
# The package, editable: installed again when it is missing or points at another checkout.
if ! "$venv/bin/python" -c "import campfire, os, sys; sys.exit(not campfire.__file__.startswith(os.path.realpath('clients/python/src')))" >/dev/null 2>&1; then
  echo "installing clients/python (editable) into .cache/python..."
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --no-deps -e clients/python
fi

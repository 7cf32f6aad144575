#!/usr/bin/env bash
# Fails when the Python client's committed stubs (clients/python/src/campfire/{admin,agent,common})
# differ from what grpcio-tools makes of proto/ now. Fix: npm run gen:python, then commit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-python.sh
.cache/python/bin/python clients/python/generate_stubs.py --check

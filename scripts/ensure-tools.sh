#!/usr/bin/env bash
# Installs the external tools the tests drive, into .cache/bin, when missing:
# grpcurl (the debugging client our users reach for), built from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/.cache/bin"
mkdir -p "$bin"
if [ ! -x "$bin/grpcurl" ]; then
  if command -v grpcurl >/dev/null 2>&1; then
    ln -sf "$(command -v grpcurl)" "$bin/grpcurl"
  else
    echo "installing grpcurl into .cache/bin (first run only)..."
    GOBIN="$bin" GOFLAGS=-mod=mod go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
  fi
fi
"$bin/grpcurl" -version

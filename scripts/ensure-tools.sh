#!/usr/bin/env bash
# Installs the external tools the tests drive, under .cache/, when missing:
# - grpcurl (the debugging client our users reach for) into .cache/bin, built from the Go module proxy;
# - protoc-gen-go and protoc-gen-go-grpc into .cache/bin (scripts/go-plugins.sh), for clients/go's stubs;
# - Debian's grpc-java protoc plugin, where Java and Maven are installed, for clients/java;
# - a Python venv in .cache/python with the pinned packages of clients/python/requirements.txt
#   and the campfire Python package (scripts/ensure-python.sh).
# Idempotent: a second run installs nothing and prints only the versions.
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

# protoc-gen-go and protoc-gen-go-grpc, the local plugins of the Go client's stubs (clients/go).
scripts/go-plugins.sh

# The grpc-java protoc plugin for the Java admin example (clients/java), where Java and Maven are
# here: Maven Central does not serve its executables to this machine, Debian does.
if command -v java >/dev/null && command -v mvn >/dev/null && ! command -v protoc-gen-grpc-java >/dev/null && ! command -v grpc_java_plugin >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's protobuf-compiler-grpc-java-plugin (first run only)..."
    apt-get install -y -qq protobuf-compiler-grpc-java-plugin >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq protobuf-compiler-grpc-java-plugin >/dev/null; } ||
      echo "ensure-tools: could not install protobuf-compiler-grpc-java-plugin; the Java example test will be skipped" >&2
  else
    echo "ensure-tools: no grpc-java protoc plugin and no root apt-get to install one; the Java example test will be skipped" >&2
  fi
fi

scripts/ensure-python.sh
venv="$PWD/.cache/python"
"$venv/bin/python" - <<'EOF'
import sys, importlib.metadata as metadata
versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("grpcio", "grpcio-tools", "protobuf", "numpy", "safetensors", "cryptography", "pytest", "campfire-fl"))
print(f"python {sys.version.split()[0]}, {versions}")
EOF

# Chromium for the dashboard's browser test (playwright-core drives it; it downloads no browser of its own).
# Debian's package, installed when this runs as root with apt; otherwise the test says why it skips.
chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium with apt-get (first run only)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "ensure-tools: could not install chromium; the dashboard browser test will be skipped" >&2
fi
if [ -x "$chromium" ]; then "$chromium" --version 2>/dev/null || true; else echo "chromium: not installed (the dashboard browser test will be skipped)"; fi

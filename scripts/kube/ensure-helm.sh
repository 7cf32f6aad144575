#!/usr/bin/env bash
# Installs helm into .cache/bin from the Go module proxy (a few minutes on two cores, once), for
# test/deploy-kubernetes.test.ts, which renders deploy/helm/campfire and validates it with the
# API server's dry run. A helm already on PATH is used as it is. Prints helm's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
HELM_VERSION=${HELM_VERSION:-v3.22.0}
bin="$PWD/.cache/bin"
if command -v helm >/dev/null 2>&1; then command -v helm; exit 0; fi
# go install leaves the version out of the binary: a file beside it remembers which one it is.
if [ ! -x "$bin/helm" ] || [ "$(cat "$bin/helm.version" 2>/dev/null)" != "$HELM_VERSION" ]; then
  echo "installing helm $HELM_VERSION into .cache/bin (first run only)..." >&2
  mkdir -p "$bin"
  GOBIN="$bin" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  echo "$HELM_VERSION" >"$bin/helm.version"
fi
echo "$bin/helm"

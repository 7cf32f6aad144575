#!/usr/bin/env bash
# Generates the Go stubs in clients/go/gen from proto/ with buf and the local
# plugins (clients/go/buf.gen.yaml). With --check, generates into a temporary
# folder instead and fails when the committed stubs differ (npm run check).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/go-plugins.sh >/dev/null
export PATH="$PWD/.cache/bin:$PWD/node_modules/.bin:$PATH"
template=clients/go/buf.gen.yaml
if [ "${1:-}" != "--check" ]; then
  rm -rf clients/go/gen
  buf generate --template "$template"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
buf generate --template "$template" --output "$out"
if ! diff -r "$out/clients/go/gen" clients/go/gen >/dev/null; then
  diff -r "$out/clients/go/gen" clients/go/gen | head -40
  echo "clients/go/gen has drifted from proto/: run 'npm run gen' and commit the result." >&2
  exit 1
fi
echo "clients/go/gen matches proto/"

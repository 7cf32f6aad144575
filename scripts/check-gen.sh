#!/usr/bin/env bash
# Fails when gen/ differs from what `buf generate` makes of proto/ now.
set -euo pipefail
cd "$(dirname "$0")/.."
# buf and the ts-proto plugin come from node_modules, whether or not npm runs this.
export PATH="$PWD/node_modules/.bin:$PATH"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
buf generate --output "$out"
if ! diff -r "$out/gen" gen >/dev/null; then
  diff -r "$out/gen" gen | head -40
  echo "gen/ has drifted from proto/: run 'npm run gen' and commit the result." >&2
  exit 1
fi
echo "gen/ matches proto/"

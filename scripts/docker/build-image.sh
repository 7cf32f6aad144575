#!/usr/bin/env bash
# Builds the campfire image from this checkout's Dockerfile on an offline Node 20 base, starting a
# Docker engine first when none runs (start-dockerd.sh). Prints DOCKER_HOST=<socket> and
# IMAGE=<tag> for test/deploy-docker.test.ts. Layers are cached in the engine's data root, so a
# second run only rebuilds what changed. Exit 3 when no Docker engine can run here.
# The build stage fetches the npm dependencies, hence --network host (the npm registry is the only
# network it reaches); the containers themselves run with --network none.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKER_HOST=$(scripts/docker/start-dockerd.sh)
export DOCKER_HOST
base=$(scripts/docker/make-node-base.sh)
image=${IMAGE:-campfire:local}
log="$PWD/.cache/docker/build.log"
if ! docker build --network host --build-arg "BASE=$base" -t "$image" . >"$log" 2>&1; then
  echo "docker build failed; the end of $log:" >&2
  tail -20 "$log" >&2
  exit 1
fi
echo "DOCKER_HOST=$DOCKER_HOST"
echo "IMAGE=$image"

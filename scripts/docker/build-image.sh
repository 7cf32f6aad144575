#!/usr/bin/env bash
# Builds the campfire image from this checkout's Dockerfile on an offline Node 20 base, starting a
# Docker engine first when none runs (start-dockerd.sh). Prints DOCKER_HOST=<socket>,
# IMAGE=<tag> and, when it started dockerd, DOCKERD_PID=<pid> for test/deploy-docker.test.ts. Layers are cached in the engine's data root, so a
# second run only rebuilds what changed. Exit 3 when no Docker engine can run here.
# The build stage fetches the npm dependencies, hence --network host (the npm registry is the only
# network it reaches); the containers themselves run with --network none.
set -euo pipefail
cd "$(dirname "$0")/../.."
engine=$(scripts/docker/start-dockerd.sh)
DOCKER_HOST=$(echo "$engine" | head -1)
export DOCKER_HOST
started=$(echo "$engine" | sed -n 's/^started //p')
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
if [ -n "$started" ]; then echo "DOCKERD_PID=$started"; fi

#!/usr/bin/env bash
# Makes a Docker engine available for the container tests and prints the DOCKER_HOST to use:
# an engine already answering at $DOCKER_HOST is used as it is; otherwise docker.io is installed
# with apt when dockerd is missing, and a private dockerd is started by hand (these machines have
# no systemd) on .cache/docker/docker.sock, with its images kept under .cache/docker/root so that
# later runs reuse them. Idempotent: a second run finds the running engine. Prints the socket, and
# "started <pid>" on a second line when it started dockerd (the caller may stop it afterwards).
# Exit 3 (with the reason on stderr) when no engine can run here.
set -euo pipefail
cd "$(dirname "$0")/../.."
state="$PWD/.cache/docker"
socket="unix://$state/docker.sock"
if [ -n "${DOCKER_HOST:-}" ] && docker info >/dev/null 2>&1; then echo "$DOCKER_HOST"; exit 0; fi
if DOCKER_HOST="$socket" docker info >/dev/null 2>&1; then echo "$socket"; exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then echo "dockerd is missing and cannot be installed here (needs root and apt-get)" >&2; exit 3; fi
  echo "installing docker.io with apt (first run only)..." >&2
  apt-get install -y docker.io >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y docker.io >/dev/null 2>&1) || { echo "apt-get install docker.io failed" >&2; exit 3; }
fi
mkdir -p "$state/root" "$state/exec"
# A short exec root: containerd's socket paths must fit in 108 bytes.
nohup dockerd --data-root "$state/root" --exec-root "/run/campfire-docker-$(id -u)" --pidfile "$state/dockerd.pid" \
  --host "$socket" --bridge none --iptables=false --ip6tables=false >"$state/dockerd.log" 2>&1 &
for _ in $(seq 1 60); do
  if DOCKER_HOST="$socket" docker info >/dev/null 2>&1; then printf '%s\nstarted %s\n' "$socket" "$!"; exit 0; fi
  if ! kill -0 $! 2>/dev/null; then break; fi
  sleep 0.5
done
echo "dockerd did not start; the end of $state/dockerd.log:" >&2
tail -5 "$state/dockerd.log" >&2
exit 3

# The campfire image: `campfire` as entrypoint, for the site and for agent sidecars.
#   docker build --build-arg BASE=<a Node 20 image> -t campfire .
# BASE defaults to the official node image; offline, scripts/docker/make-node-base.sh makes one
# from this machine's node (docs/deploy.md). RUN lines use only node, npm and /bin/sh.
ARG BASE=node:20-bookworm-slim

# Compile TypeScript to dist/ with the dev dependencies, then drop those.
FROM ${BASE} AS build
WORKDIR /opt/campfire
COPY package.json package-lock.json ./
RUN npm install --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/copy-assets.mjs scripts/
COPY proto proto
COPY gen gen
COPY services services
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && node -e "fs.chmodSync('dist/services/cli/main.js', 0o755); fs.rmSync('services', { recursive: true }); fs.rmSync('gen', { recursive: true })"

# An init as PID 1 forwards signals to node and reaps children: the base's tini, else Debian's.
FROM ${BASE} AS init
RUN [ -x /usr/bin/tini ] || (apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*)

FROM ${BASE}
COPY --from=init /usr/bin/tini /usr/bin/tini
COPY --from=build /opt/campfire /opt/campfire
RUN ["node", "-e", "fs.mkdirSync('/usr/local/bin', { recursive: true }); fs.symlinkSync('/opt/campfire/dist/services/cli/main.js', '/usr/local/bin/campfire'); fs.mkdirSync('/var/lib/campfire', { recursive: true }); fs.chownSync('/var/lib/campfire', 1000, 1000)"]
USER 1000:1000
WORKDIR /var/lib/campfire
ENV NODE_ENV=production LOG_FORMAT=json CAMPFIRE_DATA_DIR=/var/lib/campfire
VOLUME /var/lib/campfire
EXPOSE 7443
# No HEALTHCHECK: the image runs sites and agents alike. Probe a site with
#   docker run --health-cmd 'campfire health --timeout-ms 3000' ...
# or, on Kubernetes, a grpc probe on grpc.health.v1 (deploy/kubernetes/).
ENTRYPOINT ["/usr/bin/tini", "--", "campfire"]
CMD ["--help"]

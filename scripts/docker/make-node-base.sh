#!/usr/bin/env bash
# Builds a minimal Node 20 base image offline, from THIS machine's node (and npm, dash, env, libc, and
# the static tini that docker.io ships), for `docker build --build-arg BASE=<tag>` where no image
# registry is reachable. Prints the tag. The image is rebuilt only when the node version changed.
# (After /work/shared/tools/kubernetes/make-node-rootfs.sh, plus tini and a CA bundle.)
set -euo pipefail
node=$(command -v node)
version=$(node --version)
tag="campfire-local/node-base:${version#v}"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
case "$version" in v20.*) ;; *) echo "make-node-base: this machine's node is $version; the image wants Node 20" >&2; exit 1 ;; esac
tini=$(command -v tini-static || command -v docker-init || true)
[ -n "$tini" ] || { echo "make-node-base: no static tini here (apt-get install tini)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{bin,usr/bin,usr/lib,etc/ssl/certs,tmp,lib64,lib/x86_64-linux-gnu}
chmod 1777 "$root/tmp"
cp -L "$node" "$root/usr/bin/node"
for lib in $(ldd "$node" | grep -oE '/[^ ]+\.so[^ ]*'); do mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; done
# getaddrinfo("localhost") and DNS need glibc's NSS modules.
for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2 /lib/x86_64-linux-gnu/libresolv.so.2; do
  [ -e "$lib" ] && cp -L "$lib" "$root$lib"
done
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
cp -a "$npm_dir" "$root/usr/lib/npm"
printf '#!/bin/sh\nexec /usr/bin/node /usr/lib/npm/bin/npm-cli.js "$@"\n' >"$root/usr/bin/npm" && chmod +x "$root/usr/bin/npm"
# /bin/sh for probes and RUN lines, /usr/bin/env for scripts' #!/usr/bin/env node.
cp -L /bin/dash "$root/bin/sh"
cp -L "$(command -v env)" "$root/usr/bin/env"
cp -L "$tini" "$root/usr/bin/tini"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\n' >"$root/etc/group"
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' - "$tag" >/dev/null
echo "$tag"

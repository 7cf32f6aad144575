#!/usr/bin/env bash
# Builds a real kube-apiserver from the Go module proxy into .cache/kube-build/bin (about 8 minutes
# on 2 cores, once; later runs only print where it is), for test/deploy-kubernetes.test.ts, which
# validates deploy/kubernetes/ (through scripts/kube/run-apiserver.sh) with the API server's server-side dry run. Also installs etcd.
# k8s.io/kubernetes's go.mod replaces its staging modules with ./staging/src/..., so
# `go install k8s.io/kubernetes/cmd/kube-apiserver@v` is refused: a wrapper module requires
# k8s.io/kubernetes and replaces each staging module with its published v0.X.Y instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
KV=${KV:-v1.36.3}            # the k8s.io/kubernetes version
SV=v0.${KV#v1.}              # its staging modules are published as v0.36.3 etc.
dir="$PWD/.cache/kube-build"
if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd (apt)..."
  apt-get install -y etcd-server >/dev/null
fi
stamp="$KV with its version linked in"
if [ -x "$dir/bin/kube-apiserver" ] && [ "$(cat "$dir/version" 2>/dev/null)" = "$stamp" ]; then
  echo "kube-apiserver $KV: $dir/bin/kube-apiserver"
  exit 0
fi
echo "building kube-apiserver $KV into $dir (first run only, about 8 minutes)..."
mkdir -p "$dir/bin" && cd "$dir"
go mod download -json "k8s.io/kubernetes@$KV" >/dev/null
modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KV.mod"
{
  printf 'module local/kubebuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KV"
  grep -oE '^\s+k8s.io/[a-z0-9-]+ => \./staging' "$modfile" | awk -v sv="$SV" '{print "\t" $1 " => " $1 " " sv}'
  echo ")"
} >go.mod
rm -f go.sum
printf '//go:build tools\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >tools.go
go mod tidy
# The version the server reports (/version: what helm's kubeVersion checks read) is set at link time.
minor=${KV#v1.}; minor=${minor%%.*}
go build -ldflags "-X k8s.io/component-base/version.gitVersion=$KV -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
  -o bin/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
echo "$stamp" >version
echo "kube-apiserver $KV: $dir/bin/kube-apiserver"

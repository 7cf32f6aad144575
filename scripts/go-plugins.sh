#!/usr/bin/env bash
# Installs the pinned protoc-gen-go and protoc-gen-go-grpc into .cache/bin from
# the Go module proxy when missing or of another version: the local plugins
# clients/go/buf.gen.yaml runs. Idempotent; prints the versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2
bin="$PWD/.cache/bin"
mkdir -p "$bin"
if [ "$("$bin/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go $PROTOC_GEN_GO" ]; then
  echo "installing protoc-gen-go $PROTOC_GEN_GO into .cache/bin..." >&2
  GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
fi
if [ "$("$bin/protoc-gen-go-grpc" --version 2>/dev/null)" != "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC#v}" ]; then
  echo "installing protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC into .cache/bin..." >&2
  GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
fi
echo "$("$bin/protoc-gen-go" --version), $("$bin/protoc-gen-go-grpc" --version)"

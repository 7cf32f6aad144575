#!/usr/bin/env bash
# Generates the Java messages and gRPC stubs of proto/campfire into
# target/generated-sources/campfire, for `mvn compile`:
# - protoc: com.google.protobuf:protoc from Maven Central, the version of
#   protobuf-java in pom.xml (gencode and runtime must match), with the
#   well-known types (google/protobuf/*.proto) taken from the protobuf-java jar;
# - the grpc-java plugin: $GRPC_JAVA_PLUGIN, else protoc-gen-grpc-java or
#   Debian's grpc_java_plugin (apt-get install protobuf-compiler-grpc-java-plugin)
#   on PATH. (Maven Central's io.grpc:protoc-gen-grpc-java executables are the
#   usual source; the registry this project's machines reach does not serve them.)
set -euo pipefail
cd "$(dirname "$0")"
proto=../../proto
version=$(sed -n 's:.*<protobuf.version>\(.*\)</protobuf.version>.*:\1:p' pom.xml)
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) classifier=linux-x86_64 ;;
  Linux-aarch64) classifier=linux-aarch_64 ;;
  Darwin-arm64) classifier=osx-aarch_64 ;;
  Darwin-x86_64) classifier=osx-x86_64 ;;
  *) echo "generate.sh: no protoc build on Maven Central for $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac
protoc="target/tools/protoc-$version-$classifier.exe"
if [ ! -x "$protoc" ]; then
  mvn -q -B dependency:copy -Dartifact="com.google.protobuf:protoc:$version:exe:$classifier" -DoutputDirectory=target/tools
  chmod +x "$protoc"
fi
include=target/tools/include
if [ ! -f "$include/google/protobuf/struct.proto" ]; then
  mvn -q -B dependency:unpack -Dartifact="com.google.protobuf:protobuf-java:$version" \
    -Dmdep.unpack.includes='google/protobuf/*.proto' -DoutputDirectory="$include"
fi
plugin="${GRPC_JAVA_PLUGIN:-$(command -v protoc-gen-grpc-java || command -v grpc_java_plugin || true)}"
if [ -z "$plugin" ]; then
  echo "generate.sh: no grpc-java protoc plugin: set GRPC_JAVA_PLUGIN, or apt-get install protobuf-compiler-grpc-java-plugin" >&2
  exit 1
fi
out=target/generated-sources/campfire
rm -rf "$out"
mkdir -p "$out"
"$protoc" -I "$proto" -I "$include" --java_out="$out" --plugin=protoc-gen-grpc-java="$plugin" --grpc-java_out="$out" \
  $(cd "$proto" && find campfire -name '*.proto' | sort)

#!/usr/bin/env bash
# Regenerates Sources/FleetCompression/Generated/onnx.pb.swift from the official onnx.proto. Run by
# hand when moving to a newer ONNX; CI never runs it (the generated file is committed).
#
#   bash scripts/generate-onnx-proto.sh [ONNX_VERSION]     (default 1.23.2)
#
# Needs protoc (Debian: protobuf-compiler), a Swift toolchain to build protoc-gen-swift once (in a
# temporary checkout of swift-protobuf 1.39.0), and pip to fetch the onnx wheel (no install).
set -euo pipefail
VERSION=${1:-1.23.2}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/onnxproto.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
command -v protoc >/dev/null || { echo "needs protoc: apt-get install -y protobuf-compiler" >&2; exit 1; }
git clone -q --depth 1 --branch 1.39.0 https://github.com/apple/swift-protobuf "$WORK/swift-protobuf"
(cd "$WORK/swift-protobuf" && swift build -c release --product protoc-gen-swift >&2)
python3 -m pip download -q --no-deps --only-binary=:all: "onnx==$VERSION" -d "$WORK/wheel"
(cd "$WORK/wheel" && python3 -m zipfile -e onnx-*.whl x)
cp "$WORK/wheel/x/onnx/onnx.proto" "$WORK/onnx.proto"
(cd "$WORK" && protoc --plugin=protoc-gen-swift="$WORK/swift-protobuf/.build/release/protoc-gen-swift" --swift_out=. onnx.proto)
ir=$(grep -o 'IR_VERSION = 0x[0-9A-Fa-f]*' "$WORK/onnx.proto" | tail -1 | sed 's/.*= //')
{
    printf '// Generated once from onnx.proto of the onnx %s PyPI package (IR_VERSION %d, sha256 %s)\n' \
        "$VERSION" "$ir" "$(sha256sum "$WORK/onnx.proto" | cut -c1-16)"
    printf '// with protoc %s and protoc-gen-swift 1.39.0. Regenerate with scripts/generate-onnx-proto.sh; CI never builds the plugin.\n' \
        "$(protoc --version | cut -d' ' -f2)"
    cat "$WORK/onnx.pb.swift"
} > "$REPO/Sources/FleetCompression/Generated/onnx.pb.swift"
echo "wrote Sources/FleetCompression/Generated/onnx.pb.swift (onnx $VERSION)"

#!/bin/sh
# Builds pion_peer offline from Debian's Go packages (GOPATH mode, see /work/shared/INTEROP.md).
# Usage: build.sh OUTPUT_BINARY
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../../.build/interop/pion_peer}
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src" "$(dirname "$out")"
for dir in /usr/share/gocode/src/*; do ln -s "$dir" "$gopath/src/"; done
mkdir -p "$gopath/src/pion_peer"
cp "$here/main.go" "$gopath/src/pion_peer/"
echo "module pion_peer" > "$gopath/src/pion_peer/go.mod"
cd "$gopath/src/pion_peer"
GOPATH=$gopath GO111MODULE=off GOCACHE=${GOCACHE:-/tmp/ugate-go-cache} go build -o "$out" .
echo "$out"

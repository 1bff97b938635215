#!/bin/sh
# Builds pion_peer offline from Debian's Go packages (GOPATH mode, see /work/shared/INTEROP.md)
# when OUTPUT_BINARY is missing or older than main.go; otherwise only prints its path. The one
# place that decides whether the peer needs building: interop/webrtc/peers.py and the Swift
# interop tests (WebRTCInteropTests) both call it before every use.
# Usage: build.sh [OUTPUT_BINARY]   (default: .build/interop/pion_peer in the repository)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../../.build/interop/pion_peer}
if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ]; then
    echo "$out"
    exit 0
fi
command -v go >/dev/null || { echo "go missing: apt-get install golang-go golang-github-pion-webrtc.v3-dev" >&2; exit 1; }
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

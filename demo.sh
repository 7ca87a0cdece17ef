#!/bin/sh
# The demo, on a fresh Debian machine (as root: rbuild uses namespaces and overlayfs):
# installs what it needs, builds rbuild, builds the base image rbuild-demo/busybox from Debian's
# busybox-static, builds testdata/hello (a multi-stage Dockerfile) and runs it.
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: rbuild needs root for namespaces and overlayfs; run: sudo ./demo.sh" >&2
  exit 1
fi
scripts/install-deps.sh
cargo build --release --locked --bin rbuild
rbuild=$PWD/target/release/rbuild
testdata/setup.sh "$rbuild"
"$rbuild" build -t hello:1.0 testdata/hello
echo
echo "\$ rbuild run --rm hello:1.0"
"$rbuild" run --rm hello:1.0

#!/bin/sh
# Builds the demo's base image, rbuild-demo/busybox, from Debian's busybox-static with rbuild
# itself (FROM scratch + ADD of a root filesystem tar). Usage: testdata/setup.sh [RBUILD]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
rbuild=${1:-rbuild}
"$here/busybox/make-rootfs.sh"
"$rbuild" build -q -t rbuild-demo/busybox:latest "$here/busybox"

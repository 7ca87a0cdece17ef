#!/bin/sh
# Reproducible images, checked by Debian's reprotest: testdata/hello and a multi-stage
# conformance case are built twice, each time in a fresh state directory (a new --root) and
# a copy of the sources at another path, under reprotest's variations (time, umask, locale,
# timezone, environment, home, build path, file ordering through disorderfs, CPU count, ASLR,
# kernel personality), with SOURCE_DATE_EPOCH fixed; the OCI archives must be bit for bit the
# same (diffoscope shows any difference). Needs root (rbuild's namespaces), reprotest,
# diffoscope, faketime and disorderfs (scripts/install-deps.sh installs them).
# Usage: scripts/reprotest.sh [RBUILD]
set -eu
cd "$(dirname "$0")/.."
rbuild=$(realpath "${1:-target/release/rbuild}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src"
cp -r testdata/busybox testdata/hello testdata/conformance/symlinks-and-stages "$src/"
rm -f "$src/busybox/rootfs.tar"
# One build of both images, in a state directory of its own.
{
  echo '#!/bin/sh'
  echo 'set -eu'
  echo 'export SOURCE_DATE_EPOCH=1700000000'
  echo 'root=$(mktemp -d)'
  echo 'trap '"'"'rm -rf "$root"'"'"' EXIT'
  echo 'busybox/make-rootfs.sh'
  echo "\"$rbuild\" --root \"\$root\" build -q -t rbuild-demo/busybox busybox >/dev/null"
  echo "\"$rbuild\" --root \"\$root\" build -q -o type=oci,dest=hello.tar hello >/dev/null"
  echo "\"$rbuild\" --root \"\$root\" build -q -o type=oci,dest=stages.tar symlinks-and-stages >/dev/null"
} > "$src/build.sh"
chmod +x "$src/build.sh"
# user_group needs a second configured user, domain_host a UTS namespace of reprotest's own;
# neither changes what rbuild reads (it puts no user or host name of the machine in images).
reprotest --verbosity 1 --vary=-user_group,-domain_host --store-dir "$work/out" \
  -c ./build.sh "$src" 'hello.tar stages.tar'

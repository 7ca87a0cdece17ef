#!/bin/sh
# Usage: make-rootfs.sh [OUT.tar]
# Makes a minimal root filesystem tar (default: rootfs.tar next to this script) from Debian's
# busybox-static: /bin/busybox and a symlink per applet, /etc/passwd and /etc/group, /tmp,
# /root. The demo's base image comes from this public package, not from the internet.
set -eu
# The same files whatever the caller's umask (reprotest varies it).
umask 022
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/rootfs.tar}
busybox=${BUSYBOX:-/bin/busybox}
if ! "$busybox" --list >/dev/null 2>&1; then
  echo "make-rootfs.sh: $busybox not found; install Debian's busybox-static" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/root"
cp "$busybox" "$work/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$work/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$work/rootfs/etc/group"
chmod 1777 "$work/rootfs/tmp"
chmod 700 "$work/rootfs/root"
# Fixed owners, order and times, so the same busybox gives the same tar and image.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/rootfs" -cf "$out.tmp" .
mv "$out.tmp" "$out"

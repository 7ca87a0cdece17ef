#!/bin/sh
# Optional (CI runs it; the test suite does not need it): lets the tests run RUN steps for
# linux/arm64 under QEMU's user-mode emulation, as BuildKit does on machines with binfmt_misc
# handlers. As root it
#   - mounts binfmt_misc if needed and installs Debian's qemu-user-static, whose handlers are
#     registered with the F flag (the interpreter is opened once, so it works in sandboxes);
#   - fetches Debian's busybox-static for arm64 into /var/lib/rbuild-test/arm64/busybox, the
#     base of the emulated test image.
# This changes the machine (a foreign dpkg architecture, kernel binfmt handlers): it is kept
# out of scripts/test.sh. Without it the emulation tests skip and say why.
set -eu
if [ "$(id -u)" != 0 ]; then
  echo "install-emulation.sh: needs root" >&2
  exit 1
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
    echo "install-emulation.sh: cannot mount binfmt_misc; emulated steps will not run" >&2
fi
if [ ! -x /usr/bin/qemu-aarch64-static ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    qemu-user-static binfmt-support >/dev/null
fi
if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --enable qemu-aarch64 ||
    echo "install-emulation.sh: could not register qemu-aarch64 with binfmt_misc" >&2
fi
dest=/var/lib/rbuild-test/arm64
if [ ! -x "$dest/busybox" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
  apt-get update -qq
  work=$(mktemp -d)
  chmod 755 "$work"
  (cd "$work" && apt-get download -q busybox-static:arm64 >/dev/null 2>&1)
  dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$work/x"
  mkdir -p "$dest"
  install -m 755 "$work/x/bin/busybox" "$dest/busybox"
  chmod 755 /var/lib/rbuild-test
  rm -rf "$work"
fi
echo "install-emulation.sh: $(cat /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null | head -1 || echo 'no qemu-aarch64 handler'), busybox for arm64 at $dest/busybox"

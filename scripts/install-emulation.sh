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
warn() { echo "install-emulation.sh: $*; the emulated-RUN test will skip" >&2; }
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || warn "cannot mount binfmt_misc"
fi
if [ ! -x /usr/bin/qemu-aarch64-static ]; then
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      qemu-user-static binfmt-support >/dev/null; } || warn "could not install qemu-user-static"
fi
if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --enable qemu-aarch64 || warn "could not register qemu-aarch64 with binfmt_misc"
fi
dest=/var/lib/rbuild-test/arm64
fetch_busybox() {
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64 || return 1
  fi
  apt-get update -qq || return 1
  work=$(mktemp -d) && chmod 755 "$work" || return 1
  (cd "$work" && apt-get download -q busybox-static:arm64 >/dev/null 2>&1) || return 1
  dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$work/x" || return 1
  mkdir -p "$dest" && install -m 755 "$work/x/bin/busybox" "$dest/busybox" || return 1
  chmod 755 "$(dirname "$dest")"
  rm -rf "$work"
}
if [ ! -x "$dest/busybox" ]; then
  fetch_busybox || warn "could not fetch Debian's busybox-static for arm64"
fi
handler=$(head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || echo "not registered")
echo "install-emulation.sh: qemu-aarch64 handler $handler; arm64 busybox: $(ls "$dest/busybox" 2>/dev/null || echo missing)"

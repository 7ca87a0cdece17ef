#!/bin/sh
# Builds a Debian package of rbuild: the binary, shell completions (bash, zsh, fish), the man
# page, and the runtime dependencies rbuild uses (uidmap for rootless builds, slirp4netns for
# RUN's network, git for git sources; qemu-user-static suggested, for other CPUs' RUN steps).
#
#   scripts/package-deb.sh                 # cargo build --release, then target/debian/rbuild_*.deb
#   scripts/package-deb.sh BINARY OUTDIR   # package an rbuild already built
#
# Then: sudo apt install ./target/debian/rbuild_*.deb
set -eu
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
  bin=$1
  out=${2:-target/debian}
else
  cargo build --locked --release --bin rbuild
  bin=target/release/rbuild
  out=target/debian
fi
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/rbuild_${version}_$arch
install -D -m 0755 "$bin" "$root/usr/bin/rbuild"
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/man/man1" "$root/usr/share/doc/rbuild"
"$bin" completion bash > "$root/usr/share/bash-completion/completions/rbuild"
"$bin" completion zsh > "$root/usr/share/zsh/vendor-completions/_rbuild"
"$bin" completion fish > "$root/usr/share/fish/vendor_completions.d/rbuild.fish"
"$bin" man | gzip -9n > "$root/usr/share/man/man1/rbuild.1.gz"
cp README.md "$root/usr/share/doc/rbuild/README.md"
size=$(du -sk "$root" | cut -f1)
install -d "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<EOF
Package: rbuild
Version: $version
Architecture: $arch
Maintainer: rbuild developers <rbuild@localhost>
Installed-Size: $size
Depends: libc6, uidmap, slirp4netns, git
Suggests: qemu-user-static, binfmt-support
Section: admin
Priority: optional
Homepage: https://github.com/rbuild/rbuild
Description: daemonless container image builder for Dockerfiles
 rbuild builds OCI and Docker images from Dockerfiles without a daemon, with BuildKit's
 semantics and flags (it stands in for docker buildx build), rootless or as root, and shares
 its build cache through registries.
EOF
mkdir -p "$out"
# DEB_FAST=1: quick compression (tests); the default is dpkg-deb's xz.
dpkg-deb --root-owner-group ${DEB_FAST:+-Zgzip -z1} --build "$root" "$out" >/dev/null
ls "$out"/rbuild_"${version}"_"$arch".deb

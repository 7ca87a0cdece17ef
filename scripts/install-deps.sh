#!/bin/sh
# Installs the Debian packages rbuild's demo and tests use, if any is missing:
#   busybox-static  the demo's base image is made from it
#   docker-registry a real registry the tests start on loopback
#   skopeo, umoci   third-party tools the tests check images with
#   curl, procps    used by the tests
#   python3         serves files over HTTP for the ADD-from-URL tests
#   uidmap          newuidmap/newgidmap, for rootless builds with subordinate ids
#   slirp4netns     the network of RUN steps (a namespace of their own, not the host's loopback)
#   iproute2        the tests make a test host in a network namespace of their own
#   gcc, make       build the bundled SQLite and jemalloc
#   reprotest, diffoscope-minimal, faketime, disorderfs
#                   scripts/reprotest.sh checks that images are reproducible
#   git, tmux       git servers for ADD and contexts from git; a terminal for the live view
#   rpm             rpmbuild and an RPM database made by rpm itself, for the SBOM tests
#   xfsprogs        an xfs loop filesystem, where COPY must make reflinks (runner tests)
#   debootstrap     target/debian-minbase.tar, a real Debian root filesystem (the SBOM tests
#                   compare rbuild's package list with dpkg-query's inside it)
#   python3-venv    target/test-venv, with PyPI's spdx-tools (pyspdxtools validates SBOMs)
#                   and jsonschema (checks provenance against the SLSA and in-toto schemas)
# rbuild itself needs only busybox-static (for the demo), slirp4netns, uidmap and a Rust toolchain.
set -eu
# install [APT-OPTION] PACKAGE:FILE...: installs the packages whose file is missing.
install() {
  options=$1; shift
  need=""
  for pair in "$@"; do
    pkg=${pair%%:*}; file=${pair#*:}
    [ -e "$file" ] || need="$need $pkg"
  done
  [ -n "$need" ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps.sh: missing Debian packages:$need (run as root to install them)" >&2
    exit 1
  fi
  echo "installing Debian packages:$need"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $options $need >/dev/null
}
install "" busybox-static:/bin/busybox docker-registry:/usr/bin/docker-registry skopeo:/usr/bin/skopeo \
  umoci:/usr/bin/umoci curl:/usr/bin/curl procps:/usr/bin/ps python3:/usr/bin/python3 \
  uidmap:/usr/bin/newuidmap slirp4netns:/usr/bin/slirp4netns iproute2:/usr/bin/ip gcc:/usr/bin/gcc \
  make:/usr/bin/make git:/usr/bin/git tmux:/usr/bin/tmux rpm:/usr/bin/rpmbuild \
  xfsprogs:/usr/sbin/mkfs.xfs
# Without recommends: reprotest's would bring every comparator of the full diffoscope.
install --no-install-recommends reprotest:/usr/bin/reprotest diffoscope-minimal:/usr/bin/diffoscope \
  faketime:/usr/bin/faketime disorderfs:/usr/bin/disorderfs
install "" python3-venv:/usr/share/doc/python3-venv/copyright
# Python validators the tests use (pyspdxtools for SBOMs, jsonschema for provenance), in a
# venv of the checkout's own.
venv="$(cd "$(dirname "$0")/.." && pwd)/target/test-venv"
if [ ! -x "$venv/bin/pyspdxtools" ] || [ ! -x "$venv/bin/jsonschema" ]; then
  # Debian's python (python3-venv), which every user can run, not one on a PATH of root's own.
  [ -x "$venv/bin/python3" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q spdx-tools jsonschema
fi
# A real Debian root filesystem (minbase, ~200 MiB, ~30 s from the package mirror).
rootfs="$(cd "$(dirname "$0")/.." && pwd)/target/debian-minbase.tar"
if [ ! -s "$rootfs" ]; then
  install "" debootstrap:/usr/sbin/debootstrap
  mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  work=$(mktemp -d)
  if ! debootstrap --variant=minbase "$suite" "$work/root" "${mirror:-http://deb.debian.org/debian}" \
      >"$work/log" 2>&1; then
    tail -20 "$work/log" >&2; rm -rf "$work"; exit 1
  fi
  mkdir -p "$(dirname "$rootfs")"
  tar -C "$work/root" --numeric-owner -cf "$rootfs.tmp" . && mv "$rootfs.tmp" "$rootfs"
  rm -rf "$work"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

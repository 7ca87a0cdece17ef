#!/bin/sh
# The whole test suite (as root, so the sandbox, overlay and registry tests run rather than
# skip): installs the Debian packages the tests use, then runs every test of the workspace, and
# the step-running tests a second time with the native snapshotter.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked
# Reproducibility under reprotest's variations (time, umask, locale, paths, file order, …).
cargo build --locked --bin rbuild
scripts/reprotest.sh target/debug/rbuild
# The tests that run steps, again with the native (copying) snapshotter, which must give the
# same layers as overlayfs.
RBUILD_SNAPSHOTTER=native cargo test --locked -p rbuild-runner
RBUILD_SNAPSHOTTER=native cargo test --locked -p rbuild-builder --test builds --test copies --test cache --test outputs --test registry --test platforms --test commands --test conformance --test isolation --test limits --test faults --test farm --test buildx --test attestations --test sbom
# Rootless: the end-to-end and conformance tests once more as an unprivileged user with
# subordinate ids (rbuild enters a user namespace itself). Only as root, which can make the user.
if [ "$(id -u)" = 0 ]; then
  user=rbuild-test
  id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
  grep -q "^$user:" /etc/subuid || usermod --add-subuids 200000-265535 "$user"
  grep -q "^$user:" /etc/subgid || usermod --add-subgids 200000-265535 "$user"
  # The test binaries and testdata are used from this checkout: let the user reach it.
  dir=$PWD
  while [ "$dir" != / ]; do
    su "$user" -s /bin/sh -c "test -x '$dir'" || { echo "test.sh: chmod o+x $dir (for $user)"; chmod o+x "$dir"; }
    dir=$(dirname "$dir")
  done
  bins=$(cargo test --locked -p rbuild-builder --test builds --test copies --test cache --test outputs --test registry --test platforms --test commands --test conformance --test isolation --test limits --test faults --test farm --test buildx --test attestations --test sbom --no-run 2>&1 \
    | sed -n 's/.*Executable tests\/[a-z0-9_]*\.rs (\(.*\))$/\1/p')
  [ -n "$bins" ] || { echo "test.sh: no test binaries found for the rootless run" >&2; exit 1; }
  # RUN's network (slirp4netns) needs the TUN device, which Debian's udev makes 0666; some
  # machines (containers, VMs without udev) have it 0600, which only root can open.
  [ -c /dev/net/tun ] && chmod 0666 /dev/net/tun
  runtime=$(mktemp -d) && chown "$user" "$runtime"
  for bin in $bins; do
    su "$user" -s /bin/sh -c "cd /tmp && XDG_RUNTIME_DIR=$runtime RBUILD_TEST_ROOTLESS=1 $PWD/$bin"
  done
fi

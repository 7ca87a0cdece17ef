#!/bin/sh
# The whole test suite (as root, so the sandbox, overlay and registry tests run rather than
# skip): installs the Debian packages the tests use, then runs every test of the workspace, and
# the step-running tests a second time with the native snapshotter.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked
# The tests that run steps, again with the native (copying) snapshotter, which must give the
# same layers as overlayfs.
RBUILD_SNAPSHOTTER=native cargo test --locked -p rbuild-runner
RBUILD_SNAPSHOTTER=native cargo test --locked -p rbuild-builder --test e2e --test conformance

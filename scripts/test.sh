#!/bin/sh
# The whole test suite (as root, so the sandbox, overlay and registry tests run rather than
# skip): installs the Debian packages the tests use, then runs every test of the workspace.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked

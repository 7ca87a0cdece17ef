# Sourced by the bench scripts: from the repository's root, with the reference builders
# started (`bench_setup --debian` adds the Debian+gcc base), hyperfine installed and rbuild
# built for release. Sets repo, rbuild, work (removed on exit), DOCKER_HOST and DOCKER_BUILDKIT.
bench_setup() {
  cd "$(dirname "$0")/.."
  repo=$PWD
  "${REFERENCE_BUILDERS:-$repo/../shared/tools/reference-builders.sh}" "$@" >/dev/null
  command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >/dev/null
  cargo build --release --locked --bin rbuild 2>/dev/null
  rbuild=$repo/target/release/rbuild
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  export DOCKER_HOST=unix:///tmp/ref/docker/docker.sock DOCKER_BUILDKIT=1
}

#!/bin/bash
# Usage: scripts/compare-with-buildkit.sh CONTEXT [docker build args...]
# Builds CONTEXT with rbuild and with dockerd's BuildKit (started by
# ../shared/tools/reference-builders.sh, or REFERENCE_BUILDERS=path), unpacks both images with
# umoci and prints the differences of their root filesystems (path, mode, owner, type, size)
# and of their configs and history (without dates). No output after "comparing" means equal.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
ctx=$(cd "$1" && pwd); shift
"${REFERENCE_BUILDERS:-$repo/../shared/tools/reference-builders.sh}" >/dev/null
export DOCKER_HOST=unix:///tmp/ref/docker/docker.sock DOCKER_BUILDKIT=1
rbuild=${RBUILD:-$repo/target/release/rbuild}
[ -x "$rbuild" ] || (cd "$repo" && cargo build --release --bin rbuild)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/docker build --network=host -q -t rbuild-compare "$@" "$ctx" >/dev/null
/usr/bin/docker save rbuild-compare -o "$work/bk.tar"
skopeo copy -q "docker-archive:$work/bk.tar" "oci:$work/bk:x"
RBUILD_ROOT=${RBUILD_ROOT:-$work/root} "$rbuild" build -q --no-cache -o "type=oci,dest=$work/rb.tar" "$@" "$ctx" >/dev/null
skopeo copy -q "oci-archive:$work/rb.tar" "oci:$work/rb:x"
for b in bk rb; do
  umoci unpack --image "$work/$b:x" "$work/$b-bundle" >/dev/null
  (cd "$work/$b-bundle/rootfs" && find . -printf '%p %m %U:%G %y %s %l\n' | sort) > "$work/$b.files"
  skopeo inspect --config "oci:$work/$b:x" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("config", json.dumps(d.get("config", {}), sort_keys=True))
for h in d.get("history", []):
    print("history", h.get("created_by"), "empty" if h.get("empty_layer") else "layer")' > "$work/$b.config"
done
echo "comparing (< BuildKit, > rbuild)"
diff "$work/bk.files" "$work/rb.files" || true
diff "$work/bk.config" "$work/rb.config" || true

#!/bin/bash
# Pushing a freshly built image whose new layer (~115 MiB) is source-like, as application
# layers are: Python's standard library (sources and bytecode), C and C++ headers, and three
# executables, plus a marker that makes the layer new for every run (one `COPY n src/ /data/`,
# rebuilt untimed before each run, then synced, so that the build's writeback does not land in
# the push's time). Timed for rbuild, BuildKit (dockerd's) and Buildah in one
# run, each pushing to the loopback registry as its users do; rbuild also at gzip levels 1 to
# 6, to choose its default. Prints a Markdown section with the times and the compressed size
# of the layer each gives. Needs root and the reference builders.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
bench_setup
runs=${PUSH_RUNS:-5}
reg=127.0.0.1:5000
ctx=$work/push
mkdir -p "$ctx/src/bin"
cp -a /usr/lib/python3.11 "$ctx/src/python"
cp -a /usr/include/linux /usr/include/c++ /usr/include/x86_64-linux-gnu "$ctx/src/"
cp /usr/bin/docker-registry /usr/bin/skopeo /usr/bin/qemu-arm-static "$ctx/src/bin/"
printf 'FROM %s/library/busybox:1.35\nCOPY n src/ /data/\n' "$reg" > "$ctx/Dockerfile"
raw_mib=$(du -sm --apparent-size "$ctx/src" | cut -f1)
files=$(find "$ctx/src" -type f | wc -l)
mark="date +%s%N > $ctx/n"
date +%s%N > "$ctx/n"
args=(--style basic --warmup 1 --runs "$runs" --export-json "$work/push.json")
for level in 1 2 3 4 5 6; do
  args+=(--prepare "sh -c '$mark && $rbuild build -q --provenance=false -t bench-push $ctx && sync'"
    -n "rbuild-$level" "$rbuild build -q --provenance=false -o type=registry,name=$reg/bench/rbuild-$level:latest,compression-level=$level $ctx")
done
args+=(--prepare "sh -c '$mark && $rbuild build -q -t bench-push $ctx && sync'"
  -n rbuild "$rbuild push bench-push $reg/bench/rbuild-push:latest"
  --prepare "sh -c '$mark && /usr/bin/docker build -q -t $reg/bench/buildkit-push $ctx && sync'"
  -n buildkit "/usr/bin/docker push -q $reg/bench/buildkit-push"
  --prepare "sh -c '$mark && buildah bud --runtime /usr/sbin/runc --tls-verify=false --layers -q -t localhost/bench-push $ctx && sync'"
  -n buildah "buildah push -q --tls-verify=false localhost/bench-push docker://$reg/bench/buildah-push:latest")
hyperfine "${args[@]}" >&2
# The size of the new layer each pushed (the largest of its image).
size() { skopeo inspect --raw --tls-verify=false "docker://$reg/bench/$1:latest" | jq '[.layers[].size] | max'; }
{
  for n in 1 2 3 4 5 6; do echo "rbuild-$n $(size rbuild-$n)"; done
  echo "rbuild $(size rbuild-push)"; echo "buildkit $(size buildkit-push)"; echo "buildah $(size buildah-push)"
} > "$work/sizes"
python3 - "$work/push.json" "$work/sizes" "$runs" "$raw_mib" "$files" <<'PY'
import json, sys
t = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
sizes = dict(line.split() for line in open(sys.argv[2]))
runs, raw_mib, files = sys.argv[3], int(sys.argv[4]), sys.argv[5]
base = t["rbuild"]
print("## Push of a fresh source-like layer\n")
print(f"`bench/push.sh` (hyperfine, median of {runs} runs): a fresh {raw_mib} MiB layer of {files} real")
print("files (Python's standard library, C/C++ headers, three executables) pushed to the loopback")
print("registry; each builder compresses it with its default gzip (rbuild also at levels 1 to 6).\n")
print("| | time, in units of rbuild's default | compressed size, in % of the layer |")
print("|---|---|---|")
def row(label, key, size_key):
    print(f"| {label} | {t[key] / base:.2f} | {int(sizes[size_key]) / (raw_mib * 1048576) * 100:.1f} % |")
row("rbuild (`rbuild push`, default level)", "rbuild", "rbuild")
for n in range(1, 7):
    row(f"rbuild, `compression-level={n}`", f"rbuild-{n}", f"rbuild-{n}")
row("BuildKit (dockerd 20.10, `docker push`)", "buildkit", "buildkit")
row("Buildah (`buildah push`)", "buildah", "buildah")
print("\nrbuild's default is level 3: the reasons, from these rows, are in `DEFAULT_LEVEL` (builder/src/export/pgzip.rs).")
print(f"\nIssue 16 asks rbuild's push for at most 0.7× Buildah's time and 0.2× BuildKit's: Buildah "
      f"took {t['buildah'] / base:.2f}×, BuildKit {t['buildkit'] / base:.2f}× rbuild's.")
PY

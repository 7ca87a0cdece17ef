#!/bin/bash
# Times rbuild, BuildKit (dockerd's) and Buildah on the demo (testdata/hello), in one run on this
# machine, and writes BENCHMARKS.md with the ratios. Needs root and the reference builders
# (../shared/tools/reference-builders.sh, or REFERENCE_BUILDERS=path).
#   cold: every step runs (--no-cache); the base image is already present for all three
#   warm: nothing changed since the last build (fully cached)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
runs=${RUNS:-7}
"${REFERENCE_BUILDERS:-$repo/../shared/tools/reference-builders.sh}" >/dev/null
command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >/dev/null
scripts/install-deps.sh
cargo build --release --locked --bin rbuild 2>/dev/null
rbuild=$repo/target/release/rbuild
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RBUILD_ROOT=$work/root DOCKER_HOST=unix:///tmp/ref/docker/docker.sock DOCKER_BUILDKIT=1
testdata/setup.sh "$rbuild" >/dev/null
"$rbuild" push rbuild-demo/busybox:latest 127.0.0.1:5000/rbuild-demo/busybox:latest >/dev/null
mkdir "$work/ctx"
cp testdata/hello/* "$work/ctx/"
sed -i 's#^FROM rbuild-demo/busybox#FROM 127.0.0.1:5000/rbuild-demo/busybox#' "$work/ctx/Dockerfile"
# "$1" is extra flags (--no-cache or nothing); the context comes last for buildah's sake.
rbuild_cmd() { echo "$rbuild build -q -t bench-hello ${1:-} $work/ctx"; }
docker_cmd() { echo "/usr/bin/docker build --network=host -q -t bench-hello ${1:-} $work/ctx"; }
buildah_cmd() { echo "buildah bud --runtime /usr/sbin/runc --tls-verify=false --layers -q -t localhost/bench-hello ${1:-} $work/ctx"; }
for kind in cold warm; do
  flags=""; [ $kind = cold ] && flags=--no-cache
  hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/$kind.json" \
    -n rbuild "$(rbuild_cmd $flags)" -n buildkit "$(docker_cmd $flags)" -n buildah "$(buildah_cmd $flags)" >&2
done
# Per-RUN overhead: 50 `RUN true` steps against 1, cold, on the same base; the difference over
# 49 is what one more RUN costs.
for n in 1 50; do
  mkdir "$work/runs$n"
  { echo "FROM 127.0.0.1:5000/rbuild-demo/busybox"; for _ in $(seq "$n"); do echo "RUN true"; done; } > "$work/runs$n/Dockerfile"
  ctx=$work/runs$n
  hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/runs$n.json" \
    -n rbuild "$rbuild build -q -t bench-runs --no-cache $ctx" \
    -n buildkit "/usr/bin/docker build --network=host -q -t bench-runs --no-cache $ctx" \
    -n buildah "buildah bud --runtime /usr/sbin/runc --tls-verify=false --layers -q -t localhost/bench-runs --no-cache $ctx" >&2
done
# A 5,000-file, 100 MB context (COPY . + RUN over it): a no-op rebuild, then a rebuild after a
# one-file change (only the COPY and the RUN after it run again).
mkdir -p "$work/big"
python3 - "$work/big" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(50):
    os.makedirs(f"{root}/src/d{d}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/src/d{d}/f{f}.bin", "wb") as fh:
            fh.write(os.urandom(20 * 1024))
with open(f"{root}/Dockerfile", "w") as fh:
    fh.write("FROM 127.0.0.1:5000/rbuild-demo/busybox\nCOPY . /app\nRUN find /app -type f | wc -l > /count\n")
PY
big=$work/big
# Files must be older than rbuild's racy window (2 s) for its stat cache to keep them.
sleep 3
hyperfine --style basic --warmup 2 --runs "$runs" --export-json "$work/noop.json" \
  -n rbuild "$rbuild build -q -t bench-big $big" \
  -n buildkit "/usr/bin/docker build --network=host -q -t bench-big $big" \
  -n buildah "buildah bud --runtime /usr/sbin/runc --tls-verify=false --layers -q -t localhost/bench-big $big" >&2
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/onefile.json" \
  --prepare "date +%s%N > $big/src/d0/f0.bin" \
  -n rbuild "$rbuild build -q -t bench-big $big" \
  -n buildkit "/usr/bin/docker build --network=host -q -t bench-big $big" \
  -n buildah "buildah bud --runtime /usr/sbin/runc --tls-verify=false --layers -q -t localhost/bench-big $big" >&2
# Two independent stages sleeping 2 s each, cold: parallel stages take ~2 s, not ~4 s.
mkdir "$work/sleeps"
printf 'FROM 127.0.0.1:5000/rbuild-demo/busybox AS a\nRUN sleep 2 && echo a > /a\nFROM 127.0.0.1:5000/rbuild-demo/busybox AS b\nRUN sleep 2 && echo b > /b\nFROM 127.0.0.1:5000/rbuild-demo/busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n' > "$work/sleeps/Dockerfile"
hyperfine --style basic --warmup 1 --runs 3 --export-json "$work/sleeps.json" \
  -n rbuild "$rbuild build -q -t bench-sleeps --no-cache $work/sleeps" \
  -n buildkit "/usr/bin/docker build --network=host -q -t bench-sleeps --no-cache $work/sleeps" \
  -n buildah "buildah bud --runtime /usr/sbin/runc --tls-verify=false --layers -q -t localhost/bench-sleeps --no-cache $work/sleeps" >&2
# Pushing a new 114 MiB layer (half random bytes, half zeros) to the loopback registry: each
# run pushes a layer none has compressed or pushed before (--prepare rebuilds with a new
# marker, untimed), so every builder compresses and uploads it.
mkdir "$work/push"
printf 'FROM 127.0.0.1:5000/rbuild-demo/busybox\nCOPY n /n\nRUN head -c 59768832 /dev/urandom > /random && head -c 59768832 /dev/zero > /zeros\n' > "$work/push/Dockerfile"
date +%s%N > "$work/push/n"
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/push.json" \
  --prepare "sh -c 'date +%s%N > $work/push/n && $rbuild build -q -t bench-push $work/push'" \
  -n rbuild "$rbuild push bench-push 127.0.0.1:5000/bench/rbuild-push:latest" \
  --prepare "sh -c 'date +%s%N > $work/push/n && /usr/bin/docker build --network=host -q -t 127.0.0.1:5000/bench/buildkit-push $work/push'" \
  -n buildkit "/usr/bin/docker push -q 127.0.0.1:5000/bench/buildkit-push" \
  --prepare "sh -c 'date +%s%N > $work/push/n && buildah bud --runtime /usr/sbin/runc --tls-verify=false --layers -q -t localhost/bench-push $work/push'" \
  -n buildah "buildah push -q --tls-verify=false localhost/bench-push docker://127.0.0.1:5000/bench/buildah-push:latest" >&2
# Peak memory while exporting a 1 GiB image (half random, half zeros) as an OCI archive.
mkdir "$work/big-export"
printf 'FROM 127.0.0.1:5000/rbuild-demo/busybox\nRUN head -c 536870912 /dev/urandom > /random && head -c 536870912 /dev/zero > /zeros\n' > "$work/big-export/Dockerfile"
"$rbuild" build -q -t bench-export "$work/big-export" >/dev/null
/usr/bin/time -f %M -o "$work/export-rss" "$rbuild" build -q -o "type=oci,dest=$work/export.tar" "$work/big-export" >/dev/null
rm -f "$work/export.tar"
# The build farm: a cache exported by one machine, used by an empty one (its own script).
bench/farm.sh > "$work/farm.md"
# The SBOM of a 460 MiB Debian image (its own script).
bench/sbom.sh > "$work/sbom.md"
# Pushing a fresh source-like layer, and the gzip levels (its own script).
bench/push.sh > "$work/push-source.md"
# A cold build on the 460 MiB Debian base (its own script).
bench/coldbase.sh > "$work/coldbase.md"
# Cold builds: a big COPY, and two stages with the base pulled (its own script).
bench/cold.sh > "$work/cold.md"
# Scaling curves: context size, image depth, RUN chains (its own script; writes bench/scaling.svg).
bench/scaling.sh > "$work/scaling.md"
# COPY on ext4, xfs and btrfs loop filesystems (its own script).
bench/filesystems.sh > "$work/filesystems.md"
python3 - "$work/cold.json" "$work/warm.json" "$runs" "$work/runs1.json" "$work/runs50.json" "$work/noop.json" "$work/onefile.json" "$work/sleeps.json" "$work/push.json" "$work/export-rss" "$work/farm.md" "$work/sbom.md" "$work/push-source.md" "$work/coldbase.md" "$work/scaling.md" "$work/filesystems.md" bench/history.md "$work/cold.md" > BENCHMARKS.md <<'PY'
import json, sys, platform, datetime
cold, warm = (json.load(open(p))["results"] for p in sys.argv[1:3])
runs = sys.argv[3]
one, fifty = ({r["command"]: r["median"] for r in json.load(open(p))["results"]} for p in sys.argv[4:6])
per_run = {b: (fifty[b] - one[b]) / 49 * 1000 for b in one}
noop, onefile, sleeps, push = ({r["command"]: r["median"] for r in json.load(open(p))["results"]} for p in sys.argv[6:10])
export_rss_mib = int(open(sys.argv[10]).read().split()[-1]) / 1024
def row(results, label):
    t = {r["command"]: r["median"] for r in results}
    return f"| {label} | 1 | {t['buildkit'] / t['rbuild']:.1f}× | {t['buildah'] / t['rbuild']:.1f}× |"
print("# Benchmarks\n")
print("How much longer BuildKit and Buildah take than rbuild for the same build, measured in one run")
print(f"by `bench/compare.sh` (hyperfine, median of {runs} runs after a warm-up; {datetime.date.today()}, {platform.machine()}).")
print("Higher is better for rbuild; 2.0× means the other builder took twice as long.\n")
print("| build of testdata/hello | rbuild | BuildKit (dockerd 20.10) | Buildah |")
print("|---|---|---|---|")
print(row(cold, "cold: every step runs (`--no-cache`)"))
print(row(warm, "warm: nothing changed (fully cached)"))
print()
print("| per RUN step (50 `RUN true`, cold) | rbuild | BuildKit (dockerd 20.10) | Buildah |")
print("|---|---|---|---|")
r = per_run["rbuild"]
print(f"| time one more RUN adds | {r:.1f} ms | {per_run['buildkit']:.1f} ms ({per_run['buildkit'] / r:.1f}×) | {per_run['buildah']:.1f} ms ({per_run['buildah'] / r:.1f}×) |")
print()
print("| 5,000-file, 100 MB context (COPY . + RUN) | rbuild | BuildKit (dockerd 20.10) | Buildah |")
print("|---|---|---|---|")
for label, t in [("no-op rebuild (nothing changed)", noop), ("one file changed (COPY and RUN run again)", onefile)]:
    print(f"| {label} | 1 | {t['buildkit'] / t['rbuild']:.1f}× | {t['buildah'] / t['rbuild']:.1f}× |")
print()
print("| two independent stages sleeping 2 s each, cold | rbuild | BuildKit (dockerd 20.10) | Buildah |")
print("|---|---|---|---|")
print(f"| total time, in units of one stage's 2 s | {sleeps['rbuild'] / 2:.2f} | {sleeps['buildkit'] / 2:.2f} | {sleeps['buildah'] / 2:.2f} |")
print()
print("| push a new 114 MiB layer (half random) to a loopback registry | rbuild | BuildKit (dockerd 20.10) | Buildah |")
print("|---|---|---|---|")
print(f"| time, in units of rbuild's | 1 | {push['buildkit'] / push['rbuild']:.1f}× | {push['buildah'] / push['rbuild']:.1f}× |")
print()
print(f"Peak memory of rbuild exporting a 1 GiB image as an OCI archive: {export_rss_mib:.0f} MiB (issue 6 asks for under 200 MiB).")
print("\nThe demo is small (two stages, one RUN, two COPYs on a 2 MB base image), so these ratios mostly")
print("measure per-build and per-step overhead. The base image is present locally for all three builders.")
print("Each builder is timed as users run it: `rbuild build`, `docker build` (the docker CLI talking to")
print("dockerd's embedded BuildKit) and `buildah bud --layers` (with runc), all with `-q`.")
print("The per-RUN row is (time of 50 `RUN true` − time of 1) / 49 with `--no-cache`, each builder")
print("measured in the same run; issue 4 asks for at most 10 ms per RUN from rbuild.")
print("The big context has 5,000 files of 20 KB; the one-file change rewrites one of them before each")
print("run. Issue 5 asks for a no-op rebuild at most 0.25× BuildKit's time (and 50 ms), a one-file")
print("change at most 0.5×, and two 2 s stages in at most 2.05 s (1.02 units).")
print("Each push run pushes a layer nobody has compressed or pushed before (it is rebuilt, untimed,")
print("with a new marker first), so each builder compresses and uploads it: rbuild with its parallel")
print("gzip, Buildah with pgzip, dockerd one layer at a time. Issue 6 asks rbuild for at most 0.8×")
print("Buildah's time, i.e. Buildah at least 1.25× here.")
print()
print(open(sys.argv[13]).read())
print(open(sys.argv[14]).read())
print(open(sys.argv[18]).read())
print(open(sys.argv[15]).read())
print(open(sys.argv[16]).read())
print(open(sys.argv[11]).read())
print(open(sys.argv[12]).read())
print("## Frontend")
print()
print("`cargo bench -p rbuild-frontend` (criterion) parses and lowers a 2,000-instruction Dockerfile")
print("(20 stages mixing RUN, COPY, COPY --from, ENV, WORKDIR, LABEL, EXPOSE, with variables and")
print("continuations), with jemalloc as the rbuild binary does. Issue 3 sets a target of 5 ms; see")
print("the last run's numbers in the closing notes of the issue and `frontend/benches/parse_lower.rs`.")
print("`frontend/examples/profile_parse_lower.rs` runs the same workload under callgrind or perf.")
print()
print("## Layer diff")
print()
print("`cargo bench -p rbuild-runner --bench diff` (criterion, root) runs a step that changes one file")
print("over a 1 GiB image in the real sandbox, then times making its layer tar and diff id. Issue 4")
print("sets a target of 5 ms; the diff reads only the step's overlay upper directory, so its cost")
print("follows what the step changed, not the size of the image.")
print()
print(open(sys.argv[17]).read().rstrip())
PY
cat BENCHMARKS.md

#!/bin/bash
# A cold `COPY . /app` of a ~110 MiB source-like tree (Python's standard library, C/C++
# headers, two executables) plus a RUN that reads it, with the context and rbuild's state on
# one loop filesystem of each kind: ext4, xfs (reflink=1, mkfs.xfs's default) and btrfs.
# COPY writes with copy_file_range, which xfs and btrfs turn into a reflink (shared extents,
# no data copied) when source and destination share the filesystem; ext4 copies the data.
# Each filesystem also times `cp -a` of the tree (the data-copying floor) and, where the
# filesystem has them, `cp -a --reflink=always`. Prints a Markdown section with each time in
# units of rbuild's on ext4. Needs root and the reference builders (the busybox base).
set -euo pipefail
. "$(dirname "$0")/setup.sh"
bench_setup
runs=${FS_RUNS:-5}
need() { command -v "$1" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }
need mkfs.xfs xfsprogs
need mkfs.btrfs btrfs-progs
mounted=()
cleanup() {
  for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for fs in ext4 xfs btrfs; do
  img=$work/$fs.img mnt=$work/$fs
  truncate -s 3G "$img"
  case $fs in
    ext4) mkfs.ext4 -q -F "$img" ;;
    xfs) mkfs.xfs -q -f "$img" ;;
    btrfs) mkfs.btrfs -q -f "$img" >/dev/null ;;
  esac
  mkdir -p "$mnt" && mount -o loop "$img" "$mnt" && mounted+=("$mnt")
  ctx=$mnt/ctx
  mkdir -p "$ctx/src/bin"
  cp -a /usr/lib/python3.11 "$ctx/src/python"
  cp -a /usr/include/linux /usr/include/c++ /usr/include/x86_64-linux-gnu "$ctx/src/"
  cp /usr/bin/docker-registry /usr/bin/skopeo "$ctx/src/bin/"
  printf 'FROM 127.0.0.1:5000/library/busybox:1.35\nCOPY src/ /app/\nRUN find /app -type f | wc -l > /count\n' > "$ctx/Dockerfile"
  RBUILD_ROOT=$mnt/root $rbuild build -q --provenance=false -t fs-bench "$ctx" >/dev/null
done
mib=$(du -sm --apparent-size "$work/ext4/ctx/src" | cut -f1)
files=$(find "$work/ext4/ctx/src" -type f | wc -l)
args=(--style basic --warmup 1 --runs "$runs" --export-json "$work/fs.json")
for fs in ext4 xfs btrfs; do
  mnt=$work/$fs
  args+=(--prepare true -n "rbuild-$fs" "env RBUILD_ROOT=$mnt/root $rbuild build -q --provenance=false --no-cache -t fs-bench $mnt/ctx")
  args+=(--prepare "rm -rf $mnt/copy" -n "cp-$fs" "cp -a $mnt/ctx/src $mnt/copy")
  if [ "$fs" != ext4 ]; then
    args+=(--prepare "rm -rf $mnt/copy" -n "reflink-$fs" "cp -a --reflink=always $mnt/ctx/src $mnt/copy")
  fi
done
hyperfine "${args[@]}" >&2
python3 - "$work/fs.json" "$runs" "$mib" "$files" <<'PY'
import json, sys
t = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
runs, mib, files = sys.argv[2:5]
base = t["rbuild-ext4"]
print("## COPY on ext4, xfs and btrfs\n")
print(f"`bench/filesystems.sh` (hyperfine, median of {runs} runs): a cold `COPY` of {mib} MiB in")
print(f"{files} source-like files plus a RUN reading them, with the context and the state directory")
print("on one loop filesystem of each kind, against `cp -a` of the same tree there; times in units")
print("of rbuild's on ext4.\n")
print("| | rbuild (COPY + RUN) | `cp -a` | `cp -a --reflink=always` |")
print("|---|---|---|---|")
for fs in ["ext4", "xfs", "btrfs"]:
    reflink = f"{t[f'reflink-{fs}'] / base:.2f}" if f"reflink-{fs}" in t else "n/a"
    print(f"| {fs} | {t[f'rbuild-{fs}'] / base:.2f} | {t[f'cp-{fs}'] / base:.2f} | {reflink} |")
PY

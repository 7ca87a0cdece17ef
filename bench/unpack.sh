#!/bin/bash
# Pulling (downloading and unpacking) the ~460 MiB Debian+gcc base from the loopback registry,
# each run onto a fresh ext4 filesystem (a loop file made before the run, untimed): on a
# filesystem where a tree of that size was just deleted, ext4 spends seconds looking for inodes
# not freed recently (`recently_deleted` in perf), which drowns what rbuild does. With
# RBUILD_BEFORE set, that binary is timed too (a before/after). Prints hyperfine's summary.
# Needs root and the reference builders with --debian.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
bench_setup --debian
runs=${UNPACK_RUNS:-8}
image=127.0.0.1:5000/library/debian-gcc:bookworm
mnt=$work/mnt
cat > "$work/fresh.sh" <<EOF
#!/bin/sh
umount $mnt 2>/dev/null || true
rm -f $work/fs.img && truncate -s 4G $work/fs.img && mkfs.ext4 -q -F $work/fs.img
mkdir -p $mnt && mount -o loop $work/fs.img $mnt
EOF
chmod +x "$work/fresh.sh"
trap 'umount "$mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
args=(--style basic --runs "$runs")
if [ -n "${RBUILD_BEFORE:-}" ]; then
  args+=(--prepare "$work/fresh.sh" -n before "$RBUILD_BEFORE --root $mnt/root pull -q $image")
fi
args+=(--prepare "$work/fresh.sh" -n rbuild "$rbuild --root $mnt/root pull -q $image")
hyperfine "${args[@]}"

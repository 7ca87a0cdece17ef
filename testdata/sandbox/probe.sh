#!/bin/sh
# How the kernel's interfaces look from a RUN step: for each path that runc (and so BuildKit)
# masks or makes read-only, whether it exists, what a read or a listing gives, and whether it is
# a mount point, read-only or not (and, for a directory, of which filesystem). One line per path;
# it changes nothing (a setting is written back with the value it has).
mountof() {
  # The mount on top at exactly $1: "ro tmpfs", "rw proc", or nothing.
  awk -v p="$1" '$5 == p { for (i = 7; $i != "-"; i++) ; split($6, o, ","); m = o[1] " " $(i + 1) } END { print m }' /proc/self/mountinfo
}
for p in /proc/sys /proc/sysrq-trigger /proc/irq /proc/bus /proc/fs \
         /proc/kcore /proc/keys /proc/timer_list /proc/latency_stats /proc/timer_stats \
         /proc/sched_debug /proc/acpi /proc/scsi /proc/asound \
         /sys/firmware /sys/devices/virtual/powercap /sys /proc; do
  if [ ! -e "$p" ]; then echo "$p: absent"; continue; fi
  m=$(mountof "$p"); m=${m:-none}
  if [ -d "$p" ]; then
    if [ -z "$(ls -A "$p" 2>/dev/null)" ]; then l=empty; else l=entries; fi
    echo "$p: dir list=$l mount=$m"
  else
    # A masked file is the sandbox's /dev/null, whichever filesystem that lives on.
    if [ -c "$p" ]; then k=chardev; else k=file; fi
    if [ -z "$(head -c 64 "$p" 2>/dev/null)" ]; then r=empty; else r=data; fi
    echo "$p: $k read=$r mount=${m%% *}"
  fi
done
for f in /proc/sys/vm/swappiness /proc/sys/kernel/hostname; do
  v=$(cat $f)
  if (echo "$v" > $f) 2>/tmp/probe.err; then echo "$f: write ok"; else echo "$f: write refused: $(sed 's/.*: //' /tmp/probe.err)"; fi
done

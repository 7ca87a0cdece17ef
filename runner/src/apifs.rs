//! The API filesystems of the sandbox (`/proc`, `/dev`, `/sys`) and the parts of them a step
//! may not change or read: the masked and read-only paths of the OCI runtime defaults that
//! containerd gives runc, and so BuildKit's RUN steps.
//!
//! Without them a step as root writes the host's kernel settings through `/proc/sys` (its
//! `vm/swappiness`, `vm/drop_caches`: the pid and mount namespaces do not cover sysctls that are
//! not per-namespace) and reads `/proc/keys` or `/proc/timer_list` of the whole machine.
//! `tests/sandbox.rs` compares every path with what a BuildKit RUN step showed
//! (`testdata/sandbox/buildkit-proc.txt`).
//!
//! Runs in the sandbox's PID 1, before `pivot_root`: paths are under the new root, and the
//! host's `/dev/null` is still visible.

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use std::path::Path;

/// Paths hidden from a step: a file gets `/dev/null` over it (reads are empty), a directory an
/// empty read-only tmpfs. containerd's `populateDefaultUnixSpec`, as current BuildKit uses it
/// (v0.8 lacked `/proc/asound` and `/sys/devices/virtual/powercap`, the latter hidden since
/// CVE-2020-8694 made RAPL energy counters a side channel).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// Paths a step may read but not write: bind-mounted onto themselves read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The flags of every API filesystem mount but `/dev`.
pub(crate) const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

pub(crate) fn mount_err(what: &str, target: &Path, e: impl std::fmt::Display) -> String {
    format!("mounting {what} on {}: {e}", target.display())
}

/// Mounts `/proc`, `/dev` (with `dev_files`: path under `/dev`, content, mode) and `/sys` under
/// `root`, then masks and write-protects the kernel's interfaces in them (unless
/// `privileged`).
pub(crate) fn mount_all(
    root: &Path,
    dev_files: &[(String, Vec<u8>, u32)],
    shm_size: u64,
    privileged: bool,
) -> Result<(), String> {
    let none: Option<&str> = None;
    let proc_dir = root.join("proc");
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        none,
    )
    .map_err(|e| mount_err("proc", &proc_dir, e))?;
    mount_dev(root, dev_files, shm_size)?;
    let sys = root.join("sys");
    let _ = mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        match privileged {
            true => NOSUID_NODEV_NOEXEC,
            false => NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
        },
        none,
    );
    // A privileged step (RUN --security=insecure, allowed by the user) sees the kernel's
    // interfaces as Docker's --privileged does.
    if privileged {
        return Ok(());
    }
    protect(root)
}

/// `/dev`: a tmpfs with the host's harmless devices bind-mounted, devpts, shm (of `shm_size`
/// bytes) and mqueue.
fn mount_dev(
    root: &Path,
    dev_files: &[(String, Vec<u8>, u32)],
    shm_size: u64,
) -> Result<(), String> {
    let none: Option<&str> = None;
    let dev = root.join("dev");
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| mount_err("tmpfs", &dev, e))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        std::fs::write(&target, b"").map_err(|e| format!("creating {}: {e}", target.display()))?;
        let source = Path::new("/dev").join(node);
        mount(Some(&source), &target, none, MsFlags::MS_BIND, none)
            .map_err(|e| mount_err(&source.to_string_lossy(), &target, e))?;
    }
    for dir in ["pts", "shm", "mqueue"] {
        std::fs::create_dir(dev.join(dir)).map_err(|e| format!("creating /dev/{dir}: {e}"))?;
    }
    let devpts = |options: &str| {
        mount(
            Some("devpts"),
            &dev.join("pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(options),
        )
    };
    // Group 5 (tty) as runc gives it; a rootless sandbox that maps only the user's own ids has
    // no group 5, and gets the mount without it.
    devpts("newinstance,ptmxmode=0666,mode=0620,gid=5")
        .or_else(|_| devpts("newinstance,ptmxmode=0666,mode=0620"))
        .map_err(|e| mount_err("devpts", &dev.join("pts"), e))?;
    mount(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        NOSUID_NODEV_NOEXEC,
        Some(&*format!("mode=1777,size={shm_size}")),
    )
    .map_err(|e| mount_err("shm", &dev.join("shm"), e))?;
    // mqueue and sysfs are conveniences; a kernel without them still runs most builds.
    let _ = mount(
        Some("mqueue"),
        &dev.join("mqueue"),
        Some("mqueue"),
        NOSUID_NODEV_NOEXEC,
        none,
    );
    for (rel, data, mode) in dev_files {
        use std::os::unix::fs::PermissionsExt;
        let target = dev.join(rel);
        if !target.starts_with(&dev) || rel.split('/').any(|c| c == "..") {
            return Err(format!("{rel} is not a path under /dev"));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&target, data).map_err(|e| format!("creating /dev/{rel}: {e}"))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("chmod /dev/{rel}: {e}"))?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|e| format!("creating /dev/{link}: {e}"))?;
    }
    Ok(())
}

/// Applies [`READONLY_PATHS`] and [`MASKED_PATHS`] under `root`. A path the kernel does not
/// have (no ACPI, no SCSI, a `/sys` that could not be mounted) is skipped, as runc does; any
/// other failure fails the step rather than run it unprotected.
fn protect(root: &Path) -> Result<(), String> {
    let none: Option<&str> = None;
    for path in READONLY_PATHS {
        let target = root.join(&path[1..]);
        match mount(
            Some(&target),
            &target,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        ) {
            Err(Errno::ENOENT) => continue,
            other => other.map_err(|e| mount_err("a read-only bind", &target, e))?,
        }
        // The flags the mount has must be kept: a user namespace may not drop them.
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_REC
            | MsFlags::MS_RDONLY
            | NOSUID_NODEV_NOEXEC;
        mount(none, &target, none, flags, none)
            .map_err(|e| mount_err("a read-only remount", &target, e))?;
    }
    for path in MASKED_PATHS {
        let target = root.join(&path[1..]);
        let Ok(meta) = std::fs::symlink_metadata(&target) else {
            continue;
        };
        let result = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
                Some("size=0,mode=755"),
            )
        } else {
            mount(Some("/dev/null"), &target, none, MsFlags::MS_BIND, none)
        };
        match result {
            Err(Errno::ENOENT) => {}
            other => other.map_err(|e| mount_err("a mask", &target, e))?,
        }
    }
    Ok(())
}

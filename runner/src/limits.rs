//! What the build's `--add-host`, `--ulimit`, `--shm-size` and `--cgroup-parent` change about
//! a step's sandbox ([`rbuild_solver::ExecLimits`]): extra `/etc/hosts` lines, resource limits
//! set before the command runs, the size of `/dev/shm`, and a cgroup of its own under the
//! given parent (in each hierarchy, v2 or v1), whose limits then bound the step.

use rbuild_solver::{ExecLimits, Ulimit};
use std::path::PathBuf;

/// The size of `/dev/shm` without `--shm-size` (Docker's default, 64 MiB).
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// `/etc/hosts` lines for `--add-host`, as BuildKit writes them (`IP<tab>HOST`).
pub fn hosts_lines(limits: &ExecLimits) -> String {
    limits
        .extra_hosts
        .iter()
        .map(|h| format!("{}\t{}\n", h.ip, h.host))
        .collect()
}

/// The `setrlimit` resource of Docker's ulimit name.
pub fn resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource;
    Some(match name {
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        "as" => Resource::RLIMIT_AS,
        _ => return None,
    })
}

/// Sets the step's resource limits (in the sandbox, before the command runs).
pub fn apply_ulimits(ulimits: &[Ulimit]) -> Result<(), String> {
    let value = |v: i64| match v {
        v if v < 0 => nix::sys::resource::RLIM_INFINITY,
        v => v as u64,
    };
    for u in ulimits {
        let resource = resource(&u.name).ok_or_else(|| format!("unknown ulimit {}", u.name))?;
        nix::sys::resource::setrlimit(resource, value(u.soft), value(u.hard)).map_err(|e| {
            format!(
                "--ulimit {}={}:{}: {e} (a hard limit above this process's own needs root)",
                u.name, u.soft, u.hard
            )
        })?;
    }
    Ok(())
}

/// A step's own cgroup under `--cgroup-parent`, in every cgroup hierarchy the machine mounts
/// (the v2 one, or each v1 controller's, as runc makes a `cgroupsPath`), removed when dropped
/// (after the step's processes are gone).
pub struct StepCgroup {
    dirs: Vec<PathBuf>,
}

/// The mount points of the machine's cgroup hierarchies (v1 and v2), from `mountinfo`. v1's
/// cpuset is left out: a new cpuset cgroup has no CPUs until someone gives it some.
fn hierarchies() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or_default();
            let point = left.split(' ').nth(4)?;
            let wanted = fstype == "cgroup2"
                || (fstype == "cgroup" && !options.split(',').any(|o| o == "cpuset"));
            wanted.then(|| PathBuf::from(point.replace("\\040", " ")))
        })
        .collect()
}

impl StepCgroup {
    /// Creates `PARENT/rbuild-step-<pid>-<n>` (the parent too, if missing) in each hierarchy.
    pub fn create(parent: &str) -> Result<StepCgroup, String> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let clean = rbuild_solver::pathname::clean_relative(parent);
        let roots = hierarchies();
        if roots.is_empty() {
            return Err(format!(
                "--cgroup-parent {parent}: this machine mounts no cgroup hierarchy"
            ));
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("rbuild-step-{}-{n}", std::process::id());
        let mut made = StepCgroup { dirs: Vec::new() };
        for root in roots {
            let dir = root.join(&clean).join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| {
                format!(
                    "--cgroup-parent {parent}: creating {}: {e} (rootless rbuild can use only \
                     a cgroup delegated to the user)",
                    dir.display()
                )
            })?;
            made.dirs.push(dir);
        }
        Ok(made)
    }

    /// The files a process writes `0` to, to move itself in.
    pub fn procs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        // Empty once the step's processes are gone; a kernel still reaping them says EBUSY.
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Moves the calling process into the cgroups whose `cgroup.procs` are `procs`.
pub fn join(procs: &[PathBuf]) -> Result<(), String> {
    for p in procs {
        std::fs::write(p, b"0").map_err(|e| format!("joining {}: {e}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_solver::HostEntry;

    #[test]
    fn hosts_lines_as_buildkit() {
        let limits = ExecLimits {
            extra_hosts: vec![
                HostEntry {
                    host: "db".into(),
                    ip: "10.1.2.3".into(),
                },
                HostEntry {
                    host: "v6".into(),
                    ip: "::1".into(),
                },
            ],
            ..ExecLimits::default()
        };
        assert_eq!(hosts_lines(&limits), "10.1.2.3\tdb\n::1\tv6\n");
        assert!(resource("nofile").is_some() && resource("files").is_none());
    }
}

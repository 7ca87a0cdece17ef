//! Rootless: an unprivileged rbuild moves itself into a user namespace where it is root.
//!
//! At start, before any thread exists (`unshare(CLONE_NEWUSER)` requires a single-threaded
//! process), rbuild creates a user namespace and maps itself to uid/gid 0 in it. When the user
//! has subordinate ids (`/etc/subuid`, `/etc/subgid`) and `newuidmap`/`newgidmap` (Debian's
//! `uidmap`) are installed, a helper process maps those too, as ids 1…N, so images whose files
//! belong to other users keep their owners; otherwise only the user's own id is mapped and
//! extracted files all belong to the user (ownership in layers is then not preserved).
//!
//! Everything else works as for root: each step's sandbox makes its own mount, pid, uts and ipc
//! namespaces inside this user namespace, and overlayfs (Linux 5.11+) is mounted with
//! `userxattr` (see `rbuild_runner::sys::userns`). Where an overlay cannot be mounted, the
//! native snapshotter is chosen automatically.

use nix::unistd::{Gid, Pid, Uid};
use std::io::{Read, Write};
use std::path::Path;

/// Why rbuild could not enter a user namespace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{what}")]
    System {
        /// What rbuild was doing.
        what: &'static str,
        /// The system's error.
        #[source]
        source: nix::errno::Errno,
    },
    /// Writing an id map or talking to the helper failed.
    #[error(transparent)]
    Io(#[from] crate::errors::Io),
    /// `newuidmap`/`newgidmap` refused.
    #[error("newuidmap/newgidmap could not map the subordinate ids of {0}")]
    Helpers(String),
}

/// Entering's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn system(what: &'static str) -> impl FnOnce(nix::errno::Errno) -> Error {
    move |source| Error::System { what, source }
}

/// A range of subordinate ids: the first host id and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u64,
    count: u64,
}

/// The subordinate range of `user` (name or numeric id) in a `/etc/subuid`-format file.
fn sub_range(file: &str, name: &str, id: u32) -> Option<Range> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
            (owner == name || owner == id.to_string()).then_some(Range {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            })
        })
        .find(|r| r.count > 0)
}

fn find_program(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Enters a user namespace as its root if rbuild runs unprivileged; does nothing as root.
/// Must be called while the process has a single thread.
pub fn enter() -> Result<()> {
    let (uid, gid) = (Uid::current(), Gid::current());
    if Uid::effective().is_root() {
        return Ok(());
    }
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let helpers = match (
        sub_range("/etc/subuid", &name, uid.as_raw()),
        sub_range("/etc/subgid", &name, gid.as_raw()),
        find_program("newuidmap"),
        find_program("newgidmap"),
    ) {
        (Some(u), Some(g), Some(newuidmap), Some(newgidmap)) => Some((u, g, newuidmap, newgidmap)),
        _ => None,
    };
    let pid = nix::unistd::getpid();
    // The helper must run outside the new namespace: it waits until we have unshared, then
    // maps our ids with the setuid helpers.
    let sync = match &helpers {
        Some((u, g, newuidmap, newgidmap)) => {
            let (r, w) = nix::unistd::pipe().map_err(system("making a pipe to the id mapper"))?;
            let map = |program: &Path, own: u32, range: &Range| {
                std::process::Command::new(program)
                    .arg(pid.as_raw().to_string())
                    .args(["0", &own.to_string(), "1"])
                    .args(["1", &range.start.to_string(), &range.count.to_string()])
                    .status()
            };
            // SAFETY: the process is single-threaded here (the caller's contract), so the child
            // may do anything.
            match unsafe { nix::unistd::fork() }.map_err(system("starting the id mapper"))? {
                nix::unistd::ForkResult::Child => {
                    drop(w);
                    let mut byte = [0u8; 1];
                    let ok = std::fs::File::from(r).read_exact(&mut byte).is_ok()
                        && map(newuidmap, uid.as_raw(), u).is_ok_and(|s| s.success())
                        && map(newgidmap, gid.as_raw(), g).is_ok_and(|s| s.success());
                    std::process::exit(if ok { 0 } else { 1 });
                }
                nix::unistd::ForkResult::Parent { child } => Some((child, w)),
            }
        }
        None => None,
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(system(
        "creating a user namespace for a rootless build (is kernel.unprivileged_userns_clone enabled?)",
    ))?;
    match sync {
        Some((helper, w)) => {
            let told = std::fs::File::from(w).write_all(b"x");
            let status = nix::sys::wait::waitpid(helper, None)
                .map_err(system("waiting for the id mapper"))?;
            told.map_err(crate::errors::io("telling the id mapper to start"))?;
            if !matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)) {
                return Err(Error::Helpers(name));
            }
        }
        None => map_self(pid, uid, gid)?,
    }
    Ok(())
}

/// Maps only our own ids (no helper needed); setgroups must be denied first.
fn map_self(pid: Pid, uid: Uid, gid: Gid) -> Result<()> {
    let proc = Path::new("/proc").join(pid.as_raw().to_string());
    std::fs::write(proc.join("setgroups"), "deny")
        .map_err(crate::errors::io("writing setgroups"))?;
    std::fs::write(proc.join("uid_map"), format!("0 {uid} 1"))
        .map_err(crate::errors::io("writing uid_map"))?;
    std::fs::write(proc.join("gid_map"), format!("0 {gid} 1"))
        .map_err(crate::errors::io("writing gid_map"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subuid");
        std::fs::write(&file, "alice:100000:65536\n1001:200000:1000\nbob:0:0\n").unwrap();
        let f = file.to_str().unwrap();
        assert_eq!(
            sub_range(f, "alice", 1000),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(sub_range(f, "carol", 1001).map(|r| r.start), Some(200000));
        assert_eq!(sub_range(f, "bob", 1002), None);
    }
}

//! `flock`s: the state directory's lock (shared by builds, exclusive for `prune` and `check`
//! and for cleaning up after killed processes), and exclusive locks on files (`index.lock`,
//! step claims).

use crate::store::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::Path;

/// Opens (creating) the lock file `path`.
pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Takes an exclusive `flock` on the lock file `path` (created if needed), waiting for other
/// holders. It is released when the returned lock is dropped or the process ends.
pub fn lock_exclusive(path: &Path) -> Result<Flock<File>> {
    Flock::lock(open_lock_file(path)?, FlockArg::LockExclusive).map_err(|(_, e)| locking(path, e))
}

/// Locks the state directory: exclusively if `exclusive`, else shared, but exclusively
/// (returning `true`) when no other process holds it, so that the caller can clean up.
pub(crate) fn take_lock(file: File, path: &Path, exclusive: bool) -> Result<(Flock<File>, bool)> {
    let err = |e: nix::errno::Errno| locking(path, e);
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok((lock, true)),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(err(e)),
    };
    let waiting = || {
        eprintln!(
            "waiting for another rbuild using {} to finish…",
            path.parent().unwrap_or(path).display()
        )
    };
    if exclusive {
        waiting();
        return Flock::lock(file, FlockArg::LockExclusive)
            .map(|lock| (lock, true))
            .map_err(|(_, e)| err(e));
    }
    let file = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(lock) => return Ok((lock, false)),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(err(e)),
    };
    // A prune or check holds it alone.
    waiting();
    Flock::lock(file, FlockArg::LockShared)
        .map(|lock| (lock, false))
        .map_err(|(_, e)| err(e))
}

/// A failed `flock` of `path`.
pub(crate) fn locking(path: &Path, e: nix::errno::Errno) -> crate::store::Error {
    crate::errors::io(format!("locking {}", path.display()))(e.into()).into()
}

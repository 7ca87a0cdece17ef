//! The state directory (`--root`): where images, snapshots and the cache index live.
//!
//! ```text
//! content/     OCI image layout: blobs/sha256/…, index.json with the tagged images
//! snapshots/   unpacked layers (see rbuild_runner::snapshot)
//! cache.db     the cache index (see rbuild_solver::cache)
//! run/         mount points and generated files of running steps
//! containers/  writable layers kept by `rbuild run` without --rm
//! lock         held exclusively by a running rbuild; see [`State::open`]
//! ```

use crate::store::layout::Store;
use crate::store::lock::{lock_exclusive, open_lock_file, take_lock};
use crate::store::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use rbuild_runner::Snapshotter;
use rbuild_solver::CacheIndex;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether overlayfs can be mounted for steps, probed once per kernel and remembered in the
/// state directory (`snapshotter`: the kernel release and the answer), since probing costs a
/// fork and a mount on every invocation.
fn overlay_works_here(root: &Path, snapshots: &Snapshotter) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let record = root.join("snapshotter");
    if let Ok(text) = std::fs::read_to_string(&record)
        && let Some((kernel, answer)) = text.trim().rsplit_once(' ')
        && kernel == release.trim()
    {
        return answer == "overlayfs";
    }
    let works = snapshots.overlay_works();
    let answer = if works { "overlayfs" } else { "native" };
    // Best effort: without the record the next run probes again.
    let tmp = root.join(format!("snapshotter.tmp-{}", std::process::id()));
    if std::fs::write(&tmp, format!("{} {answer}\n", release.trim())).is_ok() {
        let _ = std::fs::rename(&tmp, &record);
    }
    works
}

/// Which snapshotter steps use (`--snapshotter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotterChoice {
    /// overlayfs when it can be mounted, else native.
    Auto,
    /// overlayfs mounts (fast: nothing is copied).
    Overlayfs,
    /// Copies of the layers, and a comparison afterwards (works on any filesystem).
    Native,
}

/// An opened state directory. Dropping it releases the lock.
pub struct State {
    /// The directory.
    pub root: PathBuf,
    /// Images and blobs.
    pub store: Store,
    /// Unpacked layers.
    pub snapshots: Snapshotter,
    /// Cache key → outputs.
    pub cache: Arc<CacheIndex>,
    /// Blobs known elsewhere (imported cache), fetched when needed.
    pub lazy: crate::store::lazy::LazyBlobs,
    /// (Dropped before the lock.)
    run_dirs: RunDirs,
    lock: std::sync::Mutex<Option<Flock<File>>>,
}

/// The run directories of this process's finished steps, for its next steps (see
/// [`State::run_dir`]); removed when the state is dropped.
#[derive(Default)]
struct RunDirs(std::sync::Mutex<Vec<PathBuf>>);

impl Drop for RunDirs {
    fn drop(&mut self) {
        let dirs = self.0.get_mut().map(std::mem::take).unwrap_or_default();
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The files a sandbox writes into its run directory for every step, rewritten by the next.
const RUN_DIR_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// One step's run directory (see [`State::run_dir`]): handed back when dropped.
pub struct RunDir<'a> {
    path: PathBuf,
    pool: &'a RunDirs,
}

impl std::ops::Deref for RunDir<'_> {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir<'_> {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        if tidy_run_dir(&path).is_ok() {
            self.pool.0.lock().expect("run dirs").push(path);
        } else {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Removes what a step left in its run directory but the generated files and empty
/// directories (mount points, which the step's mounts covered only in its own namespace).
fn tidy_run_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if std::fs::read_dir(entry.path())?.next().is_some() {
                std::fs::remove_dir_all(entry.path())?;
            }
        } else if !(kind.is_file() && RUN_DIR_FILES.iter().any(|f| entry.file_name() == *f)) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// When `message` tells of a full file system (ENOSPC, or SQLite's SQLITE_FULL from the cache
/// index), what to say about it: how much room the state directory `root` has left, and how to
/// make some. The failing write may also have been to an output's destination; the free space
/// tells which.
pub fn full_disk_hint(root: &Path, message: &str) -> Option<String> {
    if !message.contains("os error 28") && !message.contains("database or disk is full") {
        return None;
    }
    let free = nix::sys::statvfs::statvfs(root)
        .map(|s| crate::units::human(s.blocks_available() * s.fragment_size()))
        .unwrap_or_else(|_| "an unknown amount".into());
    Some(format!(
        "a file system is full (the state directory {} has {free} free): `rbuild du` shows \
         what it holds, `rbuild prune` frees build cache; nothing finished was lost",
        root.display()
    ))
}

/// The default state directory: `/var/lib/rbuild` for root, else `$XDG_DATA_HOME/rbuild`
/// (`~/.local/share/rbuild`).
pub fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/rbuild");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("rbuild");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/rbuild")
}

impl State {
    /// Opens (creating if needed) the state directory, sharing it with other rbuild
    /// processes: builds on one root run at the same time, and a step two of them need is
    /// computed once (see [`State::claim`]).
    ///
    /// The lock file is held shared. If no other process holds it, this one first takes it
    /// exclusively and removes what killed processes left behind (unfinished blobs,
    /// snapshots, downloads, run directories, claim files), which is only safe while nothing
    /// else runs.
    pub fn open(root: &Path, snapshotter: SnapshotterChoice) -> Result<State> {
        State::open_with(root, snapshotter, false)
    }

    /// Opens the state directory for this process alone (`prune`, `check`), waiting for
    /// running builds to finish.
    pub fn open_exclusive(root: &Path, snapshotter: SnapshotterChoice) -> Result<State> {
        State::open_with(root, snapshotter, true)
    }

    fn open_with(root: &Path, snapshotter: SnapshotterChoice, exclusive: bool) -> Result<State> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating the state directory {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving {}", root.display()))?;
        let lock_path = root.join("lock");
        let (lock, alone) = take_lock(open_lock_file(&lock_path)?, &lock_path, exclusive)?;
        let store = Store::open(&root.join("content"))?;
        let snapshots = Snapshotter::open(&root.join("snapshots"))
            .with_context(|| format!("opening {}/snapshots", root.display()))?;
        let native = match snapshotter {
            SnapshotterChoice::Native => true,
            SnapshotterChoice::Overlayfs => false,
            SnapshotterChoice::Auto => !overlay_works_here(&root, &snapshots),
        };
        let snapshots = snapshots.with_native(native);
        let run = root.join("run");
        let claims = root.join("claims");
        if alone {
            store
                .clean_ingest()
                .context("removing unfinished blobs of an interrupted build")?;
            snapshots
                .clean_tmp()
                .context("removing unfinished snapshots of an interrupted build")?;
            for (dir, what) in [(&run, "run directories"), (&claims, "claim files")] {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .with_context(|| format!("removing the {what} of an interrupted build"))?;
                }
            }
        }
        std::fs::create_dir_all(&run)?;
        std::fs::create_dir_all(&claims)?;
        let cache = Arc::new(CacheIndex::open(&root.join("cache.db"))?);
        let state = State {
            root,
            store,
            snapshots,
            cache,
            lazy: Default::default(),
            run_dirs: Default::default(),
            lock: std::sync::Mutex::new(Some(lock)),
        };
        if alone {
            crate::store::downloads::clean_tmp(&state.downloads_dir())
                .context("removing unfinished downloads")?;
            if !exclusive {
                // Cleaned up: now others may share the directory.
                let guard = state.lock.lock().expect("state lock");
                if let Some(lock) = guard.as_ref() {
                    lock.relock(FlockArg::LockShared)
                        .map_err(|e| crate::store::lock::locking(&lock_path, e))?;
                }
            }
        }
        Ok(state)
    }

    /// Claims the step with cache key `key` for this process (see
    /// `rbuild_solver::Worker::claim`): an exclusive `flock` on `claims/<key>`, waiting while
    /// another process holds it. The kernel releases it if the process dies; the files are
    /// removed by the next process that opens the directory alone.
    pub fn claim(&self, key: &rbuild_solver::Digest) -> Result<Flock<File>> {
        lock_exclusive(&self.root.join("claims").join(key.hex()))
    }

    /// Lets other rbuild processes use the state directory while this one goes on (with
    /// directories they do not clean up, such as `containers/`).
    pub fn release_lock(&self) {
        self.lock.lock().expect("state lock").take();
    }

    /// Where blobs are known to be in registries (see `crate::registry::sources`).
    pub fn blob_sources(&self) -> crate::registry::sources::BlobSources {
        crate::registry::sources::BlobSources::new(self.root.join("blob-sources"))
    }

    /// Where `ADD https://…` downloads live (see [`crate::store::downloads`]).
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Where the directories of RUN cache mounts live (see `crate::worker::mounts`).
    pub fn cache_mounts_dir(&self) -> PathBuf {
        self.root.join("cache-mounts")
    }

    /// A directory under `run/` for one step's mount points and generated files: one an earlier
    /// step of this process left (its empty directories and generated files, which the
    /// sandbox rewrites), else a new one. Making and removing one per step cost a step several
    /// inodes, which ext4 without a journal (as on this machine's VMs) then skips on every
    /// allocation for a minute, and a discard each where the filesystem is mounted so.
    pub fn run_dir(&self) -> Result<RunDir<'_>> {
        let reused = self.run_dirs.0.lock().expect("run dirs").pop();
        let path = match reused {
            Some(path) => path,
            None => {
                let dir = self
                    .root
                    .join("run")
                    .join(rbuild_runner::snapshot::unique_name());
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                dir
            }
        };
        Ok(RunDir {
            path,
            pool: &self.run_dirs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_directory_goes_back_with_only_its_mount_points_and_generated_files() {
        let root = tempfile::tempdir().unwrap();
        let state = State::open(root.path(), SnapshotterChoice::Native).unwrap();
        let first = state.run_dir().unwrap();
        let path = first.to_path_buf();
        for dir in ["rootfs", "m0", "stubs/etc", "copy/usr"] {
            std::fs::create_dir_all(path.join(dir)).unwrap();
        }
        for file in ["hosts", "hostname", "resolv.conf", "copy/usr/x", "other"] {
            std::fs::write(path.join(file), "x").unwrap();
        }
        drop(first);
        let mut left: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["hostname", "hosts", "m0", "resolv.conf", "rootfs"]);
        // The next step gets it; one at the same time gets another.
        let again = state.run_dir().unwrap();
        assert_eq!(*again, *path);
        let other = state.run_dir().unwrap();
        assert_ne!(*other, *path);
        drop((again, other));
        drop(state);
        assert_eq!(
            std::fs::read_dir(root.path().join("run")).unwrap().count(),
            0
        );
    }
}

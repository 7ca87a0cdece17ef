//! A persistent stat cache for content hashing of local sources: a file whose device, inode,
//! size, modification and change times are what they were when it was hashed is not read
//! again. It lives in the cache index's database (table `stat`), loaded for one context
//! directory before a solve and written back after it.
//!
//! File times have a coarse granularity (a few milliseconds on most kernels), so a file
//! changed twice within one tick, keeping its size, could keep its times. As git does for its
//! index, an entry is only recorded for a file whose change time is older than
//! [`RACY_WINDOW`]: a file that changed very recently is hashed again next time.

use crate::digest::Digest;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How old a file's last change must be for its digest to be remembered.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies a file's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatKey {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime: i64,
    /// Change time, nanoseconds since the epoch.
    pub ctime: i64,
}

impl StatKey {
    /// The key of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> StatKey {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

/// Digests of files under one directory, by absolute path.
#[derive(Debug, Default)]
pub struct StatCache {
    root: PathBuf,
    known: HashMap<PathBuf, (StatKey, Digest)>,
    /// Entries learned during this solve, to write back.
    new: Mutex<Vec<(PathBuf, StatKey, Digest)>>,
}

impl StatCache {
    /// A cache for files under `root` that knows `known`.
    pub fn new(root: &Path, known: HashMap<PathBuf, (StatKey, Digest)>) -> StatCache {
        StatCache {
            root: root.to_path_buf(),
            known,
            new: Mutex::new(Vec::new()),
        }
    }

    /// The directory this cache is for.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The digest recorded for `path` in the state `key`, if any.
    pub fn get(&self, path: &Path, key: &StatKey) -> Option<Digest> {
        self.known
            .get(path)
            .filter(|(k, _)| k == key)
            .map(|(_, d)| d.clone())
    }

    /// Records a digest just computed (unless the file changed too recently to be sure).
    pub fn put(&self, path: &Path, key: StatKey, digest: Digest) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        if now - key.ctime < RACY_WINDOW.as_nanos() as i64 {
            return;
        }
        self.new
            .lock()
            .expect("stat cache")
            .push((path.to_path_buf(), key, digest));
    }

    /// The entries learned since this cache was made.
    pub fn take_new(&self) -> Vec<(PathBuf, StatKey, Digest)> {
        std::mem::take(&mut *self.new.lock().expect("stat cache"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_on_the_whole_key_and_recent_changes_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let key = StatKey::of(&std::fs::metadata(&file).unwrap());
        let digest = Digest::of(b"x");
        let cache = StatCache::new(
            dir.path(),
            HashMap::from([(file.clone(), (key, digest.clone()))]),
        );
        assert_eq!(cache.get(&file, &key), Some(digest.clone()));
        let changed = StatKey { size: 2, ..key };
        assert_eq!(cache.get(&file, &changed), None);
        // Just written: too recent to remember.
        cache.put(&file, key, digest.clone());
        assert!(cache.take_new().is_empty());
        let old = StatKey {
            ctime: key.ctime - 10_000_000_000,
            ..key
        };
        cache.put(&file, old, digest);
        assert_eq!(cache.take_new().len(), 1);
    }
}

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
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

/// Recorded digests by absolute path (FxHash: thousands of lookups per build, no untrusted
/// keys).
pub type Known = HashMap<PathBuf, (StatKey, Digest), rustc_hash::FxBuildHasher>;

/// Digests of files under one directory, by absolute path.
#[derive(Debug, Default)]
pub struct StatCache {
    root: PathBuf,
    known: Known,
    /// Entries learned during this solve, to write back.
    new: Mutex<Vec<(PathBuf, StatKey, Digest)>>,
}

impl StatCache {
    /// A cache for files under `root` that knows `known`.
    pub fn new(root: &Path, known: Known) -> StatCache {
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

    /// Every entry, the known ones updated by `new`, in the stored form: per entry the path
    /// relative to the root (u32 length, bytes), device, inode, size, modification and change
    /// times (8 bytes each, little-endian) and the digest (u8 length, text). One value per
    /// directory reads back an order of magnitude faster than a row per file.
    pub fn encode(&self, new: &[(PathBuf, StatKey, Digest)]) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.known.len() + new.len()) * 128);
        let updated: std::collections::HashSet<&Path> =
            new.iter().map(|(p, _, _)| p.as_path()).collect();
        let known = self
            .known
            .iter()
            .filter(|(p, _)| !updated.contains(p.as_path()))
            .map(|(p, (k, d))| (p.as_path(), k, d));
        for (path, key, digest) in known.chain(new.iter().map(|(p, k, d)| (p.as_path(), k, d))) {
            let Ok(rel) = path.strip_prefix(&self.root) else {
                continue;
            };
            let rel = rel.as_os_str().as_bytes();
            out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
            out.extend_from_slice(rel);
            for n in [key.dev, key.ino, key.size] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            for n in [key.mtime, key.ctime] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            let d = digest.as_str().as_bytes();
            out.push(d.len() as u8);
            out.extend_from_slice(d);
        }
        out
    }

    /// The entries of [`StatCache::encode`]'s output for `root` (a damaged tail is ignored:
    /// its files are hashed again).
    pub fn decode(root: &Path, data: &[u8]) -> Known {
        fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = data.split_at_checked(n)?;
            *data = rest;
            Some(head)
        }
        fn u64_of(data: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(data, 8)?.try_into().ok()?))
        }
        let mut known = Known::with_capacity_and_hasher(data.len() / 128, Default::default());
        let mut data = data;
        let root = root.as_os_str().as_bytes();
        let next = |data: &mut &[u8]| -> Option<(PathBuf, StatKey, Digest)> {
            let len = u32::from_le_bytes(take(data, 4)?.try_into().ok()?) as usize;
            // root/rel, put together by hand: Path::join's checks cost more than the rest.
            let mut path = Vec::with_capacity(root.len() + 1 + len);
            path.extend_from_slice(root);
            path.push(b'/');
            path.extend_from_slice(take(data, len)?);
            let key = StatKey {
                dev: u64_of(data)?,
                ino: u64_of(data)?,
                size: u64_of(data)?,
                mtime: u64_of(data)? as i64,
                ctime: u64_of(data)? as i64,
            };
            let len = take(data, 1)?[0] as usize;
            let digest = Digest::parse(std::str::from_utf8(take(data, len)?).ok()?)?;
            Some((
                PathBuf::from(std::ffi::OsString::from_vec(path)),
                key,
                digest,
            ))
        };
        while let Some((path, key, digest)) = next(&mut data) {
            known.insert(path, (key, digest));
        }
        known
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
            Known::from_iter([(file.clone(), (key, digest.clone()))]),
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

    #[test]
    fn entries_round_trip_through_their_stored_form() {
        let root = Path::new("/ctx");
        let key = |n: u64| StatKey {
            dev: n,
            ino: n + 1,
            size: n + 2,
            mtime: -5,
            ctime: 1_700_000_000_000_000_000,
        };
        let mut known = Known::default();
        known.insert(root.join("a"), (key(1), Digest::of(b"a")));
        known.insert(root.join("d/é b"), (key(2), Digest::of(b"b")));
        let cache = StatCache::new(root, known);
        let new = vec![(root.join("a"), key(9), Digest::of(b"a2"))];
        let data = cache.encode(&new);
        let back = StatCache::decode(root, &data);
        assert_eq!(back.len(), 2);
        assert_eq!(back[&root.join("a")], (key(9), Digest::of(b"a2")));
        assert_eq!(back[&root.join("d/é b")], (key(2), Digest::of(b"b")));
        // A truncated value keeps the whole entries before the cut.
        let cut = StatCache::decode(root, &data[..data.len() - 3]);
        assert_eq!(cut.len(), 1);
    }
}

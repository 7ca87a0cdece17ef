//! A persistent stat cache for content hashing of local sources: a file whose device, inode,
//! size, modification and change times are what they were when it was hashed is not read
//! again. It lives in the cache index's database (table `stats`, one value per directory),
//! loaded for one context directory before a solve and written back after it.
//!
//! File times have a coarse granularity (a few milliseconds on most kernels), so a file
//! changed twice within one tick, keeping its size, could keep its times. As git does for its
//! index, an entry is only recorded for a file whose change time is older than
//! [`RACY_WINDOW`]: a file that changed very recently is hashed again next time.

use crate::digest::Digest;
use hashbrown::HashTable;
use std::os::unix::ffi::OsStrExt;
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

/// The stored form's first bytes. A value without them (the first form, with text digests) is
/// ignored: its files are hashed once more.
const MAGIC: &[u8; 8] = b"rbstat2\n";

/// Bytes of an entry after its path: device, inode, size, modification and change times, the
/// digest's SHA-256.
const FIXED: usize = 5 * 8 + 32;

/// Digests of files under one directory, by absolute path.
///
/// The recorded entries stay in their stored form, one buffer read from the cache index, with
/// a table of their offsets by path: loading the cache of a 100,000-file context makes no
/// allocation per file and parses nothing that is not looked up.
#[derive(Default)]
pub struct StatCache {
    root: PathBuf,
    /// [`MAGIC`], then per entry the path relative to the root (u32 length, bytes) and
    /// [`FIXED`] bytes.
    data: Vec<u8>,
    /// Offsets in `data` of the entries, by path (the last of equal paths wins).
    index: HashTable<u32>,
    /// Entries learned during this solve, to write back.
    new: Mutex<Vec<(PathBuf, StatKey, Digest)>>,
}

impl std::fmt::Debug for StatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatCache")
            .field("root", &self.root)
            .field("entries", &self.index.len())
            .finish_non_exhaustive()
    }
}

fn hash_of(rel: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(rel)
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

impl StatCache {
    /// A cache for files under `root` that knows the entries of `data`, a value of
    /// [`StatCache::encode`] (a damaged tail is ignored: its files are hashed again).
    pub fn new(root: &Path, mut data: Vec<u8>) -> StatCache {
        let mut cache = StatCache {
            root: root.to_path_buf(),
            data: Vec::new(),
            index: HashTable::new(),
            new: Mutex::new(Vec::new()),
        };
        if !data.starts_with(MAGIC) || data.len() > u32::MAX as usize {
            return cache;
        }
        let mut index = HashTable::with_capacity(data.len() / 128);
        let mut at = MAGIC.len();
        while let Some(len) = data.get(at..at + 4) {
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let Some(rel) = data.get(at + 4..at + 4 + len) else {
                break;
            };
            if data.len() < at + 4 + len + FIXED {
                break;
            }
            let hash = hash_of(rel);
            let rel_at = |offset: &u32| {
                let o = *offset as usize;
                let n = u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes")) as usize;
                &data[o + 4..o + 4 + n]
            };
            match index.find_mut(hash, |o| rel_at(o) == rel) {
                Some(o) => *o = at as u32,
                None => {
                    index.insert_unique(hash, at as u32, |o| hash_of(rel_at(o)));
                }
            }
            at += 4 + len + FIXED;
        }
        data.truncate(at);
        cache.data = data;
        cache.index = index;
        cache
    }

    /// A cache for files under `root` that knows `entries` (by absolute path).
    pub fn with_entries(
        root: &Path,
        entries: impl IntoIterator<Item = (PathBuf, StatKey, Digest)>,
    ) -> StatCache {
        let entries: Vec<_> = entries.into_iter().collect();
        StatCache::new(root, StatCache::new(root, Vec::new()).encode(&entries))
    }

    /// The directory this cache is for.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The number of entries recorded before this solve.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no entries were recorded before this solve.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn relative<'a>(&self, path: &'a Path) -> Option<&'a [u8]> {
        path.as_os_str()
            .as_bytes()
            .strip_prefix(self.root.as_os_str().as_bytes())?
            .strip_prefix(b"/")
    }

    /// The stored entry at `at`: its path, key and digest bytes.
    fn entry(&self, at: usize) -> (&[u8], StatKey, &[u8]) {
        let d = &self.data;
        let len = u32::from_le_bytes(d[at..at + 4].try_into().expect("4 bytes")) as usize;
        let rel = &d[at + 4..at + 4 + len];
        let f = at + 4 + len;
        let key = StatKey {
            dev: u64_at(d, f),
            ino: u64_at(d, f + 8),
            size: u64_at(d, f + 16),
            mtime: u64_at(d, f + 24) as i64,
            ctime: u64_at(d, f + 32) as i64,
        };
        (rel, key, &d[f + 40..f + FIXED])
    }

    /// The digest recorded for `path` in the state `key`, if any.
    pub fn get(&self, path: &Path, key: &StatKey) -> Option<Digest> {
        let rel = self.relative(path)?;
        let at = *self
            .index
            .find(hash_of(rel), |o| self.entry(*o as usize).0 == rel)?;
        let (_, stored, digest) = self.entry(at as usize);
        (stored == *key).then(|| Digest::from_sha256(digest.try_into().expect("32 bytes")))
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

    /// Every entry, the known ones updated by `new`, in the stored form: [`MAGIC`], then per
    /// entry the path relative to the root (u32 length, bytes), device, inode, size,
    /// modification and change times (8 bytes each, little-endian) and the digest's 32
    /// bytes. One value per directory reads back an order of magnitude faster than a row per
    /// file. Paths outside the root are left out.
    pub fn encode(&self, new: &[(PathBuf, StatKey, Digest)]) -> Vec<u8> {
        let new: Vec<(&[u8], &StatKey, &Digest)> = new
            .iter()
            .filter_map(|(p, k, d)| Some((self.relative(p)?, k, d)))
            .collect();
        let updated: std::collections::HashSet<&[u8], rustc_hash::FxBuildHasher> =
            new.iter().map(|(rel, _, _)| *rel).collect();
        let mut out = Vec::with_capacity(self.data.len() + new.len() * 128);
        out.extend_from_slice(MAGIC);
        for at in self.index.iter() {
            let at = *at as usize;
            let (rel, _, _) = self.entry(at);
            if !updated.contains(rel) {
                out.extend_from_slice(&self.data[at..at + 4 + rel.len() + FIXED]);
            }
        }
        for (rel, key, digest) in new {
            out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
            out.extend_from_slice(rel);
            for n in [
                key.dev,
                key.ino,
                key.size,
                key.mtime as u64,
                key.ctime as u64,
            ] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&digest.sha256());
        }
        out
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
        let cache = StatCache::with_entries(dir.path(), [(file.clone(), key, digest.clone())]);
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
        let cache = StatCache::with_entries(
            root,
            [
                (root.join("a"), key(1), Digest::of(b"a")),
                (root.join("d/é b"), key(2), Digest::of(b"b")),
                (
                    Path::new("/elsewhere/c").to_path_buf(),
                    key(3),
                    Digest::of(b"c"),
                ),
            ],
        );
        assert_eq!(cache.len(), 2, "a path outside the root is not kept");
        let new = vec![(root.join("a"), key(9), Digest::of(b"a2"))];
        let data = cache.encode(&new);
        let back = StatCache::new(root, data.clone());
        assert_eq!(back.len(), 2);
        assert_eq!(back.get(&root.join("a"), &key(9)), Some(Digest::of(b"a2")));
        assert_eq!(back.get(&root.join("a"), &key(1)), None);
        assert_eq!(
            back.get(&root.join("d/é b"), &key(2)),
            Some(Digest::of(b"b"))
        );
        assert_eq!(back.get(Path::new("/ctx2/d/é b"), &key(2)), None);
        // A truncated value keeps the whole entries before the cut.
        let cut = StatCache::new(root, data[..data.len() - 3].to_vec());
        assert_eq!(cut.len(), 1);
        // The first stored form (no magic) is ignored, not misread.
        assert!(StatCache::new(root, data[8..].to_vec()).is_empty());
    }
}

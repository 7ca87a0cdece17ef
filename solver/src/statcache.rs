//! A persistent stat cache for content hashing of local sources: a file whose device, inode,
//! size, modification and change times are what they were when it was hashed is not read
//! again. It lives in a file per context directory beside the cache index (`stats/`, named by
//! the SHA-256 of the directory's path), read before a solve and replaced after it.
//!
//! File times have a coarse granularity (a few milliseconds on most kernels), so a file
//! changed twice within one tick, keeping its size, could keep its times. As git does for its
//! index, an entry is only recorded for a file whose change time is older than
//! [`RACY_WINDOW`]: a file that changed very recently is hashed again next time.

use crate::digest::Digest;
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

/// The stored form's first bytes. Anything else (an earlier form, a damaged file) is ignored:
/// its files are hashed once more.
const MAGIC: &[u8; 8] = b"rbstat3\n";

/// The stored form's header: [`MAGIC`], the CRC-32 of everything after the header, the number
/// of entries and the number of slots of the table (u32 each, little-endian).
const HEADER: usize = 8 + 4 + 4 + 4;

/// Bytes of an entry after its path: device, inode, size, modification and change times, the
/// digest's SHA-256.
const FIXED: usize = 5 * 8 + 32;

/// Digests of files under one directory, by absolute path.
///
/// The recorded entries stay in their stored form, which holds its own hash table: after the
/// header, a power-of-two number of u32 slots, each 0 or the offset of an entry whose path
/// hashes there (linear probing, at most half the slots used), then the entries, each the
/// path relative to the root (u32 length, bytes) and [`FIXED`] bytes. Loading the cache of a
/// 100,000-file context is one read and a checksum: no allocation or parsing per file.
#[derive(Default)]
pub struct StatCache {
    root: PathBuf,
    /// The stored form, checked; empty when there was none or it was damaged.
    data: Vec<u8>,
    /// Entries learned during this solve, to write back.
    new: Mutex<Vec<(PathBuf, StatKey, Digest)>>,
}

impl std::fmt::Debug for StatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatCache")
            .field("root", &self.root)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

fn hash_of(rel: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(rel)
}

/// The slot where the probe for `rel` starts in a table of `slots` (a power of two): the top
/// bits of the hash times a large odd constant (Fibonacci hashing), because FxHash's low bits
/// cluster for paths that differ only near their end.
fn first_slot(rel: &[u8], slots: usize) -> usize {
    let bits = slots.trailing_zeros();
    if bits == 0 {
        return 0;
    }
    (hash_of(rel).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// Whether `data` is a whole stored form: magic, checksum, a table that fits.
fn is_valid(data: &[u8]) -> bool {
    let (Some(crc), Some(slots)) = (u32_at(data, 8), u32_at(data, 16)) else {
        return false;
    };
    data.starts_with(MAGIC)
        && data.len() <= u32::MAX as usize
        && slots.is_power_of_two()
        && HEADER + 4 * slots as usize <= data.len()
        && crc32fast::hash(&data[12..]) == crc
}

impl StatCache {
    /// A cache for files under `root` that knows the entries of `data`, a value of
    /// [`StatCache::encode`] (anything else is taken for no entries).
    pub fn new(root: &Path, data: Vec<u8>) -> StatCache {
        StatCache {
            root: root.to_path_buf(),
            data: if is_valid(&data) { data } else { Vec::new() },
            new: Mutex::new(Vec::new()),
        }
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
        u32_at(&self.data, 12).unwrap_or(0) as usize
    }

    /// Whether no entries were recorded before this solve.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn relative<'a>(&self, path: &'a Path) -> Option<&'a [u8]> {
        path.as_os_str()
            .as_bytes()
            .strip_prefix(self.root.as_os_str().as_bytes())?
            .strip_prefix(b"/")
    }

    /// The offsets of the stored entries, in table order.
    fn offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let slots = u32_at(&self.data, 16).unwrap_or(0) as usize;
        (0..slots)
            .filter_map(|i| u32_at(&self.data, HEADER + 4 * i))
            .filter(|&o| o != 0)
            .map(|o| o as usize)
    }

    /// The stored entry at `at`: its path and its whole stored bytes.
    fn entry(&self, at: usize) -> Option<(&[u8], &[u8])> {
        let len = u32_at(&self.data, at)? as usize;
        let whole = self.data.get(at..at + 4 + len + FIXED)?;
        Some((&whole[4..4 + len], whole))
    }

    /// The digest recorded for `path` in the state `key`, if any.
    pub fn get(&self, path: &Path, key: &StatKey) -> Option<Digest> {
        thread_local! {
            // Where the entry after this thread's last hit is, in which cache's data: a walk
            // looks files up in the order they are stored, so that entry is most often the
            // next one asked for, and the table is not read.
            static NEXT: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
        }
        let rel = self.relative(path)?;
        let base = self.data.as_ptr() as usize;
        let (hinted, next) = NEXT.get();
        let at = match self.entry(next) {
            Some((stored, _)) if hinted == base && stored == rel => next,
            _ => self.find(rel)?,
        };
        let (_, whole) = self.entry(at)?;
        NEXT.set((base, at + whole.len()));
        let f = &whole[4 + rel.len()..];
        let word = |i: usize| u64_at(f, 8 * i).unwrap_or_default();
        let stored = StatKey {
            dev: word(0),
            ino: word(1),
            size: word(2),
            mtime: word(3) as i64,
            ctime: word(4) as i64,
        };
        let digest: [u8; 32] = f[40..FIXED].try_into().ok()?;
        (stored == *key).then(|| Digest::from_sha256(digest))
    }

    /// The offset of the entry for `rel`, found through the table.
    fn find(&self, rel: &[u8]) -> Option<usize> {
        let slots = u32_at(&self.data, 16)? as usize;
        let mut slot = first_slot(rel, slots);
        for _ in 0..slots {
            let at = u32_at(&self.data, HEADER + 4 * slot)? as usize;
            if at == 0 {
                return None;
            }
            if self.entry(at).is_some_and(|(stored, _)| stored == rel) {
                return Some(at);
            }
            slot = (slot + 1) & (slots - 1);
        }
        None
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

    /// Every entry, the known ones updated by `new` (the last of equal paths wins), in the
    /// stored form (see [`StatCache`]). Paths outside the root are left out.
    pub fn encode(&self, new: &[(PathBuf, StatKey, Digest)]) -> Vec<u8> {
        let mut latest: rustc_hash::FxHashMap<&[u8], Vec<u8>> = Default::default();
        for (path, key, digest) in new {
            let Some(rel) = self.relative(path) else {
                continue;
            };
            let mut entry = Vec::with_capacity(4 + rel.len() + FIXED);
            entry.extend_from_slice(&(rel.len() as u32).to_le_bytes());
            entry.extend_from_slice(rel);
            for n in [
                key.dev,
                key.ino,
                key.size,
                key.mtime as u64,
                key.ctime as u64,
            ] {
                entry.extend_from_slice(&n.to_le_bytes());
            }
            entry.extend_from_slice(&digest.sha256());
            latest.insert(rel, entry);
        }
        let kept: Vec<(&[u8], &[u8])> = self
            .offsets()
            .filter_map(|at| self.entry(at))
            .filter(|(rel, _)| !latest.contains_key(rel))
            .collect();
        // In walk order (by path, component by component), so that the lookups of a walk,
        // which come in that order, read the entries as one stream rather than at random.
        let mut entries: Vec<(&[u8], &[u8])> = kept
            .into_iter()
            .chain(latest.iter().map(|(rel, whole)| (*rel, whole.as_slice())))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.split(|c| *c == b'/').cmp(b.0.split(|c| *c == b'/')));
        let count = entries.len();
        let slots = (2 * count).next_power_of_two().max(16);
        let mut out = vec![0u8; HEADER + 4 * slots];
        out[..8].copy_from_slice(MAGIC);
        out[12..16].copy_from_slice(&(count as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(slots as u32).to_le_bytes());
        for (rel, whole) in entries {
            let at = out.len() as u32;
            out.extend_from_slice(whole);
            let mut slot = first_slot(rel, slots);
            while u32_at(&out, HEADER + 4 * slot) != Some(0) {
                slot = (slot + 1) & (slots - 1);
            }
            out[HEADER + 4 * slot..HEADER + 4 * slot + 4].copy_from_slice(&at.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[12..]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
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
        // A truncated or damaged value, or another form, is no entries, not misread.
        assert!(StatCache::new(root, data[..data.len() - 3].to_vec()).is_empty());
        let mut flipped = data.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(StatCache::new(root, flipped).is_empty());
        assert!(StatCache::new(root, data[8..].to_vec()).is_empty());
    }

    #[test]
    fn every_one_of_many_entries_is_found_and_nothing_else() {
        let root = Path::new("/ctx");
        let key = |n: u64| StatKey {
            dev: 1,
            ino: n,
            size: n,
            mtime: n as i64,
            ctime: 7,
        };
        let path = |n: u64| root.join(format!("d{}/f{n}", n % 13));
        let cache = StatCache::with_entries(
            root,
            (0..3000).map(|n| (path(n), key(n), Digest::of(&n.to_le_bytes()))),
        );
        assert_eq!(cache.len(), 3000);
        for n in 0..3000 {
            assert_eq!(
                cache.get(&path(n), &key(n)),
                Some(Digest::of(&n.to_le_bytes()))
            );
        }
        for n in 3000..4000 {
            assert_eq!(cache.get(&path(n), &key(n)), None);
        }
        // In stored (walk) order, where each lookup is first tried at the entry after the
        // last hit, and alternating between two caches, whose hints must not mix.
        let other = StatCache::with_entries(
            root,
            (0..3000).map(|n| (path(n), key(n + 1), Digest::of(b"other"))),
        );
        let mut in_order: Vec<u64> = (0..3000).collect();
        in_order.sort_by_key(|n| (n % 13, format!("f{n}")));
        for n in in_order {
            assert_eq!(
                cache.get(&path(n), &key(n)),
                Some(Digest::of(&n.to_le_bytes()))
            );
            assert_eq!(other.get(&path(n), &key(n)), None);
            assert_eq!(other.get(&path(n), &key(n + 1)), Some(Digest::of(b"other")));
        }
        // Rewritten with a few updates, every entry is still there once.
        let again = StatCache::new(
            root,
            cache.encode(&[
                (path(5), key(50), Digest::of(b"5")),
                (path(5), key(51), Digest::of(b"6")),
            ]),
        );
        assert_eq!(again.len(), 3000);
        assert_eq!(again.get(&path(5), &key(51)), Some(Digest::of(b"6")));
        assert_eq!(
            again.get(&path(6), &key(6)),
            Some(Digest::of(&6u64.to_le_bytes()))
        );
    }
}

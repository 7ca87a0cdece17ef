//! The persistent cache index: cache key → output of the step.
//!
//! It is a SQLite database (`cache.db` in the state directory) in WAL mode: every write is one
//! transaction, so a crash leaves either the old or the new record, and several rbuild processes
//! can share one root (readers never block, writers wait up to [`BUSY_TIMEOUT`]). A record only
//! names layers; whether they still exist on disk is checked by the worker on every hit, so a
//! record whose snapshots were removed is a miss, not an error.
//!
//! Two more tables live beside the records: `summaries` (what went into a key, to explain
//! misses) and `compressed`, which maps a layer's diff id and a compressed media type to the
//! blob made for it, so an image is compressed once, however often it is pushed or exported.
//! The context stat cache ([`crate::statcache`]) is kept in files beside the database.

use crate::digest::Digest;
use crate::ops::Output;
use crate::{Error, Result};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How long a writer waits for another process's transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many summaries are kept per kind of step and stage (see [`CacheIndex::put_summary`]).
pub const KEPT_SUMMARIES: usize = 40;

/// The cache index of one state directory.
pub struct CacheIndex {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl CacheIndex {
    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> Result<CacheIndex> {
        let err = |source| Error::Cache {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS cache (
                key TEXT PRIMARY KEY,
                output TEXT NOT NULL,
                created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
                last_used TEXT
            );
            DROP TABLE IF EXISTS stat;
            DROP TABLE IF EXISTS stats;
            CREATE TABLE IF NOT EXISTS summaries (
                key TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                stage TEXT NOT NULL,
                summary TEXT NOT NULL,
                at INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS summaries_by_step ON summaries (kind, stage, at);
            CREATE TABLE IF NOT EXISTS compressed (
                diff_id TEXT NOT NULL,
                media_type TEXT NOT NULL,
                digest TEXT NOT NULL,
                size INTEGER NOT NULL,
                PRIMARY KEY (diff_id, media_type)
            );",
        )
        .map_err(err)?;
        Ok(CacheIndex {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Cache {
            path: self.path.clone(),
            source,
        }
    }

    /// Keeps what went into `key` (see [`crate::summary`]), unless it is kept already.
    pub fn put_summary(&self, key: &Digest, summary: &crate::summary::Summary) -> Result<()> {
        let conn = self.conn.lock().expect("cache index");
        let known: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM summaries WHERE key = ?1",
                params![key.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if known.is_some() {
            return Ok(());
        }
        let text = serde_json::to_string(summary).expect("a summary serializes");
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        conn.execute(
            "INSERT OR IGNORE INTO summaries (key, kind, stage, summary, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                key.as_str(),
                summary.kind,
                summary.stage.as_deref().unwrap_or(""),
                text,
                at
            ],
        )
        .map_err(|e| self.err(e))?;
        // The newest few per kind of step and stage are enough to explain misses.
        conn.execute(
            "DELETE FROM summaries WHERE kind = ?1 AND stage = ?2 AND key NOT IN
             (SELECT key FROM summaries WHERE kind = ?1 AND stage = ?2
              ORDER BY at DESC LIMIT ?3)",
            params![
                summary.kind,
                summary.stage.as_deref().unwrap_or(""),
                KEPT_SUMMARIES as i64
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// What went into `key`, if it is kept.
    pub fn summary(&self, key: &Digest) -> Result<Option<crate::summary::Summary>> {
        let conn = self.conn.lock().expect("cache index");
        let text: Option<String> = conn
            .query_row(
                "SELECT summary FROM summaries WHERE key = ?1",
                params![key.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// The most recent `limit` summaries of steps of `kind` in `stage`, newest first: the
    /// candidates a miss is explained against.
    pub fn summaries_like(
        &self,
        kind: &str,
        stage: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Digest, crate::summary::Summary)>> {
        let conn = self.conn.lock().expect("cache index");
        let mut statement = conn
            .prepare(
                "SELECT key, summary FROM summaries WHERE kind = ?1 AND stage = ?2
                 ORDER BY at DESC LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map(params![kind, stage.unwrap_or(""), limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (key, text) = row.map_err(|e| self.err(e))?;
            if let (Some(key), Ok(summary)) = (Digest::parse(&key), serde_json::from_str(&text)) {
                out.push((key, summary));
            }
        }
        Ok(out)
    }

    /// The output recorded for `key`, if any.
    pub fn get(&self, key: &Digest) -> Result<Option<Output>> {
        let conn = self.conn.lock().expect("cache index lock");
        let json: Option<String> = conn
            .query_row(
                "SELECT output FROM cache WHERE key = ?1",
                params![key.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(json) = json else { return Ok(None) };
        conn.execute(
            "UPDATE cache SET last_used = strftime('%Y-%m-%dT%H:%M:%SZ','now') WHERE key = ?1",
            params![key.as_str()],
        )
        .map_err(|e| self.err(e))?;
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|source| Error::CorruptRecord {
                key: key.to_string(),
                source,
            })
    }

    /// Records (or replaces) the output for `key`.
    pub fn put(&self, key: &Digest, output: &Output) -> Result<()> {
        let json = serde_json::to_string(output).expect("outputs serialize");
        let conn = self.conn.lock().expect("cache index lock");
        conn.execute(
            "INSERT OR REPLACE INTO cache (key, output) VALUES (?1, ?2)",
            params![key.as_str(), json],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every record: key, output, and when it was last used (or made), `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn records(&self) -> Result<Vec<(Digest, Output, String)>> {
        let conn = self.conn.lock().expect("cache index lock");
        let mut stmt = conn
            .prepare("SELECT key, output, COALESCE(last_used, created) FROM cache")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (key, json, used) = row.map_err(|e| self.err(e))?;
            let Some(digest) = Digest::parse(&key) else {
                continue;
            };
            let output = serde_json::from_str(&json).map_err(|source| Error::CorruptRecord {
                key: key.clone(),
                source,
            })?;
            out.push((digest, output, used));
        }
        Ok(out)
    }

    /// Where the stat cache of the files under `root` is kept: `stats/` beside the index,
    /// one file per directory, named by the SHA-256 of its path.
    fn stats_path(&self, root: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.join("stats")
            .join(Digest::of(root.as_os_str().as_bytes()).hex())
    }

    /// The stat cache of the files under `root` (see [`crate::statcache`]); a missing or
    /// damaged file is an empty cache.
    pub fn load_stats(&self, root: &Path) -> Result<crate::statcache::StatCache> {
        let path = self.stats_path(root);
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(Error::Io { path, source }),
        };
        Ok(crate::statcache::StatCache::new(root, data))
    }

    /// Writes what `stats` learned: the directory's whole stat cache, written beside its file
    /// and renamed over it, so a reader sees the old or the new one whole.
    pub fn save_stats(&self, stats: &crate::statcache::StatCache) -> Result<()> {
        let new = stats.take_new();
        if new.is_empty() {
            return Ok(());
        }
        let path = self.stats_path(stats.root());
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let dir = path.parent().expect("a stats file is in a directory");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
        std::io::Write::write_all(&mut temp, &stats.encode(&new)).map_err(io(temp.path()))?;
        temp.persist(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e.error,
        })?;
        Ok(())
    }

    /// The compressed blob remembered for the layer `diff_id` in `media_type`: its digest and
    /// size. Whether the blob still exists is for the caller to check.
    pub fn compressed(&self, diff_id: &Digest, media_type: &str) -> Result<Option<(Digest, u64)>> {
        let conn = self.conn.lock().expect("cache index lock");
        let row: Option<(String, i64)> = conn
            .query_row(
                "SELECT digest, size FROM compressed WHERE diff_id = ?1 AND media_type = ?2",
                params![diff_id.as_str(), media_type],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|(d, size)| Some((Digest::parse(&d)?, size as u64))))
    }

    /// Remembers that the layer `diff_id` compressed as `media_type` is the blob `digest`.
    pub fn remember_compressed(
        &self,
        diff_id: &Digest,
        media_type: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let conn = self.conn.lock().expect("cache index lock");
        conn.execute(
            "INSERT OR REPLACE INTO compressed (diff_id, media_type, digest, size) \
             VALUES (?1, ?2, ?3, ?4)",
            params![diff_id.as_str(), media_type, digest.as_str(), size as i64],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every remembered compressed blob: the layer's diff id and the blob's digest.
    pub fn compressed_blobs(&self) -> Result<Vec<(Digest, Digest)>> {
        let conn = self.conn.lock().expect("cache index lock");
        let mut stmt = conn
            .prepare("SELECT diff_id, digest FROM compressed")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (diff_id, digest) = row.map_err(|e| self.err(e))?;
            if let (Some(diff_id), Some(digest)) = (Digest::parse(&diff_id), Digest::parse(&digest))
            {
                out.push((diff_id, digest));
            }
        }
        Ok(out)
    }

    /// Forgets the compressed blobs `digests` (after pruning removed them).
    pub fn forget_compressed(&self, digests: &[Digest]) -> Result<()> {
        let mut conn = self.conn.lock().expect("cache index lock");
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for digest in digests {
            tx.execute(
                "DELETE FROM compressed WHERE digest = ?1",
                params![digest.as_str()],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forgets the record for `key`.
    pub fn remove(&self, key: &Digest) -> Result<()> {
        let conn = self.conn.lock().expect("cache index lock");
        conn.execute("DELETE FROM cache WHERE key = ?1", params![key.as_str()])
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::OutputLayer;

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let key = Digest::of(b"key");
        let output = Output {
            layers: vec![OutputLayer {
                diff_id: Digest::of(b"tar"),
                digest: Digest::of(b"tar.gz"),
                size: 42,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                created: Some("2026-01-01T00:00:00Z".into()),
            }],
            local: None,
        };
        {
            let index = CacheIndex::open(&path).unwrap();
            assert_eq!(index.get(&key).unwrap(), None);
            index.put(&key, &output).unwrap();
        }
        let index = CacheIndex::open(&path).unwrap();
        assert_eq!(index.get(&key).unwrap(), Some(output));
        index.remove(&key).unwrap();
        assert_eq!(index.get(&key).unwrap(), None);
    }

    #[test]
    fn compressed_blobs_are_remembered_per_media_type() {
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::open(&dir.path().join("cache.db")).unwrap();
        let diff_id = Digest::of(b"tar");
        let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
        let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
        assert_eq!(index.compressed(&diff_id, gzip).unwrap(), None);
        index
            .remember_compressed(&diff_id, gzip, &Digest::of(b"gz"), 7)
            .unwrap();
        index
            .remember_compressed(&diff_id, zstd, &Digest::of(b"zst"), 5)
            .unwrap();
        assert_eq!(
            index.compressed(&diff_id, gzip).unwrap(),
            Some((Digest::of(b"gz"), 7))
        );
        assert_eq!(index.compressed_blobs().unwrap().len(), 2);
        index.forget_compressed(&[Digest::of(b"gz")]).unwrap();
        assert_eq!(index.compressed(&diff_id, gzip).unwrap(), None);
        assert_eq!(
            index.compressed(&diff_id, zstd).unwrap(),
            Some((Digest::of(b"zst"), 5))
        );
    }

    #[test]
    fn two_handles_on_one_file_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let a = CacheIndex::open(&path).unwrap();
        let b = CacheIndex::open(&path).unwrap();
        let key = Digest::of(b"k");
        a.put(&key, &Output::default()).unwrap();
        assert_eq!(b.get(&key).unwrap(), Some(Output::default()));
    }

    #[test]
    fn stat_entries_persist_per_directory() {
        use crate::statcache::{StatCache, StatKey};
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::open(&dir.path().join("cache.db")).unwrap();
        let key = StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: 4,
            ctime: 5,
        };
        let ctx = Path::new("/ctx");
        let learned = StatCache::new(ctx, Vec::new());
        learned.put(&ctx.join("a"), key, Digest::of(b"a"));
        index.save_stats(&learned).unwrap();
        // Another directory that shares a prefix does not see it.
        let other = StatCache::new(Path::new("/ctx2"), Vec::new());
        other.put(Path::new("/ctx2/b"), key, Digest::of(b"b"));
        index.save_stats(&other).unwrap();
        let loaded = index.load_stats(ctx).unwrap();
        assert_eq!(loaded.get(&ctx.join("a"), &key), Some(Digest::of(b"a")));
        assert_eq!(loaded.get(Path::new("/ctx2/b"), &key), None);
    }
}

//! The distributions' package databases: dpkg's `status` (and distroless images'
//! `status.d/*`), apk's `installed`, and RPM's SQLite `rpmdb.sqlite` (Fedora 33+, RHEL 9,
//! whose `Packages` table holds each package's RPM header). RPM's older Berkeley DB and
//! SUSE's ndb databases are not read.

use super::Entry;
use std::path::Path;

/// The value of `KEY:` in a database paragraph (dpkg's `Key: value`, apk's `K:value`).
fn field(paragraph: &str, key: &str) -> Option<String> {
    paragraph
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// The installed packages of a dpkg status file.
pub fn dpkg(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let field = |key: &str| field(paragraph, key);
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name), Some(version)) = (installed, field("Package"), field("Version")) {
            out.push(Entry {
                name,
                version,
                arch: field("Architecture").unwrap_or_default(),
                license: None,
            });
        }
    }
    out
}

/// The packages of an apk `installed` database.
pub fn apk(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let field = |key: &str| field(paragraph, key);
        if let (Some(name), Some(version)) = (field("P"), field("V")) {
            out.push(Entry {
                name,
                version,
                arch: field("A").unwrap_or_default(),
                license: field("L"),
            });
        }
    }
    out
}

/// RPM header tags rbuild reads.
const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const LICENSE: u32 = 1014;
const ARCH: u32 = 1022;

/// The string (or the first of a string array, or a decimal int32) of `tag` in an RPM header
/// blob as the database stores it: entry count and data length (big-endian), 16-byte index
/// entries (tag, type, offset, count), then the data.
fn header_value(blob: &[u8], tag: u32) -> Option<String> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(blob.get(at..at + 4)?.try_into().ok()?))
    };
    let entries = word(0)? as usize;
    let data_len = word(4)? as usize;
    let data_start = 8usize.checked_add(entries.checked_mul(16)?)?;
    let data = blob.get(data_start..data_start.checked_add(data_len)?)?;
    for i in 0..entries {
        let at = 8 + i * 16;
        if word(at)? != tag {
            continue;
        }
        let (kind, offset) = (word(at + 4)?, word(at + 8)? as usize);
        return match kind {
            // INT32
            4 => {
                Some(u32::from_be_bytes(data.get(offset..offset + 4)?.try_into().ok()?).to_string())
            }
            // STRING, STRING_ARRAY, I18NSTRING: NUL-terminated.
            6 | 8 | 9 => {
                let rest = data.get(offset..)?;
                let end = rest.iter().position(|&b| b == 0)?;
                Some(String::from_utf8_lossy(&rest[..end]).into_owned())
            }
            _ => None,
        };
    }
    None
}

/// The packages of an RPM SQLite database (`rpmdb.sqlite`), read-only; none if it cannot be
/// read. The version is `[EPOCH:]VERSION-RELEASE`, as RPM's PURLs and scanners write it.
pub fn rpm(path: &Path) -> Vec<Entry> {
    use rusqlite::OpenFlags;
    // A snapshot is never written: the database is opened immutable (no lock, no journal
    // files next to it), unless rpm left changes in its write-ahead log, which only a
    // writable copy can apply.
    let wal = path.with_file_name("rpmdb.sqlite-wal");
    let copy = match std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        true => {
            let Ok(dir) = tempfile::tempdir() else {
                return vec![];
            };
            let copied = std::fs::copy(path, dir.path().join("rpmdb.sqlite"))
                .and_then(|_| std::fs::copy(&wal, dir.path().join("rpmdb.sqlite-wal")));
            if copied.is_err() {
                return vec![];
            }
            Some(dir)
        }
        false => None,
    };
    let opened = match &copy {
        Some(dir) => rusqlite::Connection::open(dir.path().join("rpmdb.sqlite")),
        None => {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI;
            let uri = format!("file:{}?immutable=1", path.display());
            rusqlite::Connection::open_with_flags(uri, flags)
        }
    };
    let Ok(db) = opened else {
        return vec![];
    };
    let Ok(mut rows) = db.prepare("SELECT blob FROM Packages") else {
        return vec![];
    };
    let blobs: Vec<Vec<u8>> = match rows.query_map([], |r| r.get::<_, Vec<u8>>(0)) {
        Ok(rows) => rows.flatten().collect(),
        Err(_) => return vec![],
    };
    let mut out = Vec::new();
    for blob in blobs {
        let value = |tag| header_value(&blob, tag);
        let (Some(name), Some(version)) = (value(NAME), value(VERSION)) else {
            continue;
        };
        // gpg-pubkey entries are keys, not packages.
        if name == "gpg-pubkey" {
            continue;
        }
        let release = value(RELEASE).map(|r| format!("-{r}")).unwrap_or_default();
        let epoch = value(EPOCH).map(|e| format!("{e}:")).unwrap_or_default();
        out.push(Entry {
            name,
            version: format!("{epoch}{version}{release}"),
            arch: value(ARCH).unwrap_or_default(),
            license: value(LICENSE),
        });
    }
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// An RPM header blob with these (tag, type, value) entries.
    pub fn header(entries: &[(u32, u32, &str)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for &(tag, kind, value) in entries {
            index.extend(tag.to_be_bytes());
            index.extend(kind.to_be_bytes());
            index.extend((data.len() as u32).to_be_bytes());
            index.extend(1u32.to_be_bytes());
            match kind {
                4 => data.extend(value.parse::<u32>().unwrap().to_be_bytes()),
                _ => {
                    data.extend(value.as_bytes());
                    data.push(0);
                }
            }
        }
        let mut blob = (entries.len() as u32).to_be_bytes().to_vec();
        blob.extend((data.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(data);
        blob
    }

    #[test]
    fn rpm_databases_list_their_packages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpmdb.sqlite");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
            .unwrap();
        let bash = header(&[
            (NAME, 6, "bash"),
            (VERSION, 6, "5.2.15"),
            (RELEASE, 6, "3.fc38"),
            (LICENSE, 6, "GPL-3.0-or-later"),
            (ARCH, 6, "x86_64"),
        ]);
        let tzdata = header(&[
            (NAME, 6, "tzdata"),
            (EPOCH, 4, "1"),
            (VERSION, 6, "2024a"),
            (RELEASE, 6, "1.fc38"),
        ]);
        let key = header(&[(NAME, 6, "gpg-pubkey"), (VERSION, 6, "eb10b464")]);
        for blob in [bash, tzdata, key, vec![0, 0, 0, 9]] {
            db.execute("INSERT INTO Packages (blob) VALUES (?1)", [blob])
                .unwrap();
        }
        drop(db);
        let found = rpm(&path);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].name.as_str(), found[0].version.as_str()),
            ("bash", "5.2.15-3.fc38")
        );
        assert_eq!(found[0].license.as_deref(), Some("GPL-3.0-or-later"));
        assert_eq!(found[1].version, "1:2024a-1.fc38");
        assert!(rpm(&dir.path().join("missing.sqlite")).is_empty());
        // Changes still in the write-ahead log (rpm's journal mode) are read too.
        let wal = tempfile::tempdir().unwrap();
        let path = wal.path().join("rpmdb.sqlite");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB)",
        )
        .unwrap();
        let zlib = header(&[(NAME, 6, "zlib"), (VERSION, 6, "1.2.13"), (RELEASE, 6, "4")]);
        db.execute("INSERT INTO Packages (blob) VALUES (?1)", [zlib])
            .unwrap();
        assert!(
            std::fs::metadata(wal.path().join("rpmdb.sqlite-wal"))
                .unwrap()
                .len()
                > 0
        );
        let found = rpm(&path);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].version, "1.2.13-4");
        drop(db);
    }
}

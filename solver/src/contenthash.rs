//! Content hashing of local sources, and the path resolution it shares with copies.
//!
//! The digest of a local source covers, for every file it selects, the path relative to the
//! source root, the file type, the permission bits, and the content (or link target). It does not
//! cover modification times, ownership or where the directory is on the host: moving or touching
//! a build context keeps its cache.
//!
//! Paths are resolved *inside* a root: `..` stops at the root and symlinks, absolute or relative,
//! are followed as if the root were `/`. A source path can therefore never name a file outside
//! the directory it belongs to.

use crate::digest::Digest;
use crate::ops::LocalSource;
use crate::pathname;
use crate::pattern::{self, CopyFilter, IgnoreMatcher, Visit};
use crate::statcache::StatKey;
use crate::{Error, Result};
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Symlinks followed while resolving one path before giving up, as Linux's limit of 40 would.
const MAX_SYMLINKS: usize = 255;

pub use crate::pathname::clean_relative;

/// Resolves `path` inside `root`, following symlinks as if `root` were `/`. The last component is
/// followed only if `follow_last`. Components that do not exist are appended unresolved, so the
/// result may not exist.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> std::io::Result<PathBuf> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = clean_relative(path)
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        if part == "." {
            continue;
        }
        let candidate = join(root, &resolved).join(pathname::to_os(&part));
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() && (!is_last || follow_last) => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(std::io::Error::other(format!(
                        "too many levels of symbolic links resolving {path}"
                    )));
                }
                let target = std::fs::read_link(&candidate)?;
                let target = pathname::of_path(&target);
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
            Ok(_) => resolved.push(part),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                resolved.push(part);
                resolved.extend(pending.drain(..).rev());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(join(root, &resolved))
}

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts.iter().map(|part| pathname::to_os(part)));
    p
}

/// One path selected by a source pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The path relative to the root as the pattern named it (cleaned, `""` for the root).
    pub rel: String,
    /// Where it is on the host, with symlinks resolved inside the root (the last component too).
    pub host: PathBuf,
}

/// Expands a source pattern (which may contain wildcards) into the existing paths it names,
/// sorted, leaving out what `ignore` excludes. A pattern without wildcards that names nothing
/// (or only something excluded) is an error, as is a wildcard pattern that matches nothing.
pub fn expand(root: &Path, pattern: &str, ignore: &IgnoreMatcher) -> Result<Vec<Selected>> {
    let cleaned = clean_relative(pattern);
    let io_err = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let visible = |rel: &str, host: &Path| match std::fs::symlink_metadata(host) {
        Ok(meta) => ignore.visit(rel, meta.is_dir()) != Visit::Skip,
        Err(_) => false,
    };
    if !pattern::has_wildcard(&cleaned) {
        let host = resolve_in_root(root, &cleaned, true).map_err(|e| io_err(root, e))?;
        if !visible(&cleaned, &host) {
            return Err(Error::SourceNotFound(format!("\"/{cleaned}\": not found")));
        }
        return Ok(vec![Selected { rel: cleaned, host }]);
    }
    let mut current = vec![String::new()];
    for segment in cleaned.split('/') {
        let mut next = Vec::new();
        for dir in &current {
            let child = |name: &str| {
                if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                }
            };
            if !pattern::has_wildcard(segment) {
                next.push(child(segment));
                continue;
            }
            let host_dir = resolve_in_root(root, dir, true).map_err(|e| io_err(root, e))?;
            let Ok(entries) = std::fs::read_dir(&host_dir) else {
                continue;
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_err(&host_dir, e))?;
                let name = pathname::from_os(&entry.file_name()).into_owned();
                let ok = pattern::matches(segment, &name)
                    .map_err(|e| Error::SourceNotFound(e.to_string()))?;
                if ok {
                    names.push(name);
                }
            }
            names.sort();
            next.extend(names.iter().map(|n| child(n)));
        }
        current = next;
    }
    let mut selected = Vec::new();
    for rel in current {
        let host = resolve_in_root(root, &rel, true).map_err(|e| io_err(root, e))?;
        if visible(&rel, &host) {
            selected.push(Selected { rel, host });
        }
    }
    if selected.is_empty() {
        return Err(Error::SourceNotFound(format!(
            "no source files were specified: \"/{cleaned}\" matches nothing"
        )));
    }
    Ok(selected)
}

/// [`expand`] for a copy: the source paths `pattern` names (the `.dockerignore` part of `filter`
/// applies to them), checking that the paths `filter` requires exist below each of them when
/// `pattern` has no wildcards.
pub fn select(root: &Path, pattern: &str, filter: &CopyFilter) -> Result<Vec<Selected>> {
    let selected = expand(root, pattern, filter.ignore())?;
    if !pattern::has_wildcard(pattern) {
        for source in &selected {
            for required in filter.required() {
                let rel = join_rel(&source.rel, required);
                let exists = resolve_in_root(root, &rel, false)
                    .is_ok_and(|host| std::fs::symlink_metadata(host).is_ok());
                if !exists || filter.ignore().is_excluded(&rel) {
                    return Err(Error::SourceNotFound(format!("\"/{rel}\": not found")));
                }
            }
        }
    }
    Ok(selected)
}

/// `parent/name`, or `name` when `parent` is the root (`""`).
pub fn join_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        let mut s = String::with_capacity(parent.len() + 1 + name.len());
        s.push_str(parent);
        s.push('/');
        s.push_str(name);
        s
    }
}

/// Hashes the files of `root` that `source` selects: everything when it names no paths, and
/// otherwise what its paths name, filtered as a copy of them would be.
pub fn hash_local(root: &Path, source: &LocalSource) -> Result<Digest> {
    hash_local_with(root, source, None)
}

/// [`hash_local`], taking the digests of unchanged files from `stats` and recording new ones.
pub fn hash_local_with(
    root: &Path,
    source: &LocalSource,
    stats: Option<&crate::statcache::StatCache>,
) -> Result<Digest> {
    hash_local_listed(root, source, stats, None)
}

/// [`hash_local_with`], also writing into `listing` one line per file hashed
/// (`"path"\tkind mode\tdigest`, see [`crate::summary::Summary::files`]).
pub fn hash_local_listed(
    root: &Path,
    source: &LocalSource,
    stats: Option<&crate::statcache::StatCache>,
    mut listing: Option<&mut Vec<String>>,
) -> Result<Digest> {
    let filter = CopyFilter::new(
        &source.exclude,
        &source.include_patterns,
        &source.exclude_patterns,
    );
    let patterns: Vec<String> = if source.include.is_empty() {
        vec![String::new()]
    } else {
        source.include.to_vec()
    };
    let mut hasher = Sha256::new();
    hasher.update(b"rbuild local source v1\n");
    for pattern in &patterns {
        hasher.update(format!("pattern {pattern:?}\n").as_bytes());
        for selected in select(root, pattern, &filter)? {
            let meta = std::fs::symlink_metadata(&selected.host).map_err(|e| Error::Io {
                path: selected.host.clone(),
                source: e,
            })?;
            let found = walk(&selected.host, &selected.rel, "", &filter, meta, stats)?;
            found.visit(&mut |record, content| {
                hasher.update(record.as_bytes());
                if let Some(digest) = content {
                    hasher.update(digest.as_str().as_bytes());
                    hasher.update(b"\n");
                }
                if let Some(listing) = listing.as_deref_mut() {
                    // `"path" kind mode…` → `"path"\tkind mode…\tdigest`.
                    let (path, rest) = split_quoted(record.trim_end());
                    let digest = content.map_or("", |d| d.as_str());
                    let mut line = String::with_capacity(record.len() + digest.len() + 2);
                    line.push_str(path);
                    line.push('\t');
                    line.push_str(rest.trim_start());
                    line.push('\t');
                    line.push_str(digest);
                    listing.push(line);
                }
            })?;
        }
    }
    Ok(Digest::from_hasher(hasher))
}

/// A record's quoted path and the rest.
fn split_quoted(record: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in record.char_indices().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return record.split_at(i + 1),
            _ => escaped = false,
        }
    }
    (record, "")
}

/// What the walk found at one path: its record, its content's digest if it is a regular file,
/// and, for a directory, what it found below it, in order.
struct Found {
    record: String,
    content: Option<Digest>,
    below: Vec<Result<Found>>,
}

impl Found {
    /// Calls `f` with every record and digest in walk order, up to the first failure.
    fn visit(self, f: &mut impl FnMut(&str, Option<&Digest>)) -> Result<()> {
        f(&self.record, self.content.as_ref());
        for found in self.below {
            found?.visit(f)?;
        }
        Ok(())
    }
}

/// `s` quoted as `{s:?}` would quote it, without the formatter for plain names.
fn push_quoted(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write as _;
        let _ = write!(out, "{s:?}");
    }
}

/// The record of the file at `host` with metadata `meta`, `rel` its path from the root: the
/// path, the kind and the mode (and a link's target, a device's number).
fn record_of(host: &Path, rel: &str, meta: &std::fs::Metadata) -> Result<String> {
    use std::fmt::Write as _;
    let ft = meta.file_type();
    let mode = meta.permissions().mode() & 0o7777;
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() || ft.is_block_device() {
        "device"
    } else {
        "other"
    };
    let mut record = String::with_capacity(rel.len() + 16);
    push_quoted(&mut record, rel);
    let _ = write!(record, " {kind} {mode:o}");
    if ft.is_symlink() {
        let target = std::fs::read_link(host).map_err(|e| Error::Io {
            path: host.to_path_buf(),
            source: e,
        })?;
        let _ = write!(record, " -> {target:?}");
    }
    if ft.is_char_device() || ft.is_block_device() {
        let _ = write!(record, " dev {}", meta.rdev());
    }
    record.push('\n');
    Ok(record)
}

/// The records of `host` (metadata `meta`) and of every file under it, sorted by path, leaving
/// out what `filter` leaves out, with the digests of regular files (from `stats` for files it
/// knows unchanged); `rel` is `host`'s path relative to the root, `below` relative to the
/// source path the walk started at. A directory's children are walked in parallel: the cost of
/// a large context is one `statx` per file, spread over the cores.
fn walk(
    host: &Path,
    rel: &str,
    below: &str,
    filter: &CopyFilter,
    meta: std::fs::Metadata,
    stats: Option<&crate::statcache::StatCache>,
) -> Result<Found> {
    let io_err = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let record = record_of(host, rel, &meta)?;
    let ft = meta.file_type();
    if !ft.is_dir() {
        let content = match ft.is_file() {
            true => Some(file_digest(host, &meta, stats)?),
            false => None,
        };
        return Ok(Found {
            record,
            content,
            below: Vec::new(),
        });
    }
    // The directory entry's type saves a stat per skipped child, and the entry's metadata is
    // read relative to the open directory (no walk of the whole path).
    let mut children: Vec<(std::ffi::OsString, std::fs::DirEntry)> = std::fs::read_dir(host)
        .map_err(|e| io_err(host, e))?
        .map(|e| e.map(|e| (e.file_name(), e)))
        .collect::<std::io::Result<_>>()
        .map_err(|e| io_err(host, e))?;
    children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let below = children
        .par_iter()
        .with_max_len(64)
        .filter_map(|(name, entry)| {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let name = pathname::from_os(name);
            let child_rel = join_rel(rel, &name);
            let child_below = join_rel(below, &name);
            if filter.visit(&child_rel, &child_below, is_dir) == Visit::Skip {
                return None;
            }
            let child = entry.path();
            Some(
                entry
                    .metadata()
                    .map_err(|e| io_err(&child, e))
                    .and_then(|meta| walk(&child, &child_rel, &child_below, filter, meta, stats)),
            )
        })
        .collect();
    Ok(Found {
        record,
        content: None,
        below,
    })
}

/// The digest of the regular file at `host` (metadata `meta`): the one `stats` knows for it
/// unchanged, else read and hashed, and told to `stats`.
fn file_digest(
    host: &Path,
    meta: &std::fs::Metadata,
    stats: Option<&crate::statcache::StatCache>,
) -> Result<Digest> {
    let key = StatKey::of(meta);
    if let Some(digest) = stats.and_then(|s| s.get(host, &key)) {
        return Ok(digest);
    }
    let digest = hash_file(host)?;
    if let Some(s) = stats {
        s.put(host, key, digest.clone());
    }
    Ok(digest)
}

fn hash_file(path: &Path) -> Result<Digest> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    thread_local! {
        // One buffer per thread: a fresh 256 KiB one per file costs more than reading a small
        // file (it is mapped and faulted in anew each time).
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    BUF.with_borrow_mut(|buf| {
        loop {
            let n = file.read(buf).map_err(io_err)?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
        }
    })?;
    Ok(Digest::from_hasher(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn local(include: &[&str], exclude: &[&str]) -> LocalSource {
        LocalSource {
            name: "context".into(),
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..LocalSource::default()
        }
    }

    fn hash(root: &Path, include: &[&str], exclude: &[&str]) -> Digest {
        hash_local(root, &local(include, exclude)).unwrap()
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("src/sub")).unwrap();
        std::fs::write(r.join("src/a.txt"), "a").unwrap();
        std::fs::write(r.join("src/b.txt"), "b").unwrap();
        std::fs::write(r.join("src/sub/c.rs"), "c").unwrap();
        std::fs::write(r.join("other"), "o").unwrap();
        symlink("/src", r.join("abs-link")).unwrap();
        symlink("../../../../etc", r.join("escape")).unwrap();
        dir
    }

    #[test]
    fn clean_relative_like_go_path_clean() {
        assert_eq!(clean_relative("/a/./b/../c/"), "a/c");
        assert_eq!(clean_relative("../../x"), "x");
        assert_eq!(clean_relative("."), "");
        assert_eq!(clean_relative("/"), "");
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tree();
        let r = dir.path();
        assert_eq!(
            resolve_in_root(r, "abs-link/a.txt", true).unwrap(),
            r.join("src/a.txt")
        );
        assert_eq!(
            resolve_in_root(r, "escape/passwd", true).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(r, "abs-link", false).unwrap(),
            r.join("abs-link")
        );
        assert_eq!(
            resolve_in_root(r, "../../other", true).unwrap(),
            r.join("other")
        );
    }

    #[test]
    fn expand_wildcards_and_missing_paths() {
        let dir = tree();
        let r = dir.path();
        let none = IgnoreMatcher::default();
        let rels = |p: &str| -> Vec<String> {
            expand(r, p, &none)
                .unwrap()
                .into_iter()
                .map(|s| s.rel)
                .collect()
        };
        assert_eq!(rels("src/*.txt"), ["src/a.txt", "src/b.txt"]);
        assert_eq!(rels("/src/*/c.rs"), ["src/sub/c.rs"]);
        assert_eq!(rels("./other"), ["other"]);
        let missing = expand(r, "nope", &none).unwrap_err().to_string();
        assert_eq!(missing, "\"/nope\": not found");
        assert!(
            expand(r, "src/*.md", &none)
                .unwrap_err()
                .to_string()
                .contains("matches nothing")
        );
        assert!(
            expand(r, "escape/passwd", &none).is_err(),
            "must not reach the host's /etc"
        );
    }

    #[test]
    fn hash_covers_content_and_mode_but_not_mtime() {
        let dir = tree();
        let r = dir.path();
        let all = hash(r, &[], &[]);
        let only_src = hash(r, &["src"], &[]);
        assert_ne!(all, only_src);

        // Changing a file outside the selection does not change the selection's digest.
        std::fs::write(r.join("other"), "changed").unwrap();
        assert_eq!(hash(r, &["src"], &[]), only_src);
        assert_ne!(hash(r, &[], &[]), all);

        // Touching a file does not change the digest; changing content or mode does.
        let f = r.join("src/a.txt");
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(t)
            .unwrap();
        assert_eq!(hash(r, &["src"], &[]), only_src);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let after_chmod = hash(r, &["src"], &[]);
        assert_ne!(after_chmod, only_src);
        std::fs::write(&f, "A").unwrap();
        assert_ne!(hash(r, &["src"], &[]), after_chmod);
    }

    #[test]
    fn dockerignore_excludes_from_selection_and_hash() {
        let dir = tree();
        let r = dir.path();
        let ignore = IgnoreMatcher::new(&["src/*.txt".into(), "!src/b.txt".into()]);
        let rels: Vec<String> = expand(r, "src/*", &ignore)
            .unwrap()
            .into_iter()
            .map(|s| s.rel)
            .collect();
        assert_eq!(rels, ["src/b.txt", "src/sub"]);
        assert!(
            expand(r, "src/a.txt", &ignore)
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        let exclude = ["src/a.txt"];
        let before = hash(r, &["src"], &exclude);
        std::fs::write(r.join("src/a.txt"), "ignored change").unwrap();
        assert_eq!(hash(r, &["src"], &exclude), before);
        std::fs::write(r.join("src/b.txt"), "seen change").unwrap();
        assert_ne!(hash(r, &["src"], &exclude), before);
    }

    #[test]
    fn hash_is_independent_of_location() {
        let a = tree();
        let b = tree();
        assert_eq!(hash(a.path(), &["src"], &[]), hash(b.path(), &["src"], &[]));
    }

    #[test]
    fn copy_patterns_select_what_the_hash_covers() {
        let dir = tree();
        let r = dir.path();
        let with = |include_patterns: &[&str], exclude_patterns: &[&str]| LocalSource {
            include_patterns: include_patterns.iter().map(|s| s.to_string()).collect(),
            exclude_patterns: exclude_patterns.iter().map(|s| s.to_string()).collect(),
            ..local(&["src"], &[])
        };
        let excluding = with(&[], &["*.txt"]);
        let before = hash_local(r, &excluding).unwrap();
        std::fs::write(r.join("src/a.txt"), "excluded change").unwrap();
        assert_eq!(hash_local(r, &excluding).unwrap(), before);
        std::fs::write(r.join("src/sub/c.rs"), "selected change").unwrap();
        assert_ne!(hash_local(r, &excluding).unwrap(), before);

        let including = with(&["sub/*.rs"], &[]);
        let before = hash_local(r, &including).unwrap();
        std::fs::write(r.join("src/b.txt"), "not included").unwrap();
        assert_eq!(hash_local(r, &including).unwrap(), before);
        std::fs::write(r.join("src/sub/c.rs"), "included change").unwrap();
        assert_ne!(hash_local(r, &including).unwrap(), before);

        // An include pattern without wildcards names a path that must exist.
        let err = hash_local(r, &with(&["sub/missing.rs"], &[])).unwrap_err();
        assert_eq!(err.to_string(), "\"/src/sub/missing.rs\": not found");
        assert!(hash_local(r, &with(&["sub/c.rs"], &[])).is_ok());
    }

    #[test]
    fn the_parallel_walk_lists_in_path_order_and_hashes_alike_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        // Names whose byte order differs from their order as whole paths ("a-b" < "a/…").
        let mut expected = vec!["\"\"\tdir 755\t".to_string()];
        for d in ["a", "a-b", "a.c", "b", "z"] {
            std::fs::create_dir_all(r.join(d).join("sub")).unwrap();
            std::fs::set_permissions(r.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(
                r.join(d).join("sub"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
            expected.push(format!("\"{d}\"\tdir 755\t"));
            for i in 0..150 {
                let name = format!("f{i:03}");
                std::fs::write(r.join(d).join(&name), format!("{d}{i}")).unwrap();
                std::fs::set_permissions(
                    r.join(d).join(&name),
                    std::fs::Permissions::from_mode(0o644),
                )
                .unwrap();
                let digest = Digest::of(format!("{d}{i}").as_bytes());
                expected.push(format!("\"{d}/{name}\"\tfile 644\t{digest}"));
            }
            expected.push(format!("\"{d}/sub\"\tdir 755\t"));
            std::fs::write(r.join(d).join("sub/x"), "x").unwrap();
            std::fs::set_permissions(
                r.join(d).join("sub/x"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            expected.push(format!("\"{d}/sub/x\"\tfile 644\t{}", Digest::of(b"x")));
        }
        std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).unwrap();
        let source = local(&[], &[]);
        let mut listing = Vec::new();
        let first = hash_local_listed(r, &source, None, Some(&mut listing)).unwrap();
        assert_eq!(listing, expected);
        for _ in 0..5 {
            assert_eq!(hash_local(r, &source).unwrap(), first);
        }
    }

    #[test]
    fn the_stat_cache_spares_reading_unchanged_files_only() {
        use crate::statcache::{StatCache, StatKey};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a"), "aaaa").unwrap();
        std::fs::write(root.join("b"), "bbbb").unwrap();
        let source = LocalSource {
            name: "context".into(),
            ..LocalSource::default()
        };
        let plain = hash_local(&root, &source).unwrap();
        // A cache that claims a different digest for `a`: used while `a` is unchanged.
        let key_of = |name: &str| StatKey::of(&std::fs::symlink_metadata(root.join(name)).unwrap());
        let lie =
            StatCache::with_entries(&root, [(root.join("a"), key_of("a"), Digest::of(b"not a"))]);
        assert_ne!(hash_local_with(&root, &source, Some(&lie)).unwrap(), plain);
        // Same size, same modification time, new content: the change time differs, so `a` is
        // read again and the true digest comes back.
        let mtime = std::fs::metadata(root.join("a"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("a"), "AAAA").unwrap();
        std::fs::File::options()
            .write(true)
            .open(root.join("a"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let changed = hash_local(&root, &source).unwrap();
        assert_ne!(changed, plain);
        assert_eq!(
            hash_local_with(&root, &source, Some(&lie)).unwrap(),
            changed
        );
    }
}

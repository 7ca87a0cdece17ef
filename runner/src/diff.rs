//! Turning a snapshot directory (overlayfs upper format) into an OCI layer tar.
//!
//! Entries are written in a fixed order (pre-order, names sorted bytewise) with numeric owners
//! and no user or group names, so the same directory always gives the same bytes. Overlay
//! markers become OCI whiteouts: a 0/0 character device `x` becomes an empty file `.wh.x`, and a
//! directory with `trusted.overlay.opaque=y` is followed by `dir/.wh..wh..opq`. Overlay's own
//! attributes (`trusted.overlay.*`, `user.overlay.*`) are never exported.

use crate::sys::xattr;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// The name prefix of whiteout files in OCI layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque-directory marker in OCI layers.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs sets on opaque directories (`trusted.overlay.opaque`, or
/// `user.overlay.opaque` in a user namespace; see [`crate::sys::userns`]).
pub fn overlay_opaque_xattr() -> &'static str {
    if crate::sys::userns::in_user_namespace() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// Whether `dir` (in a snapshot) is an opaque directory: it hides what the layers below have
/// there.
pub fn is_opaque(dir: &Path) -> bool {
    xattr::get(dir, overlay_opaque_xattr())
        .ok()
        .flatten()
        .as_deref()
        == Some(b"y")
}

/// Whether a snapshot directory has no entries (its layer would be empty).
pub fn is_empty(dir: &Path) -> io::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

/// Sets the modification time of every entry under `dir` that is newer than `epoch` to
/// `epoch` (never following symlinks), so the layer made from `dir` is reproducible
/// (`SOURCE_DATE_EPOCH`). Entries are visited before their directory, whose time they would
/// otherwise change again.
pub fn clamp_mtimes(dir: &Path, epoch: i64) -> io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    fn visit(path: &Path, epoch: i64) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                visit(&entry?.path(), epoch)?;
            }
        }
        if meta.mtime() > epoch {
            let t = TimeSpec::new(epoch, 0);
            utimensat(
                nix::fcntl::AT_FDCWD,
                path,
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(io::Error::from)?;
        }
        Ok(())
    }
    for entry in std::fs::read_dir(dir)? {
        visit(&entry?.path(), epoch)?;
    }
    Ok(())
}

/// Writes the layer tar of `dir` to `out`.
pub fn write_layer(dir: &Path, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(&mut builder, dir, OsStr::new(""), &mut links)?;
    builder.finish()
}

/// `parts` one after the other: entry names are bytes (a name need not be UTF-8).
fn cat(parts: &[&OsStr]) -> PathBuf {
    let mut out = OsString::new();
    for part in parts {
        out.push(part);
    }
    PathBuf::from(out)
}

fn walk<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &OsStr,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = dir.join(&name);
        let rel = cat(&[prefix, &name]);
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut h = base_header(&meta, EntryType::Regular);
            h.set_mode(0);
            h.set_size(0);
            let whiteout = cat(&[prefix, OsStr::new(WHITEOUT_PREFIX), &name]);
            builder.append_data(&mut h, whiteout, io::empty())?;
            continue;
        }
        if ft.is_dir() {
            let mut h = base_header(&meta, EntryType::Directory);
            h.set_size(0);
            append_xattrs(builder, &path)?;
            let dir_rel = cat(&[rel.as_os_str(), OsStr::new("/")]);
            builder.append_data(&mut h, &dir_rel, io::empty())?;
            if xattr::get(&path, overlay_opaque_xattr())?.as_deref() == Some(b"y") {
                let mut m = base_header(&meta, EntryType::Regular);
                m.set_mode(0);
                m.set_size(0);
                let marker = cat(&[dir_rel.as_os_str(), OsStr::new(OPAQUE_MARKER)]);
                builder.append_data(&mut m, marker, io::empty())?;
            }
            walk(builder, &path, dir_rel.as_os_str(), links)?;
            continue;
        }
        if ft.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                let mut h = base_header(&meta, EntryType::Link);
                h.set_size(0);
                builder.append_link(&mut h, &rel, first)?;
                continue;
            }
            links.insert(key, rel.clone());
        }
        append_xattrs(builder, &path)?;
        if ft.is_file() {
            let mut h = base_header(&meta, EntryType::Regular);
            h.set_size(meta.len());
            let file = std::fs::File::open(&path)?;
            builder.append_data(&mut h, &rel, file)?;
        } else if ft.is_symlink() {
            let mut h = base_header(&meta, EntryType::Symlink);
            h.set_size(0);
            let target = std::fs::read_link(&path)?;
            builder.append_link(&mut h, &rel, target)?;
        } else {
            let kind = if ft.is_fifo() {
                EntryType::Fifo
            } else if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                // Sockets cannot be archived; Docker skips them too.
                continue;
            };
            let mut h = base_header(&meta, kind);
            h.set_size(0);
            let rdev = meta.rdev();
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
            builder.append_data(&mut h, &rel, io::empty())?;
        }
    }
    Ok(())
}

fn base_header(meta: &std::fs::Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(meta.mtime().max(0) as u64);
    h
}

/// Records the path's exportable xattrs as PAX `SCHILY.xattr.*` records before its entry.
fn append_xattrs<W: Write>(builder: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let mut records = Vec::new();
    let mut names = xattr::list(path)?;
    names.sort();
    for name in names {
        if crate::sys::userns::is_overlay_xattr(&name) {
            continue;
        }
        if let Some(value) = xattr::get(path, &name)? {
            records.push((format!("SCHILY.xattr.{name}"), value));
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

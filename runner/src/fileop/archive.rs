//! Archives that `ADD` extracts: recognized by their first bytes, unpacked with the checks that
//! keep a hostile archive inside its destination.

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Compression of a local archive that `ADD` extracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// An uncompressed tar.
    Tar,
    /// gzip-compressed tar.
    Gzip,
    /// zstd-compressed tar.
    Zstd,
    /// bzip2-compressed tar.
    Bzip2,
    /// xz-compressed tar.
    Xz,
}

/// Recognizes archives by their first bytes, as Docker does (not by file name).
pub fn archive_kind(path: &Path) -> Result<Option<ArchiveKind>, String> {
    let mut head = [0u8; 512];
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Some(ArchiveKind::Gzip));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Some(ArchiveKind::Zstd));
    }
    if head.starts_with(b"BZh") {
        return Ok(Some(ArchiveKind::Bzip2));
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Ok(Some(ArchiveKind::Xz));
    }
    if n >= 262 && &head[257..262] == b"ustar" {
        return Ok(Some(ArchiveKind::Tar));
    }
    Ok(None)
}

/// Extracts the archive at `archive` (any [`ArchiveKind`], recognized by content) into the
/// directory `dest`, as `ADD` does. Returns `false`, extracting nothing, when the file is not
/// an archive.
///
/// Hostile archives cannot reach outside `dest`: entries with `..` are skipped, nothing is
/// written through a symlink that leads outside (tar's `unpack_in` checks each parent), hard
/// links must point inside, overlayfs's own `trusted.overlay.*` attributes are never set, and
/// device nodes are skipped when the kernel refuses to create them (unprivileged builds), as
/// rootless Docker does. `runner/tests/breakout.rs` holds the cases.
pub fn extract_archive(archive: &Path, dest: &Path) -> Result<bool, String> {
    match archive_kind(archive)? {
        Some(kind) => unpack(archive, kind, dest).map(|()| true),
        None => Ok(false),
    }
}

pub(super) fn unpack(archive: &Path, kind: ArchiveKind, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let buffered = io::BufReader::new(file);
    let reader: Box<dyn Read> = match kind {
        ArchiveKind::Tar => Box::new(buffered),
        ArchiveKind::Gzip => Box::new(flate2::read::GzDecoder::new(buffered)),
        ArchiveKind::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| format!("{}: {e}", archive.display()))?,
        ),
        ArchiveKind::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        ArchiveKind::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buffered)),
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(crate::sys::userns::owners_preserved());
    tar.set_preserve_mtime(true);
    // Extended attributes are applied by `set_entry_xattrs`, which leaves out overlayfs's.
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let err = |e: io::Error| format!("extracting {}: {e}", archive.display());
    // Directory times are set last, deepest first, because writing their contents changes them.
    let mut dirs: Vec<(PathBuf, i64)> = Vec::new();
    for entry in tar.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let path = dest.join(entry.path().map_err(err)?);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            dirs.push((path.clone(), entry.header().mtime().unwrap_or(0) as i64));
        }
        let xattrs = crate::extract::entry_xattrs(&mut entry).map_err(err)?;
        // As Docker does, whatever is at an entry's path is replaced, except a directory by a
        // directory. The parents are checked first: real directories inside `dest`.
        let name = entry.path().map_err(err)?.into_owned();
        let Some(target) = crate::extract::archive_target(dest, &name).map_err(err)? else {
            continue;
        };
        crate::extract::remove_existing(&target, kind.is_dir()).map_err(err)?;
        let unpacked = if crate::extract::is_special(kind) {
            crate::extract::make_special(&target, entry.header()).map_err(err)?;
            false
        } else {
            entry.unpack_in(dest).map_err(err)?
        };
        if unpacked {
            crate::extract::keep_zero_mtime(&path, entry.header()).map_err(err)?;
            crate::extract::set_xattrs(&path, &xattrs).map_err(err)?;
        }
    }
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (dir, mtime) in dirs {
        let t = TimeSpec::new(mtime, 0);
        let _ = utimensat(
            nix::fcntl::AT_FDCWD,
            &dir,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(())
}

//! Unpacking an OCI layer tar into a snapshot directory (overlayfs format), safely.
//!
//! Every entry lands inside the destination: absolute names are made relative, `..` is refused,
//! and no entry is written through a symlink (a layer cannot plant `a -> /etc` and then write
//! `a/passwd`). OCI whiteouts become overlay markers: `.wh.x` a 0/0 character device `x`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory. Directory modification
//! times are restored after their contents are written. Regular files of up to 16 MiB are
//! written by a thread of their own while the stream is read on (see [`writers`]).

mod writers;

use crate::diff::{OPAQUE_MARKER, WHITEOUT_PREFIX, overlay_opaque_xattr};
use crate::sys::xattr;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A layer entry's path made relative and checked: `None` for the root itself.
fn clean(path: &Path) -> io::Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid(format!(
                    "layer entry {} points outside the layer",
                    path.display()
                )));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Makes sure every ancestor of `rel` under `root` is a real directory (creating missing ones),
/// never a symlink.
fn prepare_parents(root: &Path, rel: &Path) -> io::Result<()> {
    let mut current = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            current.push(c);
            match std::fs::symlink_metadata(&current) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(invalid(format!(
                        "layer entry {} would be written through {}, which is not a directory",
                        rel.display(),
                        current.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&current)?,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Removes what is at `path` (never following a symlink), unless it is a directory and
/// `keep_dir`.
pub(crate) fn remove_existing(path: &Path, keep_dir: bool) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Puts back an mtime of 0 after `tar` unpacked an entry: tar-rs writes 1 instead (for Cargo's
/// sake), but a layer must keep its files' times exactly, as BuildKit does.
pub(crate) fn keep_zero_mtime(path: &Path, header: &tar::Header) -> io::Result<()> {
    if header.mtime().ok() == Some(0) && !header.entry_type().is_dir() {
        let zero = TimeSpec::new(0, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &zero,
            &zero,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

/// The extended attributes an entry carries (PAX `SCHILY.xattr.*` records), without
/// overlayfs's own `trusted.overlay.*`: a layer or archive must not be able to set opaque
/// markers, redirects or metacopy flags that overlayfs would act on.
pub(crate) fn entry_xattrs<R: Read>(
    entry: &mut tar::Entry<R>,
) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.")
                && !crate::sys::userns::is_overlay_xattr(name)
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

/// Sets `xattrs` on `path` (never on or through a symlink). Attributes the filesystem does
/// not support are left out.
pub(crate) fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    if xattrs.is_empty() || std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Ok(());
    }
    for (name, value) in xattrs {
        match xattr::set(path, name, value) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Creates the device node or FIFO of `header` at `target` (tar's own unpacking would make an
/// empty regular file of it). Returns `false` when the kernel refuses a device node because
/// the process lacks the privilege: such nodes are skipped, as rootless Docker skips them.
pub(crate) fn make_special(target: &Path, header: &tar::Header) -> io::Result<bool> {
    let kind = header.entry_type();
    let (flag, dev) = if kind.is_fifo() {
        (SFlag::S_IFIFO, 0)
    } else {
        let major = header.device_major()?.unwrap_or(0);
        let minor = header.device_minor()?.unwrap_or(0);
        let flag = if kind.is_character_special() {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        (flag, libc::makedev(major, minor))
    };
    let mode = Mode::from_bits_truncate(header.mode()? & 0o7777);
    match mknod(target, flag, mode, dev) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) if !kind.is_fifo() => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // mknod applies the umask; owner and times as for any entry.
    std::fs::set_permissions(
        target,
        std::os::unix::fs::PermissionsExt::from_mode(mode.bits()),
    )?;
    let (uid, gid) = (header.uid()?, header.gid()?);
    if !crate::sys::userns::owners_preserved() {
        return Ok(true);
    }
    match nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        target,
        Some(nix::unistd::Uid::from_raw(uid as u32)),
        Some(nix::unistd::Gid::from_raw(gid as u32)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(e) => return Err(e.into()),
    }
    let t = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        target,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(true)
}

/// Whether a tar entry is a device node or FIFO, which [`make_special`] creates.
pub(crate) fn is_special(kind: tar::EntryType) -> bool {
    kind.is_character_special() || kind.is_block_special() || kind.is_fifo()
}

/// Where an ADD archive's entry goes below `dest`, checked as layer entries are: `None` when
/// the entry is the root itself or would leave `dest` (`..`), an error when a parent is not a
/// directory inside `dest` (a symlink).
pub(crate) fn archive_target(dest: &Path, name: &Path) -> io::Result<Option<PathBuf>> {
    let Ok(Some(rel)) = clean(name) else {
        return Ok(None);
    };
    prepare_parents(dest, &rel)?;
    Ok(Some(dest.join(rel)))
}

/// Unpacks the uncompressed layer tar `reader` into `dest`.
pub fn extract_layer(reader: impl Read, dest: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(crate::sys::userns::owners_preserved());
    archive.set_preserve_mtime(true);
    // Extended attributes are applied by `set_xattrs`, which leaves out overlayfs's own.
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    let mut writers = writers::Writers::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let Some(rel) = clean(&raw)? else { continue };
        prepare_parents(dest, &rel)?;
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
        if name == OPAQUE_MARKER {
            xattr::set(&parent, overlay_opaque_xattr(), b"y")?;
            continue;
        }
        if name.starts_with(&format!("{WHITEOUT_PREFIX}{WHITEOUT_PREFIX}")) {
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let target = parent.join(hidden);
            writers.drain()?;
            remove_existing(&target, false)?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)?;
            continue;
        }
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_hard_link() || writers.is_pending(&target) {
            writers.drain()?;
        }
        if std::fs::symlink_metadata(&target).is_ok() {
            writers.drain()?;
            remove_existing(&target, kind.is_dir())?;
        }
        if kind.is_hard_link() {
            let link = entry
                .link_name()?
                .ok_or_else(|| invalid(format!("hard link {} has no target", rel.display())))?;
            let Some(link_rel) = clean(&link)? else {
                return Err(invalid(format!(
                    "hard link {} points at the root",
                    rel.display()
                )));
            };
            prepare_parents(dest, &link_rel)?;
            std::fs::hard_link(dest.join(link_rel), &target)?;
            continue;
        }
        if kind.is_dir() {
            dirs.push((target.clone(), entry.header().mtime().unwrap_or(0)));
        }
        let xattrs = entry_xattrs(&mut entry)?;
        if is_special(kind) {
            if make_special(&target, entry.header())? {
                set_xattrs(&target, &xattrs)?;
            }
            continue;
        }
        let header = entry.header();
        // The entry's size, not the header's: a PAX record may override it.
        if kind.is_file() && entry.size() <= writers::LARGEST {
            let (mode, mtime) = (header.mode()?, header.mtime()?);
            let owner = crate::sys::userns::owners_preserved()
                .then(|| Ok::<_, io::Error>((header.uid()?, header.gid()?)))
                .transpose()?;
            let room = writers::Room::reserve(entry.size());
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut data)?;
            writers.write(writers::File {
                target,
                data,
                mode,
                owner,
                mtime,
                xattrs,
                room,
            })?;
            continue;
        }
        entry.unpack(&target)?;
        keep_zero_mtime(&target, entry.header())?;
        set_xattrs(&target, &xattrs)?;
    }
    writers.drain()?;
    // Children changed their directories' mtimes; put them back, deepest first.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (dir, mtime) in dirs {
        let t = TimeSpec::new(mtime as i64, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &dir,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::write_layer;

    fn layer(entries: &[(&str, EntryKind)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_mtime(1000);
            h.set_uid(0);
            h.set_gid(0);
            match kind {
                EntryKind::File(data) => {
                    h.set_size(data.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, name, data.as_bytes()).unwrap();
                }
                EntryKind::Dir => {
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, name, io::empty()).unwrap();
                }
                EntryKind::Symlink(target) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Symlink);
                    b.append_link(&mut h, name, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    enum EntryKind {
        File(&'static str),
        Dir,
        Symlink(&'static str),
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn refuses_to_escape() {
        let dir = tempfile::tempdir().unwrap();
        let bad = layer(&[
            ("link", EntryKind::Symlink("/tmp")),
            ("link/owned", EntryKind::File("x")),
        ]);
        let err = extract_layer(&bad[..], dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        // `append_data` refuses `..`, so write the name into the header by hand.
        h.as_old_mut().name[..8].copy_from_slice(b"../evil\0");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let bad = b.into_inner().unwrap();
        let err = extract_layer(&bad[..], dir.path()).unwrap_err();
        assert!(err.to_string().contains("outside the layer"), "{err}");
    }

    #[test]
    fn whiteouts_round_trip_through_overlay_format() {
        if !is_root() {
            eprintln!("skipped: creating whiteout devices and trusted.* xattrs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = layer(&[
            ("etc/", EntryKind::Dir),
            ("etc/.wh.passwd", EntryKind::File("")),
            ("opt/", EntryKind::Dir),
            ("opt/.wh..wh..opq", EntryKind::File("")),
            ("opt/new", EntryKind::File("n")),
        ]);
        extract_layer(&src[..], dir.path()).unwrap();
        let wh = std::fs::symlink_metadata(dir.path().join("etc/passwd")).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        assert_eq!(
            xattr::get(&dir.path().join("opt"), overlay_opaque_xattr())
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            std::fs::symlink_metadata(dir.path().join("opt"))
                .unwrap()
                .mtime(),
            1000,
            "directory mtime restored after its children were written"
        );

        let mut out = Vec::new();
        write_layer(dir.path(), &mut out).unwrap();
        let names: Vec<String> = tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/.wh.passwd",
                "opt/",
                "opt/.wh..wh..opq",
                "opt/new"
            ]
        );
        let mut again = Vec::new();
        write_layer(dir.path(), &mut again).unwrap();
        assert_eq!(out, again, "the same snapshot gives the same bytes");
    }
}

//! The native snapshotter: root filesystems by copying, changes by comparing, for kernels or
//! filesystems where overlayfs cannot be mounted.
//!
//! A step's root is *materialized*: its layers (snapshots in overlay format) are applied in
//! order into a fresh directory, honouring whiteouts and opaque directories. Before the step
//! runs, a [`Baseline`] records every entry's inode number and change time; afterwards,
//! [`diff`] writes what changed into an upper directory in the very format overlayfs would
//! have produced (changed entries with their parent directories, 0/0 character devices for
//! deletions, `trusted.overlay.opaque` on directories that were replaced), so layers made with
//! either snapshotter are the same.
//!
//! Change detection needs no content comparison: the kernel updates an inode's `ctime` on any
//! change to its content or metadata and it cannot be set from user space, while a replaced
//! entry has a new inode number.

use crate::diff::overlay_opaque_xattr;
use crate::snapshot::Snapshotter;
use crate::sys::xattr;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Gives `dst` the owner, permission bits, times and xattrs of `meta`/`src` (not following
/// symlinks; overlay's own xattrs are not copied).
fn copy_metadata(src: &Path, meta: &std::fs::Metadata, dst: &Path) -> io::Result<()> {
    if crate::sys::userns::owners_preserved() {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            dst,
            Some(nix::unistd::Uid::from_raw(meta.uid())),
            Some(nix::unistd::Gid::from_raw(meta.gid())),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    if !meta.file_type().is_symlink() {
        for name in xattr::list(src)? {
            if crate::sys::userns::is_overlay_xattr(&name) {
                continue;
            }
            if let Some(value) = xattr::get(src, &name)? {
                xattr::set(dst, &name, &value)?;
            }
        }
        // After chown, which clears setuid/setgid bits.
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    set_times(meta, dst)
}

/// Gives `dst` (not following a symlink) the access and modification times of `meta`.
pub(crate) fn set_times(meta: &std::fs::Metadata, dst: &Path) -> io::Result<()> {
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

/// Creates a copy of the non-directory `src` at `dst` (which must not exist), with its
/// metadata. Regular files that are hard links of one already copied (same key in `links`)
/// become hard links of that copy.
fn copy_leaf(
    src: &Path,
    meta: &std::fs::Metadata,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                return std::fs::hard_link(first, dst);
            }
            links.insert(key, dst.to_path_buf());
        }
        std::fs::copy(src, dst)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else {
        let kind = if ft.is_char_device() {
            SFlag::S_IFCHR
        } else if ft.is_block_device() {
            SFlag::S_IFBLK
        } else if ft.is_fifo() {
            SFlag::S_IFIFO
        } else {
            // Sockets are not part of layers.
            return Ok(());
        };
        mknod(
            dst,
            kind,
            Mode::from_bits_truncate(meta.mode() & 0o7777),
            meta.rdev(),
        )?;
    }
    copy_metadata(src, meta, dst)
}

/// Applies the layers (bottom first) of `snapshots` to the empty directory `dest`.
pub fn materialize(snapshots: &Snapshotter, layers: &[String], dest: &Path) -> io::Result<()> {
    let dirs: Vec<PathBuf> = layers.iter().map(|l| snapshots.layer_dir(l)).collect();
    apply_dirs(&dirs, dest, Leaves::Copy)
}

/// How [`apply_dirs`] makes the files, links and devices of a layer in the destination.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaves {
    /// Copies with their metadata: the destination may be written.
    Copy,
    /// Hard links of the snapshot's own inodes (a copy where linking fails): for a read-only
    /// view, such as an overlay lower directory, which copies up before any write.
    Link,
}

/// Applies the directories `layers` (bottom first; snapshots in overlay format) to `dest`,
/// making leaves as `leaves` says.
pub(crate) fn apply_dirs(layers: &[PathBuf], dest: &Path, leaves: Leaves) -> io::Result<()> {
    for layer in layers {
        let mut apply = Apply {
            dirs: Vec::new(),
            links: HashMap::new(),
            leaves,
        };
        apply.dir(layer, dest)?;
        // Directory times last, deepest first: writing their contents changed them.
        for (src, meta, dst) in apply.dirs.into_iter().rev() {
            copy_metadata(&src, &meta, &dst)?;
        }
    }
    if leaves == Leaves::Link
        && let Some(top) = layers.last()
    {
        // A view's root is the top layer's, as in an overlay of the layers.
        copy_metadata(top, &std::fs::symlink_metadata(top)?, dest)?;
    }
    Ok(())
}

type DirMeta = (PathBuf, std::fs::Metadata, PathBuf);

/// One layer being applied: the directories whose metadata is set at the end, the hard links
/// copied so far, how leaves are made.
struct Apply {
    dirs: Vec<DirMeta>,
    links: HashMap<(u64, u64), PathBuf>,
    leaves: Leaves,
}

impl Apply {
    fn dir(&mut self, layer_dir: &Path, dest_dir: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(layer_dir)? {
            let entry = entry?;
            let src = entry.path();
            let dst = dest_dir.join(entry.file_name());
            let meta = std::fs::symlink_metadata(&src)?;
            if is_whiteout(&meta) {
                crate::extract::remove_existing(&dst, false)?;
                continue;
            }
            if meta.is_dir() {
                let opaque = xattr::get(&src, overlay_opaque_xattr())?.as_deref() == Some(b"y");
                match std::fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() && !opaque => {}
                    Ok(_) => {
                        crate::extract::remove_existing(&dst, false)?;
                        std::fs::create_dir(&dst)?;
                    }
                    Err(_) => std::fs::create_dir(&dst)?,
                }
                self.dir(&src, &dst)?;
                self.dirs.push((src, meta, dst));
                continue;
            }
            crate::extract::remove_existing(&dst, false)?;
            // Sockets are not part of layers.
            let linked = self.leaves == Leaves::Link
                && !meta.file_type().is_socket()
                && std::fs::hard_link(&src, &dst).is_ok();
            if !linked {
                copy_leaf(&src, &meta, &dst, &mut self.links)?;
            }
        }
        Ok(())
    }
}

/// Identity of an entry before a step: inode and its birth time (inode numbers are reused at
/// once by some filesystems, so a removed and recreated directory could otherwise look like
/// the same one), change time, and whether it is a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    ino: u64,
    born: Option<std::time::SystemTime>,
    ctime: (i64, i64),
    dir: bool,
}

impl Seen {
    fn of(meta: &std::fs::Metadata) -> Seen {
        Seen {
            ino: meta.ino(),
            born: meta.created().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            dir: meta.is_dir(),
        }
    }

    fn same_inode(&self, other: &Seen) -> bool {
        self.ino == other.ino && self.born == other.born
    }
}

/// Every entry of a materialized root before the step, by relative path.
#[derive(Debug, Default)]
pub struct Baseline {
    seen: HashMap<PathBuf, Seen>,
}

/// Records every entry under `root`.
pub fn baseline(root: &Path) -> io::Result<Baseline> {
    let mut seen = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            let meta = std::fs::symlink_metadata(root.join(&child))?;
            if meta.is_dir() {
                stack.push(child.clone());
            }
            seen.insert(child, Seen::of(&meta));
        }
    }
    Ok(Baseline { seen })
}

/// Writes the changes made under `root` since `before` into the empty directory `upper`, in
/// overlayfs's upper format. Paths in `ignore` (mount points the sandbox made) are left out.
pub fn diff(
    root: &Path,
    before: &Baseline,
    upper: &Path,
    ignore: &HashSet<PathBuf>,
) -> io::Result<()> {
    let mut writer = UpperWriter {
        root,
        upper,
        made: HashSet::new(),
        links: HashMap::new(),
    };
    let mut present = HashSet::new();
    // Directories whose old contents are hidden: replaced ones (opaque).
    let mut replaced: Vec<PathBuf> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            if ignore.contains(&child) {
                present.insert(child);
                continue;
            }
            let meta = std::fs::symlink_metadata(root.join(&child))?;
            let old = before.seen.get(&child);
            let now = Seen::of(&meta);
            present.insert(child.clone());
            let changed = old != Some(&now);
            if meta.is_dir() {
                let new_dir = old.is_none_or(|o| !o.same_inode(&now) || !o.dir);
                if new_dir && old.is_some() {
                    replaced.push(child.clone());
                    writer.dir(&child, true)?;
                } else if changed {
                    writer.dir(&child, false)?;
                }
                stack.push(child);
            } else if changed {
                writer.leaf(&child, &meta)?;
            }
        }
    }
    // Deleted entries: a whiteout for each topmost one, unless an opaque directory hides it.
    // (What is below an ignored mount point was not walked, and is not deleted.)
    let mut deleted: Vec<&PathBuf> = before
        .seen
        .keys()
        .filter(|p| !present.contains(*p) && !ignore.iter().any(|i| p.starts_with(i)))
        .collect();
    deleted.sort();
    let mut last: Option<&PathBuf> = None;
    for path in deleted {
        if last.is_some_and(|l| path.starts_with(l)) {
            continue;
        }
        last = Some(path);
        if replaced.iter().any(|r| path.starts_with(r)) {
            continue;
        }
        writer.whiteout(path)?;
    }
    // Writing entries (and whiteouts) into a directory changed its times: give each directory
    // made its times from the root again, deepest first, as an overlay's upper keeps them.
    let mut made: Vec<&PathBuf> = writer.made.iter().collect();
    made.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in made {
        let meta = std::fs::symlink_metadata(root.join(rel))?;
        set_times(&meta, &upper.join(rel))?;
    }
    Ok(())
}

struct UpperWriter<'a> {
    root: &'a Path,
    upper: &'a Path,
    /// Directories created in the upper so far.
    made: HashSet<PathBuf>,
    links: HashMap<(u64, u64), PathBuf>,
}

impl UpperWriter<'_> {
    /// Makes the parents of `rel` in the upper, with their metadata from the root, as an
    /// overlay copy-up would.
    fn parents(&mut self, rel: &Path) -> io::Result<()> {
        if let Some(parent) = rel.parent()
            && !parent.as_os_str().is_empty()
        {
            self.dir(parent, false)?;
        }
        Ok(())
    }

    fn dir(&mut self, rel: &Path, opaque: bool) -> io::Result<()> {
        if self.made.contains(rel) {
            if opaque {
                xattr::set(&self.upper.join(rel), overlay_opaque_xattr(), b"y")?;
            }
            return Ok(());
        }
        self.parents(rel)?;
        let src = self.root.join(rel);
        let dst = self.upper.join(rel);
        let meta = std::fs::symlink_metadata(&src)?;
        std::fs::create_dir(&dst)?;
        copy_metadata(&src, &meta, &dst)?;
        if opaque {
            xattr::set(&dst, overlay_opaque_xattr(), b"y")?;
        }
        self.made.insert(rel.to_path_buf());
        Ok(())
    }

    fn leaf(&mut self, rel: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
        self.parents(rel)?;
        copy_leaf(
            &self.root.join(rel),
            meta,
            &self.upper.join(rel),
            &mut self.links,
        )?;
        self.restore_parent_time(rel)
    }

    fn whiteout(&mut self, rel: &Path) -> io::Result<()> {
        self.parents(rel)?;
        mknod(&self.upper.join(rel), SFlag::S_IFCHR, Mode::empty(), 0)?;
        self.restore_parent_time(rel)
    }

    /// Adding an entry to an upper directory changed its mtime; put back the root's.
    fn restore_parent_time(&self, rel: &Path) -> io::Result<()> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        let meta = std::fs::symlink_metadata(self.root.join(parent))?;
        set_times(&meta, &self.upper.join(parent))
    }
}

/// Creates the mount point `target` (absolute in the root) at `root` if it is missing, only
/// through real directories (never following a symlink of the image); returns the created
/// paths, relative, so [`diff`] can leave them out. `None` when a symlink is in the way: the
/// sandbox then creates the mount point inside the root after pivot_root.
pub fn make_mount_point(root: &Path, target: &str, dir: bool) -> io::Result<Option<Vec<PathBuf>>> {
    let parts: Vec<&str> = target
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Ok(Some(vec![]));
    }
    let mut created = Vec::new();
    let mut rel = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        rel.push(part);
        let path = root.join(&rel);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Ok(None),
            Ok(m) if !last && !m.is_dir() => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if last && !dir {
                    std::fs::write(&path, b"")?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
                } else {
                    std::fs::create_dir(&path)?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                }
                created.push(rel.clone());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_changes_like_an_overlay_upper() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: whiteouts and trusted.* xattrs need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::open(&dir.path().join("snapshots")).unwrap();
        // Two layers: the second deletes a file and makes a directory opaque.
        let l1 = s.new_upper().unwrap();
        for d in ["etc", "opt/old", "keep/sub"] {
            std::fs::create_dir_all(l1.fs.join(d)).unwrap();
        }
        std::fs::write(l1.fs.join("etc/passwd"), "root").unwrap();
        std::fs::write(l1.fs.join("etc/group"), "root").unwrap();
        std::fs::write(l1.fs.join("opt/old/file"), "old").unwrap();
        std::fs::write(l1.fs.join("keep/sub/f"), "f").unwrap();
        s.commit(l1, "sha256:1111").unwrap();
        let l2 = s.new_upper().unwrap();
        std::fs::create_dir_all(l2.fs.join("etc")).unwrap();
        mknod(&l2.fs.join("etc/group"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
        std::fs::create_dir_all(l2.fs.join("keep")).unwrap();
        xattr::set(&l2.fs.join("keep"), overlay_opaque_xattr(), b"y").unwrap();
        std::fs::write(l2.fs.join("keep/new"), "n").unwrap();
        s.commit(l2, "sha256:2222").unwrap();

        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        materialize(&s, &["sha256:1111".into(), "sha256:2222".into()], &root).unwrap();
        assert!(!root.join("etc/group").exists(), "whiteout applied");
        assert!(
            !root.join("keep/sub").exists(),
            "opaque directory hid the lower one"
        );
        assert_eq!(std::fs::read_to_string(root.join("keep/new")).unwrap(), "n");

        let before = baseline(&root).unwrap();
        // The step: edit, add, delete, replace a directory, leave the rest alone.
        std::fs::write(root.join("etc/passwd"), "root2").unwrap();
        std::fs::write(root.join("added"), "a").unwrap();
        std::fs::remove_file(root.join("keep/new")).unwrap();
        std::fs::remove_dir_all(root.join("opt/old")).unwrap();
        std::fs::create_dir(root.join("opt/old")).unwrap();
        std::fs::write(root.join("opt/old/x"), "x").unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        diff(&root, &before, &upper, &HashSet::new()).unwrap();

        let mut names = Vec::new();
        let mut stack = vec![upper.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(&upper).unwrap().display().to_string();
                let tag = if is_whiteout(&meta) {
                    " (whiteout)"
                } else if meta.is_dir()
                    && xattr::get(&p, overlay_opaque_xattr()).unwrap().as_deref() == Some(b"y")
                {
                    " (opaque)"
                } else {
                    ""
                };
                names.push(format!("{rel}{tag}"));
                if meta.is_dir() {
                    stack.push(p);
                }
            }
        }
        names.sort();
        assert_eq!(
            names,
            [
                "added",
                "etc",
                "etc/passwd",
                "keep",
                "keep/new (whiteout)",
                "opt",
                "opt/old (opaque)",
                "opt/old/x"
            ]
        );
        assert_eq!(
            std::fs::symlink_metadata(upper.join("etc"))
                .unwrap()
                .mtime(),
            std::fs::symlink_metadata(root.join("etc")).unwrap().mtime()
        );
    }
}

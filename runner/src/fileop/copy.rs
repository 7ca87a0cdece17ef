//! `COPY`/`ADD` of files and directories inside the file op's child: the selected sources are
//! walked in order and directories, symlinks and devices made as the walk meets them; regular
//! files are queued and written by up to [`WRITERS`] threads at once, one per two cores
//! (`io::copy` between files is `copy_file_range`, which xfs and btrfs make a reflink when both
//! ends share the filesystem: the data goes into the overlay's upper directory directly, see
//! [`copy_data`]), and each directory's metadata is set after everything below it is written,
//! since writing in it changes its times. One per two cores because the copy is all kernel
//! work: on a 2-core machine two or four writers gained nothing measurable on a cold `COPY` of
//! a source tree and cost a third (two) to two thirds (four) more system time (ext4 creates a
//! directory's files one at a time under its lock, and the other threads spin on it), so there
//! the copy is one thread.

use super::archive::{archive_kind, unpack};
use super::{Owner, chown, chown_error, create_dirs, owner_of};
use crate::sys::xattr;
use nix::sys::stat::{Mode, SFlag, mknod};
use nix::sys::time::TimeSpec;
use rbuild_solver::chmod::SymbolicMode;
use rbuild_solver::contenthash::{resolve_in_root, select};
use rbuild_solver::pathname;
use rbuild_solver::pattern::{CopyFilter, Visit};
use std::cell::RefCell;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How one `COPY`/`ADD` copies.
pub(super) struct CopyOptions<'a> {
    pub owner: Option<&'a str>,
    pub mode: Option<u32>,
    pub chmod: Option<&'a SymbolicMode>,
    pub unpack_archives: bool,
    /// Keep the sources' owners (a stage or image) rather than root's (the context).
    pub keep_owner: bool,
    /// The upper directory of the destination overlay (none with the native snapshotter):
    /// file data is written there, see [`copy_data`].
    pub upper: Option<&'a Path>,
    /// What below the sources is copied.
    pub filter: CopyFilter,
}

/// The most threads that write one copy's files (on 8 cores or more).
const WRITERS: usize = 4;

/// How many queued files make the walk stop and write them (with the directories done so
/// far), so that a huge copy's queue stays small.
const QUEUE: usize = 4096;

/// What a copy gives every entry it makes.
#[derive(Clone, Copy)]
struct Attrs<'a> {
    owner: Owner,
    mode: Option<u32>,
    /// A symbolic mode.
    chmod: Option<&'a SymbolicMode>,
    /// The destination's root and its overlay's upper directory.
    upper: Option<(&'a Path, &'a Path)>,
}

/// The part of a copy that is the same for every entry below a selected directory.
struct Walk<'a> {
    attrs: Attrs<'a>,
    filter: &'a CopyFilter,
    /// The [`Visit::WalkOnly`] directories being walked, outermost first: they are created
    /// when the first entry below them is copied.
    pending: RefCell<Vec<PendingDir>>,
    /// What the walk left for [`Walk::flush`].
    queued: RefCell<Queued>,
}

/// Regular files to write, and directories (in the order their walks ended: every directory
/// after all that is below it) whose metadata waits for their files.
#[derive(Default)]
struct Queued {
    files: Vec<Entry>,
    dirs: Vec<Entry>,
}

/// A source entry with its metadata, and where it goes.
struct Entry {
    src: PathBuf,
    meta: std::fs::Metadata,
    dst: PathBuf,
}

/// A destination directory that exists only if something is copied into it.
struct PendingDir {
    dst: PathBuf,
    /// Whether it exists now (created by this copy, or already there).
    exists: bool,
    /// Whether this copy created it (and so gives it the source directory's metadata).
    created: bool,
}

impl Walk<'_> {
    /// Creates the pending directories that do not exist yet, outermost first.
    fn materialize(&self) -> Result<(), String> {
        for dir in self.pending.borrow_mut().iter_mut().filter(|d| !d.exists) {
            match std::fs::symlink_metadata(&dir.dst) {
                Ok(meta) if meta.is_dir() => {}
                found => {
                    if found.is_ok() {
                        std::fs::remove_file(&dir.dst)
                            .map_err(|e| format!("removing {}: {e}", dir.dst.display()))?;
                    }
                    std::fs::create_dir(&dir.dst)
                        .map_err(|e| format!("mkdir {}: {e}", dir.dst.display()))?;
                    dir.created = true;
                }
            }
            dir.exists = true;
        }
        Ok(())
    }

    /// Queues the regular file `entry`, and writes the queue when it is long.
    fn queue_file(&self, entry: Entry) -> Result<(), String> {
        let long = {
            let mut queued = self.queued.borrow_mut();
            queued.files.push(entry);
            queued.files.len() >= QUEUE
        };
        if long { self.flush() } else { Ok(()) }
    }

    /// Queues the metadata of the directory `entry`, whose walk has ended.
    fn queue_dir(&self, entry: Entry) {
        self.queued.borrow_mut().dirs.push(entry);
    }

    /// Writes the queued files, then gives the queued directories their metadata.
    fn flush(&self) -> Result<(), String> {
        let Queued { files, dirs } = std::mem::take(&mut *self.queued.borrow_mut());
        write_files(&files, self.attrs, writers(files.len()))?;
        for dir in dirs {
            copy_metadata(&dir.src, &dir.meta, Target::Path(&dir.dst), self.attrs)?;
        }
        Ok(())
    }
}

/// How many threads write `files` files: one per two cores, at most [`WRITERS`], and one for
/// fewer than 16 files.
fn writers(files: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .min(WRITERS)
        .min(files / 8)
}

/// Writes `files` on `threads` threads; the error is that of the first file (in walk order)
/// that failed, and a failure stops the rest.
fn write_files(files: &[Entry], attrs: Attrs, threads: usize) -> Result<(), String> {
    if threads <= 1 {
        return files.iter().try_for_each(|f| write_file(f, attrs));
    }
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<(usize, String)>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    if let Err(e) = write_file(file, attrs) {
                        let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                        if slot.as_ref().is_none_or(|(first, _)| i < *first) {
                            *slot = Some((i, e));
                        }
                        next.store(files.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Writes the regular file `file.dst` (which does not exist) with the data and metadata of
/// `file.src`, through open files: no path lookups after the two opens.
fn write_file(file: &Entry, attrs: Attrs) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let (src, dst) = (&file.src, &file.dst);
    let mut from = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(|e| format!("opening {}: {e}", src.display()))?;
    let mut to = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| format!("creating {}: {e}", dst.display()))?;
    copy_data(&mut from, &mut to, dst, attrs.upper)
        .map_err(|e| format!("copying to {}: {e}", dst.display()))?;
    copy_metadata(src, &file.meta, Target::File(&to, dst), attrs)
}

/// Copies the data of `from` into `to`, the file just created at `dst` through the destination
/// overlay; `upper` is that overlay's root and upper directory. That new file is a file of the
/// upper directory, which is written directly when it is there (the same inode): across the
/// overlay, `copy_file_range` fails (the overlay is another filesystem) and the bytes are
/// copied, while between the source and the upper directory, when they share a filesystem,
/// it shares their extents instead on xfs and btrfs (a reflink: no data copied). Writing an
/// upper file's data under a mounted overlay is coherent: the overlay keeps no data of its
/// own for it, and reads its size from the upper file.
fn copy_data(
    from: &mut std::fs::File,
    to: &mut std::fs::File,
    dst: &Path,
    upper: Option<(&Path, &Path)>,
) -> io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some((root, upper)) = upper
        && let Ok(rel) = dst.strip_prefix(root)
        && let Ok(mut real) = std::fs::File::options()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(upper.join(rel))
        && real.metadata()?.ino() == to.metadata()?.ino()
    {
        return io::copy(from, &mut real);
    }
    io::copy(from, to)
}

pub(super) fn copy(
    src_root: &Path,
    dest_root: &Path,
    patterns: &[String],
    dest: &str,
    options: &CopyOptions,
) -> Result<(), String> {
    let mut selected = Vec::new();
    for pattern in patterns {
        let found = select(src_root, pattern, &options.filter).map_err(|e| e.to_string())?;
        selected.extend(found.into_iter().map(|s| (s.rel, s.host)));
    }
    let owner = owner_of(dest_root, options.owner, options.keep_owner);
    let walk = Walk {
        attrs: Attrs {
            owner,
            mode: options.mode,
            chmod: options.chmod,
            upper: options.upper.map(|upper| (dest_root, upper)),
        },
        filter: &options.filter,
        pending: RefCell::new(Vec::new()),
        queued: RefCell::default(),
    };
    let dest_host =
        resolve_in_root(dest_root, dest, true).map_err(|e| format!("resolving {dest}: {e}"))?;
    let dest_is_dir = dest.ends_with('/')
        || selected.len() > 1
        || std::fs::metadata(&dest_host).is_ok_and(|m| m.is_dir());
    for (rel, host) in selected {
        let meta = std::fs::symlink_metadata(&host).map_err(|e| format!("{rel}: {e}"))?;
        if meta.is_dir() {
            create_dirs(&dest_host, dest_root, owner)?;
            copy_dir_contents(&host, &dest_host, &rel, "", &walk, false)?;
            // The next source may write where this one's queued files go.
            walk.flush()?;
            continue;
        }
        if options.unpack_archives
            && meta.is_file()
            && let Some(kind) = archive_kind(&host)?
        {
            create_dirs(&dest_host, dest_root, owner)?;
            unpack(&host, kind, &dest_host)?;
            continue;
        }
        let target = if dest_is_dir {
            let name = Path::new(&*pathname::to_os(&rel))
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(host.file_name().unwrap_or_default()));
            dest_host.join(name)
        } else {
            dest_host.clone()
        };
        if let Some(parent) = target.parent() {
            create_dirs(parent, dest_root, owner)?;
        }
        copy_entry(&host, Some(meta), &target, &rel, "", &walk, false)?;
        walk.flush()?;
    }
    Ok(())
}

/// Copies the entries of `src` (whose path relative to the source root is `rel`, and relative to
/// the source path being copied `below`) into `dst`, leaving out what the filter excludes.
/// `fresh` says that this copy just created `dst`, so nothing is in it yet.
fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    rel: &str,
    below: &str,
    walk: &Walk,
    fresh: bool,
) -> Result<(), String> {
    // Entries keep the directory open: their type comes with them, and their metadata is
    // read relative to it rather than by walking the whole path again.
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(src)
        .map_err(|e| format!("reading {}: {e}", src.display()))?
        .collect::<io::Result<_>>()
        .map_err(|e| format!("reading {}: {e}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let os_name = entry.file_name();
        let child = src.join(&os_name);
        let target = dst.join(&os_name);
        let name = pathname::from_os(&os_name);
        let child_rel = join_rel(rel, &name);
        let child_below = join_rel(below, &name);
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        match walk.filter.visit(&child_rel, &child_below, is_dir) {
            Visit::Skip => {}
            Visit::Include => {
                let meta = entry
                    .metadata()
                    .map_err(|e| format!("{}: {e}", child.display()))?;
                copy_entry(
                    &child,
                    Some(meta),
                    &target,
                    &child_rel,
                    &child_below,
                    walk,
                    fresh,
                )?
            }
            Visit::WalkOnly => {
                walk.pending.borrow_mut().push(PendingDir {
                    dst: target.clone(),
                    exists: false,
                    created: false,
                });
                let walked =
                    copy_dir_contents(&child, &target, &child_rel, &child_below, walk, false);
                let dir = walk.pending.borrow_mut().pop().expect("pushed above");
                walked?;
                if dir.created {
                    let meta = std::fs::symlink_metadata(&child)
                        .map_err(|e| format!("{}: {e}", child.display()))?;
                    walk.queue_dir(Entry {
                        src: child,
                        meta,
                        dst: target,
                    });
                }
            }
        }
    }
    Ok(())
}

/// `parent/name`, or `name` when `parent` is `""`.
fn join_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Copies one entry (recursively for directories), replacing what is at `dst` unless both are
/// directories, which merge. `meta` is `src`'s metadata if the caller has it; `fresh` says
/// that nothing is at `dst` (its directory was just created).
fn copy_entry(
    src: &Path,
    meta: Option<std::fs::Metadata>,
    dst: &Path,
    rel: &str,
    below: &str,
    walk: &Walk,
    fresh: bool,
) -> Result<(), String> {
    walk.materialize()?;
    let err = |what: &str, e: io::Error| format!("{what} {}: {e}", dst.display());
    let meta = match meta {
        Some(meta) => meta,
        None => std::fs::symlink_metadata(src).map_err(|e| format!("{}: {e}", src.display()))?,
    };
    let ft = meta.file_type();
    let existing = if fresh {
        None
    } else {
        std::fs::symlink_metadata(dst).ok()
    };
    let merge = match existing {
        Some(existing) if existing.is_dir() && ft.is_dir() => true,
        Some(existing) if existing.is_dir() => {
            std::fs::remove_dir_all(dst).map_err(|e| err("removing", e))?;
            false
        }
        Some(_) => {
            std::fs::remove_file(dst).map_err(|e| err("removing", e))?;
            false
        }
        None => false,
    };
    if ft.is_dir() {
        if !merge {
            std::fs::create_dir(dst).map_err(|e| err("mkdir", e))?;
        }
        copy_dir_contents(src, dst, rel, below, walk, !merge)?;
        walk.queue_dir(Entry {
            src: src.to_path_buf(),
            meta,
            dst: dst.to_path_buf(),
        });
        return Ok(());
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| err("readlink", e))?;
        std::os::unix::fs::symlink(target, dst).map_err(|e| err("symlink", e))?;
    } else if ft.is_file() {
        return walk.queue_file(Entry {
            src: src.to_path_buf(),
            meta,
            dst: dst.to_path_buf(),
        });
    } else {
        let kind = if ft.is_fifo() {
            SFlag::S_IFIFO
        } else if ft.is_char_device() {
            SFlag::S_IFCHR
        } else if ft.is_block_device() {
            SFlag::S_IFBLK
        } else {
            return Ok(()); // sockets are not copied
        };
        mknod(
            dst,
            kind,
            Mode::from_bits_truncate(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(|e| err("mknod", e.into()))?;
    }
    copy_metadata(src, &meta, Target::Path(dst), walk.attrs)
}

/// What [`copy_metadata`] changes: a path (never followed), or an open regular file.
enum Target<'a> {
    Path(&'a Path),
    File(&'a std::fs::File, &'a Path),
}

/// Gives the copy `dst` the owner (or the copy's), permission bits (or the copy's mode),
/// xattrs and times of `src`, whose metadata is `meta`.
fn copy_metadata(
    src: &Path,
    meta: &std::fs::Metadata,
    dst: Target,
    attrs: Attrs,
) -> Result<(), String> {
    let (owner, mode) = (attrs.owner, attrs.mode);
    let path = match dst {
        Target::Path(p) | Target::File(_, p) => p,
    };
    let err = |what: &str, e: io::Error| format!("{what} {}: {e}", path.display());
    let ft = meta.file_type();
    let (uid, gid) = match owner {
        Owner::Keep => (meta.uid(), meta.gid()),
        Owner::Set(u, g) => (u, g),
    };
    match dst {
        Target::Path(p) => chown(p, uid, gid)?,
        Target::File(f, p) => std::os::unix::fs::fchown(f, Some(uid), Some(gid))
            .map_err(|e| chown_error(p, uid, gid, e))?,
    }
    if !ft.is_symlink() {
        let own = meta.mode() & 0o7777;
        let bits = match (mode, attrs.chmod) {
            (Some(bits), _) => bits,
            (None, Some(spec)) => spec.apply(own, ft.is_dir()),
            (None, None) => own,
        };
        let permissions = std::fs::Permissions::from_mode(bits);
        match dst {
            Target::Path(p) => std::fs::set_permissions(p, permissions),
            Target::File(f, _) => f.set_permissions(permissions),
        }
        .map_err(|e| err("chmod", e))?;
        for name in xattr::list(src).unwrap_or_default() {
            if crate::sys::userns::is_overlay_xattr(&name) {
                continue;
            }
            if let Ok(Some(value)) = xattr::get(src, &name) {
                let _ = xattr::set(path, &name, &value);
            }
        }
    }
    match dst {
        Target::Path(p) => crate::native::set_times(meta, p),
        Target::File(f, _) => {
            let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
            let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
            nix::sys::stat::futimens(f, &atime, &mtime).map_err(io::Error::from)
        }
    }
    .map_err(|e| err("setting times of", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files written by several threads get their data, mode and times; the error reported is
    /// that of the first failing file in walk order.
    #[test]
    fn writers_copy_every_file_and_report_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        let entries = |names: std::ops::Range<u64>| -> Vec<Entry> {
            names
                .map(|i| {
                    let from = src.join(format!("f{i}"));
                    if !from.exists() {
                        std::fs::write(&from, i.to_string().repeat(i as usize % 50)).unwrap();
                        let mode = [0o644, 0o600, 0o755][i as usize % 3];
                        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(mode))
                            .unwrap();
                        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
                        std::fs::File::open(&from).unwrap().set_modified(t).unwrap();
                    }
                    Entry {
                        meta: std::fs::symlink_metadata(&from).unwrap(),
                        src: from,
                        dst: dst.join(format!("f{i}")),
                    }
                })
                .collect()
        };
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let attrs = Attrs {
            owner: Owner::Set(me.0, me.1),
            mode: None,
            chmod: None,
            upper: None,
        };
        let files = entries(0..400);
        write_files(&files, attrs, 4).unwrap();
        for f in &files {
            let copied = std::fs::symlink_metadata(&f.dst).unwrap();
            assert_eq!(copied.mode(), f.meta.mode());
            assert_eq!(copied.mtime(), f.meta.mtime());
            assert_eq!(
                std::fs::read(&f.dst).unwrap(),
                std::fs::read(&f.src).unwrap()
            );
        }
        // Written again: every destination exists, so each fails; the first one is reported.
        let again = entries(0..400);
        let e = write_files(&again, attrs, 4).unwrap_err();
        assert!(
            e.starts_with(&format!("creating {}:", dst.join("f0").display())),
            "{e}"
        );
    }
}

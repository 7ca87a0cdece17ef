//! File operations (`COPY`, `ADD`, `WORKDIR`'s mkdir) applied to a layered filesystem.
//!
//! The operations run in a forked child with its own mount namespace: the destination is an
//! overlay of the base layers with the step's upper directory on top, and each layered source
//! is a read-only overlay of its layers. The kernel then does the work overlayfs is good at
//! (copy-up of parent directories with their metadata, whiteouts when a file replaces a
//! directory), the upper directory receives exactly the changes, and the mounts disappear with
//! the child. Paths are resolved inside their root by the solver's path functions
//! (`rbuild_solver::contenthash`), which also select what a copy takes
//! (`rbuild_solver::pattern::CopyFilter`), so a symlink in a source or in the destination can
//! never reach the host, and a copy takes exactly the files its cache key hashed.

use crate::snapshot::{OverlayMount, Snapshotter, Upper};
use crate::sys::process::{fork_child, write_all_fd};
use crate::sys::xattr;
use crate::user;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::sys::wait::{WaitStatus, waitpid};
use rbuild_solver::FileAction;
use rbuild_solver::chmod::SymbolicMode;
use rbuild_solver::contenthash::{resolve_in_root, select};
use rbuild_solver::pathname;
use rbuild_solver::pattern::{CopyFilter, Visit};
use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where a copy reads from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A directory on the host (the build context). Copied files belong to root unless an
    /// owner is given.
    Host(PathBuf),
    /// Layers of the snapshot store, bottom first. Copied files keep their owners unless an
    /// owner is given.
    Layers(Vec<String>),
}

/// The filesystems a file op works on.
pub struct FileOpSpec<'a> {
    /// The snapshot store.
    pub snapshots: &'a Snapshotter,
    /// Layers of the destination, bottom first.
    pub base: &'a [String],
    /// Where the changes go.
    pub upper: &'a Upper,
    /// The sources actions refer to by index.
    pub sources: &'a [Source],
}

/// Why a file operation failed.
///
/// The copies themselves run in a child process, which can only say what went wrong as text
/// (over a pipe): inside this module errors are messages, and they become an [`Error`] here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Preparing the mounts and directories, or finding the changes afterwards, failed.
    #[error("{0}")]
    Setup(String),
    /// An action failed in the child: a source that names nothing, an owner that does not
    /// exist, a refused chown, …
    #[error("{0}")]
    Action(String),
    /// The child died without saying why.
    #[error("the file operation's process died")]
    Died,
}

/// Runs `actions` in a child process; `run_dir` is a fresh directory for mount points.
pub fn run(spec: &FileOpSpec, actions: &[FileAction], run_dir: &Path) -> Result<(), Error> {
    prepare_and_run(spec, actions, run_dir).map_err(|e| match e {
        Outcome::Setup(m) => Error::Setup(m),
        Outcome::Action(m) => Error::Action(m),
        Outcome::Died => Error::Died,
    })
}

/// How [`prepare_and_run`] failed (setup messages convert with `?`).
enum Outcome {
    Setup(String),
    Action(String),
    Died,
}

impl From<String> for Outcome {
    fn from(message: String) -> Self {
        Outcome::Setup(message)
    }
}

fn prepare_and_run(
    spec: &FileOpSpec,
    actions: &[FileAction],
    run_dir: &Path,
) -> Result<(), Outcome> {
    let dest = run_dir.join("dest");
    std::fs::create_dir_all(&dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    // A view of layers (over an empty directory) is a copy with the native snapshotter and
    // past what one overlay takes.
    let copy_layers = |layers: &[String]| spec.snapshots.copies(layers.len() + 1);
    // With the native snapshotter, the destination and the layer sources are copies, and the
    // changes are found by comparing the destination with its baseline afterwards.
    let materialize = |layers: &[String], dir: &Path| {
        crate::native::materialize(spec.snapshots, layers, dir)
            .map_err(|e| format!("copying layers into {}: {e}", dir.display()))
    };
    let baseline = if copy_layers(spec.base) {
        materialize(spec.base, &dest)?;
        Some(
            crate::native::baseline(&dest)
                .map_err(|e| format!("recording {}: {e}", dest.display()))?,
        )
    } else {
        None
    };
    let dest_overlay = if baseline.is_some() {
        None
    } else {
        let mut lowers = spec.snapshots.lowers(spec.base);
        lowers.push(spec.snapshots.empty());
        let upper = (spec.upper.fs.as_path(), spec.upper.work.as_path());
        Some(
            OverlayMount::prepare(&run_dir.join("destl"), &lowers, Some(upper))
                .map_err(|e| format!("preparing the destination overlay: {e}"))?,
        )
    };
    let mut source_mounts: Vec<(PathBuf, Option<OverlayMount>)> = Vec::new();
    for (i, source) in spec.sources.iter().enumerate() {
        match source {
            Source::Host(path) => source_mounts.push((path.clone(), None)),
            // Nothing to mount for an empty filesystem (FROM scratch).
            Source::Layers(layers) if layers.is_empty() => {
                source_mounts.push((spec.snapshots.empty(), None))
            }
            Source::Layers(layers) if copy_layers(layers) => {
                let target = run_dir.join(format!("src{i}"));
                std::fs::create_dir_all(&target)
                    .map_err(|e| format!("creating {}: {e}", target.display()))?;
                materialize(layers, &target)?;
                source_mounts.push((target, None));
            }
            Source::Layers(layers) => {
                let target = run_dir.join(format!("src{i}"));
                std::fs::create_dir_all(&target)
                    .map_err(|e| format!("creating {}: {e}", target.display()))?;
                let mut lowers = spec.snapshots.lowers(layers);
                // A read-only overlay needs two lower directories.
                lowers.push(spec.snapshots.empty());
                let overlay =
                    OverlayMount::prepare(&run_dir.join(format!("src{i}l")), &lowers, None)
                        .map_err(|e| format!("preparing a source overlay: {e}"))?;
                source_mounts.push((target, Some(overlay)));
            }
        }
    }
    let keep_owner: Vec<bool> = spec
        .sources
        .iter()
        .map(|s| matches!(s, Source::Layers(_)))
        .collect();
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let err_fd = err_w.as_raw_fd();
    let child = fork_child(|| {
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        let result = in_namespace(
            &dest,
            dest_overlay.as_ref(),
            &source_mounts,
            &keep_owner,
            actions,
        );
        match result {
            Ok(()) => 0,
            Err(message) => {
                write_all_fd(err_fd, message.as_bytes());
                1
            }
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    drop(err_w);
    let mut message = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut message);
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) if message.is_empty() => {
                if let Some(before) = &baseline {
                    crate::native::diff(&dest, before, &spec.upper.fs, &Default::default())
                        .map_err(|e| format!("finding the changes: {e}"))?;
                }
                return Ok(());
            }
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                return Err(if message.is_empty() {
                    Outcome::Died
                } else {
                    Outcome::Action(message)
                });
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Outcome::Setup(format!("waitpid: {e}"))),
        }
    }
}

fn in_namespace(
    dest: &Path,
    dest_overlay: Option<&OverlayMount>,
    sources: &[(PathBuf, Option<OverlayMount>)],
    keep_owner: &[bool],
    actions: &[FileAction],
) -> Result<(), String> {
    let none: Option<&str> = None;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("creating a mount namespace: {e}"))?;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| format!("making the mount namespace private: {e}"))?;
    if let Some(overlay) = dest_overlay {
        overlay
            .mount(dest)
            .map_err(|e| format!("mounting the destination overlay: {e}"))?;
    }
    for (target, overlay) in sources {
        if let Some(overlay) = overlay {
            overlay
                .mount(target)
                .map_err(|e| format!("mounting a source overlay: {e}"))?;
        }
    }
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    for action in actions {
        match action {
            FileAction::Copy {
                source,
                paths,
                dest: to,
                owner,
                mode,
                chmod,
                unpack_archives,
                ignore,
                include_patterns,
                exclude_patterns,
            } => {
                let (src_root, _) = sources
                    .get(*source)
                    .ok_or_else(|| format!("copy from input {source}, which does not exist"))?;
                let options = CopyOptions {
                    owner: owner.as_deref(),
                    mode: *mode,
                    chmod: chmod.as_ref(),
                    unpack_archives: *unpack_archives,
                    keep_owner: keep_owner.get(*source).copied().unwrap_or(false),
                    filter: CopyFilter::new(ignore, include_patterns, exclude_patterns),
                };
                copy(src_root, dest, paths, to, &options)?;
            }
            FileAction::Mkdir {
                path,
                mode,
                parents,
                owner,
            } => {
                mkdir(dest, path, *mode, *parents, owner.as_deref())?;
            }
            FileAction::Mkfile { path, data, mode } => {
                let target = resolve_in_root(dest, path, false)
                    .map_err(|e| format!("resolving {path}: {e}"))?;
                std::fs::write(&target, data).map_err(|e| format!("creating {path}: {e}"))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("chmod {path}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Who copied files belong to.
#[derive(Clone, Copy)]
enum Owner {
    Keep,
    Set(u32, u32),
}

/// Who files a file operation creates belong to: `spec` resolved as BuildKit does (see
/// [`user::resolve_chown`]), else kept from the source (`keep`) or root.
fn owner_of(dest_root: &Path, spec: Option<&str>, keep: bool) -> Owner {
    match spec {
        Some(spec) => {
            let (uid, gid) = user::resolve_chown(dest_root, spec);
            Owner::Set(uid, gid)
        }
        None if keep => Owner::Keep,
        None => Owner::Set(0, 0),
    }
}

/// Creates `path` and its missing parents as directories owned by `owner` (root if `Keep`).
fn create_dirs(path: &Path, stop_at: &Path, owner: Owner) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    while cur != stop_at && std::fs::symlink_metadata(&cur).is_err() {
        missing.push(cur.clone());
        if !cur.pop() {
            break;
        }
    }
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        let (uid, gid) = match owner {
            Owner::Set(u, g) => (u, g),
            Owner::Keep => (0, 0),
        };
        chown(&dir, uid, gid)?;
    }
    Ok(())
}

/// `lchown`, explaining the failure of a rootless rbuild that maps only the user's own id.
fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| chown_error(path, uid, gid, e))
}

/// The message for a failed chown of `path`, which explains the rootless case.
fn chown_error(path: &Path, uid: u32, gid: u32, e: io::Error) -> String {
    if e.raw_os_error() == Some(libc::EINVAL) && crate::sys::userns::in_user_namespace() {
        format!(
            "chown {} to {uid}:{gid}: rootless rbuild maps only your own user; give it \
             subordinate ids in /etc/subuid and /etc/subgid (and install uidmap) to use other owners",
            path.display()
        )
    } else {
        format!("chown {}: {e}", path.display())
    }
}

/// How one `COPY`/`ADD` copies.
struct CopyOptions<'a> {
    owner: Option<&'a str>,
    mode: Option<u32>,
    chmod: Option<&'a SymbolicMode>,
    unpack_archives: bool,
    /// Keep the sources' owners (a stage or image) rather than root's (the context).
    keep_owner: bool,
    /// What below the sources is copied.
    filter: CopyFilter,
}

/// The part of a copy that is the same for every entry below a selected directory.
struct Walk<'a> {
    owner: Owner,
    mode: Option<u32>,
    /// A symbolic mode.
    chmod: Option<&'a SymbolicMode>,
    filter: &'a CopyFilter,
    /// The [`Visit::WalkOnly`] directories being walked, outermost first: they are created
    /// when the first entry below them is copied.
    pending: RefCell<Vec<PendingDir>>,
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
}

fn copy(
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
        owner,
        mode: options.mode,
        chmod: options.chmod,
        filter: &options.filter,
        pending: RefCell::new(Vec::new()),
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
                    copy_metadata(&child, &meta, Target::Path(&target), walk)?;
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
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| err("readlink", e))?;
        std::os::unix::fs::symlink(target, dst).map_err(|e| err("symlink", e))?;
    } else if ft.is_file() {
        // Data and metadata through open files: no path lookups after the two opens.
        use std::os::unix::fs::OpenOptionsExt;
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
            .map_err(|e| err("creating", e))?;
        io::copy(&mut from, &mut to).map_err(|e| err("copying to", e))?;
        return copy_metadata(src, &meta, Target::File(&to, dst), walk);
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
    copy_metadata(src, &meta, Target::Path(dst), walk)
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
    walk: &Walk,
) -> Result<(), String> {
    let (owner, mode) = (walk.owner, walk.mode);
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
        let bits = match (mode, walk.chmod) {
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

fn unpack(archive: &Path, kind: ArchiveKind, dest: &Path) -> Result<(), String> {
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

fn mkdir(
    dest_root: &Path,
    path: &str,
    mode: u32,
    parents: bool,
    owner: Option<&str>,
) -> Result<(), String> {
    let target =
        resolve_in_root(dest_root, path, true).map_err(|e| format!("resolving {path}: {e}"))?;
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(format!("mkdir {path}: not a directory")),
        Err(_) => {}
    }
    if !parents && target.parent().is_some_and(|p| !p.is_dir()) {
        return Err(format!("mkdir {path}: no such file or directory"));
    }
    let owner = owner_of(dest_root, owner, false);
    create_dirs(&target, dest_root, owner)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {path}: {e}"))
}

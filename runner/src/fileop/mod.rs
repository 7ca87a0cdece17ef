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

mod archive;
mod copy;

pub use archive::{ArchiveKind, archive_kind, extract_archive};

use crate::snapshot::{OverlayMount, Snapshotter, Upper};
use crate::sys::process::{fork_child, write_all_fd};
use crate::user;
use copy::{CopyOptions, copy};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use rbuild_solver::FileAction;
use rbuild_solver::contenthash::resolve_in_root;
use rbuild_solver::pattern::CopyFilter;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
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

/// Runs `actions` in a child process; `run_dir` is a directory for mount points (new, or one
/// an earlier run or sandbox left with only empty directories and files in it).
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
            // The upper is made a snapshot afterwards.
            OverlayMount::prepare(&run_dir.join("destl"), &lowers, Some(upper))
                .map_err(|e| format!("preparing the destination overlay: {e}"))?
                .volatile(),
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
        let upper = dest_overlay.as_ref().map(|_| spec.upper.fs.as_path());
        let result = in_namespace(
            (&dest, dest_overlay.as_ref(), upper),
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

/// The file op's child: mounts the destination (`dest`, with its overlay and the overlay's
/// upper directory) and the sources, then does the actions.
fn in_namespace(
    (dest, dest_overlay, upper): (&Path, Option<&OverlayMount>, Option<&Path>),
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
                    upper,
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

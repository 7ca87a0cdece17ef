//! The sandbox that runs a step's process (a Dockerfile `RUN`, or `rbuild run`).
//!
//! ```text
//! rbuild ──fork──► intermediate: unshare(mount, pid, uts, ipc [, net]) ──fork──► PID 1 of the
//!   │                 waits for PID 1, exits with its status             new pid namespace:
//!   │                                                                   mounts, pivot_root,
//!   └─ reads stdout/stderr pipes, the setup-error pipe, waits            user, exec
//! ```
//!
//! Every mount is made inside the new mount namespace, which is private from the first step on,
//! so nothing ever appears in the host's mount table and everything is unmounted by the kernel
//! when the last process of the sandbox exits, whatever happens to rbuild. Both children set
//! `PR_SET_PDEATHSIG`, so a killed rbuild takes its sandboxes with it, and when PID 1 exits the
//! kernel kills every other process of the namespace.
//!
//! The root filesystem is an overlay: the step's layers (top first), then the stub layer of
//! [`crate::snapshot`] at the bottom, with the step's upper directory on top. With the native
//! snapshotter it is instead a copy of the layers (bind-mounted onto itself for pivot_root),
//! whose changes [`crate::native::diff`] writes to the upper directory after the step. `/proc`, `/dev`
//! (a tmpfs with the host's null, zero, full, random, urandom and tty bind-mounted, devpts, shm,
//! mqueue), `/sys` (read-only) and read-only `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`
//! are mounted over the stub mount points, so none of them is written into the upper directory;
//! [`crate::apifs`] then hides or write-protects the kernel's interfaces as runc does.

use crate::apifs::{NOSUID_NODEV_NOEXEC, mount_err};
use crate::snapshot::{OverlayMount, Snapshotter, Upper};
use crate::sys::process::{close, close_fds_from, dup_onto, fork_child, write_all_fd};
use crate::user;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The hostname of build sandboxes, as BuildKit names them.
pub const BUILD_HOSTNAME: &str = "buildkitsandbox";

/// `PATH` used when the process's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which output stream bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// The network a sandboxed process sees.
#[derive(Clone, Debug)]
pub enum Network {
    /// The host's network namespace.
    Host,
    /// A new network namespace with only loopback.
    None,
    /// A namespace with user-mode networking (the default for RUN, see [`crate::network`]).
    Join(std::sync::Arc<crate::network::UserNet>),
}

/// How the process's standard streams are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// stdin is `/dev/null`; stdout and stderr are captured and passed to a callback.
    Capture,
    /// The process shares rbuild's stdin, stdout and stderr.
    Inherit,
}

/// The process to run.
#[derive(Clone, Debug)]
pub struct Process {
    /// The command line; `args[0]` is looked up in the `PATH` of `env`.
    pub args: Vec<String>,
    /// Environment, `KEY=value`.
    pub env: Vec<String>,
    /// Absolute working directory (created if missing).
    pub cwd: String,
    /// User spec (`name`, `uid`, `uid:gid`…); empty is root.
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// Network.
    pub network: Network,
    /// Standard streams.
    pub stdio: Stdio,
    /// Files created in the sandbox's `/dev` (a tmpfs, so never in a layer): path relative to
    /// `/dev`, content, permission bits.
    pub dev_files: Vec<(String, Vec<u8>, u32)>,
    /// Mounts (RUN `--mount`), made in order, so a later one may be inside an earlier one.
    pub mounts: Vec<Mount>,
    /// Extra hosts, resource limits, `/dev/shm`'s size, a parent cgroup (see
    /// [`crate::limits`]).
    pub limits: rbuild_solver::ExecLimits,
    /// Privileged (`RUN --security=insecure`): every capability, no seccomp filter, `/proc`
    /// and `/sys` not masked or read-only.
    pub privileged: bool,
}

/// A mount in the sandbox. Its mount point is provided by a per-run stub layer under the root
/// filesystem when it does not exist, so it never becomes part of the step's layer (current
/// BuildKit removes the mount points it had to create after the step, to the same effect).
#[derive(Clone, Debug)]
pub struct Mount {
    /// Absolute path in the sandbox.
    pub target: String,
    /// What is mounted.
    pub source: MountSource,
    /// Whether the process may not write to it.
    pub readonly: bool,
}

/// What a [`Mount`] mounts.
#[derive(Clone, Debug)]
pub enum MountSource {
    /// A host file, directory or socket, bind-mounted (a cache directory, the build context,
    /// an SSH agent socket).
    Host(PathBuf),
    /// The merged files of snapshot layers (diff ids, bottom first) below `path`, which is
    /// resolved inside them (symlinks cannot lead out). Writes, when allowed, go to a
    /// throwaway upper directory.
    Layers {
        /// Diff ids, bottom first; their snapshots must exist.
        layers: Vec<String>,
        /// Absolute path inside the layers.
        path: String,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A file with this content, on a tmpfs private to the sandbox, so it is never written to
    /// disk (secrets).
    File {
        /// Content.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
}

/// The root filesystem: layers of the snapshot store plus a writable upper.
pub struct Rootfs<'a> {
    /// The snapshot store the layers are in.
    pub snapshots: &'a Snapshotter,
    /// Diff ids of the layers, bottom first. Their snapshots must exist.
    pub layers: &'a [String],
    /// Where changes go.
    pub upper: &'a Upper,
    /// Whether `upper` is a step's, thrown away or made a snapshot afterwards (mounted
    /// volatile, see [`crate::snapshot::OverlayMount::volatile`]), rather than a kept
    /// container's, which may be mounted again.
    pub volatile: bool,
}

/// Why a process could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Preparing the sandbox on the host failed.
    #[error("preparing the sandbox: {0}")]
    Prepare(String),
    /// Setting up the sandbox failed inside it (a mount, the user, exec…).
    #[error("{0}")]
    Setup(String),
    /// The run was cancelled and the sandbox killed.
    #[error("cancelled")]
    Cancelled,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// The shell-style exit code (128 + signal for a signal).
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Everything the children need, prepared before forking so the children allocate little.
struct Prepared {
    rootfs: PathBuf,
    /// The root overlay; `None` with the native snapshotter (or more layers than an overlay
    /// takes), whose root is a materialized directory (bind-mounted onto itself).
    overlay: Option<OverlayMount>,
    /// With the native snapshotter: the root before the step, and the mount points made in it.
    native: Option<(crate::native::Baseline, std::collections::HashSet<PathBuf>)>,
    hosts: PathBuf,
    resolv: PathBuf,
    hostname: PathBuf,
    /// Per mount of a `Layers` source: the overlay to mount at its directory (`None` when
    /// the layers were materialized there instead).
    layer_mounts: Vec<Option<(Option<OverlayMount>, PathBuf)>>,
    /// Where `File` sources are written (a tmpfs in the sandbox's mount namespace).
    files_dir: PathBuf,
    /// Throwaway uppers of writable `Layers` mounts, removed after the run.
    scratch: Vec<Upper>,
    /// The seccomp filter (see [`crate::sys::seccomp`]).
    seccomp: Vec<libc::sock_filter>,
    /// `cgroup.procs` of the step's cgroups (`--cgroup-parent`), which the sandbox joins.
    cgroup_procs: Vec<PathBuf>,
}

/// What kind of mount point a mount needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PointKind {
    Dir,
    File,
}

/// The kind of `path` in the merged view of `layers` (bottom first), following symlinks inside
/// the layers as the sandbox will; `None` when absent or unclear (a symlink loop), in which case
/// the sandbox creates the mount point itself. Opaque directories are not considered: a path
/// they hide could be guessed with the wrong kind, and the mount then fails with a clear error.
fn kind_in_layers(snapshots: &Snapshotter, layers: &[String], path: &str) -> Option<PointKind> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut pending: Vec<String> = path
        .split('/')
        .rev()
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    let mut kind = PointKind::Dir;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(part);
        let rel = resolved.join("/");
        // The topmost layer that has the path decides.
        let meta = layers.iter().rev().find_map(|l| {
            std::fs::symlink_metadata(snapshots.layer_dir(l).join(&rel))
                .ok()
                .map(|m| (l, m))
        })?;
        let (layer, meta) = meta;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            return None;
        }
        if ft.is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(snapshots.layer_dir(layer).join(&rel)).ok()?;
            let target = target.to_str()?.to_string();
            resolved.pop();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(
                target
                    .split('/')
                    .rev()
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(str::to_string),
            );
            continue;
        }
        kind = if ft.is_dir() {
            PointKind::Dir
        } else {
            PointKind::File
        };
        if !ft.is_dir() && !pending.is_empty() {
            return None;
        }
    }
    Some(kind)
}

/// Creates `target` (absolute in the sandbox) and its parents in the stub directory `stubs`.
fn make_stub(stubs: &Path, target: &str, kind: PointKind) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let rel = target.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|p| p == "..") {
        return Ok(());
    }
    let path = stubs.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        return Ok(());
    }
    match kind {
        PointKind::Dir => std::fs::create_dir(&path)?,
        PointKind::File => std::fs::write(&path, b"")?,
    }
    let mode = if kind == PointKind::Dir { 0o755 } else { 0o644 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
}

/// Writes `content` to `path` unless the file (an earlier step's in a reused run directory)
/// holds it already: truncating it would free its block, a discard on filesystems mounted so.
fn write_if_changed(path: &Path, content: String) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(());
    }
    std::fs::write(path, content)
}

fn prepare(rootfs: &Rootfs, process: &Process, run_dir: &Path) -> Result<Prepared, SandboxError> {
    let err = |what: &str, e: std::io::Error| SandboxError::Prepare(format!("{what}: {e}"));
    let root_dir = run_dir.join("rootfs");
    std::fs::create_dir_all(&root_dir).map_err(|e| err("creating the root mount point", e))?;
    let hosts = run_dir.join("hosts");
    write_if_changed(
        &hosts,
        format!(
            "127.0.0.1\tlocalhost {BUILD_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n{}",
            crate::limits::hosts_lines(&process.limits)
        ),
    )
    .map_err(|e| err("writing /etc/hosts", e))?;
    let hostname = run_dir.join("hostname");
    write_if_changed(&hostname, format!("{}\n", process.hostname))
        .map_err(|e| err("writing /etc/hostname", e))?;
    let resolv = run_dir.join("resolv.conf");
    let mut host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if matches!(process.network, Network::Join(_)) {
        host_resolv = crate::network::resolv_conf(&host_resolv);
    }
    write_if_changed(&resolv, host_resolv).map_err(|e| err("writing /etc/resolv.conf", e))?;
    let mut lower = rootfs.snapshots.lowers(rootfs.layers);
    lower.push(rootfs.snapshots.stubs());
    let snapshots = rootfs.snapshots;
    let mut layer_mounts = Vec::with_capacity(process.mounts.len());
    let mut scratch = Vec::new();
    let files_dir = run_dir.join("files");
    let mut stub_kinds: Vec<(String, PointKind)> = Vec::new();
    if !process.mounts.is_empty() {
        let stubs = run_dir.join("stubs");
        std::fs::create_dir_all(&stubs).map_err(|e| err("creating mount stubs", e))?;
        std::fs::create_dir_all(&files_dir).map_err(|e| err("creating mount stubs", e))?;
        for (i, m) in process.mounts.iter().enumerate() {
            let kind = match &m.source {
                MountSource::Host(p) => Some(if p.is_dir() {
                    PointKind::Dir
                } else {
                    PointKind::File
                }),
                MountSource::Layers { layers, path } => kind_in_layers(snapshots, layers, path),
                MountSource::Tmpfs { .. } => Some(PointKind::Dir),
                MountSource::File { .. } => Some(PointKind::File),
            };
            if let Some(kind) = kind {
                stub_kinds.push((m.target.clone(), kind));
                make_stub(&stubs, &m.target, kind).map_err(|e| err("creating mount stubs", e))?;
            }
            layer_mounts.push(match &m.source {
                // (A read-only overlay has an empty directory below its layers.)
                MountSource::Layers { layers, .. } if snapshots.copies(layers.len() + 1) => {
                    // A copy, so writes are thrown away with the run directory.
                    let dir = run_dir.join(format!("m{i}"));
                    std::fs::create_dir_all(&dir).map_err(|e| err("creating a mount source", e))?;
                    crate::native::materialize(snapshots, layers, &dir)
                        .map_err(|e| err("copying the layers of a mount", e))?;
                    Some((None, dir))
                }
                MountSource::Layers { layers, .. } => {
                    let point = run_dir.join(format!("m{i}"));
                    std::fs::create_dir_all(&point)
                        .map_err(|e| err("creating a mount point", e))?;
                    let mut lowers = snapshots.lowers(layers);
                    // Overlayfs needs two lower directories when there is no upper.
                    lowers.push(snapshots.empty());
                    let upper = if m.readonly {
                        None
                    } else {
                        let upper = snapshots
                            .new_upper()
                            .map_err(|e| err("creating a scratch upper directory", e))?;
                        scratch.push(upper);
                        scratch.last()
                    };
                    // (A scratch upper is thrown away with the run.)
                    let overlay = OverlayMount::prepare(
                        &run_dir.join(format!("m{i}l")),
                        &lowers,
                        upper.map(|u| (u.fs.as_path(), u.work.as_path())),
                    )
                    .map_err(|e| err("preparing the overlay of a mount", e))?
                    .volatile();
                    Some((Some(overlay), point))
                }
                _ => None,
            });
        }
        lower.push(stubs);
    }
    let (overlay, native) = if snapshots.copies(lower.len()) {
        // The root is a copy of the layers; the mount points the overlay's stub layers would
        // provide are made in it, before the baseline, and left out of the diff.
        crate::native::materialize(snapshots, rootfs.layers, &root_dir)
            .map_err(|e| err("copying the layers of the root filesystem", e))?;
        let mut made = std::collections::HashSet::new();
        let points = [
            ("/proc", PointKind::Dir),
            ("/dev", PointKind::Dir),
            ("/sys", PointKind::Dir),
            ("/etc/hosts", PointKind::File),
            ("/etc/resolv.conf", PointKind::File),
            ("/etc/hostname", PointKind::File),
        ];
        let points = points
            .iter()
            .map(|(t, k)| (t.to_string(), *k))
            .chain(stub_kinds);
        for (target, kind) in points {
            let created =
                crate::native::make_mount_point(&root_dir, &target, kind == PointKind::Dir)
                    .map_err(|e| err("creating mount points", e))?;
            made.extend(created.unwrap_or_default());
        }
        let baseline = crate::native::baseline(&root_dir)
            .map_err(|e| err("recording the root filesystem", e))?;
        (None, Some((baseline, made)))
    } else {
        let mut overlay = OverlayMount::prepare(
            &run_dir.join("l"),
            &lower,
            Some((&rootfs.upper.fs, &rootfs.upper.work)),
        )
        .map_err(|e| err("preparing the root overlay", e))?;
        if rootfs.volatile {
            overlay = overlay.volatile();
        }
        (Some(overlay), None)
    };

    Ok(Prepared {
        rootfs: root_dir,
        overlay,
        native,
        hosts,
        resolv,
        hostname,
        layer_mounts,
        files_dir,
        scratch,
        seccomp: crate::sys::seccomp::default_filter(),
        cgroup_procs: Vec::new(),
    })
}

/// Runs `process` over `rootfs`, using `run_dir` for its mount point and generated files: a
/// new directory, or one an earlier run left with only empty directories and those files.
/// Captured output is passed to `on_output` as it comes. Returns how the process ended;
/// setting `cancel` kills the sandbox.
pub fn run(
    rootfs: &Rootfs,
    process: &Process,
    run_dir: &Path,
    on_output: &mut dyn FnMut(Stream, &[u8]),
    cancel: &AtomicBool,
) -> Result<Exit, SandboxError> {
    let mut prepared = prepare(rootfs, process, run_dir)?;
    // Dropped after the step's processes are gone, which empties it.
    let cgroup = match &process.limits.cgroup_parent {
        Some(parent) => {
            Some(crate::limits::StepCgroup::create(parent).map_err(SandboxError::Prepare)?)
        }
        None => None,
    };
    prepared.cgroup_procs = cgroup
        .as_ref()
        .map(crate::limits::StepCgroup::procs)
        .unwrap_or_default();
    let result = run_prepared(rootfs, process, &prepared, on_output, cancel);
    drop(cgroup);
    for upper in prepared.scratch.drain(..) {
        let _ = rootfs.snapshots.discard(upper);
    }
    result
}

fn run_prepared(
    rootfs: &Rootfs,
    process: &Process,
    prepared: &Prepared,
    on_output: &mut dyn FnMut(Stream, &[u8]),
    cancel: &AtomicBool,
) -> Result<Exit, SandboxError> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SandboxError::Prepare(format!("creating a pipe: {e}")))
    };
    let (err_r, err_w) = pipe()?;
    let captured = if process.stdio == Stdio::Capture {
        Some((pipe()?, pipe()?))
    } else {
        None
    };
    let parent = nix::unistd::getpid();
    let child_io = captured
        .as_ref()
        .map(|((_, out_w), (_, err_out_w))| (out_w.as_raw_fd(), err_out_w.as_raw_fd()));
    let err_fd = err_w.as_raw_fd();
    let pid = fork_child(|| intermediate(prepared, process, parent, child_io, err_fd))
        .map_err(|e| SandboxError::Prepare(format!("fork: {e}")))?;
    // The children hold the write ends now; close ours so that EOF means "they are done".
    drop(err_w);
    let readers = captured.map(|((out_r, out_w), (err_out_r, err_out_w))| {
        drop(out_w);
        drop(err_out_w);
        (out_r, err_out_r)
    });

    // The setup-error pipe closes on exec (it is close-on-exec) or carries a message.
    let mut setup_error = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut setup_error);
    if !setup_error.is_empty() {
        let _ = waitpid(pid, None);
        return Err(SandboxError::Setup(setup_error));
    }

    let mut killed = false;
    if let Some((out_r, err_out_r)) = readers {
        pump(out_r, err_out_r, on_output, cancel, pid, &mut killed);
    }
    // Wait on a pidfd, which wakes us the moment the child exits, with a timeout to look at
    // the cancel flag; without pidfds (old kernels), poll the child every few milliseconds.
    let pidfd = crate::sys::process::pidfd_open(pid).ok();
    loop {
        if !killed && cancel.load(Ordering::Relaxed) {
            let _ = kill(pid, Signal::SIGKILL);
            killed = true;
        }
        match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => match &pidfd {
                Some(fd) => {
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(100u16));
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            },
            // A signal that killed PID 1 arrives as 128 + signal, the shell's (and runc's)
            // convention, so "exit code: 137" reads as it does with BuildKit.
            Ok(WaitStatus::Exited(_, code)) if !killed => {
                if let Some((baseline, made)) = &prepared.native {
                    crate::native::diff(&prepared.rootfs, baseline, &rootfs.upper.fs, made)
                        .map_err(|e| {
                            SandboxError::Prepare(format!("finding the step's changes: {e}"))
                        })?;
                }
                add_runtime_mount_points(rootfs).map_err(|e| {
                    SandboxError::Prepare(format!("adding mount point directories: {e}"))
                })?;
                return Ok(Exit::Code(code));
            }
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) if killed => {
                return Err(SandboxError::Cancelled);
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Exit::Signal(signal as i32)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(SandboxError::Prepare(format!("waitpid: {e}"))),
        }
    }
}

/// The directories runc creates for its mounts when the root filesystem lacks them. BuildKit
/// leaves them in the step's layer (it only removes the `/etc/hosts` and `/etc/resolv.conf`
/// stubs), so an image built from a base without `/proc` has one afterwards. rbuild's stub layer
/// hides their absence during the run; they are added to the upper directory afterwards so the
/// layer is the same as BuildKit's.
const RUNTIME_MOUNT_DIRS: [&str; 3] = ["dev", "proc", "sys"];

fn add_runtime_mount_points(rootfs: &Rootfs) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    // (A deep chain's flattened view stands for most of its layers, whiteouts applied.)
    let lowers = rootfs.snapshots.lowers(rootfs.layers);
    for name in RUNTIME_MOUNT_DIRS {
        let in_upper = rootfs.upper.fs.join(name);
        if std::fs::symlink_metadata(&in_upper).is_ok() {
            continue;
        }
        // The topmost layer that mentions the name decides; a whiteout means "deleted".
        let exists = lowers.iter().find_map(|lower| {
            std::fs::symlink_metadata(lower.join(name))
                .ok()
                .map(|m| !(m.file_type().is_char_device() && m.rdev() == 0))
        });
        if exists != Some(true) {
            std::fs::create_dir(&in_upper)?;
            std::fs::set_permissions(&in_upper, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// Forwards the children's output until both pipes close, killing them on cancel.
fn pump(
    out: OwnedFd,
    err: OwnedFd,
    on_output: &mut dyn FnMut(Stream, &[u8]),
    cancel: &AtomicBool,
    pid: Pid,
    killed: &mut bool,
) {
    let mut open = [Some(out), Some(err)];
    let mut buf = vec![0u8; 64 * 1024];
    while open.iter().any(Option::is_some) {
        if !*killed && cancel.load(Ordering::Relaxed) {
            let _ = kill(pid, Signal::SIGKILL);
            *killed = true;
        }
        let mut fds: Vec<PollFd> = open
            .iter()
            .flatten()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut k = 0;
        for (i, slot) in open.iter_mut().enumerate() {
            let Some(fd) = slot else { continue };
            let is_ready = ready[k];
            k += 1;
            if !is_ready {
                continue;
            }
            match nix::unistd::read(&*fd, &mut buf) {
                Ok(0) => *slot = None,
                Ok(n) => {
                    let stream = if i == 0 {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    };
                    on_output(stream, &buf[..n]);
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => *slot = None,
            }
        }
    }
}

/// Sends a setup error to the parent through the setup-error pipe; returns the exit code.
fn report(err_fd: i32, message: &str) -> i32 {
    write_all_fd(err_fd, message.as_bytes());
    127
}

/// The first child: enters new namespaces and supervises PID 1. Runs in a forked child.
fn intermediate(
    prepared: &Prepared,
    process: &Process,
    parent: Pid,
    io: Option<(i32, i32)>,
    err_fd: i32,
) -> i32 {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != parent {
        return 1;
    }
    // Before anything forks, so every process of the step is in it.
    if let Err(e) = crate::limits::join(&prepared.cgroup_procs) {
        return report(err_fd, &e);
    }
    if let Some((out, err)) = io {
        let null = match std::fs::File::open("/dev/null") {
            Ok(f) => f,
            Err(e) => return report(err_fd, &format!("opening /dev/null: {e}")),
        };
        let redirected = dup_onto(null.as_raw_fd(), 0)
            .and_then(|()| dup_onto(out, 1))
            .and_then(|()| dup_onto(err, 2));
        if let Err(e) = redirected {
            return report(err_fd, &format!("redirecting the standard streams: {e}"));
        }
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    match &process.network {
        Network::None => flags |= CloneFlags::CLONE_NEWNET,
        Network::Join(net) => {
            if let Err(e) = nix::sched::setns(net.netns(), CloneFlags::CLONE_NEWNET) {
                return report(
                    err_fd,
                    &format!("joining the build's network namespace: {e}"),
                );
            }
        }
        Network::Host => {}
    }
    if let Err(e) = unshare(flags) {
        return report(err_fd, &format!("creating namespaces: {e}"));
    }
    let pid1 = match fork_child(|| pid1(prepared, process, err_fd)) {
        Ok(p) => p,
        Err(e) => return report(err_fd, &format!("fork in the new pid namespace: {e}")),
    };
    // Only PID 1 may hold the pipes now: the parent waits for their end.
    close_fds_from(3, &[]);
    if io.is_some() {
        close(1);
        close(2);
    }
    loop {
        match waitpid(pid1, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 126,
        }
    }
}

/// PID 1 of the sandbox: mounts, pivot_root, user, exec. Runs in a forked child.
fn pid1(prepared: &Prepared, process: &Process, err_fd: i32) -> i32 {
    // getppid() is 0 in a new pid namespace, so unlike the intermediate we cannot check for a
    // parent that died before this call; such a PID 1 finds its setup-error pipe closed and its
    // own death takes the namespace with it.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    match setup_and_exec(prepared, process, err_fd) {
        Ok(never) => match never {},
        Err(message) => report(err_fd, &message),
    }
}

enum Never {}

fn setup_and_exec(prepared: &Prepared, process: &Process, err_fd: i32) -> Result<Never, String> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| format!("making the mount namespace private: {e}"))?;
    let root = &prepared.rootfs;
    match &prepared.overlay {
        Some(overlay) => overlay
            .mount(root)
            .map_err(|e| mount_err("the overlay root filesystem", root, e))?,
        // pivot_root needs a mount point.
        None => mount(
            Some(root),
            root,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(|e| mount_err("the root filesystem", root, e))?,
    }

    let shm_size = process
        .limits
        .shm_size
        .unwrap_or(crate::limits::DEFAULT_SHM_SIZE);
    crate::apifs::mount_all(root, &process.dev_files, shm_size, process.privileged)?;
    for (source, name) in [
        (&prepared.hosts, "etc/hosts"),
        (&prepared.resolv, "etc/resolv.conf"),
        (&prepared.hostname, "etc/hostname"),
    ] {
        let target = root.join(name);
        mount(
            Some(source.as_path()),
            &target,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(|e| mount_err(&source.to_string_lossy(), &target, e))?;
        mount(
            none,
            &target,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
            none,
        )
        .map_err(|e| mount_err("a read-only bind", &target, e))?;
    }
    let trees = detach_mount_sources(prepared, process)?;
    nix::unistd::sethostname(&process.hostname).map_err(|e| format!("sethostname: {e}"))?;
    if matches!(process.network, Network::None) {
        crate::sys::net::loopback_up().map_err(|e| format!("bringing up lo: {e}"))?;
    }

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves the
    // new root alone. See pivot_root(2), "pivot_root(".", ".")".
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    attach_mounts(process, trees)?;

    let user = user::resolve(Path::new("/"), &process.user)?;
    let cwd = if process.cwd.is_empty() {
        "/"
    } else {
        &process.cwd
    };
    if std::fs::symlink_metadata(cwd).is_err() {
        std::fs::create_dir_all(cwd)
            .map_err(|e| format!("creating the working directory {cwd}: {e}"))?;
    }
    // Docker's capabilities and a seccomp filter (see `sys::seccomp`), while still root.
    // While still root: raising a hard limit needs CAP_SYS_RESOURCE.
    crate::limits::apply_ulimits(&process.limits.ulimits)?;
    if !process.privileged {
        crate::sys::seccomp::limit_capabilities()
            .map_err(|e| format!("limiting capabilities: {e}"))?;
        crate::sys::seccomp::install(&prepared.seccomp)
            .map_err(|e| format!("installing the seccomp filter: {e}"))?;
    }
    let groups: Vec<Gid> = user.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    // A user namespace that maps only the user's own ids denies setgroups (the process keeps
    // no supplementary groups then, as with rootless Podman without subordinate ids).
    match nix::unistd::setgroups(&groups) {
        Err(nix::errno::Errno::EPERM) if !crate::sys::userns::owners_preserved() => {}
        other => other.map_err(|e| format!("setgroups: {e}"))?,
    }
    nix::unistd::setresgid(
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
    )
    .map_err(|e| format!("setgid {}: {e}{}", user.gid, unmapped_hint(e)))?;
    nix::unistd::setresuid(
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
    )
    .map_err(|e| format!("setuid {}: {e}{}", user.uid, unmapped_hint(e)))?;
    nix::unistd::chdir(cwd).map_err(|e| format!("chdir to the working directory {cwd}: {e}"))?;

    let mut env = process.env.clone();
    let has = |env: &[String], key: &str| env.iter().any(|kv| kv.split('=').next() == Some(key));
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let program = process
        .args
        .first()
        .ok_or_else(|| "no command given".to_string())?;
    let resolved = lookup(program, &path_var, cwd)?;
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("argument {s:?} contains a NUL byte"));
    let argv: Vec<CString> = process
        .args
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?;
    let path = cstr(&resolved)?;
    close_fds_from(3, &[err_fd]);
    let e = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    if e == nix::errno::Errno::ENOEXEC {
        // Most often a program built for another CPU: the kernel runs those only through an
        // emulator registered with binfmt_misc.
        return Err(format!(
            "exec {resolved}: exec format error (not a program for this machine's CPU? steps \
             for another platform need an emulator registered with binfmt_misc, such as \
             Debian's qemu-user-static)"
        ));
    }
    Err(format!("exec {resolved}: {e}"))
}

/// A mount's source, detached from the host's tree, and whether it is a directory.
type Detached = Option<(OwnedFd, bool)>;

/// Resolves each mount's source while the host's filesystem is visible and clones it into a
/// detached mount (`None` for a tmpfs, made at attach time). Runs in PID 1, before pivot_root.
fn detach_mount_sources(prepared: &Prepared, process: &Process) -> Result<Vec<Detached>, String> {
    use crate::sys::mount::{clone_tree, clone_tree_fd, open_in_root};
    use std::os::unix::fs::PermissionsExt;
    let mut files_mounted = false;
    let mut out = Vec::with_capacity(process.mounts.len());
    for (i, m) in process.mounts.iter().enumerate() {
        let tree = match &m.source {
            MountSource::Tmpfs { .. } => {
                out.push(None);
                continue;
            }
            MountSource::Host(path) => {
                clone_tree(path).map_err(|e| format!("mount source {}: {e}", path.display()))?
            }
            MountSource::Layers { path, .. } => {
                let (overlay, point) = prepared.layer_mounts[i]
                    .as_ref()
                    .ok_or_else(|| "internal error: layer mount not prepared".to_string())?;
                if let Some(overlay) = overlay {
                    overlay
                        .mount(point)
                        .map_err(|e| mount_err("the layers of a mount", point, e))?;
                }
                let root = std::fs::File::open(point)
                    .map_err(|e| format!("opening {}: {e}", point.display()))?;
                let fd = open_in_root(root.as_fd(), path)
                    .map_err(|e| format!("mount source {path} (for {}): {e}", m.target))?;
                clone_tree_fd(fd.as_fd()).map_err(|e| format!("mount source {path}: {e}"))?
            }
            MountSource::File {
                data,
                mode,
                uid,
                gid,
            } => {
                let dir = &prepared.files_dir;
                if !files_mounted {
                    mount(
                        Some("tmpfs"),
                        dir,
                        Some("tmpfs"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                        Some("mode=700"),
                    )
                    .map_err(|e| mount_err("tmpfs", dir, e))?;
                    files_mounted = true;
                }
                let file = dir.join(i.to_string());
                std::fs::write(&file, data).map_err(|e| format!("writing a mount file: {e}"))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("chmod of a mount file: {e}"))?;
                nix::unistd::chown(&file, Some(Uid::from_raw(*uid)), Some(Gid::from_raw(*gid)))
                    .map_err(|e| format!("chown of a mount file: {e}"))?;
                clone_tree(&file).map_err(|e| format!("mounting a file: {e}"))?
            }
        };
        let is_dir = nix::sys::stat::fstat(&tree)
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|e| format!("stat of a mount source: {e}"))?;
        out.push(Some((tree, is_dir)));
    }
    Ok(out)
}

/// Attaches the mounts at their targets, in order, inside the new root (symlinks in targets
/// resolve inside it). Runs in PID 1, after pivot_root.
fn attach_mounts(process: &Process, trees: Vec<Detached>) -> Result<(), String> {
    let none: Option<&str> = None;
    for (m, tree) in process.mounts.iter().zip(trees) {
        let target = Path::new(&m.target);
        let is_dir = tree.as_ref().is_none_or(|(_, d)| *d);
        if std::fs::symlink_metadata(target).is_err() {
            let made = if is_dir {
                std::fs::create_dir_all(target)
            } else {
                target
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(target, b""))
            };
            made.map_err(|e| format!("creating the mount point {}: {e}", m.target))?;
        }
        match (&m.source, tree) {
            (MountSource::Tmpfs { size }, _) => {
                let options = size.map(|s| format!("size={s}"));
                mount(
                    Some("tmpfs"),
                    target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    options.as_deref(),
                )
                .map_err(|e| mount_err("tmpfs", target, e))?;
            }
            (_, Some((fd, _))) => {
                crate::sys::mount::attach(fd.as_fd(), target)
                    .map_err(|e| format!("mounting on {}: {e}", m.target))?;
            }
            (_, None) => return Err(format!("internal error: no source for {}", m.target)),
        }
        if m.readonly {
            mount(
                none,
                target,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                none,
            )
            .map_err(|e| mount_err("a read-only remount", target, e))?;
        }
    }
    Ok(())
}

/// Why an id cannot be taken in a rootless sandbox that maps only the user's own ids.
fn unmapped_hint(e: nix::errno::Errno) -> &'static str {
    if e == nix::errno::Errno::EINVAL && !crate::sys::userns::owners_preserved() {
        " (rootless rbuild maps only your own user; give it subordinate ids in /etc/subuid and \
         /etc/subgid, and install uidmap, to run steps as other users)"
    } else {
        ""
    }
}

/// Finds `program` like `execvp` would, in the sandbox's `PATH`.
fn lookup(program: &str, path_var: &str, cwd: &str) -> Result<String, String> {
    use nix::unistd::{AccessFlags, access};
    if program.contains('/') {
        return Ok(program.to_string());
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { cwd } else { dir };
        let candidate = format!("{}/{program}", dir.trim_end_matches('/'));
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && access(candidate.as_str(), AccessFlags::X_OK).is_ok()
        {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: \"{program}\": executable file not found in $PATH"
    ))
}

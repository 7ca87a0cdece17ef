//! Snapshots: unpacked layers on disk, in the format overlayfs reads.
//!
//! ```text
//! snapshots/<diff-id hex>/fs   one layer's files; whiteouts are 0/0 character devices and
//!                              opaque directories carry trusted.overlay.opaque=y
//! snapshots/stubs/fs           the bottom layer of every sandbox: empty mount points
//! snapshots/empty              an empty directory (bottom of read-only views)
//! snapshots/tmp/<id>/{fs,work} uppers of running steps and layers being extracted
//! ```
//!
//! A snapshot is named by the diff id of its layer, so equal layers are stored once and a
//! snapshot never changes after it is committed. Commits are a rename of a finished directory,
//! so a crash leaves either no snapshot or a whole one; leftovers in `tmp/` are removed by
//! [`Snapshotter::clean_tmp`].
//!
//! The stub layer is why mount points never leak into layers: `/proc`, `/dev`, `/sys`,
//! `/etc/hosts` and `/etc/resolv.conf` exist in it, so the sandbox can mount over them without
//! creating anything in the step's upper directory (BuildKit creates them and deletes them
//! afterwards instead).

use crate::sys::mount::{FsContext, cstring};
use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The most lower directories one overlay mount takes (the kernel's `OVL_MAX_STACK`). A
/// step over more layers runs over a copy of them instead (the native snapshotter's way), so
/// an image's layer count never fails a build.
pub const MAX_OVERLAY_LAYERS: usize = 500;

/// Chains of at least this many layers run over a flattened view of most of them (see
/// [`Snapshotter::lowers`]). Below it, the view would cost more to make than it saves.
pub const FLATTEN_FROM: usize = 32;

/// Flattened views are of chain prefixes whose length is a multiple of this: the chains of a
/// build's steps share them, and fewer than this many layers stay above the view.
pub const FLATTEN_STEP: usize = 8;

/// An overlay mount prepared for a child process to make.
///
/// Where the kernel takes overlayfs's layers one by one through the new mount API
/// (`lowerdir+`, Linux 6.8), each is passed so, by its path relative to the deepest directory
/// that holds them all (the kernel takes 255 bytes per path): nothing is made on disk.
/// Older kernels take mount options of at most a page (4 KiB), which 64-hex-digit layer paths
/// fill at ~57 layers, fewer the longer the state directory's path. There the layers are
/// named through symlinks in a directory (`0`, `1`, …, top first; `u` and `w` for the upper
/// and work directories) and the options through those short names, relative to it:
/// [`MAX_OVERLAY_LAYERS`] fit wherever the state directory is. The child changes into it
/// before it mounts (see [`OverlayMount::mount`]). Those links were a fifth of a one-file RUN
/// step's time on ext4 mounted with `discard` (each created and removed again per step).
#[derive(Clone, Debug)]
pub struct OverlayMount {
    layers: Layers,
    /// Without an upper directory the overlay is read-only, and mounted so.
    pub readonly: bool,
    /// Mounted with overlayfs's `volatile` where the kernel has it (see
    /// [`OverlayMount::volatile`]).
    pub volatile: bool,
}

/// How an [`OverlayMount`] names its layers.
#[derive(Clone, Debug)]
enum Layers {
    /// One `lowerdir+` per lower (top first), and the upper and work directories, each
    /// relative to `base`: the kernel takes at most 255 bytes per value.
    Listed {
        base: CString,
        lowers: Vec<CString>,
        upper: Option<(CString, CString)>,
        userxattr: bool,
    },
    /// Links in `dir`, and the options that name them.
    Linked { dir: PathBuf, options: String },
}

/// Whether overlayfs takes `lowerdir+` here: decided once, by configuring (not mounting) an
/// overlay. A process that may not make filesystems is told no, and links its layers; so is
/// one with `RBUILD_OVERLAY_LINKS=1` in its environment (the tests' way to run the older
/// kernels' path, and a way around a kernel whose new mount API misbehaves).
fn lowerdir_plus_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let forced = std::env::var_os("RBUILD_OVERLAY_LINKS").is_some_and(|v| v != "0");
        !forced && FsContext::open(c"overlay").is_ok_and(|fs| fs.set(c"lowerdir+", c"/").is_ok())
    })
}

/// The longest value `fsconfig` takes: it copies values with `strndup_user(value, 256)`, the
/// NUL included, and refuses longer ones with EINVAL.
const FSCONFIG_VALUE_MAX: usize = 255;

/// `paths` relative to the deepest directory that holds them all, with that directory; `None`
/// when one of them is still too long for `fsconfig`.
fn relative_to_common(paths: &[&Path]) -> io::Result<Option<(CString, Vec<CString>)>> {
    let mut base = paths.first().map_or(Path::new("."), |p| *p);
    for path in paths {
        // (Every path starts with the empty one.)
        while !path.starts_with(base) {
            base = base.parent().unwrap_or(Path::new(""));
        }
    }
    let base_dir = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let mut relative = Vec::with_capacity(paths.len());
    for path in paths {
        let rel = path.strip_prefix(base).unwrap_or(path);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        if rel.as_os_str().len() > FSCONFIG_VALUE_MAX {
            return Ok(None);
        }
        relative.push(cstring(rel)?);
    }
    Ok(Some((cstring(base_dir)?, relative)))
}

impl OverlayMount {
    /// An overlay of `lowers` (top first; at least two when there is no upper) and `upper`
    /// (its files and work directories). `dir` is a new directory for the layers' links, made
    /// only where the kernel needs them.
    pub fn prepare(
        dir: &Path,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
    ) -> io::Result<OverlayMount> {
        if lowers.len() > MAX_OVERLAY_LAYERS {
            return Err(io::Error::other(format!(
                "{} layers, more than the {MAX_OVERLAY_LAYERS} one overlay mount takes",
                lowers.len()
            )));
        }
        let listed = match lowerdir_plus_works() {
            true => Self::list(lowers, upper)?,
            false => None,
        };
        let layers = match listed {
            Some(listed) => listed,
            None => Self::link(dir, lowers, upper)?,
        };
        Ok(OverlayMount {
            layers,
            readonly: upper.is_none(),
            volatile: false,
        })
    }

    fn list(lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> io::Result<Option<Layers>> {
        let mut paths: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
        paths.extend(upper.iter().flat_map(|(fs, work)| [*fs, *work]));
        let Some((base, mut relative)) = relative_to_common(&paths)? else {
            return Ok(None);
        };
        let upper = match upper {
            Some(_) => {
                let work = relative.pop();
                relative.pop().zip(work)
            }
            None => None,
        };
        Ok(Some(Layers::Listed {
            base,
            lowers: relative,
            upper,
            userxattr: crate::sys::userns::in_user_namespace(),
        }))
    }

    fn link(dir: &Path, lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> io::Result<Layers> {
        std::fs::create_dir(dir)?;
        let mut names = Vec::with_capacity(lowers.len());
        for (i, lower) in lowers.iter().enumerate() {
            let name = i.to_string();
            std::os::unix::fs::symlink(lower, dir.join(&name))?;
            names.push(name);
        }
        let mut options = format!("lowerdir={}", names.join(":"));
        if let Some((fs, work)) = upper {
            std::os::unix::fs::symlink(fs, dir.join("u"))?;
            std::os::unix::fs::symlink(work, dir.join("w"))?;
            options.push_str(",upperdir=u,workdir=w");
        }
        options.push_str(crate::sys::userns::overlay_mount_options());
        Ok(Layers::Linked {
            dir: dir.to_path_buf(),
            options,
        })
    }

    /// Makes a writable overlay skip syncing its upper directory's filesystem (overlayfs's
    /// `volatile`, Linux 5.10; Buildah's build containers use it too). Without it every
    /// unmount syncs the whole filesystem the upper directory is on: a step's own few files
    /// and everything else written there, such as a base just unpacked; that sync was a
    /// quarter of a one-file RUN step's time here. Only for uppers that are thrown away or
    /// made snapshots once the step is over: an upper mounted volatile cannot be mounted
    /// again. Whoever commits such snapshots syncs them once ([`Snapshotter::sync`]); fsync in
    /// the step does nothing (as under eatmydata).
    pub fn volatile(mut self) -> OverlayMount {
        self.volatile = !self.readonly;
        self
    }

    /// Mounts the overlay on `target` (absolute). May change the working directory; for a
    /// single-threaded child process with a mount namespace of its own. A kernel that does
    /// not know `volatile` gets the mount without it.
    pub fn mount(&self, target: &Path) -> io::Result<()> {
        match &self.layers {
            Layers::Listed {
                base,
                lowers,
                upper,
                userxattr,
            } => {
                // The layers' paths are relative to `base`.
                nix::unistd::chdir(base.as_c_str())?;
                let fs = FsContext::open(c"overlay")?;
                for lower in lowers {
                    fs.set(c"lowerdir+", lower)?;
                }
                if let Some((upper, work)) = upper {
                    fs.set(c"upperdir", upper)?;
                    fs.set(c"workdir", work)?;
                }
                if *userxattr {
                    fs.set_flag(c"userxattr")?;
                }
                // (Every kernel with `lowerdir+` has `volatile`.)
                if self.volatile {
                    fs.set_flag(c"volatile")?;
                }
                let tree = fs.create(self.readonly)?;
                crate::sys::mount::attach(tree.as_fd(), target)
            }
            Layers::Linked { dir, options } => {
                nix::unistd::chdir(dir)?;
                let flags = if self.readonly {
                    nix::mount::MsFlags::MS_RDONLY
                } else {
                    nix::mount::MsFlags::empty()
                };
                let mount = |options: &str| {
                    nix::mount::mount(
                        Some("overlay"),
                        target,
                        Some("overlay"),
                        flags,
                        Some(options),
                    )
                };
                if self.volatile {
                    match mount(&format!("{options},volatile")) {
                        Err(nix::errno::Errno::EINVAL) => {}
                        other => return Ok(other?),
                    }
                }
                Ok(mount(options)?)
            }
        }
    }
}

/// The snapshot store under one directory.
#[derive(Clone, Debug)]
pub struct Snapshotter {
    root: PathBuf,
    native: bool,
    /// Whether an upper was made since the last [`Snapshotter::sync`] (shared by clones).
    unsynced: Arc<AtomicBool>,
}

/// A writable directory for a step: `fs` receives the changes, `work` is overlayfs's workdir.
#[derive(Debug)]
pub struct Upper {
    /// The directory holding both.
    pub dir: PathBuf,
    /// The upper directory.
    pub fs: PathBuf,
    /// The overlay work directory (same filesystem as `fs`).
    pub work: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique on this machine for this process's lifetime and across processes.
pub fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{:x}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn hex_of(diff_id: &str) -> &str {
    diff_id.strip_prefix("sha256:").unwrap_or(diff_id)
}

impl Snapshotter {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> io::Result<Snapshotter> {
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::create_dir_all(root.join("empty"))?;
        let s = Snapshotter {
            root: root.to_path_buf(),
            native: false,
            unsynced: Arc::default(),
        };
        if !s.stubs().exists() {
            s.make_stubs()?;
        }
        Ok(s)
    }

    fn make_stubs(&self) -> io::Result<()> {
        let upper = self.new_upper()?;
        for dir in ["proc", "dev", "sys", "etc"] {
            std::fs::create_dir(upper.fs.join(dir))?;
            std::fs::set_permissions(upper.fs.join(dir), std::fs::Permissions::from_mode(0o755))?;
        }
        for file in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
            std::fs::write(upper.fs.join(file), b"")?;
            std::fs::set_permissions(upper.fs.join(file), std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::remove_dir_all(&upper.work)?;
        match std::fs::rename(&upper.dir, self.root.join("stubs")) {
            Ok(()) => Ok(()),
            // Another process made them first.
            Err(_) if self.stubs().exists() => std::fs::remove_dir_all(&upper.dir),
            Err(e) => Err(e),
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes steps use the native snapshotter ([`crate::native`]: copies instead of overlay
    /// mounts) or overlayfs. The snapshots themselves are the same either way.
    pub fn with_native(mut self, native: bool) -> Snapshotter {
        self.native = native;
        self
    }

    /// Whether steps use the native snapshotter.
    pub fn is_native(&self) -> bool {
        self.native
    }

    /// Whether a view of `lowers` lower directories is made by copying them rather than by an
    /// overlay: with the native snapshotter, and past what one overlay takes.
    pub fn copies(&self, lowers: usize) -> bool {
        self.native || lowers > MAX_OVERLAY_LAYERS
    }

    /// Whether an overlay filesystem can be mounted here (in a child process with a mount
    /// namespace of its own, as steps do).
    pub fn overlay_works(&self) -> bool {
        let Ok(probe) = self.new_upper() else {
            return false;
        };
        let point = probe.dir.join("mnt");
        let options = format!(
            "lowerdir={},upperdir={},workdir={}{}",
            self.stubs().display(),
            probe.fs.display(),
            probe.work.display(),
            crate::sys::userns::overlay_mount_options()
        );
        let ok = std::fs::create_dir(&point).is_ok()
            && crate::sys::process::fork_child(|| {
                use nix::mount::{MsFlags, mount};
                let none: Option<&str> = None;
                let mounted = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
                    && mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).is_ok()
                    && mount(
                        Some("overlay"),
                        &point,
                        Some("overlay"),
                        MsFlags::empty(),
                        Some(options.as_str()),
                    )
                    .is_ok();
                i32::from(!mounted)
            })
            .ok()
            .and_then(|pid| nix::sys::wait::waitpid(pid, None).ok())
            .is_some_and(|st| matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)));
        let _ = self.discard(probe);
        ok
    }

    /// The stub layer's files.
    pub fn stubs(&self) -> PathBuf {
        self.root.join("stubs/fs")
    }

    /// An empty directory.
    pub fn empty(&self) -> PathBuf {
        self.root.join("empty")
    }

    /// The directories of `layers` (bottom first) as overlay lower directories, top first.
    ///
    /// Overlayfs costs grow with the number of lower directories: mounting opens each one,
    /// every lookup of a directory reads it in each layer, and the mount's teardown is longer
    /// (a `RUN true` over 120 layers took 40 ms more than over 2). So a chain of
    /// [`FLATTEN_FROM`] layers or more runs over a flattened view of its longest prefix whose
    /// length is a multiple of [`FLATTEN_STEP`], with the rest of the layers above it. Where
    /// that view cannot be made, the layers are given as they are.
    pub fn lowers(&self, layers: &[String]) -> Vec<PathBuf> {
        let n = layers.len();
        let plain = || layers.iter().rev().map(|l| self.layer_dir(l)).collect();
        if self.native || n < FLATTEN_FROM {
            return plain();
        }
        let prefix = n - n % FLATTEN_STEP;
        match self.flattened(&layers[..prefix]) {
            Ok(view) => layers[prefix..]
                .iter()
                .rev()
                .map(|l| self.layer_dir(l))
                .chain([view])
                .collect(),
            Err(_) => plain(),
        }
    }

    /// The flattened view of `layers` (bottom first), made if needed: one directory tree with
    /// the layers' whiteouts and opaque directories applied, whose files, symlinks and devices
    /// are hard links of the snapshots' own (snapshots never change; overlayfs copies a lower
    /// file up before writing it), and whose directories are copies with their metadata.
    /// Processes in the sandbox see a link count one higher per view on these files; nothing
    /// else differs. A view is made from the next shorter one when it exists, so the views of
    /// one chain cost a walk of the image each, not of all its layers.
    ///
    /// ```text
    /// snapshots/flat/<sha256 of the diff ids>/fs
    /// ```
    ///
    /// Views are committed by rename, as snapshots are, and only hold links: `rbuild prune`
    /// removes them all ([`Snapshotter::remove_flattened`]) and they are made again on use.
    pub fn flattened(&self, layers: &[String]) -> io::Result<PathBuf> {
        let key = |layers: &[String]| {
            self.root
                .join("flat")
                .join(rbuild_solver::Digest::of(layers.join("\n").as_bytes()).hex())
        };
        let dir = key(layers);
        let fs = dir.join("fs");
        if fs.is_dir() {
            return Ok(fs);
        }
        let shorter = (1..layers.len() / FLATTEN_STEP)
            .rev()
            .map(|k| k * FLATTEN_STEP)
            .find(|&p| key(&layers[..p]).join("fs").is_dir());
        let mut sources = Vec::new();
        let rest = match shorter {
            Some(p) => {
                sources.push(key(&layers[..p]).join("fs"));
                &layers[p..]
            }
            None => layers,
        };
        sources.extend(rest.iter().map(|l| self.layer_dir(l)));
        let upper = self.new_upper()?;
        let made = crate::native::apply_dirs(&sources, &upper.fs, crate::native::Leaves::Link)
            .and_then(|()| std::fs::remove_dir_all(&upper.work))
            .and_then(|()| std::fs::create_dir_all(dir.parent().expect("flat/")))
            .and_then(|()| std::fs::rename(&upper.dir, &dir));
        match made {
            Ok(()) => Ok(fs),
            // Another process made it first.
            Err(_) if fs.is_dir() => {
                self.discard(upper)?;
                Ok(fs)
            }
            Err(e) => {
                let _ = self.discard(upper);
                Err(e)
            }
        }
    }

    /// Removes every flattened view. Only call this while holding the state directory's
    /// exclusive lock, when no step of any process can be running.
    pub fn remove_flattened(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(self.root.join("flat")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The files of the snapshot of layer `diff_id` (which may not exist).
    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root.join(hex_of(diff_id)).join("fs")
    }

    /// Whether the snapshot of `diff_id` exists.
    pub fn has(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// Makes what was written under the store since the last call durable, if anything was
    /// (an upper directory was made): one `syncfs` of its filesystem. Steps' overlays do not
    /// sync (see [`OverlayMount::volatile`]), nor do COPY and unpacking; a build calls this
    /// once its steps are done, so a finished build's snapshots survive a power loss.
    pub fn sync(&self) -> io::Result<()> {
        if !self.unsynced.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let root = std::fs::File::open(&self.root)?;
        nix::unistd::syncfs(&root).map_err(io::Error::from)
    }

    /// A new, empty upper directory under `tmp/`.
    pub fn new_upper(&self) -> io::Result<Upper> {
        self.unsynced.store(true, Ordering::Relaxed);
        let dir = self.root.join("tmp").join(unique_name());
        let fs = dir.join("fs");
        let work = dir.join("work");
        std::fs::create_dir_all(&fs)?;
        std::fs::create_dir_all(&work)?;
        std::fs::set_permissions(&fs, std::fs::Permissions::from_mode(0o755))?;
        Ok(Upper { dir, fs, work })
    }

    /// Makes `upper` the snapshot of `diff_id`. If that snapshot exists already (an equal
    /// layer), `upper` is discarded.
    pub fn commit(&self, upper: Upper, diff_id: &str) -> io::Result<()> {
        if upper.work.exists() {
            std::fs::remove_dir_all(&upper.work)?;
        }
        let target = self.root.join(hex_of(diff_id));
        if target.exists() {
            return self.discard(upper);
        }
        match std::fs::rename(&upper.dir, &target) {
            Ok(()) => Ok(()),
            Err(_) if target.exists() => self.discard(upper),
            Err(e) => Err(e),
        }
    }

    /// Removes an upper that will not become a snapshot.
    pub fn discard(&self, upper: Upper) -> io::Result<()> {
        match std::fs::remove_dir_all(&upper.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes everything under `tmp/`. Only call this while holding the state directory's
    /// exclusive lock, when no step of any process can be running.
    pub fn clean_tmp(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let path = entry?.path();
            std::fs::remove_dir_all(&path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_layers_are_named_relative_to_their_deepest_common_directory() {
        let c = |s: &str| CString::new(s).unwrap();
        let paths = [
            Path::new("/s/snapshots/a/fs"),
            Path::new("/s/snapshots/b/fs"),
        ];
        let (base, rel) = relative_to_common(&paths).unwrap().unwrap();
        assert_eq!((base, rel), (c("/s/snapshots"), vec![c("a/fs"), c("b/fs")]));
        let paths = [Path::new("/s/run/x/stubs"), Path::new("/s/run/x/stubs")];
        let (base, rel) = relative_to_common(&paths).unwrap().unwrap();
        assert_eq!((base, rel), (c("/s/run/x/stubs"), vec![c("."), c(".")]));
        let paths = [Path::new("/a/x"), Path::new("b/y")];
        let (base, rel) = relative_to_common(&paths).unwrap().unwrap();
        assert_eq!((base, rel), (c("."), vec![c("/a/x"), c("b/y")]));
        // A value past what fsconfig takes: the layers are linked instead.
        let long = format!("/s/{}", "d".repeat(FSCONFIG_VALUE_MAX + 1));
        let paths = [Path::new("/s/a"), Path::new(&long)];
        assert!(relative_to_common(&paths).unwrap().is_none());
    }

    #[test]
    fn commit_is_a_rename_and_equal_layers_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::open(dir.path()).unwrap();
        assert!(s.stubs().join("etc/resolv.conf").is_file());
        let id = "sha256:aaaa";
        let u = s.new_upper().unwrap();
        std::fs::write(u.fs.join("f"), "1").unwrap();
        s.commit(u, id).unwrap();
        assert!(s.has(id));
        let u2 = s.new_upper().unwrap();
        let u2_dir = u2.dir.clone();
        s.commit(u2, id).unwrap();
        assert!(!u2_dir.exists());
        assert_eq!(
            std::fs::read_to_string(s.layer_dir(id).join("f")).unwrap(),
            "1"
        );
        let _leftover = s.new_upper().unwrap();
        s.clean_tmp().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}

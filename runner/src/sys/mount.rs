//! The new mount API (`open_tree`, `move_mount`, `fsopen`, Linux 5.2) and `openat2` (Linux
//! 5.6), which `nix` does not wrap.
//!
//! The sandbox uses them for RUN mounts: a source is resolved and cloned into a *detached*
//! mount while the host's filesystem is still visible, and attached at its target after
//! `pivot_root`, when paths resolve inside the step's root. A detached clone survives the
//! detaching of the old root, which a plain bind source would not. Overlays are made with
//! [`FsContext`] where the kernel takes their layers one by one (see
//! [`crate::snapshot::OverlayMount`]).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;

/// `path` as a C string (paths with a NUL byte are refused).
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// A detached copy of the mount at `path` (a bind mount of `path`, which may be any file or
/// directory, not only a mount point). Symlinks in `path` are followed.
pub fn clone_tree(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: valid NUL-terminated path; flags are plain integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    };
    fd_result(ret)
}

/// A detached copy of what `fd` (an `O_PATH` descriptor) refers to, as [`clone_tree`].
pub fn clone_tree_fd(fd: BorrowedFd) -> io::Result<OwnedFd> {
    // SAFETY: an empty path with AT_EMPTY_PATH refers to `fd` itself.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    fd_result(ret)
}

/// Attaches the detached mount `tree` at `target`.
pub fn attach(tree: BorrowedFd, target: &Path) -> io::Result<()> {
    let c = cstring(target)?;
    // SAFETY: valid descriptors and NUL-terminated paths.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `path` below the directory `root` as an `O_PATH` descriptor, resolving it as if
/// `root` were `/`: `..` and absolute symlinks never leave `root`.
pub fn open_in_root(root: BorrowedFd, path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // The kernel's `struct open_how` (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid descriptor, NUL-terminated path, and an `open_how` of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    fd_result(ret)
}

/// A filesystem being configured (`fsopen`): parameters are set one call each, so no option
/// string limits their number or needs their values escaped.
pub struct FsContext(OwnedFd);

impl FsContext {
    /// A context for a new filesystem of type `fstype`.
    pub fn open(fstype: &CStr) -> io::Result<FsContext> {
        // SAFETY: a NUL-terminated name and plain flags.
        let ret = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
        fd_result(ret).map(FsContext)
    }

    fn config(
        &self,
        cmd: libc::c_uint,
        key: Option<&CStr>,
        value: Option<&CStr>,
    ) -> io::Result<()> {
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: a valid descriptor, NUL-terminated strings or null where the command
        // takes none.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.0.as_raw_fd(),
                cmd,
                ptr(key),
                ptr(value),
                0,
            )
        };
        if ret < 0 {
            return Err(self.explained(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Sets the parameter `key` to `value`.
    pub fn set(&self, key: &CStr, value: &CStr) -> io::Result<()> {
        self.config(FSCONFIG_SET_STRING, Some(key), Some(value))
    }

    /// Sets the flag parameter `key`.
    pub fn set_flag(&self, key: &CStr) -> io::Result<()> {
        self.config(FSCONFIG_SET_FLAG, Some(key), None)
    }

    /// Creates the filesystem and a detached mount of it, read-only if `readonly`.
    pub fn create(self, readonly: bool) -> io::Result<OwnedFd> {
        self.config(FSCONFIG_CMD_CREATE, None, None)?;
        let attrs = if readonly { MOUNT_ATTR_RDONLY } else { 0 };
        // SAFETY: a valid descriptor and plain flags.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.0.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        };
        fd_result(ret).map_err(|e| self.explained(e))
    }

    /// `e` with the filesystem's own message about it, which the kernel keeps in the context
    /// (e.g. "overlayfs: failed to resolve '/x': -2") where `dmesg` would otherwise be needed.
    fn explained(&self, e: io::Error) -> io::Error {
        let mut buf = [0u8; 256];
        // SAFETY: reading into a buffer of the length passed.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else {
            return e;
        };
        let message = String::from_utf8_lossy(&buf[..n]);
        // Each message starts with its severity: "e " for errors.
        let message = message.trim_end();
        let message = message.split_once(' ').map_or(message, |(_, m)| m);
        io::Error::new(e.kind(), format!("{e} ({message})"))
    }
}

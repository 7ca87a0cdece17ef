//! The new mount API (`open_tree`, `move_mount`, Linux 5.2) and `openat2` (Linux 5.6), which
//! `nix` does not wrap.
//!
//! The sandbox uses them for RUN mounts: a source is resolved and cloned into a *detached*
//! mount while the host's filesystem is still visible, and attached at its target after
//! `pivot_root`, when paths resolve inside the step's root. A detached clone survives the
//! detaching of the old root, which a plain bind source would not.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn cstring(path: &Path) -> io::Result<CString> {
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

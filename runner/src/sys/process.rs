//! Forking helpers.
//!
//! # Why forking from a multi-threaded process is sound here
//! POSIX only promises async-signal-safe functions in the child of `fork()` in a multi-threaded
//! program, because locks held by other threads at the moment of the fork stay locked forever in
//! the child. rbuild's children rely on two facts instead:
//! - glibc's `fork()` runs the at-fork handlers, which take and reset the allocator's locks
//!   (glibc's malloc arenas, and jemalloc's, which the `rbuild` binary uses and which registers
//!   such handlers), so allocating in the child is safe; this is why children are made with
//!   libc's `fork()` and never with a raw `clone` syscall;
//! - the child code never touches locks that other threads of rbuild take: it does not log
//!   (`tracing`), print (`std::io::stdout` has a lock), read the environment (`std::env` has a
//!   lock) or use tokio. It only does syscalls, file I/O on its own descriptors, and allocation.
//!
//! The child never returns into the caller's code: [`fork_child`] runs the closure, catches any
//! panic, and `_exit`s, so no destructors or at-exit handlers of the parent's state run twice.
//!
//! Every child starts with umask 022, whatever rbuild's own: a RUN step's new files, the
//! directories WORKDIR and COPY create, and files written by file ops then have the same modes
//! on every machine (runc, under BuildKit, sets 022 for containers the same way; reprotest
//! found that the builder's umask leaked into layers).

use nix::unistd::{ForkResult, Pid};

/// Forks; the child runs `child` and exits with the code it returns (101 if it panics). Returns
/// the child's pid in the parent.
pub fn fork_child(child: impl FnOnce() -> i32) -> nix::Result<Pid> {
    // SAFETY: see the module documentation; the child only runs `child` and then `_exit`s.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
            // A parent that waits for signals with sigwait blocks them; its children must
            // not inherit that (a step's server could not be stopped).
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            );
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
            exit_now(code)
        }
    }
}

/// Exits the current process at once, without running at-exit handlers or destructors.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and takes no pointers.
    unsafe { libc::_exit(code) }
}

/// Closes every file descriptor from `first` up, except those in `keep`.
pub fn close_fds_from(first: i32, keep: &[i32]) {
    let mut start = first as u32;
    let mut keep: Vec<u32> = keep
        .iter()
        .map(|&fd| fd as u32)
        .filter(|&fd| fd >= start)
        .collect();
    keep.sort_unstable();
    keep.push(u32::MAX);
    for k in keep {
        if k > start {
            // SAFETY: close_range takes plain integers; closing descriptors this process owns
            // is what the caller asks for. Errors (old kernels) leave the fds open, which is
            // only untidy.
            unsafe { libc::syscall(libc::SYS_close_range, start, k - 1, 0) };
        }
        start = k.saturating_add(1);
    }
}

/// Makes `target` a copy of `fd` (dup2).
pub fn dup_onto(fd: i32, target: i32) -> std::io::Result<()> {
    // SAFETY: dup2 takes plain integers; an invalid fd is reported as EBADF.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Closes a descriptor this process owns and will not use again.
pub fn close(fd: i32) {
    // SAFETY: close takes a plain integer; the caller gives up the descriptor.
    unsafe { libc::close(fd) };
}

/// Writes all of `bytes` to a raw descriptor (best effort: errors are ignored, as there is
/// nowhere left to report them).
pub fn write_all_fd(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is readable for its length; an invalid fd is reported as EBADF.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// A descriptor that becomes readable when the child `pid` exits (`pidfd_open`, Linux 5.3),
/// so the parent can wait for it and still look at a cancel flag without sleeping.
pub fn pidfd_open(pid: nix::unistd::Pid) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is new and owned by nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Spawns `command` with the descriptors `keep` inherited under their own numbers (they are
/// close-on-exec in rbuild, so no other child gets them), for helpers that are told a
/// descriptor number on their command line (`slirp4netns --exit-fd`).
pub fn spawn_keeping_fds(
    command: &mut std::process::Command,
    keep: &[i32],
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let keep = keep.to_vec();
    // SAFETY: the hook runs in the forked child before exec and only calls fcntl, which is
    // async-signal-safe, on descriptor numbers copied before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn()
}

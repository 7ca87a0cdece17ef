//! Writing a layer's regular files on a thread of their own while the tar stream goes on.
//!
//! Unpacking a base image is decompressing and parsing the stream, one thread's work, and
//! creating files, which another thread can do meanwhile: so the reading thread hands each
//! regular file of at most [`LARGEST`] bytes, with its data, to one writer thread (see [`Writers`]
//! for why one), and does everything else itself, in order. The data handed out and not yet written
//! is at most [`BUDGET`] bytes in the whole process (several layers unpack at once), so memory
//! stays bounded whatever the layers hold. Safety and tar's order are kept by draining (waiting
//! until every handed-out file is written) before any entry that could meet one of them: one whose
//! path already holds something (it would be removed, and a directory removed and replaced by a
//! symlink must not redirect a pending write), one whose path is pending, a hard link (its target
//! may be pending) and a whiteout. The writer creates its file with `O_EXCL` (never through a
//! symlink) below directories the reading thread checked.

use std::collections::HashSet;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex};

/// The largest file handed to a writer; larger ones are written by the reading thread,
/// streamed (and sparse where the tar says so).
pub(super) const LARGEST: u64 = 16 << 20;

/// The most bytes handed out and not yet written, in the whole process.
const BUDGET: u64 = 64 << 20;

/// The bytes handed out and not yet written, and a signal when some are.
static IN_FLIGHT: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// Room for some bytes of file data in [`BUDGET`], given back when dropped (however the file
/// ends: written, failed, or never handed out).
pub(super) struct Room(u64);

impl Room {
    /// Waits until `bytes` more fit in [`BUDGET`] (or nothing is in flight), and takes them.
    pub fn reserve(bytes: u64) -> Room {
        let (used, freed) = &IN_FLIGHT;
        let mut used = used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + bytes > BUDGET {
            used = freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Room(bytes)
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let (used, freed) = &IN_FLIGHT;
        let mut used = used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.0);
        freed.notify_all();
    }
}

/// How many handed-out files may wait for the writer.
const BACKLOG: usize = 64;

/// A regular file to write, with what its tar header says.
pub(super) struct File {
    pub target: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
    /// The owner to give it, when owners are preserved.
    pub owner: Option<(u64, u64)>,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// The room `data` takes in the budget, taken before it was read.
    pub room: Room,
}

/// The writer thread of one extraction, started when the first file is handed out.
///
/// One writer thread per extraction: it overlaps file creation with the reading thread's
/// decompression, which is the gain (a pull of the 460 MiB Debian base onto a fresh ext4
/// filesystem: 1.09× faster than unpacking on the reading thread). On a 2-core machine two or
/// three writers made no measurable difference on a fresh filesystem, and on one full of
/// recently freed inodes they cost a quarter more time: ext4 creates a directory's files one
/// at a time under its lock, and the other writers spin on it.
#[derive(Default)]
pub(super) struct Writers {
    running: Option<Running>,
    /// The paths handed out since the last drain.
    pending: HashSet<PathBuf>,
}

struct Running {
    sender: SyncSender<File>,
    /// The writer; it ends with its first failure.
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl Writers {
    /// Whether a file handed out since the last drain goes to `path`.
    pub fn is_pending(&self, path: &Path) -> bool {
        self.pending.contains(path)
    }

    /// Hands `file` (whose data's room was reserved) to the writer.
    pub fn write(&mut self, file: File) -> io::Result<()> {
        let running = match &mut self.running {
            Some(running) => running,
            None => self.running.insert(start()?),
        };
        self.pending.insert(file.target.clone());
        if running.sender.send(file).is_err() {
            // The writer has stopped: it failed (or panicked, saying nothing).
            self.drain()?;
            return Err(io::Error::other("the unpacking thread stopped"));
        }
        Ok(())
    }

    /// Waits until every handed-out file is written; the writer's failure, if any.
    pub fn drain(&mut self) -> io::Result<()> {
        self.pending.clear();
        let Some(Running { sender, thread }) = self.running.take() else {
            return Ok(());
        };
        drop(sender);
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the unpacking thread panicked")))
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        let _ = self.drain();
    }
}

fn start() -> io::Result<Running> {
    let (sender, receiver) = sync_channel::<File>(BACKLOG);
    let thread = std::thread::Builder::new()
        .name("unpack-writer".into())
        .spawn(move || work(&receiver))?;
    Ok(Running { sender, thread })
}

/// The writer: takes files until the reading thread is done, or one fails. Returning drops
/// the receiver, which discards the files still queued (and gives back their room).
fn work(receiver: &Receiver<File>) -> io::Result<()> {
    while let Ok(file) = receiver.recv() {
        let written = write_file(&file);
        // The data is written (or failed): its room goes back now, before the next file.
        let File { target, room, .. } = file;
        drop(room);
        written.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", target.display())))?;
    }
    Ok(())
}

/// Creates `file.target` (nothing is there) with its data, then its owner, its mode (after the
/// owner, which clears set-id bits), its times (atime and mtime both the header's, as tar-rs
/// sets them, 0 kept) and extended attributes.
fn write_file(file: &File) -> io::Result<()> {
    let mut out = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file.target)?;
    out.write_all(&file.data)?;
    if let Some((uid, gid)) = file.owner {
        std::os::unix::fs::fchown(&out, Some(uid as u32), Some(gid as u32))?;
    }
    out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
        file.mode & 0o7777,
    ))?;
    let t = nix::sys::time::TimeSpec::new(file.mtime as i64, 0);
    nix::sys::stat::futimens(&out, &t, &t).map_err(io::Error::from)?;
    super::set_xattrs(&file.target, &file.xattrs)
}

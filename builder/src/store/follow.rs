//! A download that another thread reads while it is being written: a layer is unpacked as
//! it arrives (see `store::layer::unpack_following`), so pulling a base image takes about
//! as long as the slower of the two, not their sum. The downloader says where it writes
//! ([`Follow::started`]) and how it ended ([`Follow::finished`]); the reader reads the file
//! as it grows and sees its end only once the download succeeded (a failed or retried
//! download is an error to the reader, which then discards what it unpacked).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The state of one followed download.
#[derive(Default)]
pub struct Follow {
    state: Mutex<State>,
    changed: Condvar,
    /// Whether a download attempt took it (only the first may: a retry starts over).
    taken: AtomicBool,
}

#[derive(Default)]
struct State {
    path: Option<PathBuf>,
    /// `Some(true)` once the whole blob is written and checked, `Some(false)` if it never
    /// will be by this download.
    done: Option<bool>,
}

impl Follow {
    /// Whether this download attempt is the one followed (the first to ask).
    pub fn take(&self) -> bool {
        !self.taken.swap(true, Ordering::AcqRel)
    }

    /// The download writes to `path` from now on.
    pub fn started(&self, path: &Path) {
        self.state.lock().expect("follow").path = Some(path.to_path_buf());
        self.changed.notify_all();
    }

    /// The download ended: `ok` if the blob is whole and checked. Only the first call counts.
    pub fn finished(&self, ok: bool) {
        let mut state = self.state.lock().expect("follow");
        state.done.get_or_insert(ok);
        drop(state);
        self.changed.notify_all();
    }

    /// A reader of the download from its start, once it has one; `None` if it ended first.
    pub fn reader(&self) -> Option<FollowReader<'_>> {
        let mut state = self.state.lock().expect("follow");
        loop {
            if let Some(path) = &state.path {
                let file = std::fs::File::open(path).ok()?;
                return Some(FollowReader { file, follow: self });
            }
            if state.done.is_some() {
                return None;
            }
            state = self.changed.wait(state).expect("follow");
        }
    }
}

/// Reads a followed download as it grows (see [`Follow`]).
pub struct FollowReader<'a> {
    file: std::fs::File,
    follow: &'a Follow,
}

impl Read for FollowReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            let state = self.follow.state.lock().expect("follow");
            match state.done {
                // Everything was written before `done` was set: one more read sees it all.
                Some(true) => {
                    drop(state);
                    return self.file.read(buf);
                }
                Some(false) => {
                    return Err(std::io::Error::other("the download did not complete"));
                }
                None => {
                    // More is coming: wait a little for it (the writer does not notify per
                    // write), or for the end.
                    let wait = Duration::from_millis(5);
                    let _ = self.follow.changed.wait_timeout(state, wait);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_reader_follows_a_growing_file_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let follow = Follow::default();
        assert!(follow.take());
        assert!(!follow.take(), "a retry is not followed");
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut out = Vec::new();
                follow.reader().unwrap().read_to_end(&mut out).map(|_| out)
            });
            let mut file = std::fs::File::create(&path).unwrap();
            follow.started(&path);
            for i in 0..50u8 {
                file.write_all(&[i; 1000]).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            follow.finished(true);
            let out = reader.join().unwrap().unwrap();
            assert_eq!(out.len(), 50_000);
            assert_eq!(out[49_999], 49);
        });
        // A download that fails is an error to its reader; one that never starts has none.
        let failed = Follow::default();
        std::fs::File::create(dir.path().join("partial")).unwrap();
        failed.started(&dir.path().join("partial"));
        failed.finished(false);
        assert!(
            failed
                .reader()
                .unwrap()
                .read_to_end(&mut Vec::new())
                .is_err()
        );
        let never = Follow::default();
        never.finished(false);
        assert!(never.reader().is_none());
    }
}

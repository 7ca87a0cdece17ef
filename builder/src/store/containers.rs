//! `containers/`: the writable layers of `rbuild run`, one directory per container (removed
//! at its end with `--rm`, kept otherwise). While its `rbuild run` lives, a container's
//! directory holds `pid`, that process's id, so `check` and `prune` tell running containers
//! from stopped ones (kept, or left by a killed `rbuild run`).

use std::path::{Path, PathBuf};

/// A container directory.
pub struct Container {
    /// Its id (the directory's name).
    pub id: String,
    /// The directory.
    pub dir: PathBuf,
    /// Whether the `rbuild run` that made it still runs.
    pub running: bool,
}

/// Records that this process runs the container in `dir`.
pub fn mark_running(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("pid"), std::process::id().to_string())
}

/// Records that the container in `dir` no longer runs.
pub fn mark_stopped(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("pid"));
}

/// The containers of the state directory `root`.
pub fn list(root: &Path) -> Vec<Container> {
    let Ok(entries) = std::fs::read_dir(root.join("containers")) else {
        return vec![];
    };
    let mut out: Vec<Container> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let dir = e.path();
            let pid = std::fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            let running = pid.is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            });
            Container {
                id: e.file_name().to_string_lossy().into_owned(),
                dir,
                running,
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Removes the stopped containers; returns how many and the bytes freed.
pub fn remove_stopped(root: &Path) -> std::io::Result<(usize, u64)> {
    let (mut count, mut freed) = (0, 0);
    for c in list(root).into_iter().filter(|c| !c.running) {
        freed += crate::store::gc::tree_size(&c.dir);
        std::fs::remove_dir_all(&c.dir)?;
        count += 1;
    }
    Ok((count, freed))
}

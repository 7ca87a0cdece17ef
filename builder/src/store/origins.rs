//! Where each layer of an image built here came from: the instruction and its place in the
//! Dockerfile (`RUN apt-get install … (Dockerfile:4)`), which an image's history does not say
//! (its `created_by` is BuildKit's, and must stay so). Kept per image config in `origins/`,
//! written by `rbuild build`, read by `rbuild sbom` (and whatever else explains an image's
//! layers); `prune` drops those whose config is gone.

use crate::sbom::LayerOrigin;
use crate::store::state::State;
use rbuild_solver::Digest;
use std::path::PathBuf;

fn path(state: &State, config: &Digest) -> PathBuf {
    state
        .root
        .join("origins")
        .join(format!("{}.json", config.hex()))
}

/// Records the origins of the layers of the image whose config is `config`.
pub fn save(state: &State, config: &Digest, origins: &[LayerOrigin]) -> std::io::Result<()> {
    let file = path(state, config);
    let dir = file.parent().expect("origins/");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // One write, not one per JSON token (thousands for a deep image).
    std::io::Write::write_all(&mut tmp, &serde_json::to_vec(origins)?)?;
    tmp.persist(&file).map_err(|e| e.error)?;
    Ok(())
}

/// The origins recorded for the image whose config is `config`, if it was built here.
pub fn load(state: &State, config: &Digest) -> Option<Vec<LayerOrigin>> {
    let bytes = std::fs::read(path(state, config)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the origins of images whose config blob is gone.
pub fn sweep(state: &State) {
    let Ok(entries) = std::fs::read_dir(state.root.join("origins")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let config = name
            .strip_suffix(".json")
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")));
        if config.is_none_or(|c| !state.store.has_blob(&c)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

//! Where blobs are known to be in registries (`blob-sources/<digest hex>` in the state
//! directory, one `registry/repository` per line), learned from pulls and pushes. A push to
//! another repository of the same registry then asks the registry to mount the blob from
//! there (cross-repository blob mount) instead of uploading it again.

use rbuild_solver::Digest;
use std::path::PathBuf;

/// The blob source records of one state directory.
pub struct BlobSources {
    dir: PathBuf,
}

impl BlobSources {
    /// The records under `dir`.
    pub fn new(dir: PathBuf) -> BlobSources {
        BlobSources { dir }
    }

    /// The repositories (`registry/repository`) `digest` is known to be in.
    pub fn get(&self, digest: &Digest) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(digest.hex()))
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Records that `digest` is in `registry/repository`. Best effort: a lost record only
    /// costs an upload.
    pub fn add(&self, digest: &Digest, registry: &str, repository: &str) {
        let location = format!("{registry}/{repository}");
        let mut known = self.get(digest);
        if known.contains(&location) {
            return;
        }
        known.push(location);
        // Most recent last; a few per blob are enough.
        let start = known.len().saturating_sub(8);
        let text = known[start..].join("\n") + "\n";
        let _ = std::fs::create_dir_all(&self.dir);
        let tmp = self
            .dir
            .join(format!(".{}.tmp-{}", digest.hex(), std::process::id()));
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join(digest.hex()));
        }
    }

    /// Forgets the records of blobs for which `keep` is false (after pruning).
    pub fn retain(&self, keep: impl Fn(&Digest) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match Digest::parse(&format!("sha256:{name}")) {
                Some(d) if keep(&d) => {}
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

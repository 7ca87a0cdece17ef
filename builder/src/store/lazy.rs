//! Blobs this build may use without having them: the layers of cache records imported from a
//! registry or an OCI layout (`--cache-from`), known by digest and where they are. Nothing is
//! downloaded until something needs a blob's bytes (a step that runs on the layer, an export
//! that writes it); a push to the registry that has the blob mounts it instead.
//!
//! The set lives in memory for one build: the local store never records a blob it does not
//! have. A blob fetched from its origin is checked against its digest before it is stored.

use crate::store::layout::{Descriptor, Store};
use crate::store::{Context, Result};
use rbuild_solver::Digest;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Where a lazily known blob is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// In a registry's repository.
    Registry {
        /// The registry (`host:port`).
        registry: String,
        /// The repository (`team/cache`).
        repository: String,
    },
    /// In an OCI layout directory (`blobs/sha256/<hex>`).
    Layout(PathBuf),
}

/// The blobs known elsewhere, with their descriptors.
#[derive(Debug, Default)]
pub struct LazyBlobs(Mutex<HashMap<Digest, (Descriptor, Origin)>>);

impl LazyBlobs {
    /// Records that `blob` can be had from `origin` (the first origin recorded is kept: the
    /// `--cache-from` given first is preferred).
    pub fn add(&self, blob: &Descriptor, origin: Origin) {
        self.0
            .lock()
            .expect("lazy blobs")
            .entry(blob.digest.clone())
            .or_insert((blob.clone(), origin));
    }

    /// Where `digest` can be had, if it is known.
    pub fn get(&self, digest: &Digest) -> Option<(Descriptor, Origin)> {
        self.0.lock().expect("lazy blobs").get(digest).cloned()
    }

    /// Whether `digest` can be had from somewhere.
    pub fn knows(&self, digest: &Digest) -> bool {
        self.0.lock().expect("lazy blobs").contains_key(digest)
    }

    /// How many blobs are known.
    pub fn len(&self) -> usize {
        self.0.lock().expect("lazy blobs").len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Copies the blob `digest` from the OCI layout `dir` into `store`, checking its digest.
pub fn fetch_from_layout(store: &Store, dir: &std::path::Path, digest: &Digest) -> Result<()> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let from = dir.join("blobs/sha256").join(digest.hex());
    let path = store.ingest_path();
    std::fs::copy(&from, &path).with_context(|| format!("reading {}", from.display()))?;
    store
        .commit_file(&path, digest)
        .with_context(|| format!("importing blob {digest} from {}", dir.display()))
}

//! Base-image resolution for the frontend: the local store first (as Docker's BuildKit does by
//! default), then the image's registry.

use crate::reference;
use crate::registry::Registry;
use crate::state::State;
use rbuild_frontend::image::Image;
use rbuild_frontend::{ImageResolver, ResolvedImage};
use rbuild_solver::Digest;

/// Resolves `FROM` and `COPY --from` images.
pub struct StoreThenRegistry<'a> {
    /// The state directory.
    pub state: &'a State,
    /// Registry clients.
    pub registry: &'a Registry,
    /// The runtime for network I/O (resolution runs outside async code).
    pub runtime: &'a tokio::runtime::Runtime,
}

impl ImageResolver for StoreThenRegistry<'_> {
    fn resolve(&self, name: &str) -> Result<ResolvedImage, String> {
        let r = reference::parse(name)?;
        let store = &self.state.store;
        let local = match r.digest.as_deref() {
            Some(d) => Digest::parse(d).filter(|d| store.has_blob(d)),
            None => store
                .lookup(&r.whole())
                .map_err(|e| format!("{e:#}"))?
                .map(|d| d.digest),
        };
        let digest = match local {
            Some(digest) => digest,
            None => self
                .runtime
                .block_on(self.registry.resolve(&r.to_oci(), store))
                .map_err(|e| format!("{e:#}"))?,
        };
        let manifest = store.manifest(&digest).map_err(|e| format!("{e:#}"))?;
        let config = store
            .read_blob(&manifest.config.digest)
            .map_err(|e| format!("{e:#}"))?;
        let image: Image = serde_json::from_slice(&config)
            .map_err(|e| format!("parsing the config of {}: {e}", r.whole()))?;
        Ok(ResolvedImage {
            reference: r.whole(),
            digest,
            image,
        })
    }
}

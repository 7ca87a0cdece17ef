//! Base-image resolution for the frontend: the local store first (as Docker's BuildKit does by
//! default), then the image's registry.

use crate::reference;
use crate::registry::Registry;
use crate::state::State;
use rbuild_frontend::image::Image;
use rbuild_frontend::{ImageResolver, ResolvedImage};
use rbuild_solver::Digest;

/// Resolves `FROM` and `COPY --from` images. A name is resolved once per build, however many
/// stages use it.
pub struct StoreThenRegistry<'a> {
    /// The state directory.
    pub state: &'a State,
    /// Registry clients.
    pub registry: &'a Registry,
    /// The runtime for network I/O (resolution runs outside async code).
    pub runtime: &'a tokio::runtime::Runtime,
    /// Ask the registry for tags even when the local store has them (`--pull`).
    pub pull: bool,
    /// Names resolved so far in this build.
    pub resolved: std::cell::RefCell<std::collections::HashMap<String, ResolvedImage>>,
}

impl<'a> StoreThenRegistry<'a> {
    /// A resolver that prefers the local store.
    pub fn new(
        state: &'a State,
        registry: &'a Registry,
        runtime: &'a tokio::runtime::Runtime,
    ) -> StoreThenRegistry<'a> {
        StoreThenRegistry {
            state,
            registry,
            runtime,
            pull: false,
            resolved: Default::default(),
        }
    }
}

impl ImageResolver for StoreThenRegistry<'_> {
    fn resolve(&self, name: &str) -> Result<ResolvedImage, String> {
        if let Some(image) = self.resolved.borrow().get(name) {
            return Ok(image.clone());
        }
        let image = self.resolve_uncached(name)?;
        self.resolved
            .borrow_mut()
            .insert(name.to_string(), image.clone());
        Ok(image)
    }
}

impl StoreThenRegistry<'_> {
    fn resolve_uncached(&self, name: &str) -> Result<ResolvedImage, String> {
        let r = reference::parse(name)?;
        let store = &self.state.store;
        let local = match r.digest.as_deref() {
            Some(d) => Digest::parse(d).filter(|d| store.has_blob(d)),
            // A tag is looked up locally first, as BuildKit's docker driver does, unless
            // --pull asks the registry.
            None if self.pull => None,
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

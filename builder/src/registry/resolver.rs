//! Base-image resolution for the frontend: the local store first (as Docker's BuildKit does by
//! default), then the image's registry.

use crate::registry::Registry;
use crate::registry::reference;
use crate::store::layout::Store;
use crate::store::state::State;
use rbuild_frontend::image::Image;
use rbuild_frontend::{ImageResolver, Platform, ResolvedImage};
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
    /// Names resolved so far in this build, with the platform asked for.
    pub resolved: std::cell::RefCell<std::collections::HashMap<(String, Platform), ResolvedImage>>,
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
    fn resolve(&self, name: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let key = (name.to_string(), platform.clone());
        if let Some(image) = self.resolved.borrow().get(&key) {
            return Ok(image.clone());
        }
        let image = self.resolve_uncached(name, platform)?;
        self.resolved.borrow_mut().insert(key, image.clone());
        Ok(image)
    }
}

impl StoreThenRegistry<'_> {
    fn resolve_uncached(&self, name: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let r = reference::parse(name)?;
        let store = &self.state.store;
        let text = |e: &dyn std::error::Error| crate::errors::chain(e);
        let stored = |e: crate::store::Error| text(&e);
        let local = match r.digest.as_deref() {
            Some(d) => Digest::parse(d).filter(|d| store.has_blob(d)),
            // A tag is looked up locally first, as BuildKit's docker driver does, unless
            // --pull asks the registry.
            None if self.pull => None,
            None => store.lookup(&r.whole()).map_err(stored)?.map(|d| d.digest),
        };
        // A local image of another platform is used only when the registry has none.
        let local = match local {
            Some(d) => local_image(store, &d, platform).map_err(stored)?,
            None => None,
        };
        let (digest, image) = match local {
            Some((digest, image, true)) => (digest, image),
            other => {
                match self
                    .runtime
                    .block_on(self.registry.resolve(&r.to_oci(), store, platform))
                {
                    Ok(digest) => {
                        let image = config_of(store, &digest).map_err(stored)?;
                        (digest, image)
                    }
                    Err(e) => match other {
                        Some((digest, image, false)) => (digest, image),
                        _ => return Err(text(&e)),
                    },
                }
            }
        };
        Ok(ResolvedImage {
            reference: r.whole(),
            digest,
            image,
        })
    }
}

/// The image a local manifest or index blob gives for `platform` ([`Store::manifest_for`]):
/// its manifest digest, its config and whether it is for that platform.
fn local_image(
    store: &Store,
    digest: &Digest,
    platform: &Platform,
) -> crate::store::Result<Option<(Digest, Image, bool)>> {
    let Some(digest) = store.manifest_for(digest, platform)? else {
        return Ok(None);
    };
    let image = config_of(store, &digest)?;
    let matches = platform.matches(&image.os, &image.architecture, image.variant.as_deref());
    Ok(Some((digest, image, matches)))
}

/// The config of a stored image manifest.
fn config_of(store: &Store, digest: &Digest) -> crate::store::Result<Image> {
    use crate::store::Context;
    let manifest = store.manifest(digest)?;
    let config = store.read_blob(&manifest.config.digest)?;
    serde_json::from_slice(&config).with_context(|| format!("parsing the config of {digest}"))
}

/// Base images for looking at a Dockerfile without building it (`lint`, `graph`): found as a
/// build would find them, or, when that fails, an empty config (what needs the image's
/// environment then does not know it; `unresolved` says which).
pub struct Lenient<'a> {
    /// How a build resolves.
    pub inner: StoreThenRegistry<'a>,
    /// The images that could not be resolved, with why.
    pub unresolved: std::cell::RefCell<Vec<String>>,
}

impl ImageResolver for Lenient<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        match self.inner.resolve(reference, platform) {
            Ok(image) => Ok(image),
            Err(e) => {
                self.unresolved
                    .borrow_mut()
                    .push(format!("{reference}: {e}"));
                Ok(ResolvedImage {
                    reference: reference.to_string(),
                    digest: Digest::of(reference.as_bytes()),
                    image: Image::default(),
                })
            }
        }
    }
}

//! One module per subcommand, and [`inspect`], which `lint` and `graph` share.

pub mod attestations;
pub mod build;
pub mod check;
pub mod du;
pub mod explain;
pub mod graph;
pub mod history;
pub mod images;
pub mod imagetools;
pub mod inspect;
pub mod lint;
pub mod load;
pub mod login;
pub mod prune;
pub mod pull;
pub mod push;
pub mod rmi;
pub mod run;
pub mod save;
pub mod sbom;
pub mod tag;

use crate::cli::Global;
use crate::cli::diagnostics::{self, Target};
use crate::pipeline::BuildRequest;
use crate::registry::Registry;
use crate::registry::resolver::{Lenient, StoreThenRegistry};
use crate::store::state::State;
use anyhow::{Context, Result};
use std::sync::Arc;

/// A Dockerfile lowered without building it, as `lint` and `graph` need it.
pub struct Inspected {
    /// The request, its context made absolute.
    pub request: BuildRequest,
    /// The lowered build.
    pub build: rbuild_frontend::Build,
    /// Base images that could not be resolved (their config is unknown).
    pub unresolved: Vec<String>,
    /// The state directory (for cache lookups).
    pub state: Arc<State>,
    /// Registry clients.
    pub registry: Arc<Registry>,
    /// The runtime for network I/O.
    pub runtime: tokio::runtime::Runtime,
}

/// Loads and lowers `request` as a build does (the same pipeline), but with base images
/// resolved leniently and every entitlement granted, since nothing runs. Prints the
/// diagnostics and returns `Ok(None)` when the Dockerfile has errors.
pub fn inspect(global: &Global, mut request: BuildRequest) -> Result<Option<Inspected>> {
    // Entitlements are the build's business; lint and graph look at every step.
    request.allow_network_host = true;
    request.allow_insecure = true;
    let loaded = request.load()?;
    if loaded.parsed.has_errors() {
        diagnostics::print(&loaded.parsed.diagnostics, Target::Stderr, true);
        return Ok(None);
    }
    let state = Arc::new(global.state()?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Arc::new(Registry::new(global.registries.clone()));
    let resolver = Lenient {
        inner: StoreThenRegistry::new(&state, &registry, &runtime),
        unresolved: Default::default(),
    };
    let build = match request.lower(&loaded, &resolver) {
        Ok(mut builds) => builds.remove(0),
        Err(d) => {
            diagnostics::print(&[d], Target::Stderr, true);
            return Ok(None);
        }
    };
    let unresolved = resolver.unresolved.into_inner();
    Ok(Some(Inspected {
        request,
        build,
        unresolved,
        state,
        registry,
        runtime,
    }))
}

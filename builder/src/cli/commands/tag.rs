//! `rbuild tag SOURCE TARGET`: another name for an image of the local store.

use crate::cli::Global;
use crate::registry::reference;
use crate::store::local;
use anyhow::{Result, anyhow};

/// Arguments of `rbuild tag`.
#[derive(clap::Args)]
pub struct TagArgs {
    /// The image (name, id or digest)
    pub source: String,
    /// The new name
    pub target: String,
}

/// Names the image `target` too (replacing what had that name).
pub fn run(global: &Global, args: TagArgs) -> Result<i32> {
    let state = global.state()?;
    let image = local::find(&state, &args.source)?;
    let target =
        reference::parse(&args.target).map_err(|e| anyhow!("invalid name {}: {e}", args.target))?;
    if target.digest.is_some() {
        return Err(anyhow!(
            "a name to tag with cannot have a digest: {}",
            args.target
        ));
    }
    state.store.tag(&target.whole(), &image.manifest)?;
    Ok(0)
}

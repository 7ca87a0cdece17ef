//! `rbuild rmi IMAGE…`: removes names from the local store, like `docker rmi`. What the image
//! needed becomes build cache, which `rbuild prune` reclaims.

use crate::cli::Global;
use crate::registry::reference::{self, familiar};
use crate::store::local;
use anyhow::{Result, bail};

/// Arguments of `rbuild rmi`.
#[derive(clap::Args)]
pub struct RmiArgs {
    /// The images: names remove that name; ids remove the image's only name
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove every name of an image given by id
    #[arg(short, long)]
    pub force: bool,
}

/// Removes the names; prints `Untagged: NAME` for each.
pub fn run(global: &Global, args: RmiArgs) -> Result<i32> {
    let state = global.state()?;
    for arg in &args.images {
        let image = local::find(&state, arg)?;
        let by_name = reference::parse(arg)
            .ok()
            .map(|r| r.whole())
            .filter(|n| image.names.contains(n));
        let names = match by_name {
            Some(name) => vec![name],
            None if image.names.len() > 1 && !args.force => bail!(
                "image {arg} has several names ({}); remove them by name, or use --force",
                image
                    .names
                    .iter()
                    .map(|n| familiar(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => image.names.clone(),
        };
        if names.is_empty() {
            // An untagged build result: removing it is all there is to do.
            state.store.remove_untagged(&image.manifest.digest)?;
            println!("Deleted: {}", image.id());
            continue;
        }
        for name in names {
            state.store.untag(&name)?;
            println!("Untagged: {}", familiar(&name));
        }
    }
    Ok(0)
}

//! `rbuild push IMAGE [DEST]`: uploads an image of the local store to a registry.

use crate::Global;
use crate::compress::{Compression, Counter, export_manifest};
use crate::reference;
use crate::registry::Registry;
use crate::state::State;
use anyhow::{Context, Result, anyhow};

/// Arguments of `rbuild push`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// The image in the local store
    pub image: String,
    /// Where to push it (default: the image's own name)
    pub dest: Option<String>,
}

/// Pushes the image's blobs (skipping those the registry has) and then its manifest.
pub fn run(global: &Global, args: PushArgs) -> Result<i32> {
    let state = State::open(global)?;
    let source = reference::parse(&args.image).map_err(|e| anyhow!(e))?;
    let dest =
        reference::parse(args.dest.as_deref().unwrap_or(&args.image)).map_err(|e| anyhow!(e))?;
    let descriptor = state.store.lookup(&source.whole())?.ok_or_else(|| {
        anyhow!(
            "no image {} in the local store (see `rbuild images`)",
            args.image
        )
    })?;
    // Layers made by steps are compressed now (once: the blobs are remembered).
    let started = std::time::Instant::now();
    let counter = Counter::default();
    let (descriptor, bytes) =
        export_manifest(&state, &descriptor, &Compression::default(), &counter)?;
    if counter.get() > 0 {
        eprintln!(
            "compressed layers: {} {} {:.1}s",
            crate::gc::human(counter.get()),
            crate::progress::rate(counter.get(), started.elapsed()),
            started.elapsed().as_secs_f64()
        );
    }
    let manifest = state.store.manifest(&descriptor.digest)?;
    let mut blobs = manifest.layers.clone();
    blobs.push(manifest.config.clone());
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Registry::default();
    let digest = runtime.block_on(registry.push(
        &dest.to_oci(),
        &state.store,
        &blobs,
        &bytes,
        &descriptor.media_type,
        &|line| eprintln!("{line}"),
    ))?;
    println!("{}@{digest}", dest.whole());
    Ok(0)
}

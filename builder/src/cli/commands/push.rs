//! `rbuild push IMAGE [DEST]`: uploads an image of the local store to a registry.

use crate::cli::Global;
use crate::export::compress::{Compression, Counter};
use crate::export::{export_image, is_index};
use crate::registry::Registry;
use crate::registry::reference;
use crate::store::layout::Descriptor;
use crate::store::state::State;
use anyhow::{Context, Result, anyhow};

/// Arguments of `rbuild push`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// The image in the local store
    pub image: String,
    /// Where to push it (default: the image's own name)
    pub dest: Option<String>,
    /// Push the manifest with OCI media types instead of Docker's (BuildKit's
    /// `oci-mediatypes=true`)
    #[arg(long)]
    pub oci_mediatypes: bool,
}

/// Pushes the image of the stored manifest (or multi-platform index) `manifest` to `dest` (a
/// full reference): its layers compressed as `compression` says (made once, then remembered),
/// blobs the registry has skipped, then the manifest, with Docker media types unless
/// `oci_mediatypes`. An index's manifests are pushed by digest first, then the index under the
/// tag. `report` hears a line per step. Returns the descriptor of what `dest` then names (the
/// manifest or index as pushed: with Docker media types it is not the stored one).
pub fn push_image(
    state: &State,
    registry: &Registry,
    runtime: &tokio::runtime::Runtime,
    manifest: &Descriptor,
    dest: &str,
    (compression, oci_mediatypes): (&Compression, bool),
    report: &(dyn Fn(String) + Sync),
) -> Result<Descriptor> {
    let dest = reference::parse(dest).map_err(|e| anyhow!(e))?;
    let started = std::time::Instant::now();
    let counter = Counter::default();
    let exported = export_image(state, manifest, compression, !oci_mediatypes, &counter)?;
    if counter.get() > 0 {
        report(format!(
            "compressed layers: {} {} {:.1}s",
            crate::units::human(counter.get()),
            crate::units::rate(counter.get(), started.elapsed()),
            started.elapsed().as_secs_f64()
        ));
    }
    let target = dest.to_oci();
    let sources = state.blob_sources();
    let index = is_index(&exported.top);
    let mut digest = None;
    for descriptor in &exported.manifests {
        let bytes = state.store.read_blob(&descriptor.digest)?;
        let m = state.store.manifest(&descriptor.digest)?;
        let mut blobs = m.layers.clone();
        blobs.push(m.config.clone());
        let to = match index {
            true => oci_client::Reference::with_digest(
                target.registry().to_string(),
                target.repository().to_string(),
                descriptor.digest.to_string(),
            ),
            false => target.clone(),
        };
        let pushed = runtime.block_on(registry.push(
            &to,
            &state.store,
            &state.lazy,
            &blobs,
            (&bytes, &descriptor.media_type),
            &sources,
            report,
        ))?;
        digest = Some(pushed);
    }
    if index {
        let bytes = state.store.read_blob(&exported.top.digest)?;
        digest = Some(runtime.block_on(registry.push(
            &target,
            &state.store,
            &state.lazy,
            &[],
            (&bytes, &exported.top.media_type),
            &sources,
            report,
        ))?);
    }
    let digest = digest.ok_or_else(|| anyhow!("{} has no manifest", manifest.digest))?;
    Ok(Descriptor {
        digest,
        platform: None,
        ..exported.top
    })
}

/// Pushes the image's blobs (skipping those the registry has) and then its manifest.
pub fn run(global: &Global, args: PushArgs) -> Result<i32> {
    let state = global.state()?;
    let source = reference::parse(&args.image).map_err(|e| anyhow!(e))?;
    let dest =
        reference::parse(args.dest.as_deref().unwrap_or(&args.image)).map_err(|e| anyhow!(e))?;
    let descriptor = state.store.lookup(&source.whole())?.ok_or_else(|| {
        anyhow!(
            "no image {} in the local store (see `rbuild images`)",
            args.image
        )
    })?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let pushed = push_image(
        &state,
        &Registry::new(global.registries.clone()),
        &runtime,
        &descriptor,
        &dest.whole(),
        (&Compression::default(), args.oci_mediatypes),
        &|line| eprintln!("{line}"),
    )?;
    println!("{}@{}", dest.whole(), pushed.digest);
    Ok(0)
}

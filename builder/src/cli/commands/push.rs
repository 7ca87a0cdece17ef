//! `rbuild push IMAGE [DEST]`: uploads an image of the local store to a registry.

use crate::cli::Global;
use crate::export::compress::{Compression, Counter, Tap};
use crate::export::{Exported, export_image, is_index};
use crate::registry::reference;
use crate::registry::{Chunk, Registry};
use crate::store::layout::Descriptor;
use crate::store::state::State;
use anyhow::{Context, Result, anyhow};
use rbuild_solver::Digest;
use std::collections::HashSet;

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
    let target = dest.to_oci();
    let (exported, streamed, counter) = export_streaming(
        state,
        registry,
        runtime,
        &target,
        manifest,
        (compression, oci_mediatypes),
        report,
    )?;
    if counter.get() > 0 {
        report(format!(
            "compressed layers: {} {} {:.1}s",
            crate::units::human(counter.get()),
            crate::units::rate(counter.get(), started.elapsed()),
            started.elapsed().as_secs_f64()
        ));
    }
    let sources = state.blob_sources();
    for digest in &streamed {
        sources.add(digest, target.registry(), target.repository());
    }
    let index = is_index(&exported.top);
    let mut digest = None;
    for descriptor in &exported.manifests {
        let bytes = state.store.read_blob(&descriptor.digest)?;
        let m = state.store.manifest(&descriptor.digest)?;
        // (The layers streamed while they were compressed are there already.)
        let mut blobs: Vec<Descriptor> = m
            .layers
            .iter()
            .filter(|l| !streamed.contains(&l.digest))
            .cloned()
            .collect();
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

/// What a tap of a new blob sends to its upload: the blob's bytes as they are written.
struct Streaming(tokio::sync::mpsc::Sender<Chunk>);

impl Tap for Streaming {
    fn write(&mut self, bytes: &[u8]) {
        // An upload that failed has dropped its receiver: the blob is pushed from its file.
        let _ = self
            .0
            .blocking_send(Chunk::Data(bytes::Bytes::copy_from_slice(bytes)));
    }
    fn done(self: Box<Self>) {
        let _ = self.0.blocking_send(Chunk::Done);
    }
}

/// [`export_image`], uploading to `target`'s repository each layer blob it makes while it
/// makes it (compression and upload overlap, instead of one waiting for the other); returns
/// the export, the digests of the blobs uploaded so, and the export's counter.
fn export_streaming(
    state: &State,
    registry: &Registry,
    runtime: &tokio::runtime::Runtime,
    target: &oci_client::Reference,
    manifest: &Descriptor,
    (compression, oci_mediatypes): (&Compression, bool),
    report: &(dyn Fn(String) + Sync),
) -> Result<(Exported, HashSet<Digest>, Counter)> {
    let (new_blobs, mut new_blob) = tokio::sync::mpsc::unbounded_channel();
    let counter = Counter::with_taps(Box::new(move || {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        new_blobs.send(rx).ok()?;
        Some(Box::new(Streaming(tx)) as Box<dyn Tap>)
    }));
    let (finished, mut exported) = tokio::sync::oneshot::channel();
    let mut streamed = HashSet::new();
    let exported = std::thread::scope(|scope| {
        let counter = &counter;
        scope.spawn(move || {
            let _ = finished.send(export_image(
                state,
                manifest,
                compression,
                !oci_mediatypes,
                counter,
            ));
        });
        runtime.block_on(async {
            use futures_util::StreamExt as _;
            let mut uploads = futures_util::stream::FuturesUnordered::new();
            let mut result = None;
            loop {
                tokio::select! {
                    Some(chunks) = new_blob.recv() => uploads.push(async {
                        let started = std::time::Instant::now();
                        let pushed = registry.upload_stream(target, chunks).await;
                        (pushed, started)
                    }),
                    Some((pushed, started)) = uploads.next(), if !uploads.is_empty() => {
                        match pushed {
                            Ok((digest, size)) => {
                                let track = format!("upload {digest}");
                                rbuild_solver::trace::record(&track, "push", "upload", started);
                                report(format!(
                                    "{} pushed while compressed",
                                    crate::units::transfer_line(
                                        digest.as_str(),
                                        size,
                                        None,
                                        started.elapsed()
                                    )
                                ));
                                streamed.insert(digest);
                            }
                            Err(e) => report(format!("warning: {e}; pushing the blob again")),
                        }
                    }
                    done = &mut exported, if result.is_none() => {
                        result = Some(done.expect("the export thread sends its result"));
                    }
                    else => break,
                }
                // Every blob made has been taken up once the export is over.
                if result.is_some() && uploads.is_empty() && new_blob.is_empty() {
                    break;
                }
            }
            result.expect("the loop ends after the export")
        })
    })?;
    Ok((exported, streamed, counter))
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

//! `rbuild pull IMAGE`: an image from its registry into the local store, like `docker pull`.

use crate::cli::Global;
use crate::registry::Registry;
use crate::registry::reference;
use crate::store::layer::ensure_snapshots;
use crate::worker::BuildWorker;
use anyhow::{Context, Result, anyhow};
use rbuild_frontend::Platform;
use rbuild_solver::ImageSource;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `rbuild pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// The image (`name[:tag]` or `name@digest`)
    pub image: String,
    /// The platform to pull from a multi-platform image, `os/arch[/variant]` [default: this
    /// machine's]
    #[arg(long, value_parser = parse_platform)]
    pub platform: Option<Platform>,
    /// Print only the image's name
    #[arg(short, long)]
    pub quiet: bool,
}

/// Parses a `--platform` value (one platform).
pub fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s)
}

/// Resolves the tag, downloads the missing layers (reporting each with its size and rate),
/// unpacks them and names the image.
pub fn run(global: &Global, args: PullArgs) -> Result<i32> {
    let state = Arc::new(global.state()?);
    let r = reference::parse(&args.image).map_err(|e| anyhow!(e))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Arc::new(Registry::new(global.registries.clone()));
    let before = state.store.lookup(&r.whole())?.map(|d| d.digest);
    let platform = args.platform.unwrap_or_else(Platform::host);
    let digest = runtime.block_on(registry.resolve(&r.to_oci(), &state.store, &platform))?;
    let worker = BuildWorker {
        named_dirs: Default::default(),
        fetched: Default::default(),
        state: state.clone(),
        context: std::env::current_dir()?,
        registry,
        runtime: runtime.handle().clone(),
        provided: Default::default(),
        network: Default::default(),
        imported_mounts: Default::default(),
    };
    let started = Instant::now();
    let quiet = args.quiet;
    let report = move |blob: &rbuild_solver::Digest, bytes: u64, total: u64, done: bool| {
        if done && !quiet {
            eprintln!(
                "{}: Pull complete {}",
                &blob.hex()[..12],
                crate::units::transfer_line("", bytes, Some(total), started.elapsed()).trim()
            );
        }
    };
    let output = worker.pull(
        &ImageSource {
            reference: r.whole(),
            digest: digest.clone(),
        },
        &report,
        &|_, _| {},
    )?;
    ensure_snapshots(&state, &output.layers)?;
    let shown = reference::familiar(&r.whole());
    if !args.quiet {
        println!("Digest: {digest}");
        if before.as_ref() == Some(&digest) {
            println!("Status: Image is up to date for {shown}");
        } else {
            println!("Status: Downloaded newer image for {shown}");
        }
    }
    println!("{}", r.whole());
    Ok(0)
}

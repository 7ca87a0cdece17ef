//! `rbuild save IMAGE… [-o FILE]`: images of the local store as one archive, like
//! `docker save`: Docker's format (an OCI layout with `manifest.json`, which `docker load`
//! and `rbuild load` read) or `--format oci`.

use crate::cli::Global;
use crate::export::compress::{Compression, Counter};
use crate::export::{ArchiveFormat, ArchiveImage, Dest, write_archive};
use crate::registry::reference;
use crate::store::local;
use anyhow::Result;

/// Arguments of `rbuild save`.
#[derive(clap::Args)]
pub struct SaveArgs {
    /// The images (names, ids or digests)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// The archive to write [default: stdout]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<String>,
    /// `docker` (with Docker's manifest.json and media types) or `oci`
    #[arg(long, default_value = "docker")]
    pub format: SaveFormat,
}

/// Archive formats of `rbuild save`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    /// Docker's (`docker load` reads it).
    Docker,
    /// An OCI image layout.
    Oci,
}

/// Writes the archive. Layers are stored uncompressed, as `docker save` does.
pub fn run(global: &Global, args: SaveArgs) -> Result<i32> {
    let state = global.state()?;
    let mut images = Vec::new();
    for arg in &args.images {
        let image = local::find(&state, arg)?;
        // By name: that name; by id: all the image's names.
        let names = match reference::parse(arg).ok().map(|r| r.whole()) {
            Some(name) if image.names.contains(&name) => vec![name],
            _ => image.names.clone(),
        };
        images.push(ArchiveImage {
            manifest: image.manifest,
            names,
        });
    }
    let dest = match args.output.as_deref() {
        None | Some("-") => Dest::Stdout,
        Some(path) => Dest::File(path.into()),
    };
    let (format, docker_media_types) = match args.format {
        SaveFormat::Docker => (ArchiveFormat::Docker, true),
        SaveFormat::Oci => (ArchiveFormat::Oci, false),
    };
    let uncompressed = Compression::default().with_kind("uncompressed")?;
    write_archive(
        &state,
        &images,
        format,
        docker_media_types,
        &dest,
        &uncompressed,
        &Counter::default(),
    )?;
    Ok(0)
}

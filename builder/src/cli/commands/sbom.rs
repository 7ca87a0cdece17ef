//! `rbuild sbom IMAGE`: the image's software bill of materials as SPDX 2.3 JSON (see
//! [`crate::sbom`]), each package with the layer and instruction that introduced it.

use crate::cli::Global;
use crate::sbom::{self, LayerOrigin};
use crate::store::local;
use anyhow::Result;

/// Arguments of `rbuild sbom`.
#[derive(clap::Args)]
pub struct SbomArgs {
    /// The image (name, id or digest) in the local store
    pub image: String,
    /// Of a multi-platform image, the platform [default: this machine's]
    #[arg(long, value_parser = super::pull::parse_platform)]
    pub platform: Option<rbuild_frontend::Platform>,
}

/// Prints the SPDX document.
pub fn run(global: &Global, args: SbomArgs) -> Result<i32> {
    let state = global.state()?;
    let platform = args
        .platform
        .unwrap_or_else(rbuild_frontend::Platform::host);
    let image = local::for_platform(&state, local::find(&state, &args.image)?, &platform)?;
    let diff_ids = image.config.rootfs.diff_ids.clone();
    let layers: Vec<rbuild_solver::OutputLayer> = diff_ids
        .iter()
        .zip(&image.parsed.layers)
        .map(|(diff_id, blob)| rbuild_solver::OutputLayer {
            diff_id: rbuild_solver::Digest::parse(diff_id).unwrap_or_else(|| blob.digest.clone()),
            digest: blob.digest.clone(),
            size: blob.size,
            media_type: blob.media_type.clone(),
            created: None,
        })
        .collect();
    // Where this machine built it, the instructions with their places in the Dockerfile;
    // else layer i was made by the i-th history entry that has a layer.
    let recorded = crate::store::origins::load(&state, &image.parsed.config.digest);
    let origins: Vec<LayerOrigin> = recorded.unwrap_or_else(|| {
        image
            .config
            .history
            .iter()
            .filter(|h| !h.empty_layer)
            .zip(&diff_ids)
            .map(|(h, diff_id)| LayerOrigin {
                diff_id: diff_id.clone(),
                instruction: h.created_by.clone().unwrap_or_default(),
            })
            .collect()
    });
    let name = image
        .names
        .first()
        .map(|n| crate::registry::reference::familiar(n))
        .unwrap_or_else(|| image.id().to_string());
    let created = image
        .config
        .created
        .clone()
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
    let doc = sbom::document(
        &state,
        &layers,
        (&name, image.platform_manifest.as_str(), &created),
        &origins,
    )?;
    crate::cli::commands::images::out(&serde_json::to_string_pretty(&doc)?);
    Ok(0)
}

//! `--sbom` (and `--attest type=sbom`): an SPDX SBOM of each platform's image, attached as
//! BuildKit attaches it: an attestation manifest in the image index (`unknown/unknown`
//! platform, `vnd.docker.reference.type=attestation-manifest` and
//! `vnd.docker.reference.digest` naming the image manifest), whose one layer is an in-toto
//! statement (`application/vnd.in-toto+json`, `in-toto.io/predicate-type`) with the SPDX
//! document as its predicate. Each package names the layer and the Dockerfile instruction
//! (`file:line`) that introduced it.

use crate::export::FinalImage;
use crate::sbom::{self, LayerOrigin};
use crate::store::layout::{Descriptor, OCI_CONFIG, OCI_MANIFEST, Platform};
use crate::store::state::State;
use anyhow::Result;
use rbuild_frontend::{Build, SourceFile};
use std::collections::BTreeMap;

/// The media type of an in-toto statement layer.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// SPDX's predicate type.
const SPDX_PREDICATE: &str = "https://spdx.dev/Document";

/// What made each layer of `image`: the instruction of its history entry, with where it is in
/// the Dockerfile when this build made it.
fn origins(build: &Build, file: &SourceFile, image: &FinalImage) -> Vec<LayerOrigin> {
    image
        .image
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .zip(&image.layers)
        .map(|(h, layer)| {
            let text = h.created_by.clone().unwrap_or_default();
            let at = h
                .layer_of
                .and_then(|v| build.location(v))
                .map(|span| format!(" ({}:{})", file.name, file.position(span.start).line));
            LayerOrigin {
                diff_id: layer.diff_id.to_string(),
                instruction: format!("{text}{}", at.unwrap_or_default()),
            }
        })
        .collect()
}

/// Stores the SBOM attestation of the image `manifest` (built by `build` as `image`, named
/// `names`) and returns the descriptor its index entry takes.
pub fn sbom(
    state: &State,
    (build, file): (&Build, &SourceFile),
    image: &FinalImage,
    manifest: &Descriptor,
    names: &[String],
) -> Result<Descriptor> {
    let name = names
        .first()
        .map(|n| crate::registry::reference::familiar(n))
        .unwrap_or_else(|| "image".into());
    let created = image
        .image
        .created
        .clone()
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
    let document = sbom::document(
        state,
        &image.layers,
        (&name, manifest.digest.as_str(), &created),
        &origins(build, file, image),
    )?;
    let platform = format!(
        "{}/{}{}",
        image.image.os,
        image.image.architecture,
        image
            .image
            .variant
            .as_deref()
            .map(|v| format!("/{v}"))
            .unwrap_or_default()
    );
    let subject = |n: &str| {
        serde_json::json!({
            "name": format!("pkg:docker/{n}?platform={}", platform.replace('/', "%2F")),
            "digest": {"sha256": manifest.digest.hex()},
        })
    };
    let subjects: Vec<serde_json::Value> = match names.is_empty() {
        true => vec![subject("image")],
        false => names.iter().map(|n| subject(n)).collect(),
    };
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": SPDX_PREDICATE,
        "subject": subjects,
        "predicate": document,
    });
    let store = &state.store;
    let (layer_digest, layer_size) = store.write_blob(&serde_json::to_vec(&statement)?)?;
    let config = serde_json::json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    });
    let (config_digest, config_size) = store.write_blob(&serde_json::to_vec(&config)?)?;
    let attestation = crate::store::layout::Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: config_digest,
            size: config_size,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: IN_TOTO.into(),
            digest: layer_digest,
            size: layer_size,
            platform: None,
            annotations: BTreeMap::from([(
                "in-toto.io/predicate-type".to_string(),
                SPDX_PREDICATE.to_string(),
            )]),
        }],
        annotations: BTreeMap::new(),
    };
    let (digest, size) = store.write_blob(&serde_json::to_vec(&attestation)?)?;
    Ok(Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest,
        size,
        platform: Some(Platform {
            architecture: "unknown".into(),
            os: "unknown".into(),
            variant: None,
        }),
        annotations: BTreeMap::from([
            (
                crate::export::REFERENCE_DIGEST.to_string(),
                manifest.digest.to_string(),
            ),
            (
                "vnd.docker.reference.type".to_string(),
                "attestation-manifest".to_string(),
            ),
        ]),
    })
}

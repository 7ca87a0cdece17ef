//! `rbuild attestations IMAGE`: the attestations attached to an image in the local store (its
//! index's attestation manifests, as `--sbom` and `--provenance` attach them): a table of them,
//! or with `--type` one of them as its in-toto statement (JSON).

use crate::cli::Global;
use crate::store::layout::Index;
use crate::store::local;
use anyhow::{Result, bail};

/// Arguments of `rbuild attestations`.
#[derive(clap::Args)]
pub struct AttestationsArgs {
    /// The image (name, id or digest) in the local store
    pub image: String,
    /// Print this attestation's in-toto statement: `sbom`, `provenance` or a predicate type
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only the attestations of this platform's image
    #[arg(long, value_parser = super::pull::parse_platform)]
    pub platform: Option<rbuild_frontend::Platform>,
}

/// One attestation: the platform of the image it is about, its predicate type and its
/// in-toto statement's blob.
struct Row {
    platform: String,
    predicate_type: String,
    digest: rbuild_solver::Digest,
    size: u64,
}

/// The predicate types `--type` names.
fn predicate_types(kind: &str) -> Vec<&str> {
    match kind {
        "sbom" | "spdx" => vec!["https://spdx.dev/Document"],
        "provenance" | "slsa" => vec![
            "https://slsa.dev/provenance/v1",
            "https://slsa.dev/provenance/v0.2",
        ],
        other => vec![other],
    }
}

/// Prints the attestations, or one statement.
pub fn run(global: &Global, args: AttestationsArgs) -> Result<i32> {
    let state = global.state()?;
    let store = &state.store;
    let image = local::find(&state, &args.image)?;
    // A single manifest has no attestations: an empty index.
    let index: Index =
        serde_json::from_slice(&store.read_blob(&image.manifest.digest)?).unwrap_or_default();
    let platform_of = |digest: &str| {
        let entry = index
            .manifests
            .iter()
            .find(|d| d.digest.as_str() == digest)?;
        entry.platform.as_ref().map(ToString::to_string)
    };
    let mut rows = Vec::new();
    for entry in index
        .manifests
        .iter()
        .filter(|d| crate::export::is_attestation(d))
    {
        let subject = entry.annotations.get(crate::export::REFERENCE_DIGEST);
        let platform = subject
            .and_then(|s| platform_of(s))
            .unwrap_or_else(|| "unknown".into());
        if let Some(wanted) = &args.platform
            && platform != wanted.to_string()
        {
            continue;
        }
        for layer in store.manifest(&entry.digest)?.layers {
            let predicate_type = layer
                .annotations
                .get("in-toto.io/predicate-type")
                .cloned()
                .unwrap_or_default();
            rows.push(Row {
                platform: platform.clone(),
                predicate_type,
                digest: layer.digest,
                size: layer.size,
            });
        }
    }
    let Some(kind) = &args.kind else {
        let mut table = vec![vec![
            "PLATFORM".to_string(),
            "TYPE".into(),
            "SIZE".into(),
            "DIGEST".into(),
        ]];
        for r in &rows {
            table.push(vec![
                r.platform.clone(),
                r.predicate_type.clone(),
                crate::units::human(r.size),
                r.digest.to_string(),
            ]);
        }
        print!("{}", super::images::columns(&table, 3));
        return Ok(0);
    };
    let types = predicate_types(kind);
    let found: Vec<&Row> = rows
        .iter()
        .filter(|r| types.contains(&r.predicate_type.as_str()))
        .collect();
    match found.as_slice() {
        [] => bail!(
            "{} has no {kind} attestation{}",
            args.image,
            args.platform
                .map(|p| format!(" for {p}"))
                .unwrap_or_default()
        ),
        [one] => {
            let statement: serde_json::Value =
                serde_json::from_slice(&store.read_blob(&one.digest)?)?;
            super::images::out(&serde_json::to_string_pretty(&statement)?);
            Ok(0)
        }
        several => {
            let platforms: Vec<&str> = several.iter().map(|r| r.platform.as_str()).collect();
            bail!(
                "{} has a {kind} attestation for each of {}: choose one with --platform",
                args.image,
                platforms.join(", ")
            )
        }
    }
}

//! `rbuild imagetools create|inspect`, as buildx names them: a multi-platform index made from
//! images (or indexes) already in registries, with no rebuild (blobs are mounted across
//! repositories of one registry, copied between registries), and what a remote image or index
//! holds: its manifests, platforms and attestations, readable or through buildx's `--format`
//! fields (`.Name`, `.Manifest`, `.Image`, `.Provenance`, `.SBOM`).

use crate::cli::Global;
use crate::registry::{Registry, media_type_of, reference};
use crate::store::layout::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, Index, Manifest, OCI_INDEX, Platform,
};
use anyhow::{Context, Result, anyhow, bail};
use oci_client::Reference;
use std::collections::BTreeMap;

/// Arguments of `rbuild imagetools`.
#[derive(clap::Args)]
pub struct ImagetoolsArgs {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Make one index of the images and indexes SOURCE names (their manifests, attestations
    /// included) and push it as each -t name
    Create(CreateArgs),
    /// Show a remote image or index: its manifests, their platforms and attestations
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
struct CreateArgs {
    /// A name to push the index as (repeatable)
    #[arg(
        short = 't',
        long = "tag",
        value_name = "NAME",
        required_unless_present = "dry_run"
    )]
    tags: Vec<String>,
    /// Print the index instead of pushing it
    #[arg(long)]
    dry_run: bool,
    /// An annotation of the index: `KEY=VALUE` or `index:KEY=VALUE`
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// The images and indexes to combine
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The image or index
    name: String,
    /// Print the manifest or index as the registry has it
    #[arg(long)]
    raw: bool,
    /// A Go template over `.Name`, `.Manifest`, `.Image`, `.Provenance`, `.SBOM`
    /// (`{{json .Provenance}}`)
    #[arg(long)]
    format: Option<String>,
}

/// Runs `imagetools`.
pub fn run(global: &Global, args: ImagetoolsArgs) -> Result<i32> {
    let registry = Registry::new(global.registries.clone());
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match args.command {
        Sub::Create(a) => create(global, &registry, &runtime, a),
        Sub::Inspect(a) => inspect(&registry, &runtime, a),
    }
}

fn parse(name: &str) -> Result<Reference> {
    Ok(reference::parse(name).map_err(|e| anyhow!(e))?.to_oci())
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// The same repository's manifest `digest`.
fn by_digest(r: &Reference, digest: &str) -> Reference {
    Reference::with_digest(
        r.registry().to_string(),
        r.repository().to_string(),
        digest.to_string(),
    )
}

/// One manifest an index will name: its entry, its bytes, and where it is.
struct Member {
    entry: Descriptor,
    bytes: Vec<u8>,
    from: Reference,
}

/// The manifests `source` names: an index's (each entry as it is), or one manifest with the
/// platform of its config.
fn members_of(
    registry: &Registry,
    runtime: &tokio::runtime::Runtime,
    source: &str,
) -> Result<Vec<Member>> {
    let r = parse(source)?;
    let (bytes, digest) = runtime.block_on(registry.manifest_raw(&r))?;
    let media_type = media_type_of(&bytes);
    if is_index(&media_type) {
        let index: Index = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing the index {source}"))?;
        let mut out = Vec::new();
        for entry in index.manifests {
            let child = by_digest(&r, entry.digest.as_str());
            let (bytes, _) = runtime.block_on(registry.manifest_raw(&child))?;
            out.push(Member {
                entry,
                bytes,
                from: r.clone(),
            });
        }
        return Ok(out);
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing the manifest {source}"))?;
    let config: serde_json::Value =
        serde_json::from_slice(&runtime.block_on(registry.blob_bytes(&r, &manifest.config))?)
            .with_context(|| format!("parsing the config of {source}"))?;
    let text = |k: &str| config[k].as_str().unwrap_or_default().to_string();
    let entry = Descriptor {
        media_type,
        digest,
        size: bytes.len() as u64,
        platform: Some(Platform {
            architecture: text("architecture"),
            os: text("os"),
            variant: config["variant"].as_str().map(str::to_string),
        }),
        annotations: BTreeMap::new(),
    };
    Ok(vec![Member {
        entry,
        bytes,
        from: r,
    }])
}

/// The index of `members` (each manifest once), with `annotations`: Docker's manifest list
/// when every member is a Docker manifest, else an OCI index.
fn index_of(members: &[Member], annotations: &[String]) -> Result<Index> {
    let mut manifests: Vec<Descriptor> = Vec::new();
    for m in members {
        if !manifests.iter().any(|d| d.digest == m.entry.digest) {
            manifests.push(m.entry.clone());
        }
    }
    let docker = manifests.iter().all(|d| d.media_type == DOCKER_MANIFEST);
    let mut index = Index {
        schema_version: 2,
        media_type: Some(
            if docker {
                DOCKER_MANIFEST_LIST
            } else {
                OCI_INDEX
            }
            .into(),
        ),
        manifests,
        ..Index::default()
    };
    for a in annotations {
        let spec = a.strip_prefix("index:").unwrap_or(a);
        let (key, value) = match spec.split_once('=') {
            Some((k, v)) if !k.starts_with("manifest") && !k.starts_with("index-descriptor") => {
                (k, v)
            }
            _ => bail!(
                "invalid --annotation {a:?}: imagetools create annotates the index (KEY=VALUE \
                 or index:KEY=VALUE)"
            ),
        };
        index.annotations.insert(key.to_string(), value.to_string());
    }
    Ok(index)
}

fn create(
    global: &Global,
    registry: &Registry,
    runtime: &tokio::runtime::Runtime,
    args: CreateArgs,
) -> Result<i32> {
    let mut members = Vec::new();
    for source in &args.sources {
        let found =
            members_of(registry, runtime, source).with_context(|| format!("reading {source}"))?;
        members.extend(found);
    }
    let index = index_of(&members, &args.annotations)?;
    let bytes = serde_json::to_vec(&index)?;
    if args.dry_run {
        super::images::out(&serde_json::to_string_pretty(&index)?);
        return Ok(0);
    }
    let state = global.state()?;
    let sources = state.blob_sources();
    let media_type = index.media_type.clone().unwrap_or_default();
    let report = |line: String| eprintln!("{line}");
    for tag in &args.tags {
        let target = parse(tag)?;
        for m in &members {
            let manifest: Manifest = serde_json::from_slice(&m.bytes)
                .with_context(|| format!("parsing manifest {}", m.entry.digest))?;
            let mut blobs = manifest.layers.clone();
            blobs.push(manifest.config.clone());
            // Mounted from the source repository when the registry is the same, else fetched
            // from it and uploaded.
            let (from_registry, from_repository) = (m.from.resolve_registry(), m.from.repository());
            for blob in &blobs {
                let origin = crate::store::lazy::Origin::Registry {
                    registry: from_registry.to_string(),
                    repository: from_repository.to_string(),
                };
                state.lazy.add(blob, origin);
                sources.add(&blob.digest, from_registry, from_repository);
            }
            let to = by_digest(&target, m.entry.digest.as_str());
            let pushed = (&m.bytes[..], m.entry.media_type.as_str());
            runtime.block_on(registry.push(
                &to,
                &state.store,
                &state.lazy,
                &blobs,
                pushed,
                &sources,
                &report,
            ))?;
        }
        let digest = runtime.block_on(registry.push(
            &target,
            &state.store,
            &state.lazy,
            &[],
            (&bytes, &media_type),
            &sources,
            &report,
        ))?;
        println!("{}@{digest}", target.whole());
    }
    Ok(0)
}

/// The attestations of an index, by the platform of the image each is about: predicate type
/// and statement.
type Attestations = BTreeMap<String, Vec<(String, serde_json::Value)>>;

fn attestations(
    registry: &Registry,
    runtime: &tokio::runtime::Runtime,
    r: &Reference,
    index: &Index,
) -> Result<Attestations> {
    let mut out = Attestations::new();
    for entry in index
        .manifests
        .iter()
        .filter(|d| crate::export::is_attestation(d))
    {
        let subject = entry.annotations.get(crate::export::REFERENCE_DIGEST);
        let platform = index
            .manifests
            .iter()
            .find(|d| Some(&d.digest.to_string()) == subject)
            .and_then(|d| d.platform.as_ref())
            .map_or_else(|| "unknown/unknown".to_string(), ToString::to_string);
        let child = by_digest(r, entry.digest.as_str());
        let (bytes, _) = runtime.block_on(registry.manifest_raw(&child))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)?;
        for layer in &manifest.layers {
            let kind = layer
                .annotations
                .get("in-toto.io/predicate-type")
                .cloned()
                .unwrap_or_default();
            let statement =
                serde_json::from_slice(&runtime.block_on(registry.blob_bytes(r, layer))?)?;
            out.entry(platform.clone())
                .or_default()
                .push((kind, statement));
        }
    }
    Ok(out)
}

/// buildx's `.Provenance` or `.SBOM`: `{"SLSA": predicate}` (`{"SPDX": …}`), per platform when
/// the index has several.
fn predicates(all: &Attestations, wanted: &str, key: &str, several: bool) -> serde_json::Value {
    let of = |list: &Vec<(String, serde_json::Value)>| {
        list.iter()
            .find(|(k, _)| k.starts_with(wanted))
            .map(|(_, s)| serde_json::json!({key: s["predicate"]}))
    };
    match several {
        true => all
            .iter()
            .filter_map(|(p, list)| Some((p.clone(), of(list)?)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        false => all.values().next().and_then(of).unwrap_or_default(),
    }
}

/// The readable form, as buildx prints it.
fn readable(name: &str, media_type: &str, digest: &str, index: Option<&Index>, r: &Reference) {
    let out = super::images::out;
    out(&format!("Name:      {name}"));
    out(&format!("MediaType: {media_type}"));
    out(&format!("Digest:    {digest}"));
    let Some(index) = index else { return };
    out("");
    out("Manifests:");
    for (i, m) in index.manifests.iter().enumerate() {
        if i > 0 {
            out("");
        }
        out(&format!(
            "  Name:        {}/{}@{}",
            r.registry(),
            r.repository(),
            m.digest
        ));
        out(&format!("  MediaType:   {}", m.media_type));
        if let Some(p) = &m.platform {
            out(&format!("  Platform:    {}", p));
        }
        if !m.annotations.is_empty() {
            out("  Annotations:");
            let width = m.annotations.keys().map(String::len).max().unwrap_or(0) + 1;
            for (k, v) in &m.annotations {
                out(&format!("    {:width$} {v}", format!("{k}:")));
            }
        }
    }
}

fn inspect(
    registry: &Registry,
    runtime: &tokio::runtime::Runtime,
    args: InspectArgs,
) -> Result<i32> {
    let r = parse(&args.name)?;
    let (bytes, digest) = runtime.block_on(registry.manifest_raw(&r))?;
    if args.raw {
        use std::io::Write as _;
        std::io::stdout().write_all(&bytes)?;
        return Ok(0);
    }
    let media_type = media_type_of(&bytes);
    let index: Option<Index> = match is_index(&media_type) {
        true => Some(serde_json::from_slice(&bytes)?),
        false => None,
    };
    let Some(template) = &args.format else {
        readable(&r.whole(), &media_type, digest.as_str(), index.as_ref(), &r);
        return Ok(0);
    };
    let mut value = serde_json::json!({
        "Name": r.whole(),
        "Manifest": serde_json::from_slice::<serde_json::Value>(&bytes)?,
    });
    let images: Vec<(String, Reference)> = match &index {
        Some(index) => index
            .manifests
            .iter()
            .filter(|d| !crate::export::is_attestation(d))
            .map(|d| {
                let p = d
                    .platform
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                (p, by_digest(&r, d.digest.as_str()))
            })
            .collect(),
        None => vec![(String::new(), r.clone())],
    };
    let several = images.len() > 1;
    if template.contains(".Image") {
        let mut configs = serde_json::Map::new();
        for (platform, image) in &images {
            let (bytes, _) = runtime.block_on(registry.manifest_raw(image))?;
            let manifest: Manifest = serde_json::from_slice(&bytes)?;
            let config = runtime.block_on(registry.blob_bytes(image, &manifest.config))?;
            configs.insert(platform.clone(), serde_json::from_slice(&config)?);
        }
        value["Image"] = match several {
            true => configs.into(),
            false => configs
                .into_iter()
                .next()
                .map(|(_, c)| c)
                .unwrap_or_default(),
        };
    }
    if template.contains(".Provenance") || template.contains(".SBOM") {
        let all = match &index {
            Some(index) => attestations(registry, runtime, &r, index)?,
            None => Attestations::new(),
        };
        value["Provenance"] = predicates(&all, "https://slsa.dev/provenance/", "SLSA", several);
        value["SBOM"] = predicates(&all, "https://spdx.dev/Document", "SPDX", several);
    }
    let text = crate::cli::template::render(template, &value).map_err(|e| anyhow!(e))?;
    super::images::out(&text);
    Ok(0)
}

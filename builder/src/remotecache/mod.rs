//! Sharing the build cache between machines (`--cache-to`, `--cache-from`), in BuildKit's
//! syntax ([`spec`]) and its `image-manifest=true` layout ([`record`] has the format).
//!
//! Export ([`export`]): the steps `mode=` asks for ([`steps_to_export`]), their layers
//! compressed once per diff id (the blobs an image push uses too, so nothing is uploaded
//! twice), the record as the config blob, pushed as an image manifest (blobs the registry has
//! are skipped; an unchanged manifest is not pushed at all) or written to an OCI layout.
//!
//! Import ([`import`]): only the manifest and the record are fetched; each layer becomes a
//! lazily known blob ([`crate::store::lazy`]) after the registry confirmed it has it, and the
//! records go to the solver ([`rbuild_solver::Solver::with_imported`]). A blob is downloaded
//! when a step that runs needs the layer ([`fetch_missing`], called by the worker) or an
//! output needs its bytes; a push to the registry that has it mounts it instead.
//!
//! A cache that cannot be read is a warning, never a failed build: a cache is an
//! optimisation, and one written by someone else is only as trustworthy as they are; every
//! blob is checked against its digest before use.

pub mod record;
pub mod spec;

use crate::registry::Registry;
use crate::registry::reference;
use crate::store::layout::{Descriptor, Index, Manifest, OCI_MANIFEST, REF_NAME};
use crate::store::lazy::Origin;
use crate::store::state::State;
use rayon::prelude::*;
use rbuild_solver::{Digest, Graph, Op, Output, OutputLayer, VertexId};
use record::{CONFIG_MEDIA_TYPE, CacheConfig, Exported};
use spec::{CacheFrom, CacheTo, Location, Mode};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Why a cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry.
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    /// The state directory.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Compressing layers.
    #[error(transparent)]
    Export(#[from] crate::export::Error),
    /// A file of an OCI layout.
    #[error(transparent)]
    Io(#[from] crate::errors::Io),
    /// A manifest, index or record that is not what it should be.
    #[error(transparent)]
    Json(#[from] crate::errors::Json),
    /// Something else, said in words.
    #[error("{0}")]
    Other(String),
}

/// A cache operation's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a cache is, as people write it.
pub fn describe(location: &Location) -> String {
    match location {
        Location::Registry(r) => r.clone(),
        Location::Local { dir, tag } => format!("{}:{tag}", dir.display()),
        Location::Inline => "inline".to_string(),
    }
}

/// What the imports found: the records (the first cache that has a key wins), and what to
/// warn about.
#[derive(Debug, Default)]
pub struct Imported {
    /// Outputs by cache key.
    pub records: HashMap<Digest, Output>,
    /// `RUN --mount=type=cache` directories by storage key, as layers (known lazily).
    pub mounts: HashMap<String, OutputLayer>,
    /// What went into the records' keys, for explaining misses.
    pub summaries: HashMap<Digest, rbuild_solver::summary::Summary>,
    /// A line per cache that could not be read, or record that was left out.
    pub warnings: Vec<String>,
}

/// Reads the caches `from`, in order of preference. Nothing fails: what cannot be read is a
/// warning naming the cache.
pub fn import(
    state: &State,
    registry: &Registry,
    runtime: &tokio::runtime::Handle,
    from: &[CacheFrom],
) -> Imported {
    let mut imported = Imported::default();
    for cache in from {
        let name = describe(&cache.location);
        let read = match &cache.location {
            Location::Registry(r) => import_registry(state, registry, runtime, r),
            Location::Local { dir, tag } => import_layout(state, dir, tag),
            Location::Inline => Err(Error::Other("an inline cache is read by ref".into())),
        };
        match read {
            Ok(((records, problems), mounts, summaries)) => {
                imported
                    .warnings
                    .extend(problems.into_iter().map(|p| format!("cache {name}: {p}")));
                for (key, output) in records {
                    imported.records.entry(key).or_insert(output);
                }
                for (key, layer) in mounts {
                    imported.mounts.entry(key).or_insert(layer);
                }
                for (key, summary) in summaries {
                    imported.summaries.entry(key).or_insert(summary);
                }
            }
            Err(e) => imported.warnings.push(format!(
                "cache {name} not imported: {}",
                crate::errors::chain(&e)
            )),
        }
    }
    imported
}

type Decoded = (HashMap<Digest, Output>, Vec<String>);

/// A cache read: its records (with what was wrong), its cache mounts and its summaries.
type Read = (
    Decoded,
    HashMap<String, OutputLayer>,
    std::collections::BTreeMap<Digest, rbuild_solver::summary::Summary>,
);

/// The records and mounts of a cache whose blobs `missing` lacks, without what names them.
fn decoded(manifest: &Manifest, config: &CacheConfig, missing: &HashSet<Digest>) -> Read {
    let mut mounts = record::decode_mounts(manifest, config);
    mounts.retain(|_, l| !missing.contains(&l.digest));
    let records = without_missing(record::decode(manifest, config), missing);
    (records, mounts, config.summaries.clone())
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    Ok(serde_json::from_slice(bytes).map_err(crate::errors::json(what))?)
}

/// Drops the records that name a blob `missing` holds.
fn without_missing(mut decoded: Decoded, missing: &HashSet<Digest>) -> Decoded {
    if missing.is_empty() {
        return decoded;
    }
    let before = decoded.0.len();
    decoded
        .0
        .retain(|_, o| o.layers.iter().all(|l| !missing.contains(&l.digest)));
    decoded.1.push(format!(
        "{} records left out: {} of their layer blobs are missing",
        before - decoded.0.len(),
        missing.len()
    ));
    decoded
}

fn unique_blobs(manifest: &Manifest) -> Vec<Descriptor> {
    let mut seen = HashSet::new();
    manifest
        .layers
        .iter()
        .filter(|l| seen.insert(l.digest.clone()))
        .cloned()
        .collect()
}

fn import_registry(
    state: &State,
    registry: &Registry,
    runtime: &tokio::runtime::Handle,
    name: &str,
) -> Result<Read> {
    let r = reference::parse(name).map_err(Error::Other)?.to_oci();
    let platform = rbuild_frontend::Platform::host();
    let digest = runtime.block_on(registry.resolve(&r, &state.store, &platform))?;
    let stored = state.store.manifest(&digest)?;
    let config_blob = state.store.read_blob(&stored.config.digest)?;
    let (manifest, config) = read_config(stored, &config_blob)?;
    let blobs = unique_blobs(&manifest);
    // The registry must have every blob a record names: one that lost some is not used.
    let checks = blobs.iter().map(|b| registry.has_blob(&r, &b.digest));
    let present = runtime.block_on(futures_util::future::try_join_all(checks))?;
    let missing: HashSet<Digest> = blobs
        .iter()
        .zip(present)
        .filter(|(_, here)| !here)
        .map(|(b, _)| b.digest.clone())
        .collect();
    let (registry_name, repository) = (r.resolve_registry(), r.repository());
    let sources = state.blob_sources();
    for blob in blobs.iter().filter(|b| !missing.contains(&b.digest)) {
        let origin = Origin::Registry {
            registry: registry_name.to_string(),
            repository: repository.to_string(),
        };
        state.lazy.add(blob, origin);
        // Remembered for cross-repository mounts when pushing to this registry.
        sources.add(&blob.digest, registry_name, repository);
    }
    Ok(decoded(&manifest, &config, &missing))
}

/// The record of a cache manifest whose config blob is `bytes`, and the manifest with each
/// layer's diff id annotated: a cache manifest's own, or an image's whose config holds an
/// inline cache (its layers' diff ids are the config's).
fn read_config(mut manifest: Manifest, bytes: &[u8]) -> Result<(Manifest, CacheConfig)> {
    use crate::store::layout::{DOCKER_CONFIG, OCI_CONFIG};
    let media_type = manifest.config.media_type.as_str();
    if media_type == CONFIG_MEDIA_TYPE {
        let config = parse_json(bytes, "reading the cache record")?;
        return Ok((manifest, config));
    }
    if media_type != OCI_CONFIG && media_type != DOCKER_CONFIG {
        return Err(Error::Other(format!(
            "it is not an rbuild cache (its config is {media_type})"
        )));
    }
    let mut image: serde_json::Value = parse_json(bytes, "reading the image config")?;
    let inline = image
        .get_mut(record::INLINE_KEY)
        .map(serde_json::Value::take)
        .ok_or_else(|| {
            Error::Other(
                "it is not an rbuild cache, and the image carries none (build it with \
                 --cache-to type=inline)"
                    .to_string(),
            )
        })?;
    let config = serde_json::from_value(inline)
        .map_err(crate::errors::json("reading the image's inline cache"))?;
    let diff_ids = image["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (layer, diff_id) in manifest.layers.iter_mut().zip(diff_ids) {
        if let Some(d) = diff_id.as_str() {
            layer
                .annotations
                .insert(record::UNCOMPRESSED.to_string(), d.to_string());
        }
    }
    Ok((manifest, config))
}

/// A blob of the OCI layout `dir`, checked against its digest.
fn layout_blob(dir: &Path, digest: &Digest) -> Result<Vec<u8>> {
    let path = dir.join("blobs/sha256").join(digest.hex());
    let bytes =
        std::fs::read(&path).map_err(crate::errors::io(format!("reading {}", path.display())))?;
    if Digest::of(&bytes) != *digest {
        return Err(Error::Other(format!(
            "{} does not match its digest",
            path.display()
        )));
    }
    Ok(bytes)
}

fn layout_index(dir: &Path) -> Result<Option<Index>> {
    let path = dir.join("index.json");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(parse_json(
            &bytes,
            &format!("reading {}", path.display()),
        )?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::errors::io(format!("reading {}", path.display()))(e).into()),
    }
}

fn import_layout(state: &State, dir: &Path, tag: &str) -> Result<Read> {
    let index = layout_index(dir)?
        .ok_or_else(|| Error::Other(format!("{} has no index.json", dir.display())))?;
    let entry = index
        .manifests
        .iter()
        .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        .ok_or_else(|| Error::Other(format!("{} has no cache tagged {tag}", dir.display())))?;
    let manifest: Manifest = parse_json(&layout_blob(dir, &entry.digest)?, "reading the manifest")?;
    let config_blob = layout_blob(dir, &manifest.config.digest)?;
    let (manifest, config) = read_config(manifest, &config_blob)?;
    let blobs = unique_blobs(&manifest);
    let missing: HashSet<Digest> = blobs
        .iter()
        .filter(|b| {
            let path = dir.join("blobs/sha256").join(b.digest.hex());
            std::fs::metadata(path).map(|m| m.len()).ok() != Some(b.size)
        })
        .map(|b| b.digest.clone())
        .collect();
    for blob in blobs.iter().filter(|b| !missing.contains(&b.digest)) {
        state.lazy.add(blob, Origin::Layout(dir.to_path_buf()));
    }
    Ok(decoded(&manifest, &config, &missing))
}

/// Downloads the blobs of `layers` that a step needs and that are only known elsewhere
/// (those with neither a snapshot nor a blob here), in parallel.
pub fn fetch_missing(
    state: &State,
    registry: &Registry,
    runtime: &tokio::runtime::Handle,
    layers: &[OutputLayer],
    progress: &(dyn Fn(&Digest, u64, u64, bool) + Sync),
) -> Result<()> {
    let wanted: Vec<&OutputLayer> = layers
        .iter()
        .filter(|l| {
            !state.snapshots.has(l.diff_id.as_str())
                && !state.store.has_blob(&l.digest)
                && state.lazy.knows(&l.digest)
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let fetches = wanted.iter().map(|l| async move {
        let report = move |bytes, done| progress(&l.digest, bytes, l.size, done);
        registry
            .fetch_lazy(&state.store, &state.lazy, &l.digest, &report)
            .await
    });
    runtime.block_on(futures_util::future::try_join_all(fetches))?;
    Ok(())
}

/// The steps to export for `mode`, with their keys: `Max`, every step solved that makes
/// layers; `Min`, those whose results are part of a target's image (their layers are a
/// prefix of the target's).
pub fn steps_to_export<'a>(
    graph: &'a Graph,
    solved: &'a HashMap<VertexId, Arc<Output>>,
    keys: &'a HashMap<VertexId, Digest>,
    targets: &[VertexId],
    mode: Mode,
) -> Vec<Exported<'a>> {
    let finals: Vec<&Output> = targets
        .iter()
        .filter_map(|t| solved.get(t))
        .map(|o| &**o)
        .collect();
    let in_final = |output: &Output| {
        finals.iter().any(|f| {
            f.layers.len() >= output.layers.len()
                && f.layers
                    .iter()
                    .zip(&output.layers)
                    .all(|(a, b)| a.diff_id == b.diff_id)
        })
    };
    let mut steps: Vec<Exported> = graph
        .needed_for(targets)
        .into_iter()
        .filter_map(|v| {
            let vertex = graph.vertex(v);
            if matches!(
                vertex.op,
                Op::Scratch | Op::Local(_) | Op::Http(_) | Op::Git(_)
            ) {
                return None;
            }
            let (key, output) = (keys.get(&v)?, solved.get(&v)?);
            if output.local.is_some() || (mode == Mode::Min && !in_final(output)) {
                return None;
            }
            Some(Exported {
                key,
                name: vertex.name.as_deref(),
                output,
            })
        })
        .collect();
    steps.sort_by(|a, b| a.key.cmp(b.key));
    steps.dedup_by(|a, b| a.key == b.key);
    steps
}

/// What an export did, for its progress line.
pub struct Written {
    /// The cache manifest's digest.
    pub digest: Digest,
    /// How many records it holds.
    pub records: usize,
    /// How many layer blobs.
    pub blobs: usize,
    /// Whether the destination had it already (nothing was written).
    pub unchanged: bool,
}

/// What a cache export writes: the steps' records, and cache mount directories (storage
/// key, directory) when `cache-mounts=true` asked for them.
pub struct Contents<'a> {
    /// The steps.
    pub steps: Vec<Exported<'a>>,
    /// The cache mounts.
    pub mounts: Vec<(String, std::path::PathBuf)>,
    /// What went into the keys (of the steps and of their local sources).
    pub summaries: std::collections::BTreeMap<Digest, rbuild_solver::summary::Summary>,
}

/// Writes the cache of `contents` to `to` (a registry or an OCI layout; an inline cache is
/// written with the image, not here). `report` hears a line per blob pushed.
pub fn export(
    state: &State,
    registry: &Registry,
    runtime: &tokio::runtime::Handle,
    to: &CacheTo,
    contents: &Contents,
    report: &(dyn Fn(String) + Sync),
) -> Result<Written> {
    let steps = &contents.steps;
    let (manifest, bytes) = encode_cache(state, to, contents)?;
    let digest = Digest::of(&bytes);
    let mut written = Written {
        digest: digest.clone(),
        records: steps.len(),
        blobs: manifest.layers.len(),
        unchanged: false,
    };
    let mut blobs = manifest.layers.clone();
    blobs.push(manifest.config.clone());
    match &to.location {
        Location::Registry(name) => {
            let r = reference::parse(name).map_err(Error::Other)?.to_oci();
            if runtime.block_on(registry.has_manifest(&r, &digest))? {
                written.unchanged = true;
                return Ok(written);
            }
            runtime.block_on(registry.push(
                &r,
                &state.store,
                &state.lazy,
                &blobs,
                (&bytes, OCI_MANIFEST),
                &state.blob_sources(),
                report,
            ))?;
        }
        Location::Local { dir, tag } => {
            written.unchanged = write_layout(state, registry, runtime, dir, tag, &blobs, &bytes)?;
        }
        Location::Inline => {
            return Err(Error::Other(
                "an inline cache is written with the image".into(),
            ));
        }
    }
    Ok(written)
}

/// The cache manifest of `steps` (and its bytes), with its layer blobs made (compressed as
/// `to` asks, reusing what earlier exports made) and its config stored.
fn encode_cache(state: &State, to: &CacheTo, contents: &Contents) -> Result<(Manifest, Vec<u8>)> {
    let steps = &contents.steps;
    let mut layers: HashMap<Digest, &OutputLayer> = HashMap::new();
    for step in steps {
        for l in &step.output.layers {
            layers.entry(l.diff_id.clone()).or_insert(l);
        }
    }
    let counter = crate::export::compress::Counter::default();
    let blobs: HashMap<Digest, Descriptor> = layers
        .into_par_iter()
        .map(|(diff_id, l)| {
            let layer = Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                platform: None,
                annotations: Default::default(),
            };
            let blob = crate::export::compress::layer_blob(
                state,
                &layer,
                &diff_id,
                &to.compression,
                &counter,
            )?;
            Ok((diff_id, blob))
        })
        .collect::<Result<_>>()?;
    let (mut layers, mut config) = record::encode(steps, &blobs).map_err(Error::Other)?;
    config.summaries = contents.summaries.clone();
    for (id, dir) in &contents.mounts {
        let (mut blob, diff_id) =
            crate::export::compress::directory_blob(state, dir, &to.compression, &counter)?;
        blob.annotations
            .insert(record::UNCOMPRESSED.into(), diff_id.to_string());
        config.mounts.push(record::MountRecord {
            id: id.clone(),
            blob: layers.len(),
        });
        layers.push(blob);
    }
    let config = serde_json::to_vec(&config).expect("a record serializes");
    let (digest, size) = state.store.write_blob(&config)?;
    let manifest = record::manifest(
        Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest,
            size,
            platform: None,
            annotations: Default::default(),
        },
        layers,
    );
    let bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    Ok((manifest, bytes))
}

/// Writes the cache manifest `bytes` and its `blobs` into the OCI layout `dir` under `tag`
/// (other tags stay); whether it was there already.
fn write_layout(
    state: &State,
    registry: &Registry,
    runtime: &tokio::runtime::Handle,
    dir: &Path,
    tag: &str,
    blobs: &[Descriptor],
    bytes: &[u8],
) -> Result<bool> {
    let io = |what: &str, path: &Path| crate::errors::io(format!("{what} {}", path.display()));
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).map_err(io("creating", &blob_dir))?;
    let write_atomically = |path: &Path, data: &[u8]| -> Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, data).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("writing", path))?;
        Ok(())
    };
    for blob in blobs {
        let dest = blob_dir.join(blob.digest.hex());
        if std::fs::metadata(&dest).map(|m| m.len()).ok() == Some(blob.size) {
            continue;
        }
        runtime.block_on(registry.fetch_lazy(
            &state.store,
            &state.lazy,
            &blob.digest,
            &|_, _| {},
        ))?;
        let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::copy(state.store.blob_path(&blob.digest), &tmp).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io("writing", &dest))?;
    }
    let digest = Digest::of(bytes);
    write_atomically(&blob_dir.join(digest.hex()), bytes)?;
    let mut index = layout_index(dir)?.unwrap_or_else(|| Index {
        schema_version: 2,
        media_type: Some(crate::store::layout::OCI_INDEX.into()),
        manifests: vec![],
        annotations: Default::default(),
    });
    let tagged = |m: &Descriptor| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag);
    if index
        .manifests
        .iter()
        .any(|m| tagged(m) && m.digest == digest)
    {
        return Ok(true);
    }
    index.manifests.retain(|m| !tagged(m));
    index.manifests.push(Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest,
        size: bytes.len() as u64,
        platform: None,
        annotations: [(REF_NAME.to_string(), tag.to_string())].into(),
    });
    write_atomically(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index = serde_json::to_vec(&index).expect("an index serializes");
    write_atomically(&dir.join("index.json"), &index)?;
    Ok(false)
}

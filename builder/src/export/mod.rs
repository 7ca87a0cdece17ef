//! Finishing a build: the image config (history, created times, diff ids), its manifest in
//! the local store, and the exporters (`--output type=oci`).

pub mod compress;
pub mod pgzip;

use crate::export::compress::{Compression, Counter, export_manifest};
use crate::store::layout::{
    DOCKER_MANIFEST_LIST, Descriptor, Index, Manifest, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
    REF_NAME, Store,
};
use crate::store::state::State;
use crate::units;
use rbuild_frontend::Build;
use rbuild_frontend::image::Image;
use rbuild_solver::{Digest, Output, OutputLayer, VertexId};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] crate::errors::Io),
    /// A write failed, with nothing more to say than the system's error (a closed stdout,
    /// a full disk while streaming a layer).
    #[error(transparent)]
    System(#[from] std::io::Error),
    /// A blob of the store is not the JSON it should be.
    #[error(transparent)]
    Json(#[from] crate::errors::Json),
    /// The state directory.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The cache index (where compressed blobs are remembered).
    #[error(transparent)]
    Cache(#[from] rbuild_solver::Error),
    /// Something else, said in words: an unknown compression, a layer that is missing, a
    /// format that cannot hold the image.
    #[error("{0}")]
    Other(String),
}

impl From<serde_json::Error> for Error {
    fn from(source: serde_json::Error) -> Self {
        crate::errors::json("encoding JSON")(source).into()
    }
}

/// An export's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The final image config and its layers.
pub struct FinalImage {
    /// The config.
    pub image: Image,
    /// The layers, bottom first.
    pub layers: Vec<OutputLayer>,
    /// An inline cache record (`--cache-to type=inline`), stored in the config under
    /// [`crate::remotecache::record::INLINE_KEY`].
    pub inline_cache: Option<serde_json::Value>,
    /// The manifest's annotations (`--annotation`).
    pub annotations: BTreeMap<String, String>,
}

/// Fills in what only the solve knows: diff ids, which history entries have layers, and
/// creation times, the way BuildKit does. A step that made a layer is dated when the layer was
/// made (stored with the cache record, so a cached rebuild gives the same image); this build's
/// metadata-only steps take the date of the last new layer before them, or of the first new layer
/// if none came before. Base-image entries keep their dates.
pub fn finalize(build: &Build, outputs: &HashMap<VertexId, Arc<Output>>) -> FinalImage {
    let layers = outputs[&build.target].layers.clone();
    let mut image = build.image.clone();
    image.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.to_string()).collect();
    for entry in &mut image.history {
        // Every step of the target's chain has an output (the solver makes sure of it).
        if let Some(v) = entry.layer_of
            && let Some(out) = outputs.get(&v)
            && let Some(input) = outputs.get(&build.graph.vertex(v).inputs[0])
        {
            let added = out.layers.len() > input.layers.len();
            entry.empty_layer = !added;
            if added {
                entry.created = out.layers.last().and_then(|l| l.created.clone());
            }
        }
    }
    let new_layer = |h: &rbuild_frontend::image::History| h.layer_of.is_some() && !h.empty_layer;
    let first_new = image
        .history
        .iter()
        .find(|h| new_layer(h))
        .and_then(|h| h.created.clone());
    let last_known = image.history.iter().rev().find_map(|h| h.created.clone());
    let fallback = first_new
        .clone()
        .or(last_known)
        .unwrap_or_else(|| units::rfc3339(units::build_time()));
    let mut current = first_new;
    for entry in &mut image.history {
        if new_layer(entry) {
            current = entry.created.clone();
        }
        if entry.created.is_none() {
            entry.created = Some(current.clone().unwrap_or_else(|| fallback.clone()));
        }
    }
    image.created = Some(
        image
            .history
            .last()
            .and_then(|h| h.created.clone())
            .unwrap_or(fallback),
    );
    FinalImage {
        image,
        layers,
        inline_cache: None,
        annotations: BTreeMap::new(),
    }
}

/// Writes the config and manifest blobs; returns the manifest's descriptor and the config
/// digest (the image id).
pub fn store_image(store: &Store, image: &FinalImage) -> Result<(Descriptor, Vec<u8>, Descriptor)> {
    let config = match &image.inline_cache {
        None => serde_json::to_vec(&image.image)?,
        Some(cache) => {
            let mut config = serde_json::to_value(&image.image)?;
            config[crate::remotecache::record::INLINE_KEY] = cache.clone();
            serde_json::to_vec(&config)?
        }
    };
    let (config_digest, config_size) = store.write_blob(&config)?;
    let config_desc = Descriptor {
        media_type: OCI_CONFIG.into(),
        digest: config_digest,
        size: config_size,
        platform: None,
        annotations: BTreeMap::new(),
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: config_desc.clone(),
        layers: image
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                platform: None,
                annotations: BTreeMap::new(),
            })
            .collect(),
        annotations: image.annotations.clone(),
    };
    let bytes = serde_json::to_vec(&manifest)?;
    let (digest, size) = store.write_blob(&bytes)?;
    Ok((
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        },
        bytes,
        config_desc,
    ))
}

/// Writes an index of `manifests` (each with its platform) to the store: an OCI index, or a
/// Docker manifest list if `docker_media_types`. Returns its descriptor.
pub fn store_index(
    store: &Store,
    manifests: &[Descriptor],
    docker_media_types: bool,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor> {
    let media_type = if docker_media_types {
        DOCKER_MANIFEST_LIST
    } else {
        OCI_INDEX
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type.into()),
        manifests: manifests.to_vec(),
        annotations: annotations.clone(),
    };
    let (digest, size) = store.write_blob(&serde_json::to_vec(&index)?)?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        platform: None,
        annotations: BTreeMap::new(),
    })
}

/// The annotation of an attestation's index entry that names its image manifest.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// The attestation manifest `entry` naming the image manifest `new` instead of `old` (the
/// in-toto statement's subjects and the entry's annotation), stored; its new entry.
fn retarget_attestation(
    state: &State,
    entry: &Descriptor,
    old: &str,
    new: &Digest,
) -> Result<Descriptor> {
    let store = &state.store;
    let mut manifest = store.manifest(&entry.digest)?;
    let old_hex = old.trim_start_matches("sha256:");
    for layer in &mut manifest.layers {
        let text = String::from_utf8_lossy(&store.read_blob(&layer.digest)?).into_owned();
        let (digest, size) = store.write_blob(text.replace(old_hex, new.hex()).as_bytes())?;
        layer.digest = digest;
        layer.size = size;
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
            .map_err(crate::errors::json("parsing an attestation's config"))?;
    config["rootfs"]["diff_ids"] = manifest
        .layers
        .iter()
        .map(|l| serde_json::Value::from(l.digest.to_string()))
        .collect();
    let (digest, size) = store.write_blob(&serde_json::to_vec(&config)?)?;
    manifest.config.digest = digest;
    manifest.config.size = size;
    let (digest, size) = store.write_blob(&serde_json::to_vec(&manifest)?)?;
    let mut retargeted = Descriptor {
        digest,
        size,
        ..entry.clone()
    };
    retargeted
        .annotations
        .insert(REFERENCE_DIGEST.into(), new.to_string());
    Ok(retargeted)
}

/// Whether the stored image `descriptor` is an index with attestation manifests.
fn has_attestations(state: &State, descriptor: &Descriptor) -> Result<bool> {
    if !is_index(descriptor) {
        return Ok(false);
    }
    let index: Index =
        serde_json::from_slice(&state.store.read_blob(&descriptor.digest)?).map_err(
            crate::errors::json(format!("parsing index {}", descriptor.digest)),
        )?;
    Ok(index.manifests.iter().any(is_attestation))
}

/// Whether an index entry is an attestation manifest (`vnd.docker.reference.type`).
pub fn is_attestation(descriptor: &Descriptor) -> bool {
    descriptor
        .annotations
        .get("vnd.docker.reference.type")
        .is_some_and(|t| t == "attestation-manifest")
}

/// Whether a descriptor is of an index (several platforms) rather than one image.
pub fn is_index(descriptor: &Descriptor) -> bool {
    descriptor.media_type == OCI_INDEX || descriptor.media_type == DOCKER_MANIFEST_LIST
}

/// An image made ready to leave the store: layers compressed, media types as asked.
pub struct Exported {
    /// What a name points at: the manifest, or the index of a multi-platform image.
    pub top: Descriptor,
    /// The manifests (one, or one per platform of an index, with their platforms).
    pub manifests: Vec<Descriptor>,
}

/// Prepares the stored image or index `descriptor` for an export or push: each manifest's
/// layers compressed as `compression` says (see [`crate::export::compress`]), Docker media types if
/// `docker_media_types`, and for an index a new index of the results. `counter` counts the
/// bytes compressed.
pub fn export_image(
    state: &State,
    descriptor: &Descriptor,
    compression: &Compression,
    docker_media_types: bool,
    counter: &Counter,
) -> Result<Exported> {
    // Attestations name their image manifest by digest, so an index with attestations keeps
    // OCI media types (BuildKit forces oci-mediatypes=true for them too).
    let docker_media_types = docker_media_types && !has_attestations(state, descriptor)?;
    let one = |manifest: &Descriptor| -> Result<Descriptor> {
        // An attestation manifest (in-toto layers, not filesystem layers) leaves as it is,
        // with OCI media types and its index annotations, as BuildKit's.
        if is_attestation(manifest) {
            return Ok(manifest.clone());
        }
        let (mut exported, _) = export_manifest(state, manifest, compression, counter)?;
        if docker_media_types {
            exported = crate::export::compress::with_docker_media_types(state, &exported)?;
        }
        exported.platform = manifest.platform.clone();
        // The entry's own annotations (`--annotation manifest-descriptor:…`) stay with it.
        exported.annotations = manifest.annotations.clone();
        Ok(exported)
    };
    if !is_index(descriptor) {
        let manifest = one(descriptor)?;
        return Ok(Exported {
            top: manifest.clone(),
            manifests: vec![manifest],
        });
    }
    let index: Index =
        serde_json::from_slice(&state.store.read_blob(&descriptor.digest)?).map_err(
            crate::errors::json(format!("parsing index {}", descriptor.digest)),
        )?;
    let mut manifests = index
        .manifests
        .iter()
        .map(one)
        .collect::<Result<Vec<_>>>()?;
    // An image manifest that changed (compressed layers) is what its attestation must name.
    let renamed: BTreeMap<String, Digest> = index
        .manifests
        .iter()
        .zip(&manifests)
        .filter(|(old, new)| old.digest != new.digest)
        .map(|(old, new)| (old.digest.to_string(), new.digest.clone()))
        .collect();
    for entry in manifests.iter_mut().filter(|m| is_attestation(m)) {
        let target = entry.annotations.get(REFERENCE_DIGEST).cloned();
        if let Some(new) = target.and_then(|t| renamed.get(&t).map(|n| (t, n.clone()))) {
            *entry = retarget_attestation(state, entry, &new.0, &new.1)?;
        }
    }
    Ok(Exported {
        top: store_index(
            &state.store,
            &manifests,
            docker_media_types,
            &index.annotations,
        )?,
        manifests,
    })
}

/// The layout of an image archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI image layout (`type=oci`, `rbuild save --format oci`).
    Oci,
    /// An OCI image layout with Docker media types plus Docker's `manifest.json`, which
    /// `docker load` reads (`type=docker`, `rbuild save`).
    Docker,
}

/// Where an archive goes: a file (written beside it and renamed into place) or stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A file.
    File(std::path::PathBuf),
    /// Standard output (`dest=-`).
    Stdout,
}

impl Dest {
    /// `-` is stdout, anything else a path.
    pub fn parse(text: &str) -> Dest {
        if text == "-" {
            Dest::Stdout
        } else {
            Dest::File(text.into())
        }
    }

    /// Writes through `write` to the destination: to a temporary file renamed into place once
    /// complete and fsynced, or to stdout.
    pub fn write(&self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        match self {
            Dest::Stdout => {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                write(&mut out)?;
                out.flush()?;
                Ok(())
            }
            Dest::File(dest) => {
                let tmp = dest.with_file_name(format!(
                    ".{}.tmp-{}",
                    dest.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    rbuild_runner::snapshot::unique_name()
                ));
                let result = (|| -> Result<()> {
                    let file = std::fs::File::create(&tmp)
                        .map_err(crate::errors::io(format!("creating {}", tmp.display())))?;
                    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                    write(&mut out)?;
                    let file = out.into_inner().map_err(|e| e.into_error())?;
                    file.sync_all()?;
                    Ok(())
                })();
                if let Err(e) = result {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
                std::fs::rename(&tmp, dest)
                    .map_err(|e| crate::errors::io(format!("writing {}", dest.display()))(e).into())
            }
        }
    }
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Stdout => f.write_str("stdout"),
            Dest::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An image to put in an archive: its manifest in the store and the names to give it (full
/// normalized references; none for an unnamed image).
pub struct ArchiveImage {
    /// The manifest.
    pub manifest: Descriptor,
    /// The names.
    pub names: Vec<String>,
}

/// Writes `images` as one archive, as BuildKit's OCI and Docker exporters do: `oci-layout`,
/// `index.json` with an entry per name (`io.containerd.image.name` the full name,
/// `org.opencontainers.image.ref.name` its tag), the blobs, and for the Docker format
/// `manifest.json` (config, `RepoTags`, layers). Entries are in a fixed order with fixed
/// metadata, so equal images give equal files. Manifests use Docker media types if
/// `docker_media_types` (BuildKit's `oci-mediatypes=false`, the Docker exporter's default).
/// Layers are compressed as `compression` says (see [`crate::export::compress`]); `counter` counts
/// the bytes read. Returns the exported manifests.
pub fn write_archive(
    state: &State,
    images: &[ArchiveImage],
    format: ArchiveFormat,
    docker_media_types: bool,
    dest: &Dest,
    compression: &Compression,
    counter: &Counter,
) -> Result<Vec<Descriptor>> {
    let store = &state.store;
    let mut exported = Vec::new();
    let mut index_entries = Vec::new();
    let mut docker_manifest = Vec::new();
    let mut blobs = Vec::new();
    for image in images {
        let ready = export_image(
            state,
            &image.manifest,
            compression,
            docker_media_types,
            counter,
        )?;
        if format == ArchiveFormat::Docker && is_index(&ready.top) {
            return Err(Error::Other(
                "the docker archive format holds one platform per image (Docker's manifest.json); \
                 use type=oci for a multi-platform image"
                    .into(),
            ));
        }
        let mut m = None;
        for manifest in &ready.manifests {
            let one = store.manifest(&manifest.digest)?;
            blobs.push(manifest.digest.clone());
            blobs.push(one.config.digest.clone());
            blobs.extend(one.layers.iter().map(|l| l.digest.clone()));
            if !is_attestation(manifest) {
                m = Some(one);
            }
        }
        let m = m.expect("an image has a manifest");
        let manifest = ready.top;
        blobs.push(manifest.digest.clone());
        let mut names = image.names.iter().map(Some).collect::<Vec<_>>();
        if names.is_empty() {
            names.push(None);
        }
        for name in names {
            let mut entry = manifest.clone();
            entry.platform = None;
            // The descriptor's annotations (`--annotation index-descriptor:…`, or
            // `manifest-descriptor:…` of a single manifest), not the local store's names.
            entry.annotations = image.manifest.annotations.clone();
            entry.annotations.retain(|k, _| {
                !k.starts_with("io.rbuild.") && k != REF_NAME && k != "io.containerd.image.name"
            });
            if let Some(name) = name {
                let tag = name
                    .rsplit_once(':')
                    .map(|(_, t)| t)
                    .filter(|t| !t.contains('/'))
                    .unwrap_or("latest");
                entry
                    .annotations
                    .insert("io.containerd.image.name".into(), name.clone());
                entry.annotations.insert(REF_NAME.into(), tag.into());
            }
            index_entries.push(entry);
        }
        docker_manifest.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", m.config.digest.hex()),
            "RepoTags": image.names.iter().map(|n| crate::registry::reference::familiar(n)).collect::<Vec<_>>(),
            "Layers": m.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
        }));
        exported.push(manifest);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": index_entries,
    });
    blobs.sort();
    blobs.dedup();
    dest.write(|out| {
        let mut tar = tar::Builder::new(out);
        let mut add = |name: &str, data: &mut dyn std::io::Read, size: u64| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(size);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, data)?;
            Ok(())
        };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        add("oci-layout", &mut &layout[..], layout.len() as u64)?;
        let index = serde_json::to_vec(&index)?;
        add("index.json", &mut &index[..], index.len() as u64)?;
        if format == ArchiveFormat::Docker {
            let manifest = serde_json::to_vec(&docker_manifest)?;
            add("manifest.json", &mut &manifest[..], manifest.len() as u64)?;
        }
        for digest in &blobs {
            let path = store.blob_path(digest);
            let mut f = std::fs::File::open(&path)
                .map_err(crate::errors::io(format!("reading blob {digest}")))?;
            let size = f.metadata()?.len();
            add(&format!("blobs/sha256/{}", digest.hex()), &mut f, size)?;
        }
        tar.into_inner()?.flush()?;
        Ok(())
    })?;
    Ok(exported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_frontend::{ImageResolver, Platform, ResolvedImage};
    use rbuild_solver::{Digest, Op};

    struct NoImages;

    impl ImageResolver for NoImages {
        fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
            Err(format!("{reference}: no images here"))
        }
    }

    /// Lowers `dockerfile` and makes up the outputs a solve would give: each file op adds one
    /// layer, made at the next of `times`.
    fn solved(dockerfile: &str, times: &[&str]) -> (Build, HashMap<VertexId, Arc<Output>>) {
        let file = rbuild_frontend::SourceFile::new("Dockerfile", dockerfile.as_bytes());
        let parsed = rbuild_frontend::parser::parse(&file);
        let build =
            rbuild_frontend::lower(&parsed.dockerfile, &Default::default(), &NoImages).unwrap();
        let mut outputs: HashMap<VertexId, Arc<Output>> = HashMap::new();
        let mut times = times.iter();
        for v in build.graph.needed_for(&[build.target]) {
            let vertex = build.graph.vertex(v);
            let output = match &vertex.op {
                Op::File(_) => {
                    let mut layers = outputs[&vertex.inputs[0]].layers.clone();
                    let diff_id = Digest::of(format!("layer {}", layers.len()).as_bytes());
                    layers.push(OutputLayer {
                        digest: diff_id.clone(),
                        diff_id,
                        size: 1,
                        media_type: crate::store::layout::OCI_LAYER_TAR.into(),
                        created: times.next().map(|t| t.to_string()),
                    });
                    Output {
                        layers,
                        local: None,
                    }
                }
                _ => Output::default(),
            };
            outputs.insert(v, Arc::new(output));
        }
        (build, outputs)
    }

    #[test]
    fn history_dates_come_from_the_layers_and_the_config_is_deterministic() {
        let (build, outputs) = solved(
            "FROM scratch\nCOPY a /a\nENV X=1\nCOPY b /b\nLABEL l=1\n",
            &["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"],
        );
        let image = finalize(&build, &outputs);
        assert_eq!(image.image.rootfs.diff_ids.len(), 2);
        let dates: Vec<(bool, Option<&str>)> = image
            .image
            .history
            .iter()
            .map(|h| (h.empty_layer, h.created.as_deref()))
            .collect();
        // COPY a; ENV (the date of the last layer before it); COPY b; LABEL.
        assert_eq!(
            dates,
            [
                (false, Some("2026-01-01T00:00:01Z")),
                (true, Some("2026-01-01T00:00:01Z")),
                (false, Some("2026-01-01T00:00:02Z")),
                (true, Some("2026-01-01T00:00:02Z")),
            ]
        );
        assert_eq!(image.image.created.as_deref(), Some("2026-01-01T00:00:02Z"));
        // The same solve gives the same config and manifest bytes.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (first, _, config) = store_image(&store, &image).unwrap();
        let (again, _, config_again) = store_image(&store, &finalize(&build, &outputs)).unwrap();
        assert_eq!(
            (first.digest, config.digest),
            (again.digest, config_again.digest)
        );
    }
}

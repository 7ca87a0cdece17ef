//! The images of the local store as the daily commands see them (`images`, `history`,
//! `inspect`, `tag`, `rmi`, `save`): found by name, by id (the config digest, or a prefix of
//! its hex of at least 3 characters) or by manifest digest, with all the names each has.

use crate::registry::reference;
use crate::store::layout::{Descriptor, Index, Manifest, REF_NAME};
use crate::store::state::State;
use crate::store::{Context, Result};
use rbuild_frontend::image::Image;
use rbuild_solver::Digest;

/// One image of the local store: a manifest, or a multi-platform index of them.
pub struct LocalImage {
    /// Its names (full normalized references), sorted; empty for an untagged image.
    pub names: Vec<String>,
    /// What the names name: its manifest's descriptor, or its index's.
    pub manifest: Descriptor,
    /// The manifest (of an index, the one for this machine's platform, else the first).
    pub parsed: Manifest,
    /// The digest of `parsed`.
    pub platform_manifest: Digest,
    /// Its config (of `parsed`).
    pub config: Image,
    /// Of an index, the platforms it has (`linux/arm64`); empty for a single manifest.
    pub platforms: Vec<String>,
}

impl LocalImage {
    /// The image id: the config digest.
    pub fn id(&self) -> &Digest {
        &self.parsed.config.digest
    }

    /// Bytes of content of each layer, bottom first, as Docker counts them: the sizes of the
    /// files in the layer (read from its snapshot; a layer not unpacked yet counts its blob).
    pub fn layer_sizes(&self, state: &State) -> Vec<u64> {
        self.config
            .rootfs
            .diff_ids
            .iter()
            .zip(&self.parsed.layers)
            .map(|(diff_id, blob)| {
                let dir = state.snapshots.layer_dir(diff_id);
                if dir.is_dir() {
                    content_size(&dir)
                } else {
                    blob.size
                }
            })
            .collect()
    }

    /// Bytes of content of all its layers (`docker images`' SIZE).
    pub fn size(&self, state: &State) -> u64 {
        self.layer_sizes(state).iter().sum()
    }
}

/// The sizes of the regular files under `dir` (hard links once).
fn content_size(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && (meta.nlink() == 1 || seen.insert(meta.ino())) {
                total += meta.len();
            }
        }
    }
    total
}

fn load(state: &State, manifest: Descriptor, names: Vec<String>) -> Result<LocalImage> {
    load_for(state, manifest, names, &rbuild_frontend::Platform::host())
}

/// Loads the image `manifest` names; of an index, the manifest for `platform` (else the first
/// one stored).
fn load_for(
    state: &State,
    manifest: Descriptor,
    names: Vec<String>,
    platform: &rbuild_frontend::Platform,
) -> Result<LocalImage> {
    let store = &state.store;
    let index: Option<Index> = serde_json::from_slice::<Index>(&store.read_blob(&manifest.digest)?)
        .ok()
        .filter(|i| !i.manifests.is_empty());
    let (platform_manifest, platforms) = match &index {
        None => (manifest.digest.clone(), vec![]),
        Some(index) => {
            let chosen = store.manifest_for(&manifest.digest, platform)?.or_else(|| {
                index
                    .manifests
                    .iter()
                    .find(|d| store.has_blob(&d.digest))
                    .map(|d| d.digest.clone())
            });
            let chosen = chosen.ok_or_else(|| {
                crate::store::Error::Other(format!(
                    "index {} has no manifest here",
                    manifest.digest
                ))
            })?;
            let platforms = index
                .manifests
                .iter()
                .filter(|d| !crate::export::is_attestation(d))
                .filter_map(|d| d.platform.as_ref())
                .map(ToString::to_string)
                .collect();
            (chosen, platforms)
        }
    };
    let parsed = store.manifest(&platform_manifest)?;
    let config = serde_json::from_slice(&store.read_blob(&parsed.config.digest)?)
        .with_context(|| format!("parsing the config of {}", manifest.digest))?;
    Ok(LocalImage {
        names,
        manifest,
        parsed,
        platform_manifest,
        config,
        platforms,
    })
}

/// `image` for `platform`: of an index, that platform's manifest and config (an error when
/// the index has none); a single manifest as it is.
pub fn for_platform(
    state: &State,
    image: LocalImage,
    platform: &rbuild_frontend::Platform,
) -> Result<LocalImage> {
    if image.platforms.is_empty() {
        return Ok(image);
    }
    if state
        .store
        .manifest_for(&image.manifest.digest, platform)?
        .is_none()
    {
        return Err(crate::store::Error::Other(format!(
            "the image has no {platform} manifest (it has {})",
            image.platforms.join(", ")
        )));
    }
    load_for(state, image.manifest, image.names, platform)
}

/// Every image, one entry per manifest with all its names (none for an untagged build
/// result), in index order.
pub fn all(state: &State) -> Result<Vec<LocalImage>> {
    let mut by_manifest: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for entry in state.store.index()?.manifests {
        if crate::store::layout::is_untagged(&entry) {
            if !by_manifest.iter().any(|(d, _)| d.digest == entry.digest) {
                by_manifest.push((entry, vec![]));
            }
            continue;
        }
        let Some(name) = entry.annotations.get(REF_NAME).cloned() else {
            continue;
        };
        match by_manifest
            .iter_mut()
            .find(|(d, _)| d.digest == entry.digest)
        {
            Some((_, names)) => names.push(name),
            None => by_manifest.push((entry, vec![name])),
        }
    }
    by_manifest
        .into_iter()
        .map(|(manifest, mut names)| {
            names.sort();
            load(state, manifest, names)
        })
        .collect()
}

/// The image `arg` names: a name (`app:1.0`, `docker.io/library/app`), an image id
/// (`sha256:…` or a hex prefix), or a manifest digest.
pub fn find(state: &State, arg: &str) -> Result<LocalImage> {
    let images = all(state)?;
    let hex = arg.strip_prefix("sha256:").unwrap_or(arg);
    let is_hex = hex.len() >= 3 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let matching: Vec<LocalImage> = images
            .into_iter()
            .filter(|i| i.id().hex().starts_with(hex) || i.manifest.digest.hex().starts_with(hex))
            .collect();
        let digest = Digest::parse(&format!("sha256:{hex}")).filter(|_| hex.len() == 64);
        match matching.len() {
            0 => {}
            1 => return Ok(matching.into_iter().next().expect("one")),
            _ => bail!(
                "{arg} is ambiguous: {} images have ids starting so",
                matching.len()
            ),
        }
        // Only a manifest's digest: an image id (a config) of an untagged image is not indexed.
        if let Some(digest) = digest.filter(|d| state.store.manifest(d).is_ok()) {
            // An untagged manifest (a build without -t), by its digest.
            let size = std::fs::metadata(state.store.blob_path(&digest))?.len();
            let descriptor = Descriptor {
                media_type: crate::store::layout::OCI_MANIFEST.into(),
                digest,
                size,
                platform: None,
                annotations: Default::default(),
            };
            return load(state, descriptor, vec![]);
        }
        bail!("no image {arg} in the local store (see `rbuild images`)");
    }
    let name = reference::parse(arg)
        .map_err(|e| crate::store::Error::Other(format!("{arg}: {e}")))?
        .whole();
    images
        .into_iter()
        .find(|i| i.names.contains(&name))
        .ok_or_else(|| {
            crate::store::Error::Other(format!(
                "no image {arg} in the local store (see `rbuild images`)"
            ))
        })
}

//! `rbuild load [-i FILE]`: images from an archive into the local store, like `docker load`.
//! It reads OCI layouts (rbuild's and BuildKit's `type=oci`/`type=docker` outputs, `docker
//! save` since Docker 25, `skopeo copy … oci-archive:`) and Docker's legacy `docker save`
//! layout (`<id>/layer.tar`, `<config>.json`, `manifest.json`).

use crate::cli::Global;
use crate::registry::reference::{self, familiar};
use crate::store::layout::{
    Descriptor, Index, Manifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD,
    OCI_MANIFEST, REF_NAME,
};
use crate::store::state::State;
use anyhow::{Context, Result, anyhow, bail};
use rbuild_frontend::Platform;
use rbuild_solver::Digest;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Arguments of `rbuild load`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// The archive [default: stdin]
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing
    #[arg(short, long)]
    pub quiet: bool,
    /// Of a multi-platform image, load only this platform, `os/arch[/variant]` [default: the
    /// whole index when the archive has every platform of it, else this
    /// machine's]
    #[arg(long, value_parser = super::pull::parse_platform)]
    pub platform: Option<Platform>,
}

/// One entry of Docker's `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Loads the archive; prints `Loaded image: NAME` per name (or the id of an unnamed image).
pub fn run(global: &Global, args: LoadArgs) -> Result<i32> {
    let state = global.state()?;
    // Unpacked under ingest/ (removed afterwards, or by the next cleanup if killed), on the
    // store's filesystem so that blobs are moved, not copied, into place.
    let dir = state.store.ingest_path();
    std::fs::create_dir_all(&dir)?;
    let whole = args.platform.is_none();
    let platform = args.platform.unwrap_or_else(Platform::host);
    let result = load(&state, &dir, args.input.as_deref(), &platform, whole);
    let _ = std::fs::remove_dir_all(&dir);
    for (names, id) in result? {
        if args.quiet {
            continue;
        }
        if names.is_empty() {
            println!("Loaded image ID: {id}");
        }
        for name in names {
            println!("Loaded image: {}", familiar(&name));
        }
    }
    Ok(0)
}

fn load(
    state: &State,
    dir: &Path,
    input: Option<&Path>,
    platform: &Platform,
    whole: bool,
) -> Result<Vec<(Vec<String>, Digest)>> {
    let reader: Box<dyn Read> = match input {
        Some(path) => Box::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, reader));
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    // `unpack` keeps every entry inside `dir` (no `..`, no absolute paths).
    archive
        .unpack(dir)
        .context("reading the archive (is it a `docker save` or OCI archive?)")?;
    // Docker's manifest.json names images (RepoTags) in both layouts.
    let docker: Option<Vec<DockerEntry>> = match std::fs::read(dir.join("manifest.json")) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).context("parsing manifest.json")?),
        Err(_) => None,
    };
    if dir.join("index.json").is_file() {
        return load_oci(state, dir, docker.as_deref(), platform, whole);
    }
    match docker {
        Some(entries) => load_docker(state, dir, &entries),
        None => bail!("the archive has neither index.json (OCI) nor manifest.json (Docker)"),
    }
}

/// Whether `entry` is an index whose every manifest, config and layer is in the store.
fn whole_index(state: &State, entry: &Descriptor) -> bool {
    let store = &state.store;
    let Ok(index) = store
        .read_blob(&entry.digest)
        .map_err(|_| ())
        .and_then(|b| serde_json::from_slice::<Index>(&b).map_err(|_| ()))
    else {
        return false;
    };
    !index.manifests.is_empty()
        && index.manifests.iter().all(|d| {
            store.manifest(&d.digest).is_ok_and(|m| {
                store.has_blob(&m.config.digest)
                    && m.layers.iter().all(|l| store.has_blob(&l.digest))
            })
        })
}

/// A path of the archive, resolved inside it (a symlink in the archive cannot lead out).
fn inside(dir: &Path, path: &str) -> Result<PathBuf> {
    rbuild_solver::contenthash::resolve_in_root(dir, path, true)
        .with_context(|| format!("{path} in the archive"))
}

/// Names from RepoTags, normalized.
fn normalized(tags: &[String]) -> Result<Vec<String>> {
    tags.iter()
        .map(|t| {
            reference::parse(t)
                .map(|r| r.whole())
                .map_err(|e| anyhow!("invalid name {t} in the archive: {e}"))
        })
        .collect()
}

fn load_oci(
    state: &State,
    dir: &Path,
    docker: Option<&[DockerEntry]>,
    platform: &Platform,
    whole: bool,
) -> Result<Vec<(Vec<String>, Digest)>> {
    let blobs = dir.join("blobs/sha256");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(digest) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if state.store.has_blob(&digest) {
                continue;
            }
            state
                .store
                .commit_file(&entry.path(), &digest)
                .with_context(|| format!("blob {digest} of the archive"))?;
        }
    }
    let index: Index = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)
        .context("parsing index.json")?;
    let mut loaded: Vec<(Vec<String>, Digest)> = Vec::new();
    for entry in index.manifests {
        let digest = state
            .store
            .manifest_for(&entry.digest, platform)?
            .ok_or_else(|| {
                anyhow!(
                    "index {} has no {platform} image in the archive",
                    entry.digest
                )
            })?;
        let m = state.store.manifest(&digest)?;
        let manifest = Descriptor {
            media_type: m.media_type.clone().unwrap_or_else(|| OCI_MANIFEST.into()),
            size: std::fs::metadata(state.store.blob_path(&digest))?.len(),
            digest,
            platform: None,
            annotations: BTreeMap::new(),
        };
        for layer in &m.layers {
            if !state.store.has_blob(&layer.digest) {
                bail!(
                    "the archive lacks layer {} of {}",
                    layer.digest,
                    manifest.digest
                );
            }
        }
        // A multi-platform index with every platform in the archive is kept whole (unless
        // --platform asks for one), so the name keeps all its platforms.
        let manifest = match whole && whole_index(state, &entry) {
            true => Descriptor {
                platform: None,
                annotations: BTreeMap::new(),
                ..entry.clone()
            },
            false => manifest,
        };
        let mut names = Vec::new();
        if let Some(name) = entry.annotations.get("io.containerd.image.name") {
            names.push(name.clone());
        } else if let Some(name) = entry.annotations.get(REF_NAME)
            && (name.contains('/') || name.contains(':'))
        {
            names.push(name.clone());
        }
        if let Some(entries) = docker {
            for e in entries {
                if e.config.ends_with(m.config.digest.hex()) {
                    names.extend(e.repo_tags.clone().unwrap_or_default());
                }
            }
        }
        let mut names = normalized(&names)?;
        names.sort();
        names.dedup();
        for name in &names {
            state.store.tag(name, &manifest)?;
        }
        match loaded.iter_mut().find(|(_, id)| *id == m.config.digest) {
            Some((known, _)) => known.extend(names),
            None => loaded.push((names, m.config.digest.clone())),
        }
    }
    Ok(loaded)
}

fn load_docker(
    state: &State,
    dir: &Path,
    entries: &[DockerEntry],
) -> Result<Vec<(Vec<String>, Digest)>> {
    let mut loaded = Vec::new();
    for entry in entries {
        let config = std::fs::read(inside(dir, &entry.config)?)
            .with_context(|| format!("reading {}", entry.config))?;
        let (config_digest, config_size) = state.store.write_blob(&config)?;
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let path = inside(dir, layer)?;
            let mut head = [0u8; 4];
            let n = std::fs::File::open(&path)
                .and_then(|mut f| f.read(&mut head))
                .with_context(|| format!("reading {layer}"))?;
            let media_type = match &head[..n] {
                [0x1f, 0x8b, ..] => OCI_LAYER_GZIP,
                [0x28, 0xb5, 0x2f, 0xfd] => OCI_LAYER_ZSTD,
                _ => OCI_LAYER_TAR,
            };
            let mut ingest = state.store.ingest()?;
            std::io::copy(&mut std::fs::File::open(&path)?, &mut ingest)?;
            let (digest, size) = ingest.commit(None)?;
            layers.push(Descriptor {
                media_type: media_type.into(),
                digest,
                size,
                platform: None,
                annotations: BTreeMap::new(),
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: OCI_CONFIG.into(),
                digest: config_digest.clone(),
                size: config_size,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest)?;
        let (digest, size) = state.store.write_blob(&bytes)?;
        let descriptor = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let names = normalized(&entry.repo_tags.clone().unwrap_or_default())?;
        for name in &names {
            state.store.tag(name, &descriptor)?;
        }
        loaded.push((names, config_digest));
    }
    Ok(loaded)
}

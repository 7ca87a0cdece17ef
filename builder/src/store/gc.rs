//! Disk usage and garbage collection of the state directory (`rbuild du`, `rbuild prune`).
//!
//! What tagged images need is never removed: their manifests (and the indexes that list them),
//! configs, layer blobs, the snapshots of their layers (the only copy of a layer a step made)
//! and the compressed blobs exports made of those layers. Everything else is build cache: the
//! cache index's records and the blobs and snapshots only they reference, downloads, and cache
//! mount directories. Pruning removes records (all, those unused for a while, or the least
//! recently used until the cache fits a size), then every blob and snapshot nothing refers to
//! any more. It runs holding the state directory alone ([`State::open_exclusive`]), so no
//! build is running.

use crate::store::state::State;
use crate::store::{Context, Result};
use rbuild_solver::{Digest, Output};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Disk usage of a directory tree (allocated blocks; hard links counted once).
pub fn tree_size(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// What tagged images need: blob digests and layer diff ids.
#[derive(Default)]
struct Needed {
    blobs: HashSet<Digest>,
    diff_ids: HashSet<String>,
}

fn needed_by_images(state: &State) -> Result<Needed> {
    let store = &state.store;
    let mut needed = Needed::default();
    let mut pending: Vec<Digest> = store
        .index()?
        .manifests
        .into_iter()
        .map(|d| d.digest)
        .collect();
    while let Some(digest) = pending.pop() {
        if !needed.blobs.insert(digest.clone()) || !store.has_blob(&digest) {
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(&store.read_blob(&digest)?)
            .with_context(|| format!("parsing {digest}"))?;
        // An index lists manifests; a manifest names a config and layers.
        let digests = |key: &str| -> Vec<Digest> {
            value[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d["digest"].as_str().and_then(Digest::parse))
                        .collect()
                })
                .unwrap_or_default()
        };
        pending.extend(digests("manifests"));
        needed.blobs.extend(digests("layers"));
        if let Some(config) = value["config"]["digest"].as_str().and_then(Digest::parse) {
            needed.blobs.insert(config.clone());
            if let Ok(bytes) = store.read_blob(&config)
                && let Ok(config) = serde_json::from_slice::<serde_json::Value>(&bytes)
                && let Some(ids) = config["rootfs"]["diff_ids"].as_array()
            {
                needed
                    .diff_ids
                    .extend(ids.iter().filter_map(|i| i.as_str().map(str::to_string)));
            }
        }
    }
    // The compressed blobs made for exports of their layers go with them.
    for (diff_id, digest) in state.cache.compressed_blobs()? {
        if needed.diff_ids.contains(diff_id.as_str()) {
            needed.blobs.insert(digest);
        }
    }
    Ok(needed)
}

/// Space used by one kind of data, and how much of it pruning could free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes on disk.
    pub size: u64,
    /// Bytes not needed by any tagged image.
    pub reclaimable: u64,
}

/// `rbuild du`'s numbers.
#[derive(Debug, Default)]
pub struct DiskUsage {
    /// Layer, config and manifest blobs.
    pub blobs: Usage,
    /// Unpacked layers.
    pub snapshots: Usage,
    /// RUN --mount=type=cache directories.
    pub cache_mounts: Usage,
    /// ADD downloads.
    pub downloads: Usage,
    /// Records in the cache index.
    pub records: usize,
}

fn blob_files(state: &State) -> Vec<(Digest, u64)> {
    let dir = state.root.join("content/blobs/sha256");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let digest = Digest::parse(&format!("sha256:{name}"))?;
                    let size = e.metadata().ok()?.blocks() * 512;
                    Some((digest, size))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Snapshot directories (hex of the diff id) and their sizes.
fn snapshot_dirs(state: &State) -> Vec<(String, u64)> {
    let root = state.snapshots.root();
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
                        .then(|| (name, tree_size(&e.path())))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Measures the state directory.
pub fn disk_usage(state: &State) -> Result<DiskUsage> {
    let needed = needed_by_images(state)?;
    let mut usage = DiskUsage {
        records: state.cache.records()?.len(),
        ..DiskUsage::default()
    };
    for (digest, size) in blob_files(state) {
        usage.blobs.size += size;
        if !needed.blobs.contains(&digest) {
            usage.blobs.reclaimable += size;
        }
    }
    for (hex, size) in snapshot_dirs(state) {
        usage.snapshots.size += size;
        if !needed.diff_ids.contains(&format!("sha256:{hex}")) {
            usage.snapshots.reclaimable += size;
        }
    }
    for (usage, dir) in [
        (&mut usage.cache_mounts, "cache-mounts"),
        (&mut usage.downloads, "downloads"),
    ] {
        let size = tree_size(&state.root.join(dir));
        *usage = Usage {
            size,
            reclaimable: size,
        };
    }
    Ok(usage)
}

/// What to prune.
#[derive(Debug, Default)]
pub struct PruneOptions {
    /// Also cache mounts, and records whose data tagged images need.
    pub all: bool,
    /// Keep records used more recently than this many seconds ago.
    pub keep_recent: Option<u64>,
    /// Remove least recently used records only until the build cache takes at most this many
    /// bytes.
    pub keep_storage: Option<u64>,
}

/// What pruning did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Cache records removed.
    pub records: usize,
    /// Bytes freed.
    pub freed: u64,
}

/// Removes build cache as `options` says, then every blob and snapshot nothing refers to.
pub fn prune(state: &State, options: &PruneOptions) -> Result<Pruned> {
    let needed = needed_by_images(state)?;
    let mut records = state.cache.records()?;
    // Least recently used first.
    records.sort_by(|a, b| a.2.cmp(&b.2));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let needs_only_images = |output: &Output| {
        output
            .layers
            .iter()
            .all(|l| needed.blobs.contains(&l.digest))
    };
    // Measured once; the rest of the function works from these.
    let blob_sizes: HashMap<Digest, u64> = blob_files(state).into_iter().collect();
    let snapshot_sizes: HashMap<String, u64> = snapshot_dirs(state).into_iter().collect();
    // How many remaining records use each layer, for --keep-storage's accounting.
    let mut users: HashMap<Digest, usize> = HashMap::new();
    for (_, output, _) in &records {
        for layer in &output.layers {
            *users.entry(layer.digest.clone()).or_default() += 1;
        }
    }
    let mut cache_bytes: u64 = blob_sizes
        .iter()
        .filter(|(d, _)| !needed.blobs.contains(*d))
        .map(|(_, size)| size)
        .chain(
            snapshot_sizes
                .iter()
                .filter(|(hex, _)| !needed.diff_ids.contains(&format!("sha256:{hex}")))
                .map(|(_, size)| size),
        )
        .sum();
    let mut pruned = Pruned::default();
    let mut removed = vec![false; records.len()];
    for (i, (key, output, used)) in records.iter().enumerate() {
        if let Some(limit) = options.keep_storage
            && cache_bytes <= limit
        {
            break;
        }
        if let Some(recent) = options.keep_recent
            && now.saturating_sub(crate::units::epoch_of(used)) < recent
        {
            continue;
        }
        if !options.all && needs_only_images(output) {
            continue;
        }
        state.cache.remove(key)?;
        removed[i] = true;
        pruned.records += 1;
        for layer in &output.layers {
            let count = users.entry(layer.digest.clone()).or_default();
            *count = count.saturating_sub(1);
            if *count == 0 && !needed.blobs.contains(&layer.digest) {
                cache_bytes = cache_bytes
                    .saturating_sub(blob_sizes.get(&layer.digest).copied().unwrap_or(0))
                    .saturating_sub(
                        snapshot_sizes
                            .get(layer.diff_id.hex())
                            .copied()
                            .unwrap_or(0),
                    );
            }
        }
    }
    // Everything still referenced: by images, or by the records that remain.
    let mut keep_blobs = needed.blobs;
    let mut keep_diff_ids = needed.diff_ids;
    for ((_, output, _), gone) in records.iter().zip(&removed) {
        if !gone {
            for layer in &output.layers {
                keep_blobs.insert(layer.digest.clone());
                keep_diff_ids.insert(layer.diff_id.to_string());
            }
        }
    }
    // Compressed blobs made for exports stay as long as their layer does.
    let compressed = state.cache.compressed_blobs()?;
    for (diff_id, digest) in &compressed {
        if keep_diff_ids.contains(diff_id.as_str()) {
            keep_blobs.insert(digest.clone());
        }
    }
    for (digest, size) in &blob_sizes {
        if !keep_blobs.contains(digest) {
            std::fs::remove_file(state.store.blob_path(digest))
                .with_context(|| format!("removing blob {digest}"))?;
            pruned.freed += size;
        }
    }
    let forgotten: Vec<Digest> = compressed
        .into_iter()
        .map(|(_, digest)| digest)
        .filter(|d| !keep_blobs.contains(d))
        .collect();
    state.cache.forget_compressed(&forgotten)?;
    state.blob_sources().retain(|d| keep_blobs.contains(d));
    for (hex, size) in &snapshot_sizes {
        if !keep_diff_ids.contains(&format!("sha256:{hex}")) {
            let dir = state.snapshots.root().join(hex);
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing snapshot {}", dir.display()))?;
            pruned.freed += size;
        }
    }
    // Flattened views hold links to snapshots' files: made again when a step needs them.
    state
        .snapshots
        .remove_flattened()
        .context("removing flattened layer views")?;
    crate::store::origins::sweep(state);
    // Downloads are build cache; cache mounts only go with --all.
    let unconditional = options.keep_recent.is_none() && options.keep_storage.is_none();
    if unconditional {
        let mut dirs = vec![(state.root.join("downloads"), "downloads")];
        if options.all {
            dirs.push((state.cache_mounts_dir(), "cache mounts"));
        }
        for (dir, what) in dirs {
            if dir.exists() {
                pruned.freed += tree_size(&dir);
                std::fs::remove_dir_all(&dir).with_context(|| format!("removing {what}"))?;
            }
        }
    }
    Ok(pruned)
}

/// Checks the state directory's integrity: every blob's content matches its digest, every
/// tagged image's blobs exist, every cache record's layers have their blob or snapshot, and
/// every layer held only as a snapshot still gives its diff id.
/// Returns the problems found (none means consistent). Run it holding the state directory
/// alone ([`State::open_exclusive`]), so that no build changes it meanwhile.
pub fn check(state: &State) -> Result<Vec<String>> {
    use sha2::{Digest as _, Sha256};
    let mut problems = Vec::new();
    for (digest, _) in blob_files(state) {
        let path = state.store.blob_path(&digest);
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = Digest::from_hasher(hasher);
        if actual != digest {
            problems.push(format!("blob {digest} has content {actual}"));
        }
    }
    let needed = needed_by_images(state)?;
    for digest in &needed.blobs {
        // An uncompressed layer made by a step is held as its snapshot.
        if !state.store.has_blob(digest) && !state.snapshots.has(digest.as_str()) {
            problems.push(format!(
                "a tagged image needs blob {digest}, which is missing"
            ));
        }
    }
    // A layer with a blob may have no snapshot: pulled images are tagged once their blobs are
    // in, and unpacked when a step first needs them (a build that fails before that, or is
    // killed while unpacking, leaves them so). That is a cache not yet filled, not damage: the
    // check above already reports a layer that has neither.
    // Layers held only as snapshots (no blob): their tar must still hash to the diff id.
    let mut snapshot_only: HashSet<Digest> = needed
        .blobs
        .iter()
        .filter(|d| !state.store.has_blob(d) && state.snapshots.has(d.as_str()))
        .cloned()
        .collect();
    for (key, output, _) in state.cache.records()? {
        for layer in &output.layers {
            if !crate::store::layer::has_layer(state, &layer.digest, &layer.media_type) {
                problems.push(format!(
                    "cache record {key} names layer {}, which is missing",
                    layer.digest
                ));
            } else if !state.store.has_blob(&layer.digest) {
                snapshot_only.insert(layer.digest.clone());
            }
        }
    }
    for diff_id in snapshot_only {
        let actual = crate::store::layer::snapshot_diff_id(state, &diff_id)?;
        if actual != diff_id {
            problems.push(format!(
                "the snapshot of layer {diff_id} has changed: it gives {actual}"
            ));
        }
    }
    Ok(problems)
}

//! Compressed layer blobs for images that leave the machine (pushes, OCI archives).
//!
//! Layers made by steps are uncompressed and live as snapshots (see
//! [`crate::store::layer::commit_upper`]). When an image is pushed or exported, each such layer is
//! written as a tar from its snapshot, compressed on the way, checked against its diff id and
//! stored as a blob; the cache index remembers the blob per diff id and media type, so the
//! next push or export of any image with that layer reuses it. Layers that are compressed
//! already (pulled ones) are used as they are unless `force` asks for the other compression,
//! as BuildKit's `force-compression` does.

use crate::export::{Error, Result};
use crate::store::layer::oci_layer_media_type;
use crate::store::layout::{
    DOCKER_CONFIG, DOCKER_MANIFEST, Descriptor, Manifest, OCI_LAYER_GZIP, OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
};
use crate::store::state::State;
use rayon::prelude::*;
use rbuild_frontend::image::Image;
use rbuild_solver::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// How layers are compressed for an export (`compression=`, `compression-level=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// The OCI layer media type to produce.
    pub media_type: &'static str,
    /// The level (gzip 0–9, zstd 1–22); `None` for the codec's default.
    pub level: Option<u32>,
    /// Recompress layers that are compressed otherwise already.
    pub force: bool,
}

impl Default for Compression {
    fn default() -> Compression {
        Compression {
            media_type: OCI_LAYER_GZIP,
            level: None,
            force: false,
        }
    }
}

impl Compression {
    /// Parses `compression=`'s value: `gzip`, `zstd` or `uncompressed`.
    pub fn with_kind(self, kind: &str) -> Result<Compression> {
        let media_type = match kind {
            "gzip" => OCI_LAYER_GZIP,
            "zstd" => OCI_LAYER_ZSTD,
            "uncompressed" => OCI_LAYER_TAR,
            other => {
                return Err(Error::Other(format!(
                    "unknown compression {other:?} (expected gzip, zstd or uncompressed)"
                )));
            }
        };
        Ok(Compression { media_type, ..self })
    }
}

/// Where a copy of a new blob's bytes goes while the blob is written: a push streams each
/// layer it compresses to the registry as it is made (see `commands::push`).
pub trait Tap: Send {
    /// The next bytes of the blob.
    fn write(&mut self, bytes: &[u8]);
    /// The blob is whole and committed. A tap dropped without this abandons what it got.
    fn done(self: Box<Self>);
}

/// Makes a [`Tap`] for each new blob an export writes, or none.
pub type Taps = Box<dyn Fn() -> Option<Box<dyn Tap>> + Send + Sync>;

/// Counts the uncompressed bytes an export compresses (or writes), for progress; with
/// [`Counter::with_taps`], also hands the bytes of every new blob to a tap.
#[derive(Default)]
pub struct Counter {
    bytes: AtomicU64,
    taps: Option<Taps>,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("bytes", &self.bytes)
            .field("taps", &self.taps.is_some())
            .finish()
    }
}

impl Counter {
    /// A counter whose new blobs are also written to the taps `taps` makes.
    pub fn with_taps(taps: Taps) -> Counter {
        Counter {
            bytes: AtomicU64::new(0),
            taps: Some(taps),
        }
    }

    /// Bytes counted so far.
    pub fn get(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    fn add(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    fn tap(&self) -> Option<Box<dyn Tap>> {
        self.taps.as_ref().and_then(|make| make())
    }
}

/// A new blob's file, and the tap that sees its bytes too.
struct Tapped<W> {
    file: W,
    tap: Option<Box<dyn Tap>>,
}

impl<W: Write> Write for Tapped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(tap) = &mut self.tap {
            tap.write(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Hashes (for the diff id check) and counts the uncompressed stream on its way to the
/// compressor.
struct Tee<'a, W> {
    inner: W,
    hasher: Sha256,
    counter: &'a Counter,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.counter.add(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A compressing writer that hands its inner writer back.
enum Encoder<W: Write> {
    Gzip(crate::export::pgzip::ParGzWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    fn new(inner: W, compression: &Compression) -> Result<Encoder<W>> {
        Ok(match compression.media_type {
            OCI_LAYER_GZIP => Encoder::Gzip(crate::export::pgzip::ParGzWriter::new(
                inner,
                compression
                    .level
                    .map_or(crate::export::pgzip::DEFAULT_LEVEL, |l| l.min(9)),
            )?),
            OCI_LAYER_ZSTD => {
                let level = compression.level.map_or(3, |l| l.clamp(1, 22) as i32);
                let mut encoder = zstd::stream::write::Encoder::new(inner, level)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                encoder.multithread(threads as u32)?;
                Encoder::Zstd(encoder)
            }
            _ => Encoder::None(inner),
        })
    }

    fn finish(self) -> std::io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// The blob to export for the layer `layer` (diff id `diff_id`) compressed as `compression`
/// asks: the layer's own blob when it can stay as it is, else a blob made from it (or from its
/// snapshot) and remembered.
pub fn layer_blob(
    state: &State,
    layer: &Descriptor,
    diff_id: &Digest,
    compression: &Compression,
    counter: &Counter,
) -> Result<Descriptor> {
    let media_type = oci_layer_media_type(&layer.media_type)?;
    let keep =
        media_type == compression.media_type || (media_type != OCI_LAYER_TAR && !compression.force);
    // A blob known elsewhere (imported cache) stays there: a push mounts it, and what needs
    // its bytes fetches it first (see crate::remotecache::fetch_missing).
    if keep && (state.store.has_blob(&layer.digest) || state.lazy.knows(&layer.digest)) {
        return Ok(layer.clone());
    }
    let target = Descriptor {
        media_type: compression.media_type.to_string(),
        platform: None,
        annotations: layer.annotations.clone(),
        ..layer.clone()
    };
    if compression.media_type == OCI_LAYER_TAR {
        // The blob of an uncompressed layer is its tar, whose digest is the diff id.
        if !state.store.has_blob(diff_id) {
            write_blob(state, layer, diff_id, compression, counter)?;
        }
        let size = std::fs::metadata(state.store.blob_path(diff_id))?.len();
        return Ok(Descriptor {
            digest: diff_id.clone(),
            size,
            ..target
        });
    }
    if let Some((digest, size)) = state.cache.compressed(diff_id, compression.media_type)?
        && state.store.has_blob(&digest)
    {
        return Ok(Descriptor {
            digest,
            size,
            ..target
        });
    }
    let compressing = rbuild_solver::trace::span("push", "compress", || Some(diff_id.to_string()));
    let (digest, size) = write_blob(state, layer, diff_id, compression, counter)?;
    drop(compressing);
    state
        .cache
        .remember_compressed(diff_id, compression.media_type, &digest, size)?;
    Ok(Descriptor {
        digest,
        size,
        ..target
    })
}

/// Writes the layer as a new blob compressed as asked: from its blob if it has one, else from
/// its snapshot. The uncompressed stream must hash to `diff_id`.
fn write_blob(
    state: &State,
    layer: &Descriptor,
    diff_id: &Digest,
    compression: &Compression,
    counter: &Counter,
) -> Result<(Digest, u64)> {
    let fill = |tee: &mut dyn Write| -> Result<()> {
        if state.store.has_blob(&layer.digest) {
            let file = std::fs::File::open(state.store.blob_path(&layer.digest)).map_err(
                crate::errors::io(format!("opening layer blob {}", layer.digest)),
            )?;
            let mut reader = crate::store::layer::decompress(
                BufReader::with_capacity(1 << 20, file),
                &layer.media_type,
            )?;
            std::io::copy(&mut reader, tee).map_err(crate::errors::io(format!(
                "recompressing layer {}",
                layer.digest
            )))?;
        } else if state.snapshots.has(diff_id.as_str()) {
            let dir = state.snapshots.layer_dir(diff_id.as_str());
            rbuild_runner::diff::write_layer(&dir, tee).map_err(crate::errors::io(format!(
                "archiving the snapshot of layer {diff_id}"
            )))?;
        } else {
            return Err(Error::Other(format!(
                "layer {diff_id} is missing: neither its blob nor its snapshot is here"
            )));
        }
        Ok(())
    };
    let check = |actual: &Digest| {
        if actual != diff_id {
            return Err(Error::Other(format!(
                "layer {diff_id} no longer matches its content (it gives {actual}); \
                 run `rbuild check`, and build again with --no-cache"
            )));
        }
        Ok(())
    };
    let (_, digest, size) = compress_to_blob(state, compression, counter, fill, check)?;
    Ok((digest, size))
}

/// Writes the tar `fill` writes as a new blob compressed as `compression` asks; returns the
/// tar's digest (its diff id) and the blob's digest and size. `check` sees the diff id before
/// the blob is committed, and may refuse it.
fn compress_to_blob(
    state: &State,
    compression: &Compression,
    counter: &Counter,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
    check: impl FnOnce(&Digest) -> Result<()>,
) -> Result<(Digest, Digest, u64)> {
    let ingest = Tapped {
        file: state.store.ingest()?,
        tap: counter.tap(),
    };
    let encoder = Encoder::new(BufWriter::with_capacity(1 << 20, ingest), compression)?;
    // The parallel gzip writer gathers its own blocks: a buffer before it would only copy
    // every byte once more (a BufWriter of no capacity passes each write through).
    let buffer = match encoder {
        Encoder::Gzip(_) => 0,
        _ => 1 << 20,
    };
    let mut tee = Tee {
        inner: BufWriter::with_capacity(buffer, encoder),
        hasher: Sha256::new(),
        counter,
    };
    fill(&mut tee)?;
    let diff_id = Digest::from_hasher(tee.hasher.clone());
    check(&diff_id)?;
    let encoder = tee.inner.into_inner().map_err(|e| e.into_error())?;
    let mut ingest = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
    let expected = (compression.media_type == OCI_LAYER_TAR).then_some(&diff_id);
    // The tap's upload may end while the file is synced to disk (commit's fsync took 13 ms
    // of a 114 MiB layer's push): it has every byte, and they are the right ones.
    if let Some(tap) = ingest.tap.take()
        && expected.is_none_or(|e| *e == ingest.file.digest())
    {
        tap.done();
    }
    let (digest, size) = ingest.file.commit(expected)?;
    Ok((diff_id, digest, size))
}

/// A blob of the tar of directory `dir` (a RUN cache mount's), compressed as `compression`
/// asks; its descriptor and diff id. The tar is written as layers are (sorted, so the same
/// files give the same blob).
pub fn directory_blob(
    state: &State,
    dir: &std::path::Path,
    compression: &Compression,
    counter: &Counter,
) -> Result<(Descriptor, Digest)> {
    let fill = |tee: &mut dyn Write| -> Result<()> {
        rbuild_runner::diff::write_layer(dir, tee)
            .map_err(crate::errors::io(format!("archiving {}", dir.display())))?;
        Ok(())
    };
    let (diff_id, digest, size) = compress_to_blob(state, compression, counter, fill, |_| Ok(()))?;
    let descriptor = Descriptor {
        media_type: compression.media_type.to_string(),
        digest,
        size,
        platform: None,
        annotations: Default::default(),
    };
    Ok((descriptor, diff_id))
}

/// The manifest to export for the stored manifest `manifest`: the same one if every layer
/// blob can stay as it is, else a new one (stored as a blob) naming compressed blobs, made in
/// parallel. Returns its descriptor and bytes.
pub fn export_manifest(
    state: &State,
    manifest: &Descriptor,
    compression: &Compression,
    counter: &Counter,
) -> Result<(Descriptor, Vec<u8>)> {
    let bytes = state.store.read_blob(&manifest.digest)?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(crate::errors::json(format!(
        "parsing manifest {}",
        manifest.digest
    )))?;
    let config: Image = serde_json::from_slice(&state.store.read_blob(&m.config.digest)?).map_err(
        crate::errors::json(format!("parsing config {}", m.config.digest)),
    )?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::Other(format!(
            "image {} is inconsistent: {} layers but {} diff ids",
            manifest.digest,
            m.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let docker = m.media_type.as_deref() == Some(DOCKER_MANIFEST);
    let layers = m
        .layers
        .par_iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| {
            let diff_id = Digest::parse(diff_id)
                .ok_or_else(|| Error::Other(format!("bad diff id {diff_id}")))?;
            let mut blob = layer_blob(state, layer, &diff_id, compression, counter)?;
            if blob.digest != layer.digest && docker {
                blob.media_type = docker_layer_media_type(&blob.media_type).to_string();
            }
            Ok(blob)
        })
        .collect::<Result<Vec<_>>>()?;
    if layers == m.layers {
        return Ok((manifest.clone(), bytes));
    }
    let new = Manifest { layers, ..m };
    let bytes = serde_json::to_vec(&new)?;
    let (digest, size) = state.store.write_blob(&bytes)?;
    Ok((
        Descriptor {
            digest,
            size,
            ..manifest.clone()
        },
        bytes,
    ))
}

/// The stored manifest `manifest` with Docker schema 2 media types (manifest, config, gzip
/// and plain layers; zstd layers have no Docker type and keep theirs), as `docker load` and
/// BuildKit's Docker exporter expect. The new manifest is stored; its descriptor returned.
pub fn with_docker_media_types(state: &State, manifest: &Descriptor) -> Result<Descriptor> {
    if manifest.media_type == DOCKER_MANIFEST {
        return Ok(manifest.clone());
    }
    let m = state.store.manifest(&manifest.digest)?;
    let docker = Manifest {
        schema_version: 2,
        media_type: Some(DOCKER_MANIFEST.into()),
        config: Descriptor {
            media_type: DOCKER_CONFIG.into(),
            ..m.config.clone()
        },
        layers: m
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: docker_layer_media_type(&l.media_type).to_string(),
                ..l.clone()
            })
            .collect(),
        annotations: m.annotations.clone(),
    };
    let bytes = serde_json::to_vec(&docker)?;
    let (digest, size) = state.store.write_blob(&bytes)?;
    Ok(Descriptor {
        media_type: DOCKER_MANIFEST.into(),
        digest,
        size,
        platform: None,
        annotations: Default::default(),
    })
}

/// Docker schema 2's name for an OCI layer media type.
fn docker_layer_media_type(oci: &str) -> &str {
    match oci {
        OCI_LAYER_GZIP => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        OCI_LAYER_TAR => "application/vnd.docker.image.rootfs.diff.tar",
        other => other,
    }
}

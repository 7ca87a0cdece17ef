//! Layers between the snapshot store and the content store: compressing a finished step into
//! a blob, and unpacking blobs into snapshots when a step needs them as its root filesystem.

use crate::store::layout::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD};
use crate::store::state::State;
use crate::store::{Context, Result};
use rayon::prelude::*;
use rbuild_runner::Upper;
use rbuild_solver::{Digest, OutputLayer};
use sha2::{Digest as _, Sha256};
use std::io::{BufRead, BufReader, Read, Write};

/// A writer that hashes and counts what passes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> HashWriter<W> {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through it.
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Makes the changes in `upper` a layer: a snapshot named by its diff id. Returns `None` (and
/// discards `upper`) if nothing changed.
///
/// No blob is written: the layer is uncompressed (its digest is its diff id) and its snapshot
/// holds its content. [`export_manifest`] makes compressed blobs from snapshots when an image
/// leaves the machine, as BuildKit does with Docker's layer store; compressing every step's
/// layer while building cost more than the rest of a big COPY together.
pub fn commit_upper(state: &State, upper: Upper, created: &str) -> Result<Option<OutputLayer>> {
    let _span = rbuild_solver::trace::span("layer", "diff and commit", || None);
    if rbuild_runner::diff::is_empty(&upper.fs)? {
        state.snapshots.discard(upper)?;
        return Ok(None);
    }
    if let Some(epoch) = crate::units::source_date_epoch() {
        rbuild_runner::diff::clamp_mtimes(&upper.fs, epoch as i64)
            .context("clamping file times to SOURCE_DATE_EPOCH")?;
    }
    let mut tar = HashWriter::new(std::io::sink());
    rbuild_runner::diff::write_layer(&upper.fs, &mut tar)
        .with_context(|| format!("archiving the changes in {}", upper.fs.display()))?;
    let diff_id = Digest::from_hasher(tar.hasher);
    state
        .snapshots
        .commit(upper, diff_id.as_str())
        .with_context(|| format!("committing snapshot {diff_id}"))?;
    Ok(Some(OutputLayer {
        digest: diff_id.clone(),
        diff_id,
        size: tar.size,
        media_type: OCI_LAYER_TAR.into(),
        created: Some(created.to_string()),
    }))
}

/// The diff id the snapshot named `diff_id` gives now (differing only if it was damaged).
pub fn snapshot_diff_id(state: &State, diff_id: &Digest) -> Result<Digest> {
    let mut tar = HashWriter::new(std::io::sink());
    let dir = state.snapshots.layer_dir(diff_id.as_str());
    rbuild_runner::diff::write_layer(&dir, &mut tar)
        .with_context(|| format!("reading the snapshot of {diff_id}"))?;
    Ok(Digest::from_hasher(tar.hasher))
}

/// Whether the layer blob `digest` of type `media_type` is here: as a blob, or, for an
/// uncompressed layer, as the snapshot its content comes from (see [`commit_upper`]).
pub fn has_layer(state: &State, digest: &Digest, media_type: &str) -> bool {
    state.store.has_blob(digest)
        || (oci_layer_media_type(media_type).ok() == Some(OCI_LAYER_TAR)
            && state.snapshots.has(digest.as_str()))
}

/// Whether the layer can be had: [`has_layer`], or its blob is known elsewhere
/// ([`crate::store::lazy`]) and will be fetched when needed.
pub fn can_have_layer(state: &State, digest: &Digest, media_type: &str) -> bool {
    has_layer(state, digest, media_type) || state.lazy.knows(digest)
}

/// The OCI media type for a layer blob of any (Docker or OCI) layer media type.
pub fn oci_layer_media_type(media_type: &str) -> Result<&'static str> {
    Ok(match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" | OCI_LAYER_GZIP => OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar.zstd" | OCI_LAYER_ZSTD => OCI_LAYER_ZSTD,
        "application/vnd.docker.image.rootfs.diff.tar" | OCI_LAYER_TAR => OCI_LAYER_TAR,
        other => bail!("unsupported layer media type {other}"),
    })
}

/// A reader of the tar in a layer blob of type `media_type`. Gzip blobs may have several
/// members (parallel compressors write them).
pub fn decompress<'a, R: BufRead + 'a>(blob: R, media_type: &str) -> Result<Box<dyn Read + 'a>> {
    Ok(match oci_layer_media_type(media_type)? {
        OCI_LAYER_GZIP => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        OCI_LAYER_ZSTD => Box::new(zstd::stream::read::Decoder::with_buffer(blob)?),
        _ => Box::new(blob),
    })
}

/// Makes sure every layer has a snapshot, unpacking missing ones from their blobs (in
/// parallel). Each unpacked layer is checked against its diff id.
pub fn ensure_snapshots(state: &State, layers: &[OutputLayer]) -> Result<()> {
    ensure_snapshots_reporting(state, layers, &|_, _| {})
}

/// [`ensure_snapshots`], telling `report` when each layer's unpacking starts (`false`) and
/// ends (`true`), so that a step can say what it waits for.
pub fn ensure_snapshots_reporting(
    state: &State,
    layers: &[OutputLayer],
    report: &(dyn Fn(&OutputLayer, bool) + Sync),
) -> Result<()> {
    let one = |layer: &&OutputLayer| -> Result<()> {
        report(layer, false);
        let _span = rbuild_solver::trace::span("pull", "unpack", || Some(layer.digest.to_string()));
        unpack(state, layer)?;
        report(layer, true);
        Ok(())
    };
    // Every step asks, and its layers are almost always there: rayon's workers are woken only
    // for two layers or more to unpack (once woken, they spin a while, taking the core from
    // the step's sandbox).
    let missing: Vec<&OutputLayer> = layers
        .iter()
        .filter(|l| !state.snapshots.has(l.diff_id.as_str()))
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [layer] => one(layer),
        _ => missing.par_iter().try_for_each(one),
    }
}

fn unpack(state: &State, layer: &OutputLayer) -> Result<()> {
    let path = state.store.blob_path(&layer.digest);
    if !path.exists() && layer.digest == layer.diff_id {
        bail!(
            "layer {} is gone: its snapshot was removed and no blob of it was kept; \
             build again with --no-cache",
            layer.diff_id
        );
    }
    let file = std::fs::File::open(&path)
        .with_context(|| format!("opening layer blob {}", layer.digest))?;
    unpack_from(state, layer, file)
}

/// Unpacks `layer` as its blob is downloaded (see [`crate::store::follow`]): the snapshot is
/// committed only if the download succeeded and the content gives the layer's diff id;
/// otherwise nothing is kept (and a build unpacks the blob later, as usual). `false` if the
/// download never started.
pub fn unpack_following(
    state: &State,
    layer: &OutputLayer,
    follow: &crate::store::follow::Follow,
) -> Result<bool> {
    let Some(reader) = follow.reader() else {
        return Ok(false);
    };
    unpack_from(state, layer, reader)?;
    Ok(true)
}

/// Unpacks the blob `blob` of `layer` into a snapshot, checking the diff id.
fn unpack_from(state: &State, layer: &OutputLayer, blob: impl std::io::Read) -> Result<()> {
    let file = BufReader::with_capacity(1 << 20, blob);
    let mut reader = HashReader {
        inner: decompress(file, &layer.media_type)?,
        hasher: Sha256::new(),
    };
    let upper = state.snapshots.new_upper()?;
    let result = rbuild_runner::extract::extract_layer(&mut reader, &upper.fs)
        .and_then(|()| std::io::copy(&mut reader, &mut std::io::sink()).map(|_| ()));
    if let Err(e) = result {
        state.snapshots.discard(upper)?;
        return Err(e).with_context(|| format!("unpacking layer {}", layer.digest));
    }
    let diff_id = Digest::from_hasher(reader.hasher);
    if diff_id != layer.diff_id {
        state.snapshots.discard(upper)?;
        bail!(
            "layer {} unpacks to {diff_id}, but the image config says {}",
            layer.digest,
            layer.diff_id
        );
    }
    state.snapshots.commit(upper, layer.diff_id.as_str())?;
    Ok(())
}

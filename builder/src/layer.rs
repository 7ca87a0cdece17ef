//! Layers between the snapshot store and the content store: compressing a finished step into
//! a blob, and unpacking blobs into snapshots when a step needs them as its root filesystem.

use crate::state::State;
use crate::store::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD};
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use rbuild_runner::Upper;
use rbuild_solver::{Digest, OutputLayer};
use sha2::{Digest as _, Sha256};
use std::io::{BufReader, BufWriter, Read, Write};

/// A writer that hashes what passes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
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

/// Makes the changes in `upper` a layer: a gzip blob in the content store and a snapshot named
/// by its diff id. Returns `None` (and discards `upper`) if nothing changed.
pub fn commit_upper(state: &State, upper: Upper, created: &str) -> Result<Option<OutputLayer>> {
    if rbuild_runner::diff::is_empty(&upper.fs)? {
        state.snapshots.discard(upper)?;
        return Ok(None);
    }
    if let Some(epoch) = crate::timefmt::source_date_epoch() {
        rbuild_runner::diff::clamp_mtimes(&upper.fs, epoch as i64)
            .context("clamping file times to SOURCE_DATE_EPOCH")?;
    }
    let ingest = state.store.ingest()?;
    let gz = flate2::write::GzEncoder::new(
        BufWriter::with_capacity(1 << 20, ingest),
        flate2::Compression::default(),
    );
    let mut tar = HashWriter {
        inner: BufWriter::with_capacity(1 << 20, gz),
        hasher: Sha256::new(),
    };
    rbuild_runner::diff::write_layer(&upper.fs, &mut tar)
        .with_context(|| format!("archiving the changes in {}", upper.fs.display()))?;
    let diff_id = Digest::from_hasher(tar.hasher);
    let gz = tar.inner.into_inner().map_err(|e| e.into_error())?;
    let ingest = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
    let (digest, size) = ingest.commit(None)?;
    state
        .snapshots
        .commit(upper, diff_id.as_str())
        .with_context(|| format!("committing snapshot {diff_id}"))?;
    Ok(Some(OutputLayer {
        diff_id,
        digest,
        size,
        media_type: OCI_LAYER_GZIP.into(),
        created: Some(created.to_string()),
    }))
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

/// Makes sure every layer has a snapshot, unpacking missing ones from their blobs (in
/// parallel). Each unpacked layer is checked against its diff id.
pub fn ensure_snapshots(state: &State, layers: &[OutputLayer]) -> Result<()> {
    layers
        .par_iter()
        .filter(|l| !state.snapshots.has(l.diff_id.as_str()))
        .try_for_each(|layer| unpack(state, layer))
}

fn unpack(state: &State, layer: &OutputLayer) -> Result<()> {
    let path = state.store.blob_path(&layer.digest);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("opening layer blob {}", layer.digest))?;
    let file = BufReader::with_capacity(1 << 20, file);
    let decompressed: Box<dyn Read> = match oci_layer_media_type(&layer.media_type)? {
        OCI_LAYER_GZIP => Box::new(flate2::read::GzDecoder::new(file)),
        OCI_LAYER_ZSTD => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
        _ => Box::new(file),
    };
    let mut reader = HashReader {
        inner: decompressed,
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

//! Parallel gzip: the input is cut into 1 MiB blocks that are compressed on all cores at once
//! with libdeflate, each block one gzip member, written in order. RFC 1952 makes a gzip file
//! a series of members, and every reader of layers reads them all (Go's `compress/gzip`,
//! which containerd, Docker, BuildKit, Buildah and skopeo use; zlib's gzip; Python's;
//! flate2's `MultiGzDecoder`). libdeflate cannot continue a stream from a preset dictionary,
//! as pigz's scheme (sync-flushed blocks primed with the previous 32 KiB) needs, but without
//! the priming it still compresses source-like data as tightly as zlib with it, at least 1.3×
//! as fast at the same level (BENCHMARKS.md has the measurements that chose the level). The
//! output depends only on the input and the level, never on the number of threads, so equal
//! layers still give equal blobs.

use rayon::prelude::*;
use std::io::{self, Write};

/// Bytes per block.
const BLOCK: usize = 1 << 20;

/// The level when none is asked for (`compression-level=`). Measured on a source-like layer
/// (bench/push.sh, BENCHMARKS.md): libdeflate's level 4 is as tight as zlib's level 6 (what
/// rbuild used before) and tighter than Buildah's default, at about 1.7× zlib's speed; level 6
/// gains 3% for 1.3× the time, level 1 loses 6%.
pub const DEFAULT_LEVEL: u32 = 4;

/// A writer that gzips what it is given onto `inner`, in parallel; [`ParGzWriter::finish`]
/// writes the last members and hands `inner` back. It holds a few blocks per core in memory
/// at most.
pub struct ParGzWriter<W: Write> {
    inner: W,
    /// 0 (stored) to 12 (libdeflate's best); gzip's 1–9 mean what they mean to zlib.
    level: u32,
    /// Full blocks waiting to be compressed, and the one being filled (last).
    blocks: Vec<Vec<u8>>,
    /// Whether any member was written.
    wrote: bool,
    batch: usize,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer onto `inner`, compressing at `level`.
    pub fn new(inner: W, level: u32) -> io::Result<ParGzWriter<W>> {
        Ok(ParGzWriter {
            inner,
            level: level.min(12),
            blocks: vec![Vec::with_capacity(BLOCK)],
            wrote: false,
            batch: 2 * rayon::current_num_threads().max(1),
        })
    }

    /// Compresses the full blocks (all of them if `all`) and writes them out, in order.
    fn flush_blocks(&mut self, all: bool) -> io::Result<()> {
        let ready = if all {
            self.blocks.len()
        } else {
            self.blocks.len() - 1
        };
        if ready == 0 {
            return Ok(());
        }
        let rest = self.blocks.split_off(ready);
        let blocks = std::mem::replace(&mut self.blocks, rest);
        let level = self.level;
        let members: Vec<io::Result<Vec<u8>>> =
            blocks.par_iter().map(|b| member(b, level)).collect();
        for m in members {
            self.inner.write_all(&m?)?;
            self.wrote = true;
        }
        if self.blocks.is_empty() {
            self.blocks.push(Vec::with_capacity(BLOCK));
        }
        Ok(())
    }

    /// Writes the last blocks (an empty input gives one empty member, so the blob is gzip).
    pub fn finish(mut self) -> io::Result<W> {
        if self.blocks.last().is_some_and(|b| b.is_empty()) && (self.wrote || self.blocks.len() > 1)
        {
            self.blocks.pop();
        }
        if !self.blocks.is_empty() {
            self.flush_blocks(true)?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Whether `block` looks incompressible: its bytes are near-uniformly distributed (order-0
/// entropy above 7.95 bits per byte), as compressed or random data is. Deflate would spend
/// its time there to gain nothing, so such blocks are stored; it is how pgzip-based pushers
/// stay fast on already-compressed files.
fn incompressible(block: &[u8]) -> bool {
    if block.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in block {
        counts[b as usize] += 1;
    }
    let n = block.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.95
}

/// The gzip member of one block: libdeflate's at `level`, or stored if the block is
/// incompressible or the level is 0.
fn member(block: &[u8], level: u32) -> io::Result<Vec<u8>> {
    if level == 0 || incompressible(block) {
        return Ok(stored(block));
    }
    let level = libdeflater::CompressionLvl::new(level as i32)
        .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))?;
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0u8; compressor.gzip_compress_bound(block.len())];
    let n = compressor
        .gzip_compress(block, &mut out)
        .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
    out.truncate(n);
    Ok(out)
}

/// A gzip member holding `block` in stored deflate blocks (no compression).
fn stored(block: &[u8]) -> Vec<u8> {
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown: fixed, for reproducible blobs.
    let mut out = Vec::with_capacity(block.len() + block.len() / 65_535 * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut chunks = block.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        let len = chunk.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32fast::hash(block).to_le_bytes());
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    out
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let current = self.blocks.last_mut().expect("a block being filled");
        let n = buf.len().min(BLOCK - current.len());
        current.extend_from_slice(&buf[..n]);
        if current.len() == BLOCK {
            self.blocks.push(Vec::with_capacity(BLOCK));
            if self.blocks.len() > self.batch {
                self.flush_blocks(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Every member, as layer readers read them.
    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn pgzip(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), DEFAULT_LEVEL).unwrap();
        for piece in data.chunks(chunk.max(1)) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_any_size_and_is_deterministic() {
        // Compressible text with some noise, across several blocks and an uneven end.
        let mut data = Vec::new();
        let mut x: u32 = 1;
        while data.len() < 5 * BLOCK + 12_345 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            data.extend_from_slice(
                format!("line {} of the layer {}\n", data.len(), x >> 28).as_bytes(),
            );
        }
        for size in [0, 1, 1000, BLOCK, BLOCK + 1, data.len()] {
            let part = &data[..size];
            let gz = pgzip(part, 7_000);
            assert_eq!(gunzip(&gz), part, "size {size}");
            // The way the input is written does not change the output.
            assert_eq!(pgzip(part, 1 << 16), gz, "size {size}");
        }
        // Independent members stay near a single stream's ratio (zlib's, primed).
        let single = {
            let level = flate2::Compression::new(DEFAULT_LEVEL);
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let parallel = pgzip(&data, 1 << 16);
        assert!(
            (parallel.len() as f64) < single.len() as f64 * 1.03,
            "{} vs {}",
            parallel.len(),
            single.len()
        );
        // Random bytes are stored, not deflated, and still round-trip; so is level 0.
        let mut noise = vec![0u8; 2 * BLOCK + 5];
        for (i, b) in noise.iter_mut().enumerate() {
            x = x
                .wrapping_mul(1_103_515_245)
                .wrapping_add(12_345 + i as u32);
            *b = (x >> 24) as u8;
        }
        assert!(incompressible(&noise[..BLOCK]));
        assert!(!incompressible(&data[..BLOCK]));
        let gz = pgzip(&noise, 1 << 16);
        assert_eq!(gunzip(&gz), noise);
        assert!(gz.len() < noise.len() + noise.len() / 100);
        let mut w = ParGzWriter::new(Vec::new(), 0).unwrap();
        w.write_all(&data[..BLOCK + 70_000]).unwrap();
        assert_eq!(gunzip(&w.finish().unwrap()), &data[..BLOCK + 70_000]);
        // The standard gzip tool reads every member too.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), pgzip(&data, 1 << 16)).unwrap();
        let out = std::process::Command::new("gzip")
            .args(["-dc"])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }
}

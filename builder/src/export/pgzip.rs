//! Parallel gzip, as pigz does it: the input is cut into 1 MiB blocks that are deflated on all
//! cores at once, each primed with the 32 KiB before it (so the ratio stays close to a single
//! stream's) and ended with a sync flush, so their concatenation is one valid deflate stream.
//! The output depends only on the input and the level, never on the number of threads, so
//! equal layers still give equal blobs.

use flate2::{Compress, Compression, FlushCompress};
use rayon::prelude::*;
use std::io::{self, Write};

/// Bytes per block.
const BLOCK: usize = 1 << 20;
/// Bytes of the previous block each block is primed with (deflate's window).
const WINDOW: usize = 32 * 1024;

/// A writer that gzips what it is given onto `inner`, in parallel; [`ParGzWriter::finish`]
/// writes the end and hands `inner` back. It holds a few blocks per core in memory at most.
pub struct ParGzWriter<W: Write> {
    inner: W,
    level: Compression,
    /// Full blocks waiting to be compressed, and the one being filled (last).
    blocks: Vec<Vec<u8>>,
    /// The end of the last block already compressed.
    tail: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    batch: usize,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer onto `inner`, compressing at `level`.
    pub fn new(mut inner: W, level: Compression) -> io::Result<ParGzWriter<W>> {
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown: fixed, for reproducible blobs.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        Ok(ParGzWriter {
            inner,
            level,
            blocks: vec![Vec::with_capacity(BLOCK)],
            tail: Vec::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
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
        let previous_tail = std::mem::take(&mut self.tail);
        let compressed: Vec<io::Result<Vec<u8>>> = (0..blocks.len())
            .into_par_iter()
            .map(|i| {
                let dictionary: &[u8] = if i == 0 {
                    &previous_tail
                } else {
                    let prev = &blocks[i - 1];
                    &prev[prev.len().saturating_sub(WINDOW)..]
                };
                deflate_block(&blocks[i], dictionary, level)
            })
            .collect();
        for chunk in compressed {
            self.inner.write_all(&chunk?)?;
        }
        let last = blocks.last().expect("at least one block");
        self.tail = last[last.len().saturating_sub(WINDOW)..].to_vec();
        if self.blocks.is_empty() {
            self.blocks.push(Vec::with_capacity(BLOCK));
        }
        Ok(())
    }

    /// Writes the last blocks, the final empty deflate block and the gzip trailer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.blocks.last().is_some_and(|b| b.is_empty()) {
            self.blocks.pop();
        }
        if !self.blocks.is_empty() {
            self.flush_blocks(true)?;
        }
        // The final block: empty, marked last.
        let mut end = Compress::new(self.level, false);
        let mut out = Vec::with_capacity(16);
        end.compress_vec(&[], &mut out, FlushCompress::Finish)
            .map_err(io::Error::other)?;
        self.inner.write_all(&out)?;
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&(self.size as u32).to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Whether `block` looks incompressible: its bytes are near-uniformly distributed (order-0
/// entropy above 7.95 bits per byte), as compressed or random data is. Deflate would spend
/// most of its time there to gain nothing (zlib needs ~2 s per 60 MB of random bytes), so such
/// blocks are stored; it is how pgzip-based pushers stay fast on already-compressed files.
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

/// Deflates one block primed with `dictionary`, ending with a sync flush (stored as it is if
/// it is incompressible).
fn deflate_block(block: &[u8], dictionary: &[u8], level: Compression) -> io::Result<Vec<u8>> {
    let level = if incompressible(block) {
        Compression::none()
    } else {
        level
    };
    let mut c = Compress::new(level, false);
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    let mut input = block;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let before = c.total_in();
        c.compress_vec(input, &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        let used = (c.total_in() - before) as usize;
        input = &input[used..];
        // Done when all input is in and the flush had room to complete.
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let current = self.blocks.last_mut().expect("a block being filled");
        let n = buf.len().min(BLOCK - current.len());
        current.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size += n as u64;
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

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn pgzip(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), Compression::default()).unwrap();
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
        // Priming with the previous block keeps the ratio near a single stream's.
        let single = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let parallel = pgzip(&data, 1 << 16);
        // Random bytes are stored, not deflated, and still round-trip.
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
        assert!(
            (parallel.len() as f64) < single.len() as f64 * 1.02,
            "{} vs {}",
            parallel.len(),
            single.len()
        );
    }
}

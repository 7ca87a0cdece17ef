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

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, channel, sync_channel};
use std::sync::{Arc, LazyLock, Mutex};

/// Bytes per block.
const BLOCK: usize = 1 << 20;

/// The level when none is asked for (`compression-level=`), chosen on a source-like layer
/// (bench/push.sh, BENCHMARKS.md) against the other builders' defaults: libdeflate's level 3
/// makes blobs 2% smaller than Buildah's (pgzip) and 1.4% larger than BuildKit's (Go's
/// gzip level 6), in about 0.63× and 0.2× of their push times. Level 4 gains 0.7% for
/// 1.06× to 1.15× the time (two runs); level 2 loses 1.4% for 0.8× to 0.9×; levels 5 and 6
/// are tighter than BuildKit's (28.6%, 28.3% of the layer against 29.1%) for 1.1× to 1.4×.
pub const DEFAULT_LEVEL: u32 = 3;

/// A block to compress, and where its member goes.
type Job = (Vec<u8>, u32, SyncSender<(io::Result<Vec<u8>>, Vec<u8>)>);

/// The threads that compress blocks, one per core, fed by one queue. Plain threads that sleep
/// on the queue: rayon's idle workers spin for a while before they sleep, taking the core from
/// the thread that makes the next blocks; and layers are exported in parallel on rayon's pool,
/// whose threads must not wait for work queued behind themselves.
static POOL: LazyLock<(Mutex<Sender<Job>>, usize)> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (jobs, queue) = channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..threads {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(format!("gzip-{i}"))
            .spawn(move || {
                loop {
                    let job = queue.lock().map(|q| q.recv());
                    let Ok(Ok((block, level, done))) = job else {
                        return;
                    };
                    let member = member(&block, level);
                    let _ = done.send((member, block));
                }
            })
            .expect("starting a compression thread");
    }
    (Mutex::new(jobs), threads)
});

/// A block being compressed: its member when done, and the block's buffer for the next one.
type Pending = Receiver<(io::Result<Vec<u8>>, Vec<u8>)>;

/// A writer that gzips what it is given onto `inner`, in parallel; [`ParGzWriter::finish`]
/// writes the last members and hands `inner` back. Full blocks are compressed by [`POOL`]
/// while the caller goes on making the next ones (its tar and hashing overlap the
/// compression), and written in order as they are done; a few blocks per core are in flight
/// at most.
pub struct ParGzWriter<W: Write> {
    inner: W,
    /// 0 (stored) to 12 (libdeflate's best); gzip's 1–9 mean what they mean to zlib.
    level: u32,
    /// The block being filled.
    current: Vec<u8>,
    /// Blocks being compressed, oldest first.
    pending: VecDeque<Pending>,
    /// Buffers of blocks already compressed, for the next ones.
    spare: Vec<Vec<u8>>,
    /// Whether any member was written.
    wrote: bool,
    /// Blocks in flight at most.
    depth: usize,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer onto `inner`, compressing at `level`.
    pub fn new(inner: W, level: u32) -> io::Result<ParGzWriter<W>> {
        Ok(ParGzWriter {
            inner,
            level: level.min(12),
            current: Vec::with_capacity(BLOCK),
            pending: VecDeque::new(),
            spare: Vec::new(),
            wrote: false,
            depth: 2 * POOL.1 + 1,
        })
    }

    /// Hands the current block to the pool.
    fn submit(&mut self) {
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK));
        let block = std::mem::replace(&mut self.current, next);
        let level = self.level;
        let (done, pending) = sync_channel(1);
        let queued = POOL.0.lock().map(|jobs| jobs.send((block, level, done)));
        debug_assert!(
            matches!(queued, Ok(Ok(()))),
            "the compression threads never stop"
        );
        self.pending.push_back(pending);
    }

    /// Writes out the members that are done, in order, waiting for the oldest while more than
    /// `keep` blocks are in flight.
    fn write_done(&mut self, keep: usize) -> io::Result<()> {
        while let Some(front) = self.pending.front() {
            let (member, mut block) = if self.pending.len() > keep {
                front
                    .recv()
                    .map_err(|_| io::Error::other("a gzip thread died"))?
            } else {
                match front.try_recv() {
                    Ok(done) => done,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => {
                        return Err(io::Error::other("a gzip thread died"));
                    }
                }
            };
            self.pending.pop_front();
            self.inner.write_all(&member?)?;
            self.wrote = true;
            block.clear();
            self.spare.push(block);
        }
        Ok(())
    }

    /// Writes the last blocks (an empty input gives one empty member, so the blob is gzip).
    pub fn finish(mut self) -> io::Result<W> {
        if self.pending.is_empty() {
            // One block or none: no thread needed.
            if !self.current.is_empty() || !self.wrote {
                self.inner.write_all(&member(&self.current, self.level)?)?;
            }
        } else {
            if !self.current.is_empty() {
                self.submit();
            }
            self.write_done(0)?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Whether `block` looks incompressible: its bytes are near-uniformly distributed (order-0
/// entropy above 7.95 bits per byte), as compressed or random data is. Deflate would spend
/// its time there to gain nothing, so such blocks are stored; it is how pgzip-based pushers
/// stay fast on already-compressed files. The bytes counted are a sample, 16 windows of
/// 4 KiB spread over the block (counting all of it cost 6% of a push), into four tables so
/// that equal bytes in a row do not wait for each other's count.
fn incompressible(block: &[u8]) -> bool {
    const WINDOWS: usize = 16;
    const WINDOW: usize = 4096;
    if block.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [[0u32; 256]; 4];
    let stride = (block.len() - WINDOW) / (WINDOWS - 1);
    for w in 0..WINDOWS {
        let window = &block[w * stride..w * stride + WINDOW];
        for quad in window.chunks_exact(4) {
            for (table, &b) in counts.iter_mut().zip(quad) {
                table[b as usize] += 1;
            }
        }
    }
    let n = (WINDOWS * WINDOW) as f64;
    let entropy: f64 = (0..256)
        .map(|b| counts.iter().map(|t| t[b]).sum::<u32>())
        .filter(|&c| c > 0)
        .map(|c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.95
}

thread_local! {
    /// Each compression thread's libdeflate compressor (with its level) and output buffer:
    /// making them anew cost a fresh megabyte of zeroed pages per block.
    static DEFLATE: std::cell::RefCell<Option<(u32, libdeflater::Compressor, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The gzip member of one block: libdeflate's at `level`, or stored if the block is
/// incompressible or the level is 0.
fn member(block: &[u8], level: u32) -> io::Result<Vec<u8>> {
    if level == 0 || incompressible(block) {
        return Ok(stored(block));
    }
    DEFLATE.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, ..)| *l != level) {
            let lvl = libdeflater::CompressionLvl::new(level as i32)
                .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))?;
            *slot = Some((level, libdeflater::Compressor::new(lvl), Vec::new()));
        }
        let (_, compressor, out) = slot.as_mut().expect("set above");
        let bound = compressor.gzip_compress_bound(block.len());
        if out.len() < bound {
            out.resize(bound, 0);
        }
        let n = compressor
            .gzip_compress(block, out)
            .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
        Ok(out[..n].to_vec())
    })
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
        let n = buf.len().min(BLOCK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == BLOCK {
            self.submit();
            self.write_done(self.depth)?;
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

    #[test]
    fn writers_on_every_rayon_thread_at_once_all_finish() {
        // Layers are exported in parallel on rayon's pool: each writer there waits for its
        // blocks, which must not need the threads the writers occupy.
        use rayon::prelude::*;
        let data: Vec<u8> = (0..3 * BLOCK + 77)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let blobs: Vec<Vec<u8>> = (0..4 * rayon::current_num_threads())
            .into_par_iter()
            .map(|_| pgzip(&data, 100_000))
            .collect();
        for gz in &blobs {
            assert_eq!(gz, &blobs[0]);
        }
        assert_eq!(gunzip(&blobs[0]), data);
    }
}

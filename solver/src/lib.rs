//! The rbuild solver: the build graph IR, cache keys, content hashing of local sources, the
//! parallel scheduler and the persistent cache index.
//!
//! The solver knows nothing about Dockerfiles, syscalls or registries. A frontend lowers its
//! input into a [`Graph`] of [`Op`]s; [`Solver::solve`] walks that graph in parallel, computes a
//! cache key for every vertex, skips vertices whose key is already in the [`CacheIndex`], and asks
//! a [`Worker`] to execute the rest. Progress is reported as [`progress::Event`]s.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cache;
pub mod cachekey;
pub mod chmod;
pub mod contenthash;
pub mod digest;
pub mod graph;
pub mod ops;
pub mod pathname;
pub mod pattern;
pub mod progress;
pub mod scheduler;
pub mod statcache;
pub mod summary;
pub mod trace;

pub use cache::CacheIndex;
pub use digest::Digest;
pub use graph::{Graph, Step, Vertex, VertexId};
pub use ops::{
    CacheSharing, ExecLimits, ExecMount, ExecOp, FileAction, FileOp, GitSource, HostEntry,
    HttpSource, ImageSource, InlineFile, LocalSource, MountKind, NetworkMode, Op, Output,
    OutputLayer, Ulimit,
};
pub use scheduler::{Solver, StepContext, Worker};

/// Errors of the solver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache index could not be read or written.
    #[error("cache index {path}: {source}")]
    Cache {
        /// The database file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored cache record could not be decoded.
    #[error("corrupt cache record for {key}: {source}")]
    CorruptRecord {
        /// The cache key.
        key: String,
        /// What went wrong.
        #[source]
        source: serde_json::Error,
    },
    /// Reading a local source failed.
    #[error("{path}: {source}")]
    Io {
        /// The path being read.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A source path named by a step does not exist.
    #[error("{0}")]
    SourceNotFound(String),
    /// The worker failed to execute a vertex.
    #[error("{0}")]
    Worker(String),
    /// The build was cancelled.
    #[error("build cancelled")]
    Cancelled,
}

/// Result type of the solver.
pub type Result<T, E = Error> = std::result::Result<T, E>;

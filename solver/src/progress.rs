//! Progress events of a solve, for the builder's progress UIs.

use crate::graph::VertexId;
use std::time::Duration;

/// Which output stream a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Something that happened to a named vertex. Hidden vertices (no name) send no events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The vertex's inputs are ready and it is being looked up or run.
    Started {
        /// The vertex.
        vertex: VertexId,
        /// Its progress name.
        name: String,
    },
    /// The vertex's output came from the cache index; it did not run.
    Cached {
        /// The vertex.
        vertex: VertexId,
    },
    /// Output of the running step.
    Log {
        /// The vertex.
        vertex: VertexId,
        /// Which stream.
        stream: Stream,
        /// The bytes, as produced (not necessarily whole lines).
        data: Vec<u8>,
        /// Time since the vertex started.
        at: Duration,
    },
    /// How far a transfer of the running step (a layer download) has come. Sent at most a
    /// few times a second per transfer, and once when it completes.
    Progress {
        /// The vertex.
        vertex: VertexId,
        /// What is transferred (a blob digest).
        id: String,
        /// Bytes so far.
        current: u64,
        /// Bytes in all, if known.
        total: Option<u64>,
        /// Whether the transfer is complete.
        done: bool,
        /// Time since the vertex started.
        at: Duration,
    },
    /// The vertex ran and succeeded.
    Done {
        /// The vertex.
        vertex: VertexId,
        /// How long it ran.
        elapsed: Duration,
    },
    /// The vertex ran and failed.
    Failed {
        /// The vertex.
        vertex: VertexId,
        /// How long it ran.
        elapsed: Duration,
        /// The error.
        error: String,
    },
    /// The vertex was running when the solve was cancelled (Ctrl-C, or another step failed)
    /// and was stopped: BuildKit's `CANCELED`.
    Canceled {
        /// The vertex.
        vertex: VertexId,
        /// How long it ran.
        elapsed: Duration,
    },
}

/// Where a solve sends its events.
pub type Sender = tokio::sync::mpsc::UnboundedSender<Event>;

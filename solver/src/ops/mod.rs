//! The operations of the build graph and the outputs they produce.
//!
//! Every vertex of a [`crate::Graph`] holds one [`Op`]. Its *output* is either a chain of
//! filesystem layers ([`Output::layers`], bottom first) or, for a local source, a directory on the
//! host ([`Output::local`]). Ops are plain data: they are serialized into cache keys, so a field
//! belongs in an op only if it can change the op's output.

mod exec;
mod file;
mod source;

pub use exec::{
    CacheSharing, ExecLimits, ExecMount, ExecOp, HostEntry, InlineFile, MountKind, NetworkMode,
    Ulimit,
};
pub use file::{FileAction, FileOp};
pub use source::{GitSource, HttpSource, ImageSource, LocalSource};

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One operation of the build graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The empty filesystem (`FROM scratch`). No inputs.
    Scratch,
    /// The layers of an image, pinned by manifest digest. No inputs.
    Image(ImageSource),
    /// Files from a directory on the host (the build context). No inputs.
    Local(LocalSource),
    /// A file downloaded over HTTP(S). No inputs.
    Http(HttpSource),
    /// A git checkout. No inputs.
    Git(GitSource),
    /// A process run in a sandbox over input 0; its filesystem changes become a new layer.
    Exec(ExecOp),
    /// File actions applied on top of input 0, reading from the other inputs.
    File(FileOp),
    /// The layers of every input, stacked in order (`COPY --link`: the copy is made on an
    /// empty filesystem, so its layer and key do not depend on what it is stacked on).
    Merge,
}

impl Op {
    /// A short lowercase name of the op kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Scratch => "scratch",
            Op::Image(_) => "image",
            Op::Local(_) => "local",
            Op::Http(_) => "http",
            Op::Git(_) => "git",
            Op::Exec(_) => "exec",
            Op::File(_) => "file",
            Op::Merge => "merge",
        }
    }
}

/// One layer of a vertex's output, described the way an OCI manifest and config need it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutputLayer {
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry). It also names the
    /// unpacked snapshot of the layer.
    pub diff_id: Digest,
    /// Digest of the layer's blob. Layers that steps make are uncompressed (`media_type` is
    /// the OCI tar type, `digest` equals `diff_id`) and held as their snapshot: the builder
    /// writes their blobs, compressed, only when an export or a push needs them.
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
    /// When the step that made this layer ran (RFC 3339), used for the image history.
    pub created: Option<String>,
}

/// What a vertex produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The filesystem as a chain of layers, bottom first.
    pub layers: Vec<OutputLayer>,
    /// For a local or HTTP source: the directory on the host its files are read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<PathBuf>,
}

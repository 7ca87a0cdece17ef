//! The exec op: a process run in a sandbox (a Dockerfile `RUN`).

use serde::{Deserialize, Serialize};

/// Runs `args` over the filesystem of input 0 and records the changes as a new layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecOp {
    /// The command line; `args[0]` is looked up in the `PATH` of `env`.
    pub args: Vec<String>,
    /// The environment, `KEY=value`.
    pub env: Vec<String>,
    /// The absolute working directory.
    pub cwd: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    pub user: String,
    /// Which network the process sees.
    pub network: NetworkMode,
    /// Files the process finds under `/dev/pipes` (a RUN heredoc with a shebang is run from
    /// there); never part of the step's layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inline_files: Vec<InlineFile>,
}

/// A small file handed to a process without being in its filesystem's layers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InlineFile {
    /// Absolute path, under `/dev/pipes`.
    pub path: String,
    /// Content.
    pub data: String,
    /// Permission bits.
    pub mode: u32,
}

/// The network of a sandboxed process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only a loopback interface.
    None,
}

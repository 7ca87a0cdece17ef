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
    /// `RUN --mount`s, in the order given. Inputs they read are inputs of the vertex (input 0
    /// is always the root filesystem). Their definitions are part of the cache key; secret
    /// values and cache-mount contents are not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<ExecMount>,
    /// The platform (`os/arch[/variant]`) the step runs for when it is not the build
    /// machine's own: the same files and command give other results under emulation, so it
    /// is part of the key. Absent for the build platform, which keeps those keys unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// What the build's `--add-host`, `--ulimit`, `--shm-size` and `--cgroup-parent` change
    /// (part of the key, as in BuildKit's exec meta; absent when none is given, which keeps
    /// other keys unchanged).
    #[serde(default, skip_serializing_if = "ExecLimits::is_empty")]
    pub limits: ExecLimits,
    /// `RUN --security=insecure` (with the `security.insecure` entitlement): a privileged
    /// sandbox, every capability, no seccomp filter, `/proc` and `/sys` writable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// The sandbox settings a build gives every RUN step, as BuildKit's exec op meta holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecLimits {
    /// `--add-host NAME:IP`: lines of `/etc/hosts`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size`: bytes of `/dev/shm` (BuildKit mounts a tmpfs of that size there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// `--cgroup-parent`: the cgroup (v2, relative to the hierarchy's root) under which each
    /// step's processes run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
}

impl ExecLimits {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == ExecLimits::default()
    }
}

/// A line of `/etc/hosts` added by `--add-host`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostEntry {
    /// The host name.
    pub host: String,
    /// Its address.
    pub ip: String,
}

/// A resource limit (`setrlimit`) of a step's processes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ulimit {
    /// Docker's name: `nofile`, `nproc`, `core`, `stack`, `memlock`, …
    pub name: String,
    /// The soft limit (-1: unlimited).
    pub soft: i64,
    /// The hard limit (-1: unlimited).
    pub hard: i64,
}

/// One mount of an exec op.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecMount {
    /// Absolute path in the sandbox; empty for a secret given only as an environment variable.
    pub target: String,
    /// Whether the process may not write to it.
    pub readonly: bool,
    /// What is mounted.
    #[serde(flatten)]
    pub kind: MountKind,
}

/// What an [`ExecMount`] mounts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    /// The files of input `input` (a stage, an image or the context) below `source`. Writes,
    /// when allowed, are thrown away after the step.
    Bind {
        /// Index into the vertex's inputs (at least 1).
        input: usize,
        /// Absolute path inside the input.
        source: String,
        /// `.dockerignore` patterns hiding files of a context input.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
    },
    /// A directory kept across builds under the state directory, never part of a layer.
    Cache {
        /// Which cache (the same id shares contents).
        id: String,
        /// How concurrent steps share it.
        sharing: CacheSharing,
        /// The input whose files (below `source`) seed a new cache, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<usize>,
        /// Absolute path inside the seed input.
        source: String,
        /// Permission bits of a new cache directory.
        mode: u32,
        /// Owner of a new cache directory.
        uid: u32,
        /// Group of a new cache directory.
        gid: u32,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// Size limit in bytes (the kernel's default, half of RAM, when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// A secret supplied to the build, as a file at `target` and/or an environment variable.
    Secret {
        /// The secret's id.
        id: String,
        /// The environment variable that receives the value, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
        /// Whether a build without this secret fails (otherwise the mount is left out).
        required: bool,
        /// Permission bits of the file.
        mode: u32,
        /// Owner of the file.
        uid: u32,
        /// Group of the file.
        gid: u32,
    },
    /// An SSH agent socket forwarded from the host.
    Ssh {
        /// The agent's id (`default` unless named).
        id: String,
        /// Whether a build without this agent fails.
        required: bool,
        /// Permission bits of the socket.
        mode: u32,
        /// Owner of the socket.
        uid: u32,
        /// Group of the socket.
        gid: u32,
    },
}

/// How concurrent steps share a cache mount (BuildKit's `sharing=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    /// Everyone uses the same directory at once.
    #[default]
    Shared,
    /// A step that finds the cache in use gets another instance of it.
    Private,
    /// A step waits until no other step uses the cache.
    Locked,
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
    /// A network namespace of the step's own with outbound access, which cannot reach the
    /// build machine's loopback (BuildKit's `default`; the runner's user-mode network).
    #[default]
    Private,
    /// The host's network namespace (`--network=host`, an entitlement).
    Host,
    /// A new network namespace with only a loopback interface.
    None,
}

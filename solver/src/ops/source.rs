//! Source ops: images and local directories.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};

/// An image's filesystem, pinned by the digest of its platform-specific manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageSource {
    /// The normalized reference the image was resolved from, e.g.
    /// `docker.io/library/busybox:latest`. Not part of the cache key.
    pub reference: String,
    /// Digest of the image manifest. This alone identifies the content.
    pub digest: Digest,
}

/// Files of a named local directory. Its cache key covers the content of the files it selects,
/// not their location on the host and not their modification times.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocalSource {
    /// Which local directory: `context` is the build context.
    pub name: String,
    /// Paths (relative to the directory, may contain wildcards) whose content matters. Empty
    /// means everything.
    pub include: Vec<String>,
    /// `.dockerignore` patterns (see [`crate::pattern::IgnoreMatcher`]) of files to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Include patterns applied below each path of `include`, as in
    /// [`crate::FileAction::Copy`]'s `include_patterns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_patterns: Vec<String>,
    /// Exclude patterns applied below each path of `include`, as in
    /// [`crate::FileAction::Copy`]'s `exclude_patterns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_patterns: Vec<String>,
}

/// A git repository at a ref (`ADD https://host/repo.git#ref:subdir`, `ADD git@host:repo`).
/// Its output is a directory holding the checkout (of `subdir`), and its cache key is made
/// from the commit the ref resolves to (with `subdir` and `keep_git_dir`), not the URL, as
/// BuildKit's git source: the same commit from a mirror is the same step.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GitSource {
    /// The clone URL.
    pub url: String,
    /// A branch, tag or commit (the default branch when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The directory of the repository that is the output (`#ref:subdir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
    /// `ADD --keep-git-dir`: the checkout keeps its `.git`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_git_dir: bool,
    /// `ADD --checksum`: the commit the ref must resolve to (a prefix of its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// A file downloaded over HTTP(S) (`ADD https://…`). Its output is a directory holding the file
/// as `filename` (mode 0600, modified at the response's `Last-Modified`), and its cache key
/// covers the downloaded content: the URL alone does not pin it, so it is fetched (or checked
/// as unchanged) on every build, unless `checksum` names content already downloaded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpSource {
    /// The URL.
    pub url: String,
    /// The name of the file in the output directory.
    pub filename: String,
    /// The expected digest of the content (`ADD --checksum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Digest>,
}

//! The file op: copies and directory creation (Dockerfile `COPY`, `ADD`, `WORKDIR`).

use serde::{Deserialize, Serialize};

/// File actions applied in order on top of input 0; their changes become one new layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileOp {
    /// The actions, applied in order.
    pub actions: Vec<FileAction>,
}

/// One file action.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FileAction {
    /// Copies paths of another input into the filesystem, with Dockerfile `COPY` semantics: a
    /// directory source copies its contents, a file source lands at `dest` or, if `dest` ends in
    /// `/` or is an existing directory, inside it.
    Copy {
        /// Index of the input to read from (1 or more).
        source: usize,
        /// Source paths relative to that input's root; may contain wildcards.
        paths: Vec<String>,
        /// Absolute destination path; a trailing `/` means "a directory".
        dest: String,
        /// `user[:group]` to own the copied files; `None` keeps them as they are
        /// in the source (or root for a local source).
        owner: Option<String>,
        /// Permission bits for the copied files and directories.
        mode: Option<u32>,
        /// A symbolic mode (`u+x`, see [`crate::chmod`]) applied to each copied file's own
        /// mode, when `mode` is not given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chmod: Option<crate::chmod::SymbolicMode>,
        /// Extract recognized local tar archives instead of copying them (`ADD`).
        unpack_archives: bool,
        /// `.dockerignore` patterns of files to leave out, relative to the input's root; they
        /// also apply to the source paths themselves.
        #[serde(default, rename = "exclude", skip_serializing_if = "Vec::is_empty")]
        ignore: Vec<String>,
        /// BuildKit's include patterns (`COPY --parents`): when set, only what they match below
        /// each source path is copied, with the parent directories of what matches.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        include_patterns: Vec<String>,
        /// BuildKit's exclude patterns (`--exclude`): what they match below each source path is
        /// left out. A source path itself is never excluded by them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude_patterns: Vec<String>,
    },
    /// Creates a file with the given content (a heredoc of COPY or ADD).
    Mkfile {
        /// Absolute path; its directory must exist.
        path: String,
        /// Content.
        data: String,
        /// Permission bits.
        mode: u32,
    },
    /// Creates a directory.
    Mkdir {
        /// Absolute path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Create missing parents too.
        parents: bool,
        /// `user[:group]` to own the new directories; `None` is root.
        owner: Option<String>,
    },
}

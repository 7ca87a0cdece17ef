//! The state directory: its layout ([`state`]) and locks ([`lock`]), the local OCI image store
//! ([`layout`]), snapshots and layers ([`layer`]), finding images by name ([`local`]), the
//! downloads of `ADD https://…` ([`downloads`]), disk usage, pruning and checks ([`gc`]), and
//! the blobs a build may use without having them yet ([`lazy`]).

/// Returns an [`Error::Other`] made with `format!` (as anyhow's `bail!`).
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::store::Error::Other(format!($($arg)*)))
    };
}

pub mod containers;
pub mod downloads;
pub mod follow;
pub mod gc;
pub mod git;
pub mod layer;
pub mod layout;
pub mod lazy;
pub mod local;
pub mod lock;
pub mod origins;
pub mod state;

use rbuild_solver::Digest;

/// Why something in the state directory failed.
///
/// Messages say what rbuild was doing; the cause is the error's source, so `{:#}` through
/// anyhow (as the command line prints errors) shows both.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] crate::errors::Io),
    /// A file operation failed, with nothing more to say than the system's error.
    #[error(transparent)]
    System(#[from] std::io::Error),
    /// A file that must hold JSON does not.
    #[error(transparent)]
    Json(#[from] crate::errors::Json),
    /// Content that does not match its digest.
    #[error("content digest mismatch: expected {expected}, got {got}")]
    Mismatch {
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        got: Digest,
    },
    /// The cache index.
    #[error(transparent)]
    Cache(#[from] rbuild_solver::Error),
    /// An `ADD` download's request failed.
    #[error("{what}")]
    Download {
        /// What was downloaded.
        what: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// Something else, said in words: no such image, an unsupported layer type, a checksum
    /// that does not match, a bad record.
    #[error("{0}")]
    Other(String),
    /// A failure below, with what rbuild was doing when it happened.
    #[error("{what}")]
    Within {
        /// What rbuild was doing.
        what: String,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
}

/// A state-directory operation's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Says what rbuild was doing when an operation failed: `.context(…)` and
/// `.with_context(|| …)`, as anyhow's, for the errors the store meets, making [`Error`]s.
pub trait Context<T> {
    /// The error, with `what` said about it.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;

    /// The error, with `what` said about it.
    fn context(self, what: impl Into<String>) -> Result<T>
    where
        Self: Sized,
    {
        let what = what.into();
        self.with_context(|| what)
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| crate::errors::io(what())(source).into())
    }
}

impl<T> Context<T> for std::result::Result<T, serde_json::Error> {
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| crate::errors::json(what())(source).into())
    }
}

impl<T> Context<T> for std::result::Result<T, reqwest::Error> {
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Download {
            what: what().into(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T> {
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Within {
            what: what().into(),
            source: Box::new(source),
        })
    }
}

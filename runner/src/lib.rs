//! The rbuild runner: the sandbox that runs build steps, snapshots of layers, turning snapshots
//! into OCI layers and layers back into snapshots, and file operations (COPY, WORKDIR).
//!
//! The runner knows nothing of the build graph or the cache; the builder drives it. Unsafe code
//! and raw syscalls live in [`sys`] only.
#![deny(missing_docs)]

pub mod apifs;
pub mod diff;
pub mod extract;
pub mod fileop;
pub mod limits;
pub mod native;
pub mod network;
pub mod sandbox;
pub mod snapshot;
pub mod sys;
pub mod user;

pub use snapshot::{Snapshotter, Upper};

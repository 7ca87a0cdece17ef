//! rbuild's builder: the `rbuild` command line and the parts it wires together besides the
//! frontend, solver and runner crates.
//!
//! The folders are the architecture (ARCHITECTURE.md has the map): [`cli`] is the command
//! line (clap, one file per subcommand, progress, diagnostics) and the only place that knows
//! it; [`store`] is the state directory (lock, OCI image store, snapshots and layers, ADD
//! downloads, gc); [`registry`] talks to registries (client, auth, references, base-image
//! resolution, where blobs are known to be); [`export`] makes images leave the machine
//! (configs, manifests, archives, compression); [`worker`] is the solver's `Worker` over the
//! runner and the store, with RUN's secrets and cache mounts. [`pipeline`] is the one way
//! `build`, `lint` and `graph` load, lower and set up a solve; [`units`] formats times and
//! sizes. The binary (`main.rs`) only calls [`cli::main`].
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod cli;
pub mod errors;
pub mod export;
#[cfg(test)]
mod hostile_inputs;
pub mod pipeline;
pub mod registry;
pub mod remotecache;
// The builder's only unsafe code: forking the helper that writes a rootless process's id
// maps, while still single-threaded (the block says why that is sound).
pub mod provenance;
#[allow(unsafe_code)]
pub mod rootless;
pub mod sbom;
pub mod store;
pub mod units;
pub mod worker;

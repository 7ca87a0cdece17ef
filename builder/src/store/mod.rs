//! The state directory: its layout ([`state`]) and locks ([`lock`]), the local OCI image store
//! ([`layout`]), snapshots and layers ([`layer`]), finding images by name ([`local`]), the
//! downloads of `ADD https://…` ([`downloads`]), and disk usage, pruning and checks ([`gc`]).

pub mod downloads;
pub mod gc;
pub mod layer;
pub mod layout;
pub mod local;
pub mod lock;
pub mod state;

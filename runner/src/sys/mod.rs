//! The few places where the runner needs `unsafe` or raw syscalls without a safe wrapper.
//!
//! Everything else in the runner is safe Rust over `nix` and `std`.

pub mod mount;
pub mod net;
pub mod process;
pub mod seccomp;
pub mod userns;
pub mod xattr;

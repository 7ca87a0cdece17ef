//! The fuzz targets' checks (see `checks.rs`).

pub mod checks;

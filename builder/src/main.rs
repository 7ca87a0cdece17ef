//! `rbuild`: a daemonless container image builder for Dockerfiles. The binary is glue: all of
//! it is in the `rbuild_builder` library (`cli::main`).

/// jemalloc: parsing and lowering a Dockerfile are allocation-heavy and run about 1.35× faster
/// with it than with glibc's allocator. It is fork-safe the way rbuild needs (its at-fork
/// handlers reset its locks in the child; see `runner/src/sys/process.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    rbuild_builder::cli::main()
}

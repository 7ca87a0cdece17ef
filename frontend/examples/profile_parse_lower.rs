//! Runs the parse_lower benchmark's workload a few times, for profilers (callgrind, perf).

/// The allocator the `rbuild` binary and the benchmark use.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "../benches/workload/mod.rs"]
mod workload;

use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{BuildOptions, lower, parser};
use workload::{AnyImage, dockerfile};

fn main() {
    let text = dockerfile();
    for _ in 0..5 {
        let file = SourceFile::new("Dockerfile", text.as_bytes());
        let parsed = parser::parse(&file);
        let build = lower(&parsed.dockerfile, &BuildOptions::default(), &AnyImage).unwrap();
        std::hint::black_box(build.graph.len());
    }
}

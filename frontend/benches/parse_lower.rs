//! Parsing and lowering a 2,000-instruction Dockerfile (issue 3 asks for under 5 ms).
//! `cargo bench -p rbuild-frontend`; the result is recorded in BENCHMARKS.md.

/// The allocator the `rbuild` binary uses, so the benchmark measures what rbuild runs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, criterion_group, criterion_main};
mod workload;

use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{BuildOptions, lower, parser};
use std::hint::black_box;
use workload::{AnyImage, dockerfile};

fn bench(c: &mut Criterion) {
    let text = dockerfile();
    let instructions = parser::parse(&SourceFile::new("Dockerfile", text.as_bytes()))
        .dockerfile
        .instructions
        .len();
    assert!(instructions >= 2000, "{instructions} instructions");
    c.bench_function("parse 2,000 instructions", |b| {
        b.iter(|| {
            let file = SourceFile::new("Dockerfile", black_box(text.as_bytes()));
            black_box(parser::parse(&file).dockerfile.instructions.len())
        })
    });
    let file = SourceFile::new("Dockerfile", text.as_bytes());
    let parsed = parser::parse(&file);
    c.bench_function("build checks of 2,000 instructions", |b| {
        b.iter(|| black_box(rbuild_frontend::lint::syntactic(&parsed.dockerfile).len()))
    });
    // Freeing the results is not part of parsing and lowering; iter_with_large_drop leaves it
    // out of the measurement.
    c.bench_function("parse and lower 2,000 instructions", |b| {
        b.iter_with_large_drop(|| {
            let file = SourceFile::new("Dockerfile", black_box(text.as_bytes()));
            let parsed = parser::parse(&file);
            let build = lower(&parsed.dockerfile, &BuildOptions::default(), &AnyImage).unwrap();
            (parsed, build)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

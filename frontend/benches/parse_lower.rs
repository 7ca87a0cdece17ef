//! Parsing and lowering a 2,000-instruction Dockerfile (issue 3 asks for under 5 ms).
//! `cargo bench -p rbuild-frontend`; the result is recorded in BENCHMARKS.md.

/// The allocator the `rbuild` binary uses, so the benchmark measures what rbuild runs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use rbuild_frontend::image::Image;
use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{BuildOptions, ImageResolver, ResolvedImage, lower, parser};
use rbuild_solver::Digest;
use std::hint::black_box;

struct AnyImage;

impl ImageResolver for AnyImage {
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, String> {
        let mut image = Image::default();
        image.config.env = Some(vec!["PATH=/usr/bin:/bin".into()]);
        Ok(ResolvedImage {
            reference: reference.into(),
            digest: Digest::of(reference.as_bytes()),
            image,
        })
    }
}

/// 20 stages of 100 instructions: a realistic mix of RUN, COPY, ENV, ARG, WORKDIR, LABEL, with
/// variables, continuations and a COPY --from the previous stage.
pub fn dockerfile() -> String {
    let mut text = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\n");
    for stage in 0..20 {
        text.push_str(&format!("FROM ${{BASE}} AS stage{stage}\n"));
        text.push_str(&format!(
            "ARG VERSION={stage}.0\nENV APP=/opt/app{stage} MODE=release\n"
        ));
        for i in 0..96 / 6 {
            text.push_str(&format!(
                "RUN apt-get install -y pkg{i} && \\\n    echo \"${{VERSION}} $APP\" > /tmp/{i}\n"
            ));
            text.push_str(&format!("COPY src/file{i}.txt $APP/data/\n"));
            text.push_str(&format!("ENV STEP{i}=\"value ${{MODE:-debug}} {i}\"\n"));
            text.push_str(&format!("WORKDIR $APP/w{i}\n"));
            text.push_str(&format!(
                "LABEL org.example.step{i}=\"{i}\" org.example.stage=\"{stage}\"\n"
            ));
            if stage > 0 {
                text.push_str(&format!(
                    "COPY --from=stage{} /opt/app{}/data/file{i}.txt ./\n",
                    stage - 1,
                    stage - 1
                ));
            } else {
                text.push_str(&format!("EXPOSE {}\n", 8000 + i));
            }
        }
        text.push_str("CMD [\"/opt/app/run\"]\n");
    }
    text
}

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
